"""The null-build proof end to end: `watchrun build` answers "all clean" from stats, and never
when a normal build would run something.

Whether the proof answered is seen from the proof file: the normal build deletes it when it
takes the lock and writes a new one, the proof check leaves it alone.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest

from tests.conftest import spawn_watchrun, wait_for, watchrun, write_project

pytestmark = pytest.mark.usefixtures("no_leaks")

FILES = {
    "watchrun.toml": "jobs = 2\n",
    "data/a.txt": "alpha\n",
    "data/many/x.csv": "1\n",
    "data/many/y.csv": "2\n",
    "data/folder/inner.txt": "inside\n",
    "lib/__init__.py": "",
    "lib/util.py": '''
        def shout(s):
            return s.upper()
    ''',
    "tasks/read.py": '''
        # /// task
        # inputs = ["data/a.txt"]
        # outputs = ["out/read.txt"]
        # ///
        from pathlib import Path

        from lib.util import shout


        def run(inputs):
            text = shout(inputs[0].read_text())
            Path("out").mkdir(exist_ok=True)
            Path("out/read.txt").write_text(text)
            return text
    ''',
    "tasks/table.py": '''
        # /// task
        # inputs = ["data/many/*.csv", "data/folder"]
        # ///
        def run(inputs):
            return sorted(p.name for p in inputs)
    ''',
    "tasks/report.py": '''
        # /// task
        # after = ["read", "table"]
        # ///
        def run(read, table):
            return f"{read.strip()} {table}"
    ''',
}
UNITS = 3


def proof_of(root: Path) -> Path:
    return root / ".watchrun" / "clean.proof"


def summary(out: str) -> str:
    return out.strip().splitlines()[-1]


def ran(out: str) -> int:
    return int(summary(out).split("ran ")[1].split(",")[0])


@pytest.fixture
def built(tmp_path: Path) -> Path:
    """A built project whose null build has left a proof."""
    root = write_project(tmp_path / "p", FILES)
    assert watchrun(root, "build").code == 0
    # -v is never answered by the proof: a normal null build, whose proof can give the events
    second = watchrun(root, "build", "-v")
    assert second.code == 0 and ran(second.stdout) == 0, second.stdout + second.stderr
    assert proof_of(root).exists()
    return root


def answered_by_proof(root: Path, *args: str) -> tuple[bool, str]:
    """Run `build`; whether the proof answered (its file untouched), and stdout."""
    before = proof_stamp(root)
    result = watchrun(root, "build", *args)
    assert result.code == 0, result.stdout + result.stderr
    return before is not None and before == proof_stamp(root), result.stdout


def proof_stamp(root: Path) -> tuple[int, int] | None:
    """A rewritten proof has a newer ctime (its inode number may be reused)."""
    try:
        st = proof_of(root).stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_ctime_ns


def test_a_null_build_is_answered_by_the_proof_with_the_same_summary(built: Path) -> None:
    proved, out = answered_by_proof(built)
    assert proved
    assert summary(out) == f"watchrun: ok: ran 0, clean {UNITS}, failed 0, cancelled 0"


@pytest.mark.parametrize("change", [
    "edit an input", "delete an output", "edit a local module", "edit a task",
    "add a file a glob matches", "edit a file in an input folder", "edit the settings",
    "edit keeping size and mtime",
])
def test_a_change_is_never_answered_by_the_proof(built: Path, change: str) -> None:
    expected = {"edit an input": 2, "delete an output": 1, "edit a local module": 2,
                "edit a task": 1, "add a file a glob matches": 2,
                "edit a file in an input folder": 1, "edit the settings": 0,
                "edit keeping size and mtime": 2}[change]
    if change == "edit an input":
        (built / "data/a.txt").write_text("beta\n")
    elif change == "delete an output":
        (built / "out/read.txt").unlink()
    elif change == "edit a local module":
        (built / "lib/util.py").write_text("def shout(s):\n    return s.upper() + '!'\n")
    elif change == "edit a task":
        path = built / "tasks/report.py"
        path.write_text(path.read_text().replace('f"{read.strip()} {table}"', '"new"'))
    elif change == "add a file a glob matches":
        (built / "data/many/z.csv").write_text("3\n")
    elif change == "edit a file in an input folder":
        (built / "data/folder/inner.txt").write_text("changed\n")
    elif change == "edit the settings":
        (built / "watchrun.toml").write_text("jobs = 1\n")
    else:  # same size, mtime put back: only the ctime and the content differ
        path = built / "data/a.txt"
        st = path.stat()
        path.write_text("gamma\n")
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    proved, out = answered_by_proof(built)
    assert not proved
    assert ran(out) == expected, out


def test_a_cosmetic_edit_reruns_nothing_and_the_next_build_is_proved_again(built: Path) -> None:
    path = built / "tasks/report.py"
    path.write_text("# a comment\n" + path.read_text().replace("# ///\n", "# ///\n\n", 1))
    proved, out = answered_by_proof(built)
    assert not proved and ran(out) == 0
    proved, out = answered_by_proof(built)
    assert proved and ran(out) == 0


def test_touching_every_file_reruns_nothing_and_keeps_the_fast_answer(built: Path) -> None:
    old = time.time() - 3600  # an hour ago: settled, so the new stat keys are kept
    for path in built.rglob("*"):
        if path.is_file() and ".watchrun" not in path.parts and path.suffix != ".py":
            os.utime(path, (old, old))
    time.sleep(0.1)  # past the racy window: the hashes of the touched files can be kept
    proved, out = answered_by_proof(built)
    assert ran(out) == 0, out
    assert proof_of(built).exists()  # hashed again: the same content, so still proved
    proved, out = answered_by_proof(built)  # with the new stat keys: no hashing this time
    assert proved and ran(out) == 0, out


def test_other_targets_go_through_the_normal_build(built: Path) -> None:
    proved, out = answered_by_proof(built, "read")
    assert not proved and summary(out) == "watchrun: ok: ran 0, clean 1, failed 0, cancelled 0"
    proved, out = answered_by_proof(built, "read")
    assert proved and summary(out) == "watchrun: ok: ran 0, clean 1, failed 0, cancelled 0"


def events_without_time(out: str) -> list[dict[str, object]]:
    events = [json.loads(line) for line in out.splitlines()]
    for event in events:
        assert isinstance(event.pop("time"), float)
    return events


def test_json_is_answered_with_the_events_of_the_null_build_that_wrote_the_proof(
        built: Path) -> None:
    normal = watchrun(built, "build", "-v", "--json")  # -v: never answered by the proof
    proved, replayed = answered_by_proof(built, "--json")
    assert proved
    assert events_without_time(replayed) == events_without_time(normal.stdout)
    assert [e["event"] for e in events_without_time(replayed)] == \
        ["build_started"] + ["unit_skipped"] * UNITS + ["build_finished"]


def test_json_after_a_plain_build_takes_the_normal_build(built: Path) -> None:
    proved, out = answered_by_proof(built, "--json")  # the proof has no lines to replay
    assert not proved and "unit_skipped" in out
    proved, _ = answered_by_proof(built, "--json")
    assert proved


def test_json_after_a_build_that_ran_something_takes_the_normal_build(built: Path) -> None:
    (built / "data/a.txt").write_text("beta\n")
    assert watchrun(built, "build", "--json").stdout.count("unit_finished") == 2
    proved, out = answered_by_proof(built, "--json")  # a proof, but not of a null build's events
    assert not proved and "unit_skipped" in out
    proved, _ = answered_by_proof(built)  # the plain summary needs no events
    assert proved


def test_a_deleted_store_is_noticed(built: Path) -> None:
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (built / ".watchrun" / name).unlink(missing_ok=True)
    proved, out = answered_by_proof(built)
    assert not proved and ran(out) == UNITS


def test_the_proof_never_answers_while_another_writer_holds_the_lock(built: Path) -> None:
    write_project(built, {"tasks/slow.py": '''
        # /// task
        # ///
        import time


        def run():
            time.sleep(30)
    '''})
    writer = spawn_watchrun(built, "build", "slow")
    try:
        lock = built / ".watchrun" / "lock"
        wait_for(lambda: lock.exists() and b"pid" in lock.read_bytes(), what="the lock")
        # the writer discards it right after taking the lock (a slow machine shows the gap)
        wait_for(lambda: not proof_of(built).exists(), what="the writer to discard the proof")
        result = watchrun(built, "build")
        assert result.code == 2 and "another watchrun" in result.stderr
    finally:
        writer.terminate()
        writer.communicate(timeout=30)


def test_null_builds_look_together_but_a_writer_waits_for_them(built: Path) -> None:
    """The check holds the lock shared: another null build looking at the same moment is
    answered too, while a writer is kept out until the look is over."""
    from watchrun.state.lock import try_lock

    state_dir = str(built / ".watchrun")
    with try_lock(state_dir, shared=True) as looking:  # another null build, mid-check
        assert looking
        proved, out = answered_by_proof(built)
        assert proved and ran(out) == 0
        forced = watchrun(built, "build", "--force")  # a writer
        assert forced.code == 2 and "another watchrun" in forced.stderr
    assert watchrun(built, "build", "--force").code == 0


def test_random_changes_agree_with_status(built: Path) -> None:
    """Differential: whatever changed, what `status` (the scheduler's dry run) says would run
    is what `build` runs, proof or not."""
    rng = random.Random(7)
    files = ["data/a.txt", "data/many/x.csv", "data/folder/inner.txt", "out/read.txt",
             "lib/util.py"]
    for step in range(12):
        action = rng.choice(["edit", "touch", "same", "delete", "nothing"])
        path = built / rng.choice(files)
        if action == "edit" and path.suffix != ".py":
            path.write_text(f"step {step}\n")
        elif action == "touch" and path.exists():
            os.utime(path)
        elif action == "delete" and path.name == "read.txt" and path.exists():
            path.unlink()
        elif action == "same" and path.exists():
            path.write_text(path.read_text())
        status = watchrun(built, "status", "--json")
        dirty = [json.loads(line)["task"] for line in status.stdout.splitlines()
                 if json.loads(line)["state"] != "clean"]
        result = watchrun(built, "build")
        assert result.code == 0, result.stderr
        # early cutoff may spare a unit `status` counts as dirty by its upstream, never more
        count = ran(result.stdout)
        assert (count == 0) == (not dirty) and count <= len(dirty), (
            step, action, path, status.stdout, result.stdout)


def test_a_full_build_leaves_a_proof_that_counts_like_a_normal_null_build(tmp_path: Path
                                                                          ) -> None:
    root = write_project(tmp_path / "g", {
        "tasks/numbers.py": '''
            # /// task
            # kind = "generator"
            # ///
            def run():
                yield from range(5)
        ''',
        "tasks/double.py": '''
            # /// task
            # after = ["numbers"]
            # ///
            def run(numbers):
                return numbers * 2
        ''',
        "tasks/total.py": '''
            # /// task
            # kind = "collector"
            # after = ["double"]
            # ///
            seen = []


            def run(double):
                seen.append(double)


            def gather():
                return sum(seen)
        ''',
    })
    first = watchrun(root, "build")
    assert first.code == 0 and ran(first.stdout) == 7, first.stdout + first.stderr
    proved, out = answered_by_proof(root)
    assert proved, out
    normal = watchrun(root, "build", "-v")  # -v: never answered by the proof
    assert summary(out) == summary(normal.stdout) == \
        "watchrun: ok: ran 0, clean 7, failed 0, cancelled 0"


def test_a_failed_build_leaves_no_proof(tmp_path: Path) -> None:
    root = write_project(tmp_path / "f", {
        "data/flag.txt": "fail\n",
        "tasks/check.py": '''
            # /// task
            # inputs = ["data/flag.txt"]
            # ///
            def run(inputs):
                if inputs[0].read_text().strip() == "fail":
                    raise ValueError("flag says fail")
        ''',
    })
    assert watchrun(root, "build").code == 1
    assert not proof_of(root).exists()
    again = watchrun(root, "build")
    assert again.code == 1 and "flag says fail" in again.stdout
