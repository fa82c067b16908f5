"""Faults the store meets on its own: foreign, damaged or planted state, undecodable text, a
lock whose holder died. Real SQLite files, real processes; the full-disk and read-only cases
need a mount and live in test_chaos.py."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import cli_env
from watchrun.state import owner
from watchrun.state.lock import acquire, read_holder
from watchrun.state.store import (
    INLINE_LIMIT,
    ObjectDamaged,
    ObjectMissing,
    ResultRecord,
    Store,
    UnitState,
    UnitStatus,
)


@pytest.fixture(autouse=True)
def own_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test is a user of its own: its key lives in its tmp folder."""
    home = tmp_path / "user-state"
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    return home


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "proj" / ".watchrun"


def record_output(store: Store, task: str, value: object) -> str:
    digest = store.put_object(pickle.dumps(value))
    store.record_result(ResultRecord(task, "sig", digest, {}, 1.0, 1.0))
    store.set_unit_state(UnitState(task, (), "sig", UnitStatus.OK, "m", digest, 1.0, None, 1.0))
    return digest


def readable(store: Store, digest: str) -> bool:
    """Whether the object is stored (and whole)."""
    try:
        store.get_object(digest)
    except ObjectMissing:
        return False
    return True


def object_file(state_dir: Path, digest: str) -> Path:
    return state_dir / "objects" / digest[:2] / digest[2:]


# -- who wrote the state (issue 17, point 13) --------------------------------------------------


def test_a_new_state_is_stamped_for_its_user_and_trusted_again(state_dir: Path,
                                                               own_key: Path) -> None:
    with Store(state_dir) as s:
        record_output(s, "a", 1)
    assert (own_key / "watchrun" / "key").stat().st_mode & 0o777 == 0o600
    for readonly in (True, False):
        with Store(state_dir, readonly=readonly) as s:
            assert s.messages == []
            assert s.find_result("a", "sig") is not None


def test_a_copied_state_folder_is_not_read_and_a_writer_moves_it_aside(
        tmp_path: Path, state_dir: Path) -> None:
    """A tarball or a repository brings its .watchrun along: a copy has new inodes, so its
    stamp (made for the original file) does not match, whoever made it."""
    with Store(state_dir) as s:
        s.kv_put("project", pickle.dumps("anything"))
        record_output(s, "a", 1)
    copy = tmp_path / "copy" / ".watchrun"
    shutil.copytree(state_dir, copy)
    with Store(copy, readonly=True) as reader:
        [message] = reader.messages
        assert "was not written by watchrun for this user" in message
        assert reader.kv_get("project") is None and reader.find_result("a", "sig") is None
    with Store(copy) as writer:
        [message] = writer.messages
        assert "was not written by watchrun for this user" in message
        assert "moved it to" in message
        assert writer.kv_get("project") is None
        record_output(writer, "b", 2)
    with Store(copy, readonly=True) as reader:
        assert reader.messages == [] and reader.find_result("b", "sig") is not None


def test_a_state_written_by_another_user_is_not_trusted(state_dir: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    with Store(state_dir) as s:
        record_output(s, "a", 1)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "someone-else"))
    with Store(state_dir, readonly=True) as reader:
        assert len(reader.messages) == 1 and reader.find_result("a", "sig") is None


def test_an_empty_database_without_a_stamp_is_adopted_quietly(state_dir: Path) -> None:
    """What a writer killed between creating the database and stamping it leaves."""
    with Store(state_dir):
        pass
    (state_dir / owner.STAMP_FILE).unlink()
    with Store(state_dir, readonly=True) as reader:
        assert reader.messages == []
    with Store(state_dir) as writer:
        assert writer.messages == []
        assert (state_dir / owner.STAMP_FILE).exists()


def test_a_key_others_can_read_authenticates_nothing(state_dir: Path, own_key: Path) -> None:
    with Store(state_dir) as s:
        record_output(s, "a", 1)
    (own_key / "watchrun" / "key").chmod(0o644)
    owner._cached.clear()
    with Store(state_dir, readonly=True) as reader:
        [message] = reader.messages
        assert "was not authenticated" in message and "not private" in message


# -- objects (points 6, 7, 15) ---------------------------------------------------------------


