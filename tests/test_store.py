"""The state store on real SQLite files, with real processes killed mid-write."""

from __future__ import annotations

import os
import select
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from blake3 import blake3

from tests.conftest import cli_env
from tests.test_lock import children as children  # a fixture: processes a test starts
from tests.test_lock import kill9, read_line
from watchrun.state.pgroups import process_start_time
from watchrun.state.store import (
    INLINE_LIMIT,
    LAST_UNITS,
    SCHEMA_VERSION,
    LockedError,
    ObjectMissing,
    ReadOnlyStoreError,
    ResultRecord,
    Store,
    UnitState,
    UnitStatus,
)

# -- helpers ---------------------------------------------------------------------------------


def spawn(children: list[subprocess.Popen[str]], code: str) -> subprocess.Popen[str]:
    """A Python child running `code`; it talks through stdout lines, and its stdin stays open
    so it can block on it."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=cli_env())
    children.append(proc)
    return proc


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    """Wait for a process (not necessarily our child) to end; pidfd tells when."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


def result(task: str, output: str, signature: str = "sig", **outputs: str) -> ResultRecord:
    """A result whose output names no object in the store (it is read back as not stored)."""
    return ResultRecord(task=task, signature=signature, output=output, outputs=dict(outputs),
                        duration=1.5, finished=1000.0, stored=False)


def state(task: str, iter: tuple[int, ...] = (), status: UnitStatus = UnitStatus.OK
          ) -> UnitState:
    return UnitState(task=task, iter=iter, signature="sig", status=status, manifest="m",
                     output="o", duration=0.5, error=None if status is UnitStatus.OK else "boom",
                     finished=1000.0)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / ".watchrun"


@pytest.fixture
def store(state_dir: Path) -> Iterator[Store]:
    s = Store(state_dir)
    s.acquire_lock("test")
    yield s
    s.close()


# -- results, unit states, manifests ---------------------------------------------------------


def test_results_and_unit_states_survive_reopening(state_dir: Path) -> None:
    with Store(state_dir) as s:
        s.record_result(result("a", "out1", data="h1", **{"out/b c.txt": "h2"}))
        s.record_result(result("b", "out2"))
        s.set_unit_state(state("a"))
        s.set_unit_state(state("gen", (10,)))
        s.set_unit_state(state("gen", (2,), UnitStatus.FAILED))
        s.set_unit_state(state("gen", (2, 1)))
        s.commit()
    with Store(state_dir) as s:
        assert s.messages == []
        assert s.find_result("a", "sig") == result("a", "out1", data="h1", **{"out/b c.txt": "h2"})
        assert s.find_result("b", "sig") == result("b", "out2")
        assert s.find_result("a", "other") is None
        assert s.unit_state("a") == state("a")
        assert s.unit_state("gen", (2,)) == state("gen", (2,), UnitStatus.FAILED)
        assert s.unit_state("gen", (3,)) is None
        # Iterations come in numeric order, not text order ("10" < "2").
        assert [u.iter for u in s.unit_states("gen")] == [(2,), (2, 1), (10,)]
        assert [u.task for u in s.unit_states()] == ["a", "gen", "gen", "gen"]


def test_latest_unit_state_replaces_the_previous(store: Store) -> None:
    store.set_unit_state(state("a", status=UnitStatus.FAILED))
    store.set_unit_state(state("a", status=UnitStatus.OK))
    assert [u.status for u in store.unit_states("a")] == [UnitStatus.OK]


