"""The chaos suite (issue 17): each fault created for real against the real CLI — a full disk
(tmpfs), a read-only bind mount, planted symlinks, names that are not UTF-8, damaged and
missing state, a crafted pickle in a state that came with the project, and kill -9 of `build`
and `dev` at random moments, again and again.

Each case checks what a user sees: the exit code, one clear message and no traceback, results
identical to those of a clean build, and no process left behind. Marked `chaos` (run by
`.ci/run`, or `pytest -m chaos`); mounting needs root, and the cases that need it say so when
they are skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import (
    Run,
    cli_env,
    spawn_watchrun,
    wait_for,
    watchrun,
    worker_processes,
    write_project,
)

pytestmark = [pytest.mark.chaos, pytest.mark.usefixtures("no_leaks")]


@pytest.fixture(autouse=True)
def own_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The per-user key of these runs lives in the test's folder (the CLI inherits it)."""
    home = tmp_path / "user-state"
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    return home


def no_traceback(run: Run) -> None:
    """No traceback of watchrun's own (a failing task's traceback is shown, as it should)."""
    assert "Traceback" not in run.stderr, run.stderr
    own = [line for line in run.stdout.splitlines()
           if 'File "' in line and f"{os.sep}watchrun{os.sep}" in line]
    assert own == [], run.stdout


def one_error(run: Run) -> str:
    """The single `watchrun: error:` line of a run (and no traceback)."""
    no_traceback(run)
    errors = [line for line in run.stderr.splitlines() if line.startswith("watchrun: error")]
    assert len(errors) == 1, run.stderr
    return errors[0]


def shown(root: Path, task: str) -> str:
    run = watchrun(root, "show", task, "--json")
    assert run.code == 0, run.stderr
    return run.stdout


# -- mounts ----------------------------------------------------------------------------------