@pytest.mark.parametrize("size", [10, INLINE_LIMIT * 2])
def test_a_damaged_object_is_refused_and_its_result_not_stored(state_dir: Path,
                                                                size: int) -> None:
    with Store(state_dir) as s:
        digest = record_output(s, "a", b"v" * size)
    if size >= INLINE_LIMIT:
        path = object_file(state_dir, digest)
        data = bytearray(path.read_bytes())
        data[-3] ^= 1
        path.write_bytes(bytes(data))
    else:
        db = sqlite3.connect(state_dir / "state.db")
        db.execute("UPDATE objects SET data = ? WHERE digest = ?",
                   (pickle.dumps(b"w" * size), digest))
        db.commit()
        db.close()
    with Store(state_dir) as s:
        with pytest.raises(ObjectDamaged, match="damaged"):
            s.get_object(digest)
        [found] = s.last_units()[1]
        assert found.stored is False
        if size >= INLINE_LIMIT:
            assert not object_file(state_dir, digest).exists(), "a writer removes it"
        # the producer runs again and stores the same bytes: found whole again
        assert s.put_object(pickle.dumps(b"v" * size)) == digest
        assert pickle.loads(s.get_object(digest)) == b"v" * size


def test_a_missing_object_is_a_result_not_stored(state_dir: Path) -> None:
    with Store(state_dir) as s:
        digest = record_output(s, "a", b"v" * INLINE_LIMIT * 2)
    object_file(state_dir, digest).unlink()
    with Store(state_dir, readonly=True) as s:
        assert s.find_result("a", "sig").stored is False  # type: ignore[union-attr]
        with pytest.raises(ObjectMissing, match="missing"):
            s.load_object(digest)
        with pytest.raises(KeyError):
            s.get_object(digest)


def test_a_touched_object_is_hashed_again_and_kept(state_dir: Path) -> None:
    with Store(state_dir) as s:
        digest = record_output(s, "a", b"v" * INLINE_LIMIT * 2)
    os.utime(object_file(state_dir, digest), (1, 1))
    with Store(state_dir) as s:
        [found] = s.last_units()[1]
        assert found.stored is True


def test_a_big_object_written_in_place_is_adopted_and_loaded_from_its_file(
        state_dir: Path) -> None:
    value = {"rows": list(range(50_000))}
    with Store(state_dir) as s:
        s.acquire_lock("test")
        fd, path = s.new_object_file()
        with os.fdopen(fd, "wb") as f:
            pickle.dump(value, f)
        digest = s.adopt_object(path)
        assert not path.exists() and object_file(state_dir, digest).is_file()
        assert s.load_object(digest) == value
        fd, small = s.new_object_file()
        os.write(fd, pickle.dumps("small"))
        os.close(fd)
        assert s.load_object(s.adopt_object(small)) == "small"


# -- undecodable text (point 8) --------------------------------------------------------------


def test_a_lone_surrogate_in_a_message_loses_no_batch_mate(state_dir: Path) -> None:
    name = os.fsdecode(b"caf\xe9.csv")  # what os.listdir gives for a name that is not UTF-8
    with Store(state_dir) as s:
        record_output(s, "mate", 1)
        s.set_unit_state(UnitState("bad", (), "sig", UnitStatus.FAILED, "m", None, 1.0,
                                   f"cannot parse {name}", 1.0))
        s.stat_cache_put(f"/data/{name}", 1, 2, 3, 4, "h")
        s.commit()
    with Store(state_dir, readonly=True) as s:
        assert s.find_result("mate", "sig") is not None
        assert s.unit_state("bad").error == "cannot parse caf\\udce9.csv"  # type: ignore[union-attr]


# -- symlinks planted in the state folder (point 14) -----------------------------------------