def test_last_units_give_latest_signatures_and_the_results_under_them(store: Store) -> None:
    store.record_result(result("a", "old", signature="s1"))
    store.record_result(result("a", "new", signature="s2", **{"out/a.txt": "h"}))
    store.record_result(result("gen", "v", signature="same"))
    store.record_result(result("lonely", "x"))  # a result no unit state points at
    store.set_unit_state(state("a"))
    store.set_unit_state(UnitState("a", (), "s2", UnitStatus.OK, "m", "new", 0.1, None, 1.0))
    for i in range(3):  # iterations that share one signature: one result, once
        store.set_unit_state(UnitState("gen", (i,), "same", UnitStatus.OK, "m", "v", 0.1, None,
                                       1.0))
    store.set_unit_state(state("failed", status=UnitStatus.FAILED))  # no result: a signature
    signatures, results = store.last_units()
    assert signatures == {("a", ()): "s2", ("gen", (0,)): "same", ("gen", (1,)): "same",
                          ("gen", (2,)): "same", ("failed", ()): "sig"}
    assert sorted(results, key=lambda r: r.task) == [
        result("a", "new", signature="s2", **{"out/a.txt": "h"}),
        result("gen", "v", signature="same")]


def test_result_signatures_of_every_task_but_some(store: Store) -> None:
    for task, signature in (("a", "s1"), ("a", "s2"), ("b", "s1"), ("scoped", "s9")):
        store.record_result(result(task, "out", signature=signature))
    assert store.result_signatures_except({"scoped"}) == {"a": {"s1", "s2"}, "b": {"s1"}}
    assert store.result_signatures_except(set())["scoped"] == {"s9"}


def test_the_bulk_reads_of_some_tasks_only_ask_for_those(store: Store) -> None:
    """A build whose other tasks the proof covers reads the rows of the rest alone, by name,
    in statements of at most 500 names (an old SQLite takes 999 parameters at most)."""
    names = [f"t{i:04d}" for i in range(2400)]
    for name in names:
        store.record_result(result(name, "out", signature="s"))
        store.set_unit_state(UnitState(name, (), "s", UnitStatus.OK, "m", "out", 0.1, None, 1.0))
    store._db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)  # type: ignore[union-attr]
    asked = names[::2]  # 1,200 names: more than one statement may take
    signatures, results = store.last_units(asked)
    assert sorted(task for task, _ in signatures) == asked
    assert sorted(r.task for r in results) == asked
    assert sorted(store.result_signatures_except(set(), asked)) == asked
    assert sorted(s.task for s in store.top_level_states(asked)) == asked
    assert len(store.last_units()[0]) == 2400


def test_last_units_find_each_result_by_its_key(state_dir: Path) -> None:
    """A null build of a 10,000-iteration scope took 23 s when SQLite scanned the results and
    searched the states of their task for each one."""
    Store(state_dir).close()
    db = sqlite3.connect(state_dir / "state.db")
    plan = " / ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {LAST_UNITS}"))
    db.close()
    assert "SCAN u" in plan and "SEARCH r USING PRIMARY KEY (task=? AND signature=?)" in plan


def test_manifests_are_stored_once(store: Store) -> None:
    store.put_manifest("m1", b"components")
    store.put_manifest("m1", b"components")
    assert store.get_manifest("m1") == b"components"
    assert store.get_manifest("m2") is None


def test_generator_iterations_resume_only_up_to_a_gap(store: Store) -> None:
    for index in (0, 1, 3):
        store.record_iteration("gen", "g1", index, f"v{index}")
    store.record_iteration("gen", "g2", 0, "other")
    assert store.iterations("gen", "g1") == ["v0", "v1"]
    assert store.iterations("gen", "g3") == []
    assert store.generator_complete("gen", "g1") is None
    store.mark_generator_complete("gen", "g1", 4)
    assert store.generator_complete("gen", "g1") == 4
    assert store.generator_complete("gen", "g2") is None


def test_forget_some_tasks_or_all(store: Store) -> None:
    for task in ("a", "b"):
        store.record_result(result(task, "o"))
        store.set_unit_state(state(task))
        store.record_iteration(task, "sig", 0, "v")
        store.mark_generator_complete(task, "sig", 1)
    store.set_unit_state(state("a", (0,)))
    assert store.forget(["a"]) == 2
    assert store.find_result("a", "sig") is None
    assert store.unit_state("a") is None
    assert store.iterations("a", "sig") == []
    assert store.generator_complete("a", "sig") is None
    assert store.find_result("b", "sig") is not None
    assert store.forget() == 1
    assert list(store.unit_states()) == []
    assert store.iterations("b", "sig") == []


