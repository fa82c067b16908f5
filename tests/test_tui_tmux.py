"""`watchrun dev` in a real terminal: tmux runs the real CLI, the test types keys (send-keys)
and reads the screen (capture-pane), and checks the processes with psutil.

Run with `pytest -m tmux`. A private tmux server (`tmux -L <unique>`) is used and killed after.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO, SESSION_TAG, gone, watchrun, worker_processes, write_project
from tests.tui_sessions import HOLD_PROJECT, LINES, Terminal, open_terminal, poll

pytestmark = [
    pytest.mark.tmux,
    pytest.mark.timeout(90),
    pytest.mark.usefixtures("no_leaks"),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]

PROJECT = HOLD_PROJECT


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    yield from open_terminal(tmp_path)


def test_keys_steer_real_processes_and_q_leaves_nothing(tmp_path: Path,
                                                        terminal: Terminal) -> None:
    root = write_project(tmp_path / "proj", PROJECT)
    pid_file = root / "hold.pid"

    def hold_pid() -> int:
        try:
            poll(pid_file.exists, "hold to record its pid", timeout=20)
        except AssertionError:
            raise AssertionError(f"hold did not start; the screen:\n{terminal.screen()}"
                                 ) from None
        return int(pid_file.read_text())

    def state(pid: int) -> str:
        return str(psutil.Process(pid).status())

    env = {
        "PYTHONPATH": str(REPO),
        "WATCHRUN_TEST_SESSION": SESSION_TAG,  # the leak check finds our workers by it
        "TERM": "xterm-256color",
    }
    watchrun = terminal.start([sys.executable, "-m", "watchrun", "-C", str(root), "dev"], env)
    assert "watchrun" in " ".join(watchrun.cmdline())

    # the build: hold runs (the first row, selected; its detail beside the DAG, so the app
    # has the whole 120 columns); report waits for it
    screen = terminal.wait_text("│ ▶ hold  running")
    assert len(screen.splitlines()) == LINES
    assert "○ report" in screen or "◌ report" in screen
    assert "watchrun" in screen.splitlines()[0]
    pid = hold_pid()

    # j/k select
    terminal.keys("j")
    terminal.wait(lambda s: "report  queued" in s or "report  dirty" in s, "report selected")
    terminal.keys("k")
    terminal.wait_text("▶ hold  running")

    # space: SIGSTOP to the worker, the row shows it paused; space again: SIGCONT
    terminal.keys("Space")
    poll(lambda: state(pid) == psutil.STATUS_STOPPED, "hold's worker to stop")
    terminal.wait_text("‖ hold  paused")
    terminal.keys("Space")
    poll(lambda: state(pid) != psutil.STATUS_STOPPED, "hold's worker to continue")
    terminal.wait_text("▶ hold  running")

    # P: everything paused (and the header says so); P again resumes
    terminal.keys("P")
    poll(lambda: state(pid) == psutil.STATUS_STOPPED, "hold's worker to stop")
    terminal.wait(lambda s: "PAUSED" in s.splitlines()[0], "the header to say PAUSED")
    terminal.keys("P")
    poll(lambda: state(pid) != psutil.STATUS_STOPPED, "hold's worker to continue")
    terminal.wait(lambda s: "PAUSED" not in s and "▶ hold  running" in s, "resumed")

    # ?: the help, over the running view; escape closes it
    terminal.keys("?")
    terminal.wait_text("pause / resume everything")
    terminal.keys("Escape")
    terminal.wait(lambda s: "pause / resume everything" not in s, "the help to close")

    # i: cancelled, and it stays so; the worker is ended (and replaced)
    terminal.keys("i")
    terminal.wait_text("⊘ hold  cancelled")
    poll(lambda: gone(pid), "the interrupted worker to end")
    assert "last run cancelled" in terminal.wait_text("watching")  # idle: nothing restarted it
    assert not pid_file.exists() or int(pid_file.read_text()) == pid

    # r: runs again, in another worker; when it ends report follows
    pid_file.unlink()
    terminal.keys("r")
    terminal.wait_text("▶ hold  running")
    new_pid = hold_pid()
    assert new_pid != pid and not gone(new_pid)
    (root / "hold.go").write_text("")
    terminal.wait(lambda s: "● hold" in s and "● report" in s, "hold and report to finish")

    # q: everything ends and watchrun exits 0
    (root / "hold.go").unlink()
    pid_file.unlink()
    terminal.keys("r")  # clean: nothing to continue, so r forces a rerun (SPEC section 9)
    terminal.wait_text("hold: clean, so a forced rerun of every unit")
    terminal.wait_text("▶ hold  running")
    running = hold_pid()
    terminal.keys("q")
    assert terminal.exit_status() == 0
    assert gone(watchrun.pid) and gone(running)
    assert not worker_processes()


def test_closing_the_terminal_ends_watchrun_and_its_workers(tmp_path: Path,
                                                            terminal: Terminal) -> None:
    root = write_project(tmp_path / "proj", PROJECT)
    env = {"PYTHONPATH": str(REPO), "WATCHRUN_TEST_SESSION": SESSION_TAG,
           "TERM": "xterm-256color"}
    watchrun_proc = terminal.start(
        [sys.executable, "-m", "watchrun", "-C", str(root), "dev"], env)
    terminal.wait_text("│ ▶ hold  running")
    poll(lambda: (root / "hold.pid").exists(), "hold to record its pid")
    hold = int((root / "hold.pid").read_text())

    terminal.kill()  # the terminal goes away under the running TUI: a hang-up
    poll(lambda: gone(watchrun_proc.pid), "watchrun to exit", timeout=20)
    poll(lambda: gone(hold), "hold's worker to end")
    assert not worker_processes()
    # the project is not left locked
    (root / "hold.go").write_text("")
    assert watchrun(root, "build").code == 0