def test_planted_symlinks_are_removed_not_written_through(state_dir: Path,
                                                           tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    with Store(state_dir) as s:
        record_output(s, "a", 1)
    for name in ("lock", "state.db-wal", "state.db-shm", "logs"):
        path = state_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        path.symlink_to(victim)
    outside = tmp_path / "outside"
    outside.mkdir()
    with Store(state_dir) as s:
        s.acquire_lock("build")
        big = s.put_object(b"b" * INLINE_LIMIT * 2)
        (state_dir / "objects" / "ab").symlink_to(outside, target_is_directory=True)
        s.put_object(b"x" * INLINE_LIMIT * 3, digest="ab" + big[2:])
        record_output(s, "b", 2)
    assert victim.read_text() == "precious"
    assert list(outside.iterdir()) == []
    for name in ("lock", "state.db-wal", "logs"):
        assert not (state_dir / name).is_symlink()


def test_a_symlink_in_place_of_the_database_is_moved_aside(state_dir: Path,
                                                           tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    with Store(elsewhere) as s:
        record_output(s, "a", 1)
    state_dir.mkdir(parents=True)
    (state_dir / "state.db").symlink_to(elsewhere / "state.db")
    with Store(state_dir) as s:
        [message] = s.messages
        assert "a symbolic link" in message
        assert not (state_dir / "state.db").is_symlink()
    with Store(elsewhere, readonly=True) as s:
        assert s.find_result("a", "sig") is not None


# -- the lock (smaller items) ----------------------------------------------------------------


def test_a_killed_holder_is_not_named_after_its_death(state_dir: Path) -> None:
    state_dir.mkdir(parents=True)
    code = textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        from watchrun.state.lock import acquire
        lock = acquire(Path({str(state_dir / 'lock')!r}), "build doomed")
        os.write(1, b"locked\\n")
        sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=cli_env())
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"locked\n"
        holder = read_holder(state_dir / "lock")
        assert holder is not None and holder.pid == proc.pid
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
    assert b"build doomed" in (state_dir / "lock").read_bytes()  # what kill -9 leaves
    assert read_holder(state_dir / "lock") is None
    lock = acquire(state_dir / "lock", "build next")
    try:
        assert b"build doomed" not in (state_dir / "lock").read_bytes()
    finally:
        lock.release()


# -- the project folder moved under a running command (point 12) -----------------------------


def test_a_store_says_when_its_project_folder_was_moved(tmp_path: Path) -> None:
    state_dir = tmp_path / "proj" / ".watchrun"
    with Store(state_dir) as s:
        assert s.folder_moved() is None
        (tmp_path / "proj").rename(tmp_path / "renamed")
        message = s.folder_moved()
        assert message is not None and "was renamed, moved or deleted" in message
        (tmp_path / "proj").mkdir()  # another folder under the old name is not the project
        assert s.folder_moved() is not None
        s.release_lock_quietly()


# -- a full database (point 3; the real full disk is in test_chaos.py) ------------------------


def test_a_commit_that_does_not_fit_keeps_its_statements_and_loses_nothing_committed(
        state_dir: Path) -> None:
    """SQLite's page limit gives the same SQLITE_FULL as a full disk, without a mount."""
    from watchrun.state.store import StateFull

    with Store(state_dir) as s:
        s.acquire_lock("build")
        record_output(s, "before", "committed")
        s.commit()
        db = s._db
        assert db is not None
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages + 2}")
        digests = [record_output(s, f"t{i}", os.urandom(3000)) for i in range(60)]
        with pytest.raises(StateFull, match="no space left on device") as full:
            s.commit()
        assert full.value.kept > 0 and s.unsaved > 0
        some = s.find_result("before", "sig")
        assert some is not None and some.stored, "what was committed is still there"
        assert s.get_object(digests[-1]), "a kept object can still be read"
        with pytest.raises(StateFull):  # still no room: kept again, nothing raised elsewhere
            s.commit()
        db.execute("PRAGMA max_page_count = 1000000")
        s.commit()
        assert s.unsaved == 0
    with Store(state_dir, readonly=True) as s:
        for i, digest in enumerate(digests):
            found = s.find_result(f"t{i}", "sig")
            assert found is not None and found.output == digest and found.stored
        assert s.find_result("before", "sig") is not None


def test_what_fits_is_committed_piece_by_piece(state_dir: Path) -> None:
    from watchrun.state.store import StateFull

    with Store(state_dir) as s:
        s.acquire_lock("build")
        s.commit()
        db = s._db
        assert db is not None
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages + 12}")
        digests = [record_output(s, f"t{i}", os.urandom(3000)) for i in range(40)]
        for _ in range(2):  # the first commit fails whole, the retry commits what fits
            with pytest.raises(StateFull):
                s.commit()
        with Store(state_dir, readonly=True) as reader:
            saved = [readable(reader, digest) for digest in digests]
        assert 0 < sum(saved) < 40
        assert saved == sorted(saved, reverse=True), "in the order they were recorded"
        db.execute("PRAGMA max_page_count = 1000000")
    with Store(state_dir, readonly=True) as reader:  # the rest, once there was room
        assert all(reader.find_result(f"t{i}", "sig") is not None for i in range(40))


def test_temporary_files_of_a_killed_writer_go_when_the_lock_is_taken(state_dir: Path) -> None:
    with Store(state_dir):
        pass
    left = [state_dir / ".clean.proof.123-abcd.tmp", state_dir / ".owner.99-ef01.tmp"]
    for path in left:
        path.write_bytes(b"half")
    with Store(state_dir) as s:
        assert all(path.exists() for path in left), "not before the lock is held"
        s.acquire_lock("build")
        assert not any(path.exists() for path in left)
        assert (state_dir / owner.STAMP_FILE).exists()