def test_caches_and_named_blobs(store: Store) -> None:
    store.stat_cache_put("/p/a", 1, 2, 3, 4, "h")
    store.stat_cache_put_many([("/p/b", 5, 6, 7, 8, "i"), ("/p/a", 9, 9, 9, 9, "j")])
    assert store.stat_cache_get("/p/a") == (9, 9, 9, 9, "j")
    assert store.stat_cache_get("/p/c") is None
    assert store.stat_cache_all() == {"/p/a": (9, 9, 9, 9, "j"), "/p/b": (5, 6, 7, 8, "i")}
    store.analysis_put("mod:abc", b"\x00info")
    store.kv_put("project", b"resolved")
    store.kv_put("project", b"resolved again")
    assert store.analysis_get("mod:abc") == b"\x00info"
    assert store.kv_get("project") == b"resolved again"
    assert store.kv_get("missing") is None and store.analysis_get("missing") is None


# -- objects ---------------------------------------------------------------------------------


def test_small_objects_live_in_the_database_and_big_ones_in_files(store: Store,
                                                                  state_dir: Path) -> None:
    small = b"s" * (INLINE_LIMIT - 1)
    big = os.urandom(INLINE_LIMIT)
    small_id = store.put_object(small)
    big_id = store.put_object(big)
    assert small_id == blake3(small).hexdigest()
    assert big_id == blake3(big).hexdigest()
    files = [p for p in (state_dir / "objects").rglob("*") if p.is_file()]
    assert files == [state_dir / "objects" / big_id[:2] / big_id[2:]]
    assert store.get_object(small_id) == small
    assert store.get_object(big_id) == big
    with pytest.raises(KeyError):
        store.get_object("00" * 32)


def test_storing_an_object_twice_changes_nothing(store: Store, state_dir: Path) -> None:
    big = os.urandom(INLINE_LIMIT * 2)
    digest = store.put_object(big)
    path = state_dir / "objects" / digest[:2] / digest[2:]
    before = path.stat()
    assert store.put_object(big) == digest
    assert store.put_object(b"x") == store.put_object(b"x")
    assert path.stat().st_ino == before.st_ino and path.stat().st_mtime_ns == before.st_mtime_ns
    assert list((state_dir / "objects").iterdir()) == [path.parent]


def test_a_digest_that_is_not_hex_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="not an object digest"):
        store.put_object(b"x" * INLINE_LIMIT, digest="../../etc/passwd")


def test_leftover_temporary_object_files_go_when_the_lock_is_taken(state_dir: Path) -> None:
    objects = state_dir / "objects"
    objects.mkdir(parents=True)
    leftover = objects / ".tmp-1234-abcdef"
    leftover.write_bytes(b"half an obj")
    s = Store(state_dir)
    assert leftover.exists(), "removed before the lock was held: could be a writer's file"
    s.acquire_lock("build")
    assert not leftover.exists()
    s.close()


# -- kill -9 of a writer ---------------------------------------------------------------------

WRITER_PRELUDE = """
    import os, sys, time
    from pathlib import Path
    from watchrun.state.store import ResultRecord, Store, UnitState, UnitStatus
    s = Store(Path({state_dir!r}))
    s.acquire_lock("writer")
    def record(task, data):
        digest = s.put_object(data)
        s.record_result(ResultRecord(task, "sig", digest, {{}}, 1.0, time.time()))
        return digest
"""


