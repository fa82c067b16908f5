"""`watchrun dev` in a real terminal: tmux runs the real CLI, the test types keys (send-keys)
and reads the screen (capture-pane), and checks the processes with psutil.

Run with `pytest -m tmux`. A private tmux server (`tmux -L <unique>`) is used and killed after.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO, SESSION_TAG, gone, watchrun, worker_processes, write_project

pytestmark = [
    pytest.mark.tmux,
    pytest.mark.timeout(90),
    pytest.mark.usefixtures("no_leaks"),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]

COLUMNS, LINES = 120, 40

# hold runs until hold.go exists; report follows it. Each run of hold rewrites its pid file (the
# pid of the worker it runs in).
PROJECT = {
    "watchrun.toml": "jobs = 2\ngrace = 0.3\n",
    "tasks/hold.py": '''
        # /// task
        # ///
        import os
        import time
        from pathlib import Path

        def run():
            Path("hold.pid.tmp").write_text(str(os.getpid()))
            os.replace("hold.pid.tmp", "hold.pid")
            while not Path("hold.go").exists():
                print("hold: waiting", flush=True)
                time.sleep(0.1)
            return "held"
    ''',
    "tasks/report.py": '''
        # /// task
        # after = ["hold"]
        # ///
        def run(hold):
            return hold.upper()
    ''',
}


class Terminal:
    """One tmux session on a private server, running one command."""

    def __init__(self, workdir: Path, size: tuple[int, int] = (COLUMNS, LINES)) -> None:
        self.columns, self.lines = size
        self.socket = f"watchrun-test-{uuid.uuid4().hex[:12]}"
        self.config = workdir / "tmux.conf"
        self.status_file = workdir / "exit-status"
        self.process: psutil.Process | None = None
        self.socket_path: Path | None = None
        # The pane stays after the command exits (its last screen can be read). The window
        # has its final size from the start: a resize while the app starts may be missed.
        self.config.write_text("set -g remain-on-exit on\nset -g status off\n"
                               f"set -g default-size {self.columns}x{self.lines}\n")

    def tmux(self, *args: str) -> str:
        proc = subprocess.run(["tmux", "-L", self.socket, "-f", str(self.config), *args],
                              capture_output=True, text=True, timeout=10, check=True)
        return proc.stdout

    def start(self, command: list[str], env: dict[str, str]) -> psutil.Process:
        """Run the command in the pane (under a shell that writes its exit status to
        `self.status_file`); returns its process."""
        script = '"$@"; echo $? > ' + shlex.quote(str(self.status_file))
        # COLUMNS and LINES (the test runner may have them) would override the pane's size
        line = "exec env -u COLUMNS -u LINES " + shlex.join(
            [f"{k}={v}" for k, v in env.items()] + ["sh", "-c", script, "sh", *command])
        self.tmux("new-session", "-d", "-s", "main", "-x", str(self.columns), "-y",
                  str(self.lines), line)
        self.socket_path = Path(self.pane("socket_path"))
        shell = psutil.Process(int(self.pane("pane_pid")))
        poll(lambda: bool(shell.children()), "the command to start")
        self.process = shell.children()[0]
        return self.process

    def exit_status(self, timeout: float = 20.0) -> int:
        poll(lambda: self.status_file.exists() and self.status_file.read_text().strip() != "",
             "the command to exit", timeout)
        return int(self.status_file.read_text())

    def pane(self, field: str) -> str:
        return self.tmux("display-message", "-p", "-t", "main", f"#{{{field}}}").strip()

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "main")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "main", *keys)

    def wait(self, predicate: Callable[[str], bool], what: str, timeout: float = 15.0) -> str:
        """Poll the screen until it satisfies the predicate."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if predicate(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; the screen:\n{screen}")
            time.sleep(0.05)

    def wait_text(self, text: str, timeout: float = 15.0) -> str:
        return self.wait(lambda screen: text in screen, repr(text), timeout)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=10)
        if self.socket_path is not None:  # the server leaves its socket file behind
            self.socket_path.unlink(missing_ok=True)


def poll(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    term = Terminal(tmp_path)
    try:
        yield term
    finally:
        proc = term.process
        if proc is not None and not gone(proc.pid):  # the test failed before q: stop it
            proc.terminate()
            _, alive = psutil.wait_procs([proc], timeout=10)
            for left in alive:
                left.kill()
        term.kill()


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
    terminal.keys("r")  # clean: r has nothing to continue, and says so
    terminal.wait_text("hold: clean, nothing to continue (R forces a rerun)")
    terminal.keys("R")  # forced: something is running when q is pressed
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