def _mount(*args: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs or a bind mount needs root (CI runs as root)")
    proc = subprocess.run(["mount", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount here ({proc.stderr.strip()}): this fault needs a mount")


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[Path]:
    _mount("--bind", str(path), str(path))
    try:
        _mount("-o", "remount,bind,ro", str(path))
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def resize(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


# -- a full disk (point 3) -------------------------------------------------------------------

def blob_task(index: int, size: int) -> str:
    """A task whose output is `size` bytes that depend only on its index (no compression
    helps SQLite: the disk fills for real)."""
    return f'''
        # /// task
        # ///
        import hashlib

        def run():
            seed = hashlib.sha256(b"{index}").digest()
            return hashlib.shake_256(seed).digest({size})
    '''


def test_an_output_that_does_not_fit_fails_its_unit_and_the_rest_goes_on(
        tmp_path: Path) -> None:
    root = write_project(tmp_path / "proj", {
        "tasks/huge.py": blob_task(0, 3_000_000),
        "tasks/small.py": blob_task(1, 100),
        "tasks/after.py": """
            # /// task
            # after = ["huge"]
            # ///
            def run(huge):
                return len(huge)
        """,
    })
    with tmpfs(root / ".watchrun", "1m") as state:
        run = watchrun(root, "build", timeout=60)
        assert run.code == 1, run.stderr
        no_traceback(run)
        assert "FAILED huge  no space left on device writing its output" in run.stdout
        assert "done small" in run.stdout and "run after" not in run.stdout
        resize(state, "20m")
        again = watchrun(root, "build")
        assert again.code == 0, again.stderr
        assert "run huge" in again.stdout and "run small" not in again.stdout
        assert shown(root, "after") == "3000000\n"


def test_a_yield_that_does_not_fit_fails_its_generator(tmp_path: Path) -> None:
    root = write_project(tmp_path / "proj", {
        "tasks/gen.py": """
            # /// task
            # kind = "generator"
            # ///
            import time

            def run():
                yield b"small"
                yield b"x" * 3_000_000
                time.sleep(30)  # cancelled long before
                yield b"never"
        """,
        "tasks/use.py": """
            # /// task
            # after = ["gen"]
            # ///
            def run(gen):
                return len(gen)
        """,
    })
    with tmpfs(root / ".watchrun", "1m"):
        started = time.monotonic()
        run = watchrun(root, "build", timeout=60)
        assert time.monotonic() - started < 20, "the generator was stopped, not waited for"
        assert run.code == 1, run.stderr
        no_traceback(run)
        assert "FAILED gen  no space left on device writing its output" in run.stdout


def test_a_disk_that_fills_while_results_are_committed_loses_nothing_committed(
        tmp_path: Path) -> None:
    files = {f"tasks/t{i:03}.py": blob_task(i, 20_000) for i in range(200)}
    root = write_project(tmp_path / "proj", {"watchrun.toml": "jobs = 2\n", **files})
    clean = write_project(tmp_path / "clean", files)
    assert watchrun(clean, "build", timeout=120).code == 0
    with tmpfs(root / ".watchrun", "3000k") as state:
        run = watchrun(root, "build", timeout=120)
        assert run.code == 2, run.stderr
        message = one_error(run)
        assert "no space left on device" in message and "run again next time" in message
        saved = [line.split()[1] for line in watchrun(root, "status").stdout.splitlines()
                 if line.split()[0] == "clean"]
        assert saved, "what fitted was committed"
        resize(state, "30m")
        again = watchrun(root, "build", "--json", timeout=120)
        assert again.code == 0, again.stderr
        assert sorted(t for t, _ in again.units("unit_skipped")) == sorted(saved)
        assert len(again.units("unit_started")) == 200 - len(saved)
        for name in ("t000", "t117", "t199"):
            assert shown(root, name) == shown(clean, name)


# -- a read-only state folder (point 4) ------------------------------------------------------


def test_a_read_only_state_folder_is_one_message_and_exit_2(tmp_path: Path) -> None:
    root = write_project(tmp_path / "proj", {"tasks/a.py": blob_task(0, 10)})
    assert watchrun(root, "build").code == 0
    (root / "tasks/a.py").write_text((root / "tasks/a.py").read_text() + "# edited\n")
    with read_only(root / ".watchrun"):
        for args in (("build",), ("clean",), ("dev", "--no-tui")):
            run = watchrun(root, *args, timeout=30)
            assert run.code == 2, (args, run.stderr)
            assert "is on a read-only file system" in one_error(run)
        status = watchrun(root, "status")
        assert status.code == 0 and "clean  a" in status.stdout
    assert watchrun(root, "build").code == 0


# -- damaged and missing state (points 5, 6, 7) ----------------------------------------------

CHAIN = {
    "tasks/source.py": blob_task(7, 200_000),  # an object file (bigger than INLINE_LIMIT)
    "tasks/small.py": blob_task(8, 100),  # an object row in the database
    "tasks/sink.py": """
        # /// task
        # after = ["source", "small"]
        # ///
        import hashlib

        def run(source, small):
            return hashlib.sha256(source + small).hexdigest()
    """,
}


def test_a_database_damaged_in_place_is_noticed_by_the_null_build(tmp_path: Path) -> None:
    root = write_project(tmp_path / "proj", CHAIN)
    assert watchrun(root, "build").code == 0
    expected = shown(root, "sink")
    db = root / ".watchrun" / "state.db"
    for damage in ("truncate", "header", "zero"):
        for _ in range(10):  # a proof is left once the files are old enough to trust
            assert watchrun(root, "build").code == 0
            if (root / ".watchrun" / "clean.proof").exists():
                break
            time.sleep(0.1)
        assert (root / ".watchrun" / "clean.proof").exists(), (damage, sorted(
            p.name for p in (root / ".watchrun").iterdir()), watchrun(root, "build").stderr)
        proof_before = (root / ".watchrun" / "clean.proof").stat().st_mtime_ns
        time.sleep(0.01)
        if damage == "truncate":
            os.truncate(db, db.stat().st_size // 2)
        elif damage == "zero":
            os.truncate(db, 0)
        else:
            fd = os.open(db, os.O_RDWR)
            os.pwrite(fd, b"not a database at all " * 5, 0)
            os.close(fd)
        run = watchrun(root, "build", "--json")
        no_traceback(run)
        assert run.code == 0, run.stderr
        # the normal build decided (it deleted the proof as it took the lock; it may have
        # left a new one), and the results are right
        proof = root / ".watchrun" / "clean.proof"
        assert not proof.exists() or proof.stat().st_mtime_ns != proof_before
        assert shown(root, "sink") == expected
        assert watchrun(root, "build", "--json").ran() == []


def test_a_missing_or_damaged_object_reruns_its_producer(tmp_path: Path) -> None:
    root = write_project(tmp_path / "proj", CHAIN)
    assert watchrun(root, "build").code == 0
    expected = shown(root, "sink")
    [path] = [p for p in (root / ".watchrun" / "objects").rglob("*") if p.is_file()]
    for damage in ("delete", "flip"):
        if damage == "delete":
            path.unlink()
        else:
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0xFF
            path.write_bytes(bytes(data))
        status = watchrun(root, "status")
        no_traceback(status)
        assert "DIRTY  source  stored output missing" in status.stdout
        show = watchrun(root, "show", "source")
        assert show.code == 2
        word = "missing" if damage == "delete" else "modified on disk"
        assert word in one_error(show) and "the next build makes it again" in show.stderr
        run = watchrun(root, "build", "--json")
        assert run.code == 0, run.stderr
        no_traceback(run)
        assert run.ran() == ["source"]  # the sink's input is unchanged: early cutoff
        assert shown(root, "sink") == expected
        assert watchrun(root, "show", "source", "--json").code == 0


# -- large outputs (point 15) -----------------------------------------------------------------


def test_show_of_a_large_output_needs_little_more_memory_than_the_output(
        tmp_path: Path) -> None:
    size = 200 * 2**20
    root = write_project(tmp_path / "proj", {
        "tasks/large.py": f"""
            # /// task
            # ///
            def run():
                return b"x" * {size}
        """,
    })
    assert watchrun(root, "build", timeout=120).code == 0
    # a fresh parent, so that its children's peak is this one child's
    measure = (
        "import resource, subprocess, sys\n"
        "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
        "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\n")
    proc = subprocess.run([sys.executable, "-c", measure, sys.executable, "-m", "watchrun",
                           "-C", str(root), "show", "large"],
                          capture_output=True, text=True, env=cli_env(), timeout=120)
    code, peak = map(int, proc.stdout.split())
    assert code == 0, proc.stderr
    assert peak <= 1.5 * size, f"show peaked at {peak / 2**20:.0f} MiB for a 200 MiB output"


def _peak_rss(pid: int) -> int:
    """The kernel's high-water mark of a process's resident size (0 once it is gone)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def test_build_stores_a_large_output_without_holding_copies_of_it(tmp_path: Path) -> None:
    """The worker pickles the output into the object folder, watchrun adopts the file: the
    worker needs the value and little more, watchrun never holds the value at all."""
    size = 100 * 2**20
    root = write_project(tmp_path / "proj", {
        "tasks/large.py": f"""
            # /// task
            # ///
            def run():
                return b"y" * {size}
        """,
    })
    proc = spawn_watchrun(root, "build")
    top, below = 0, 0
    watched = psutil.Process(proc.pid)
    while proc.poll() is None:  # the marks only grow: the last look before each exit counts
        top = max(top, _peak_rss(proc.pid))
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in watched.children(recursive=True):
                below = max(below, _peak_rss(child.pid))
        time.sleep(0.005)
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert below <= 1.5 * size, f"the worker peaked at {below / 2**20:.0f} MiB (100 MiB output)"
    assert top <= 0.5 * size, f"watchrun peaked at {top / 2**20:.0f} MiB (100 MiB output)"
    objects = root / ".watchrun" / "objects"
    assert not [p for p in objects.iterdir() if p.name.startswith(".tmp-")]
    shown = subprocess.run([sys.executable, "-m", "watchrun", "-C", str(root), "show", "large",
                            "--json"], capture_output=True, env=cli_env(), timeout=120)
    assert shown.returncode == 0 and shown.stdout.count(b"y") >= size


# -- names and messages that are not UTF-8 (point 8) -----------------------------------------


def test_names_that_are_not_utf8_are_hashed_stored_and_printed(tmp_path: Path) -> None:
    root = write_project(tmp_path / "proj", {
        "data/plain.txt": "x\n",
        "tasks/listing.py": """
            # /// task
            # inputs = ["data/*"]
            # ///
            def run(inputs):
                return [p.name for p in inputs]
        """,
        "tasks/broken.py": """
            # /// task
            # inputs = ["data/*"]
            # ///
            def run(inputs):
                raise ValueError("cannot parse " + " ".join(p.name for p in inputs))
        """,
        **{f"tasks/mate{i}.py": blob_task(i, 10) for i in range(5)},
    })
    (root / "data").joinpath(os.fsdecode(b"caf\xe9.txt")).write_bytes(b"y")
    first = watchrun(root, "build", "--json")
    no_traceback(first)
    assert first.code == 1
    [failed] = [e for e in first.events if e["event"] == "unit_failed"]
    assert "caf\\udce9.txt" in failed["error"] or "caf\udce9" in failed["error"]
    status = watchrun(root, "status")
    no_traceback(status)
    assert "FAILED  broken" in status.stdout and "clean  mate4" in status.stdout
    again = watchrun(root, "build", "--json")
    assert again.code == 1
    assert sorted(t for t, _ in again.units("unit_started")) == ["broken"]
    show = watchrun(root, "show", "listing")
    assert show.code == 0 and "caf\\udce9.txt" in show.stdout


# -- unreadable inputs (point 9) -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["symlink loop", "unreadable"])
def test_an_unreadable_input_is_a_file_line_error_naming_it(tmp_path: Path, kind: str) -> None:
    root = write_project(tmp_path / "proj", {
        "data/ok.txt": "fine\n",
        "tasks/read.py": """
            # /// task
            # params = {}
            # inputs = ["data/*"]
            # ///
            def run(inputs):
                return len(inputs)
        """,
    })
    bad = root / "data" / "bad"
    if kind == "symlink loop":
        bad.symlink_to(bad)
        why = "Too many levels of symbolic links"
    else:
        bad.symlink_to("/proc/self/mem")  # a regular file even root cannot read from 0
        why = "Input/output error"
    for args in (("build",), ("status",)):
        run = watchrun(root, *args)
        assert run.code == 2, run.stderr
        assert one_error(run).endswith(f"tasks/read.py:3: cannot read {bad}: {why}")
    bad.unlink()
    assert watchrun(root, "build").code == 0


# -- a state folder that came with the project (point 13) ------------------------------------


def test_a_crafted_pickle_in_a_shipped_state_never_runs(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    import sqlite3

    root = write_project(tmp_path / "proj", CHAIN)
    assert watchrun(root, "build").code == 0
    pwned = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[object, ...]:
            return (os.system, (f"touch {pwned}",))

    import pickle

    payload = pickle.dumps(Exploit())
    db = sqlite3.connect(root / ".watchrun" / "state.db")
    db.execute("UPDATE kv SET data = ? WHERE key = 'project'", (payload,))
    small = db.execute("SELECT digest FROM objects").fetchone()[0]
    db.execute("UPDATE objects SET data = ? WHERE digest = ?", (payload, small))
    db.commit()
    db.close()
    # it comes with a tarball: another user's key, and new inodes
    shipped = tmp_path / "shipped"
    shutil.copytree(root, shipped, symlinks=True)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "victim-state"))
    for args in (("graph",), ("status",), ("show", "small", "--json")):
        run = watchrun(shipped, *args)
        no_traceback(run)
        assert "was not written by watchrun for this user" in run.stderr
    assert not pwned.exists()
    build = watchrun(shipped, "build")
    assert build.code == 0, build.stderr
    assert "was not written by watchrun for this user" in build.stderr
    assert "moved it to" in build.stderr
    assert not pwned.exists()
    assert watchrun(shipped, "show", "small", "--json").code == 0
    assert watchrun(shipped, "status").stderr == ""


# -- symlinks planted in the state folder (point 14) -----------------------------------------


def test_symlinks_planted_in_the_state_folder_are_never_followed(tmp_path: Path) -> None:
    root = write_project(tmp_path / "proj", {
        "tasks/talk.py": """
            # /// task
            # ///
            def run():
                print("task output " * 100)
                return 1
        """,
    })
    assert watchrun(root, "build").code == 0
    victims = {name: tmp_path / f"victim-{name.replace('/', '-')}" for name in
               ("logs/talk.log", "lock", "clean.proof", "state.db-wal")}
    for name, victim in victims.items():
        victim.write_text("precious")
        planted = root / ".watchrun" / name
        planted.unlink(missing_ok=True)
        planted.symlink_to(victim)
    run = watchrun(root, "build", "--force")
    assert run.code == 0, run.stderr
    no_traceback(run)
    for victim in victims.values():
        assert victim.read_text() == "precious"
    assert "task output" in (root / ".watchrun" / "logs" / "talk.log").read_text()
    assert watchrun(root, "build", "--json").ran() == []


# -- kill -9, again and again (points 3, 11 and SPEC section 6) ------------------------------

PIPELINE = {
    "watchrun.toml": "jobs = 2\n",
    "tasks/numbers.py": """
        # /// task
        # kind = "generator"
        # ///
        import time

        def run():
            for i in range(12):
                time.sleep(0.04)
                yield i
    """,
    "tasks/square.py": """
        # /// task
        # after = ["numbers"]
        # ///
        import time

        def run(numbers):
            time.sleep(0.08)
            return numbers * numbers
    """,
    "tasks/total.py": """
        # /// task
        # kind = "collector"
        # after = ["square"]
        # ///
        seen = []

        def run(square):
            seen.append(square)

        def gather():
            return sum(seen)
    """,
    **{f"tasks/side{i}.py": f'''
        # /// task
        # ///
        import time

        def run():
            time.sleep(0.15)
            return {i}
    ''' for i in range(8)},
}


class Lines:
    """The --json lines of a process, each with the time it was read."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[tuple[float, dict[str, object]]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.append((time.monotonic(), json.loads(line)))

    def finished_before(self, moment: float) -> set[tuple[str, tuple[int, ...]]]:
        return {(str(e["task"]), tuple(e["iter"]))  # type: ignore[arg-type]
                for at, e in list(self.lines)
                if at <= moment and e["event"] == "unit_finished"}


def kill_group_leftovers(root: Path) -> None:
    """The workers of a killed watchrun end by themselves (they watch their parent)."""
    wait_for(lambda: not worker_processes(), timeout=10, what="the killed build's workers")


@pytest.mark.timeout(300)
def test_kill_9_of_build_at_random_moments_loses_no_result(tmp_path: Path) -> None:
    """After each kill the next build finishes; a unit reported done more than a second
    before the kill is never run again (README: "done" is committed within 50 ms); the
    final results equal those of a build that was never killed."""
    rng = random.Random(17)
    clean = write_project(tmp_path / "clean", PIPELINE)
    assert watchrun(clean, "build").code == 0
    root = write_project(tmp_path / "proj", PIPELINE)
    checked = interrupted = 0  # units whose durability was checked; kills that cut work
    for round_ in range(30):
        if round_ % 3 == 0:
            (root / "tasks/numbers.py").write_text(
                (root / "tasks/numbers.py").read_text().replace(
                    "range(12)", f"range({12 + round_ % 2})").replace(
                    "range(13)", f"range({12 + round_ % 2})"))
        if round_ % 5 == 0:
            assert watchrun(root, "clean").code == 0
        # forced: every round has work to cut (the build before it left everything clean)
        proc = spawn_watchrun(root, "build", "--json", "--force")
        lines = Lines(proc)
        time.sleep(rng.uniform(0.1, 2.2))
        killed_at = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        lines.thread.join(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        kill_group_leftovers(root)
        durable = lines.finished_before(killed_at - 1.0)
        after = watchrun(root, "build", "--json", timeout=60)
        assert after.code == 0, after.stderr
        no_traceback(after)
        rerun = durable & set(after.units("unit_started"))
        assert not rerun, f"round {round_}: reported done, then run again: {sorted(rerun)}"
        checked += len(durable)
        interrupted += bool(after.units("unit_started"))
    assert checked >= 5 and interrupted >= 5, (checked, interrupted)  # the kills did bite
    (root / "tasks/numbers.py").write_text((clean / "tasks/numbers.py").read_text())
    assert watchrun(root, "build").code == 0
    for task in ("total", "side3"):
        assert shown(root, task) == shown(clean, task)


@pytest.mark.timeout(300)
def test_kill_9_of_dev_at_random_moments_leaves_nothing_behind(tmp_path: Path) -> None:
    rng = random.Random(23)
    clean = write_project(tmp_path / "clean", PIPELINE)
    assert watchrun(clean, "build").code == 0
    root = write_project(tmp_path / "proj", PIPELINE)
    for round_ in range(30):
        proc = spawn_watchrun(root, "dev", "--no-tui", "--json")
        lines = Lines(proc)
        if round_ % 2:
            # sometimes mid-rebuild: an edit that dirties the pipeline
            time.sleep(rng.uniform(0.2, 0.8))
            (root / "tasks/square.py").write_text(
                (root / "tasks/square.py").read_text() + f"\n# round {round_}\n"
                if round_ % 4 == 1 else (clean / "tasks/square.py").read_text())
        time.sleep(rng.uniform(0.05, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        lines.thread.join(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        kill_group_leftovers(root)
    run = watchrun(root, "build", timeout=60)
    assert run.code == 0, run.stderr
    no_traceback(run)
    for task in ("total", "side5"):
        assert shown(root, task) == shown(clean, task)
    # nothing at all left of those 30 dev processes (workers, templates, their children)
    tag = cli_env()["WATCHRUN_TEST_SESSION"]
    leftovers = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError):
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            if f"WATCHRUN_TEST_SESSION={tag}".encode() in environ and \
                    str(root).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                leftovers.append(int(pid))
    assert leftovers == []
