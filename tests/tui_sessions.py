"""What the TUI tests in a real terminal (tmux) and in a real browser (Chromium through
Playwright) share: a project whose task holds until told, a tmux session, a page of the
`dev --web` server, and polling for what a user would see.
"""

from __future__ import annotations

import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from tests.conftest import gone

COLUMNS, LINES = 120, 40

# hold runs until hold.go exists; report follows it. Each run of hold rewrites its pid file (the
# pid of the worker it runs in).
HOLD_PROJECT = {
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


def poll(predicate: Callable[[], bool], what: str, timeout: float = 20.0,
         sleep: Callable[[], object] = lambda: time.sleep(0.02)) -> None:
    """Wait until `predicate` holds. In a browser test, `sleep` is the page's own wait while a
    page is open: Playwright's sync API delivers the page's events (websocket frames) only
    while it is called."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        sleep()


# -- tmux ---------------------------------------------------------------------------------------

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


def open_terminal(workdir: Path, size: tuple[int, int] = (COLUMNS, LINES)
                  ) -> Iterator[Terminal]:
    """A fixture's body: a terminal, and after the test, its command stopped (if the test
    failed before it quit) and the tmux server killed."""
    term = Terminal(workdir, size)
    try:
        yield term
    finally:
        proc = term.process
        if proc is not None and not gone(proc.pid):
            proc.terminate()
            _, alive = psutil.wait_procs([proc], timeout=10)
            for left in alive:
                left.kill()
        term.kill()


# -- the browser --------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

ANSI = re.compile(r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def descendants(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [p for p in proc.children(recursive=True) if not gone(p.pid)]
    except psutil.NoSuchProcess:
        return []


class Screen:
    """What the page's terminal was sent: the app's output as it arrives over the websocket."""

    def __init__(self) -> None:
        self.chunks: list[str] = []

    def on_websocket(self, ws: Any) -> None:
        ws.on("framereceived", self._frame)

    def _frame(self, payload: str | bytes) -> None:
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
        self.chunks.append(ANSI.sub("", text))

    def text(self) -> str:
        return "".join(self.chunks)


@contextmanager
def browser(**options: Any) -> Iterator[Any]:
    """Headless Chromium (the system's, with a fresh profile: --user-data-dir) through
    Playwright; closed after."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, **options)
        try:
            yield context
        finally:
            context.close()


def local_page(context: Any, screen: Screen | None = None) -> Any:
    """A new page that reaches nothing but this machine (the page asks Google for a font);
    `screen` gets what its terminal is sent."""
    page = context.new_page()
    page.route(re.compile(r"^https?://(?!127\.0\.0\.1)"), lambda route: route.abort())
    if screen is not None:
        page.on("websocket", screen.on_websocket)
    return page