def test_kill_9_keeps_committed_results_and_drops_the_open_transaction(
        state_dir: Path, children: list[subprocess.Popen[str]]) -> None:
    writer = spawn(children, WRITER_PRELUDE.format(state_dir=str(state_dir)) + """
    small = record("small", b"small output")
    big = record("big", os.urandom(200_000))
    s.commit()
    pending = record("pending", b"never committed")
    print(small, big, pending, flush=True)
    sys.stdin.read()
    """)
    small, big, pending = read_line(writer).split()
    kill9(writer)
    s = Store(state_dir)
    s.acquire_lock("next")  # the dead writer's lock is free
    assert s.messages == []
    small_result, big_result = s.find_result("small", "sig"), s.find_result("big", "sig")
    assert small_result is not None and big_result is not None
    assert small_result.output == small
    assert s.get_object(small) == b"small output"
    assert blake3(s.get_object(big_result.output)).hexdigest() == big
    assert s.find_result("pending", "sig") is None
    with pytest.raises(ObjectMissing):  # inline objects go with their transaction
        s.get_object(pending)
    s.close()


def test_kill_9_while_writing_objects_leaves_no_partial_object(
        state_dir: Path, children: list[subprocess.Popen[str]]) -> None:
    writer = spawn(children, WRITER_PRELUDE.format(state_dir=str(state_dir)) + """
    i = 0
    while True:
        record(f"t{i}", os.urandom(16_000_000))
        s.commit()
        print(i, flush=True)
        i += 1
    """)
    committed = [int(read_line(writer)) for _ in range(2)]
    objects = state_dir / "objects"

    def temp_files() -> list[Path]:
        return [p for p in objects.iterdir() if p.name.startswith(".tmp-")]

    deadline = time.monotonic() + 30
    while not temp_files():  # the next object is being written: kill the writer now
        assert time.monotonic() < deadline, "the writer never wrote another object"
    kill9(writer)
    assert temp_files(), "the kill came too late to leave a partial object behind"
    s = Store(state_dir)
    s.acquire_lock("next")
    assert temp_files() == []
    for i in committed:
        found = s.find_result(f"t{i}", "sig")
        assert found is not None
        assert blake3(s.get_object(found.output)).hexdigest() == found.output
    for path in objects.glob("*/*"):
        assert blake3(path.read_bytes()).hexdigest() == path.parent.name + path.name
    s.close()


# -- damaged, foreign and future databases ---------------------------------------------------


def broken_copies(state_dir: Path) -> list[Path]:
    return sorted(p for p in state_dir.iterdir() if p.name.startswith("state.db.broken-"))


def assert_fresh_and_working(state_dir: Path, s: Store) -> None:
    assert s.find_result("a", "sig") is None
    s.record_result(result("a", "o"))
    s.commit()
    with Store(state_dir, readonly=True) as reader:
        assert reader.find_result("a", "sig") == result("a", "o")


def test_a_file_that_is_not_a_database_is_moved_aside(state_dir: Path) -> None:
    state_dir.mkdir()
    (state_dir / "state.db").write_bytes(b"this is not sqlite at all " * 100)
    with Store(state_dir) as s:
        [message] = s.messages
        [broken] = broken_copies(state_dir)
        assert message.startswith(f"state database {state_dir / 'state.db'} was damaged (")
        assert message.endswith(f"moved it to {broken} and started a new one")
        assert broken.read_bytes().startswith(b"this is not sqlite")
        assert_fresh_and_working(state_dir, s)


def test_damaged_tables_are_found_when_opening(state_dir: Path) -> None:
    with Store(state_dir) as s:
        for i in range(200):
            s.record_result(result(f"t{i}", "o" * 100))
    db = state_dir / "state.db"
    assert not (state_dir / "state.db-wal").exists() or \
        (state_dir / "state.db-wal").stat().st_size == 0
    data = bytearray(db.read_bytes())
    page = 4096
    data[page:] = b"\xa5" * (len(data) - page)  # keep the header, ruin every table
    db.write_bytes(bytes(data))
    with Store(state_dir) as s:
        assert len(s.messages) == 1 and "was damaged" in s.messages[0]
        assert len(broken_copies(state_dir)) == 1
        assert_fresh_and_working(state_dir, s)


def test_a_database_of_a_newer_watchrun_is_moved_aside(state_dir: Path) -> None:
    with Store(state_dir) as s:
        s.record_result(result("a", "o"))
    raw = sqlite3.connect(state_dir / "state.db")
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with Store(state_dir) as s:
        [message] = s.messages
        assert "written by another version of watchrun" in message
        assert f"schema version {SCHEMA_VERSION + 1}" in message
        assert len(broken_copies(state_dir)) == 1
        assert_fresh_and_working(state_dir, s)


