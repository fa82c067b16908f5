"""Nothing a unit started survives it (SPEC section 5, issue 17 points 1 and 2): processes that
left the unit's process group (start_new_session=True, os.setsid(), a daemon's double fork) and
units stuck in a long C call holding the GIL, against every way a unit or watchrun ends.
Every fault is created for real and every check polls the real process table, with a bound."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import gone, read_pid, spawn_watchrun, wait_for
from tests.devproc import DevProcess
from tests.test_dev_e2e import edit

pytestmark = [
    pytest.mark.usefixtures("no_leaks"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="subreapers and /proc"),
]

# Three processes that leave the unit's process group, each writing its pid to a file named
# after the task's `version`, then the task waits (or, with `gil`, holds the GIL in C).
ESCAPE = '''
    # /// task
    # [params]
    # version = 1
    # hold = "sleep"
    # ///
    import os, subprocess, sys, time
    from pathlib import Path

    DAEMON = """
    import os, sys, time
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    open(sys.argv[1], "w").write(str(os.getpid()))
    time.sleep(300)
    """
    SETSID = "import os, sys, time; os.setsid(); open(sys.argv[1], 'w').write(str(os.getpid()));" \\
             " time.sleep(300)"

    def run(version, hold):
        Path(f"worker-{version}.pid").write_text(str(os.getpid()))
        session = subprocess.Popen(["sleep", "300"], start_new_session=True)
        Path(f"session-{version}.pid").write_text(str(session.pid))
        subprocess.Popen([sys.executable, "-c", SETSID, f"setsid-{version}.pid"])
        subprocess.run([sys.executable, "-c", DAEMON, f"daemon-{version}.pid"], check=True)
        while not all(Path(f"{n}-{version}.pid").exists() for n in ("setsid", "daemon")):
            time.sleep(0.01)
        Path(f"ready-{version}").write_text("")
        if hold == "gil":
            sum(range(10**11))  # one C call: no Python signal handler or thread runs
        elif hold == "sleep":
            time.sleep(300)
        return version
'''
ESCAPEES = ("session", "setsid", "daemon")


def escape_project(make: Callable[[dict[str, str]], Path], hold: str = "sleep",
                   grace: float = 0.3) -> Path:
    root = make({"watchrun.toml": f"jobs = 1\ngrace = {grace}\n",
                 "tasks/escape.py": ESCAPE.replace('hold = "sleep"', f'hold = "{hold}"')})
    return root


def escapees(root: Path, version: int = 1) -> list[int]:
    wait_for(lambda: (root / f"ready-{version}").exists(), timeout=30,
             what="the task to start its escapees")
    return [read_pid(root / f"{name}-{version}.pid") for name in ESCAPEES]


def assert_all_gone(pids: list[int], within: float = 5.0) -> float:
    """Seconds until every pid is gone (or a zombie), at most `within`."""
    started = time.monotonic()
    try:
        wait_for(lambda: all(gone(pid) for pid in pids), timeout=within,
                 what=f"{[p for p in pids if not gone(p)]} to end")
    finally:
        for pid in pids:  # never leave them behind, whatever the test found
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
    return time.monotonic() - started


@pytest.fixture
def make(project: Callable[[dict[str, str]], Path]) -> Iterator[Callable[..., Path]]:
    yield lambda **kwargs: escape_project(project, **kwargs)


def test_escapees_are_alive_while_the_unit_runs(make: Callable[..., Path]) -> None:
    # the premise of every other test: they did leave the unit's group and session
    root = make()
    proc = spawn_watchrun(root, "build")
    try:
        pids = escapees(root)
        worker = read_pid(root / "worker-1.pid")
        worker_group = os.getpgid(worker)
        for pid in pids:
            assert psutil.pid_exists(pid)
            assert os.getpgid(pid) != worker_group
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert_all_gone(pids)


def test_ctrl_c_of_build_ends_them(make: Callable[..., Path]) -> None:
    root = make()
    proc = spawn_watchrun(root, "build")
    pids = escapees(root)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert_all_gone([*pids, read_pid(root / "worker-1.pid")])


def test_kill_9_of_build_ends_them(make: Callable[..., Path]) -> None:
    root = make()
    proc = spawn_watchrun(root, "build")
    pids = escapees(root)
    proc.kill()
    proc.communicate(timeout=30)
    assert_all_gone([*pids, read_pid(root / "worker-1.pid")])


def test_kill_9_of_build_ends_a_unit_holding_the_gil_within_a_second(
        make: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    # the worker cannot run a Python signal handler or its life-pipe thread: the template
    # (which never runs task code) kills it and everything below it
    root = make(hold="gil")
    proc = spawn_watchrun(root, "build")
    pids = escapees(root)
    worker = read_pid(root / "worker-1.pid")
    time.sleep(0.2)  # well inside sum()
    assert psutil.Process(worker).status() == psutil.STATUS_RUNNING
    proc.kill()
    proc.communicate(timeout=30)
    took = assert_all_gone([worker, *pids], within=3.0)  # generous: measured well under 1 s
    with capsys.disabled():
        print(f"\n[gil] worker and escapees gone {took * 1000:.0f} ms after kill -9 of build")


def test_a_dev_cancel_ends_them(make: Callable[..., Path]) -> None:
    root = make()
    dev = DevProcess(root)
    try:
        first = escapees(root, 1)
        edit(root, "tasks/escape.py", "# version = 1", "# version = 2")
        dev.wait(lambda e: e["event"] == "unit_cancelled", what="the cancel")
        assert_all_gone([*first, read_pid(root / "worker-1.pid")])
        second = escapees(root, 2)
        assert all(psutil.pid_exists(pid) for pid in second)  # the new run's are untouched
    finally:
        assert dev.stop() == 130
    assert_all_gone(second)


def test_dev_exit_ends_them(make: Callable[..., Path]) -> None:
    root = make()
    dev = DevProcess(root)
    pids = escapees(root)
    assert dev.stop(signal.SIGTERM) == 143
    assert_all_gone(pids)


def test_they_do_not_outlive_a_unit_that_finished(make: Callable[..., Path]) -> None:
    # dev keeps its workers (and the template) running: the unit's end alone must end them
    root = make(hold="none")
    dev = DevProcess(root)
    try:
        dev.wait(lambda e: e["event"] == "unit_finished", what="the unit to finish")
        pids = escapees(root)
        assert_all_gone(pids)
        assert dev.proc.poll() is None
    finally:
        assert dev.stop() == 130


def test_the_next_build_runs_clean_after_a_kill_9(make: Callable[..., Path]) -> None:
    root = make(hold="none")
    proc = spawn_watchrun(root, "build")
    pids = escapees(root)
    proc.kill()
    proc.communicate(timeout=30)
    assert_all_gone(pids)
    for leftover in root.glob("*-1*"):  # the next run writes its own
        leftover.unlink()
    again = spawn_watchrun(root, "build", "--force")
    _out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    assert_all_gone(escapees(root))


def test_kill_9_of_dev_ends_a_unit_holding_the_gil(make: Callable[..., Path]) -> None:
    root = make(hold="gil")
    dev = DevProcess(root)
    pids = escapees(root)
    worker = read_pid(root / "worker-1.pid")
    dev.proc.kill()
    dev.proc.wait(timeout=30)
    assert_all_gone([worker, *pids], within=3.0)