def test_a_foreign_sqlite_file_is_moved_aside(state_dir: Path) -> None:
    state_dir.mkdir()
    raw = sqlite3.connect(state_dir / "state.db")
    raw.execute("CREATE TABLE results (whatever)")
    raw.commit()
    raw.close()
    with Store(state_dir) as s:
        [message] = s.messages
        assert "not made by watchrun" in message
        assert_fresh_and_working(state_dir, s)


def test_a_damaged_database_in_use_by_another_writer_is_left_alone(
        state_dir: Path, children: list[subprocess.Popen[str]]) -> None:
    state_dir.mkdir()
    (state_dir / "state.db").write_bytes(b"garbage" * 1000)
    holder = spawn(children, f"""
    import sys
    from pathlib import Path
    from watchrun.state.lock import acquire
    lock = acquire(Path({str(state_dir / "lock")!r}), "build")
    print("locked", flush=True)
    sys.stdin.read()
    """)
    assert read_line(holder) == "locked"
    s = Store(state_dir)
    [message] = s.messages
    assert "left it alone" in message and f"pid {holder.pid}" in message
    assert broken_copies(state_dir) == []
    assert (state_dir / "state.db").read_bytes() == b"garbage" * 1000
    with pytest.raises(ReadOnlyStoreError):
        s.record_result(result("a", "o"))
    with pytest.raises(LockedError):
        s.acquire_lock("build")
    kill9(holder)
    s.acquire_lock("build")  # now it is ours to repair
    assert len(s.messages) == 2 and "moved it to" in s.messages[1]
    assert len(broken_copies(state_dir)) == 1
    assert_fresh_and_working(state_dir, s)
    s.close()


# -- read-only stores ------------------------------------------------------------------------


def test_a_read_only_store_of_a_missing_database_is_empty_and_creates_nothing(
        state_dir: Path) -> None:
    with Store(state_dir, readonly=True) as s:
        assert s.find_result("a", "sig") is None
        assert list(s.unit_states()) == []
        assert s.stat_cache_all() == {}
        assert s.iterations("g", "sig") == []
        assert s.messages == []
        with pytest.raises(ReadOnlyStoreError):
            s.record_result(result("a", "o"))
        with pytest.raises(ReadOnlyStoreError):
            s.put_object(b"x")
        with pytest.raises(ReadOnlyStoreError):
            s.acquire_lock("build")
    assert not state_dir.exists()


def test_a_read_only_store_leaves_a_damaged_database_for_the_next_writer(
        state_dir: Path) -> None:
    state_dir.mkdir()
    (state_dir / "state.db").write_bytes(b"garbage" * 1000)
    with Store(state_dir, readonly=True) as s:
        [message] = s.messages
        assert "damaged" in message and "the next build" in message
        assert s.find_result("a", "sig") is None
    assert broken_copies(state_dir) == []
    assert (state_dir / "state.db").read_bytes() == b"garbage" * 1000


def test_readers_see_what_a_running_writer_committed_and_nothing_else(
        state_dir: Path, children: list[subprocess.Popen[str]]) -> None:
    writer = spawn(children, WRITER_PRELUDE.format(state_dir=str(state_dir)) + """
    record("done", b"committed")
    s.set_unit_state(UnitState("done", (), "sig", UnitStatus.OK, "m", None, 1.0, None, 1.0))
    s.commit()
    record("running", b"not yet")
    print("ready", flush=True)
    sys.stdin.read()
    s.commit()
    print("committed", flush=True)
    sys.stdin.read()
    """)
    assert read_line(writer) == "ready"
    reader = Store(state_dir, readonly=True)
    assert reader.find_result("done", "sig") is not None
    assert [u.task for u in reader.unit_states()] == ["done"]
    assert reader.find_result("running", "sig") is None
    with pytest.raises(LockedError) as locked:
        Store(state_dir).acquire_lock("build")
    assert locked.value.holder is not None and locked.value.holder.pid == writer.pid
    assert writer.stdin is not None
    writer.stdin.write("go\n")
    writer.stdin.close()
    assert read_line(writer) == "committed"
    assert reader.find_result("running", "sig") is not None  # the same reader, later
    reader.close()


# -- process groups --------------------------------------------------------------------------


def test_groups_of_a_killed_watchrun_are_ended_by_the_next_one(
        state_dir: Path, children: list[subprocess.Popen[str]]) -> None:
    watchrun = spawn(children, f"""
    import subprocess, sys
    from pathlib import Path
    from watchrun.state.pgroups import process_start_time
    from watchrun.state.store import Store
    s = Store(Path({str(state_dir)!r}))
    s.acquire_lock("build")
    task = subprocess.Popen(["sleep", "60"], start_new_session=True)
    s.record_pgroup(task.pid, process_start_time(task.pid))
    print(task.pid, flush=True)
    sys.stdin.read()
    """)
    task_pid = int(read_line(watchrun))
    kill9(watchrun)
    assert not wait_gone(task_pid, timeout=0), "the task died with watchrun: nothing to test"
    s = Store(state_dir)
    s.acquire_lock("build")
    assert s.reap_stale_pgroups() == [task_pid]
    assert wait_gone(task_pid)
    assert s.recorded_pgroups() == []
    s.close()


def test_a_reused_pid_is_left_alone(store: Store, children: list[subprocess.Popen[str]]
                                    ) -> None:
    other = subprocess.Popen(["sleep", "60"], start_new_session=True, text=True)
    children.append(other)
    start = process_start_time(other.pid)
    assert start is not None
    store.record_pgroup(other.pid, start - 100.0)  # "ours" was a different process
    assert store.reap_stale_pgroups() == []
    assert other.poll() is None
    assert store.recorded_pgroups() == []


def test_a_group_whose_leader_exited_is_still_ended(
        store: Store, children: list[subprocess.Popen[str]]) -> None:
    leader = subprocess.Popen(["sh", "-c", "sleep 60 & echo $!"], start_new_session=True,
                              stdout=subprocess.PIPE, text=True)
    children.append(leader)
    member = int(read_line(leader))
    leader.wait()  # gone, and reaped: its pid names no process now
    assert process_start_time(leader.pid) is None
    store.record_pgroup(leader.pid, 12345.0)
    assert store.reap_stale_pgroups() == [leader.pid]
    assert wait_gone(member)


def test_process_start_time_names_one_process() -> None:
    import psutil

    mine = process_start_time(os.getpid())
    assert mine is not None and abs(mine - psutil.Process().create_time()) < 0.05
    assert mine < time.time()
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    assert process_start_time(pid_max + 1) is None


def test_results_are_committed_once_a_megabyte_waits_without_waiting_for_the_timer(
        store: Store, state_dir: Path) -> None:
    """A transaction holds at most about COMMIT_BYTES of results: a disk that fills mid-build
    (or a crash) can take no more than that, and what fitted stays committed."""
    import asyncio

    from watchrun.engine.recorder import COMMIT_BYTES, Recorder
    from watchrun.state.hashing import FileHasher

    size = 60_000  # stored as a row (under INLINE_LIMIT)
    recorder = Recorder(store, FileHasher(store), resolver=None)  # type: ignore[arg-type]

    def committed_objects() -> int:
        with sqlite3.connect(state_dir / "state.db") as other:
            return int(other.execute("SELECT count(*) FROM objects").fetchone()[0])

    async def record() -> int:
        for _ in range(40):  # never awaiting: the COMMIT_EVERY timer cannot fire meanwhile
            store.put_object(os.urandom(size))
            recorder.soon()
        return committed_objects()

    seen = asyncio.run(record())
    per_commit = COMMIT_BYTES // size + 1
    assert seen == (40 // per_commit) * per_commit >= per_commit
