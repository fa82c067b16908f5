"""`watchrun dev --web` in a real browser: the real CLI serves the TUI with textual-serve, headless
Chromium (Debian's package) opens the page through Playwright, keys typed in the page reach the
task's process, and `q` then stopping the server leaves nothing running.

Run with `pytest -m web`. Needs `apt-get install chromium` and `pip install playwright` (the
browser Playwright downloads is not used: `executable_path` points at the system's).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import cli_env, gone, worker_processes, write_project

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = [
    pytest.mark.web,
    pytest.mark.timeout(120),
    pytest.mark.usefixtures("no_leaks"),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium is not installed"),
]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

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

ANSI = re.compile(r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def poll(predicate: Callable[[], bool], what: str, timeout: float = 20.0,
         sleep: Callable[[], object] = lambda: time.sleep(0.05)) -> None:
    """`sleep` is the page's own wait while a page is open: Playwright's sync API delivers
    the page's events (websocket frames) only while it is called."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        sleep()


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


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, Path]]:
    root = write_project(tmp_path / "proj", PROJECT)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "watchrun", "-C", str(root), "dev", "--web", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cli_env(),
        stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        poll(lambda: listening(port) or proc.poll() is not None, "the server to listen")
        assert proc.poll() is None, proc.communicate()[0]
        yield proc, port, root
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)  # reaps it and closes its pipe


def test_the_page_shows_the_dag_space_pauses_the_task_and_q_leaves_nothing(
        server: tuple[subprocess.Popen[str], int, Path]) -> None:
    from playwright.sync_api import sync_playwright

    proc, port, root = server
    server_process = psutil.Process(proc.pid)
    screen = Screen()
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as pw:
        # a fresh profile (--user-data-dir) for each run
        browser = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900})
        try:
            page = browser.new_page()
            # the page asks Google for a font: nothing leaves this machine
            page.route(re.compile(r"^https?://(?!127\.0\.0\.1)"), lambda route: route.abort())
            page.on("websocket", screen.on_websocket)

            def wait(predicate: Callable[[], bool], what: str) -> None:
                try:
                    poll(predicate, what, sleep=lambda: page.wait_for_timeout(50))
                except AssertionError as err:
                    raise AssertionError(f"{err}; the page got:\n{screen.text()[-3000:]}"
                                         ) from None

            page.goto(f"http://127.0.0.1:{port}/")
            wait(lambda: "hold" in screen.text() and "report" in screen.text()
                 and "running" in screen.text(), "the DAG in the page")
            pid_file = root / "hold.pid"
            wait(pid_file.exists, "hold to start")
            worker = psutil.Process(int(pid_file.read_text()))
            assert worker.status() != psutil.STATUS_STOPPED

            # the terminal takes the keys (a click would also select the row under the pointer)
            page.locator(".xterm-helper-textarea").focus()
            page.keyboard.press("Space")  # the cursor is on hold, the first task
            wait(lambda: worker.status() == psutil.STATUS_STOPPED, "hold to be stopped (T)")
            wait(lambda: "hold: paused" in screen.text(), "the footer to say it")
            page.keyboard.press("Space")
            wait(lambda: worker.status() != psutil.STATUS_STOPPED, "hold to run again")

            sessions = [p for p in descendants(server_process)
                        if "watchrun" in " ".join(p.cmdline()) and "--web" not in p.cmdline()]
            assert sessions, "the page's session runs under the server"
            page.keyboard.press("q")
            wait(lambda: gone(worker.pid), "hold's process to end after q")
            wait(lambda: all(gone(p.pid) for p in sessions), "the session to end after q")
            assert not worker_processes()
            page.close()
        finally:
            browser.close()

    proc.send_signal(signal.SIGINT)  # Ctrl-C on the server
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert "127.0.0.1" in out and "no authentication" in out
    assert not descendants(server_process)
    assert not worker_processes()


def test_the_server_listens_on_loopback_only(
        server: tuple[subprocess.Popen[str], int, Path]) -> None:
    proc, port, _ = server
    addresses = {c.laddr for c in psutil.Process(proc.pid).net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN}
    assert addresses and all(a.ip == "127.0.0.1" and a.port == port for a in addresses)


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    root = write_project(tmp_path / "proj", PROJECT)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "watchrun", "-C", str(root), "dev", "--web", "--port",
             str(port)], capture_output=True, text=True, env=cli_env(), timeout=30,
            stdin=subprocess.DEVNULL)
    assert run.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in run.stderr
    assert "Traceback" not in run.stderr + run.stdout


@pytest.mark.parametrize(("args", "said"), [
    (["--port", "8123"], "--port is the port of --web"),
    (["--web", "--json"], "--web serves the TUI"),
    (["--web", "--no-tui"], "--web serves the TUI"),
])
def test_options_that_do_not_go_with_web_are_refused(tmp_path: Path, args: list[str],
                                                     said: str) -> None:
    root = write_project(tmp_path / "proj", PROJECT)
    run = subprocess.run([sys.executable, "-m", "watchrun", "-C", str(root), "dev", *args],
                         capture_output=True, text=True, env=cli_env(), timeout=30,
                         stdin=subprocess.DEVNULL)
    assert run.returncode == 2 and said in run.stderr
    assert not (root / ".watchrun").exists()  # nothing was started


def test_a_project_error_is_told_before_serving(tmp_path: Path) -> None:
    root = write_project(tmp_path / "proj", {"watchrun.toml": "jobs = 'many'\n"})
    run = subprocess.run([sys.executable, "-m", "watchrun", "-C", str(root), "dev", "--web",
                          "--port", str(free_port())], capture_output=True, text=True,
                         env=cli_env(), timeout=30, stdin=subprocess.DEVNULL)
    assert run.returncode == 2
    assert "watchrun.toml" in run.stderr and "Traceback" not in run.stderr


def test_a_server_killed_with_sigkill_leaves_no_session_running(
        server: tuple[subprocess.Popen[str], int, Path]) -> None:
    from playwright.sync_api import sync_playwright

    proc, port, root = server
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.route(re.compile(r"^https?://(?!127\.0\.0\.1)"), lambda route: route.abort())
            page.goto(f"http://127.0.0.1:{port}/")
            pid_file = root / "hold.pid"
            poll(pid_file.exists, "hold to start", sleep=lambda: page.wait_for_timeout(50))
            worker = int(pid_file.read_text())
            session = descendants(psutil.Process(proc.pid))
            assert session
            os.kill(proc.pid, signal.SIGKILL)  # nothing tells the session: it must notice
            poll(lambda: all(gone(p.pid) for p in session) and gone(worker),
                 "the session and its worker to end", sleep=lambda: page.wait_for_timeout(50))
        finally:
            browser.close()
    assert not worker_processes()
    # the project is not left locked
    (root / "hold.go").write_text("")
    assert subprocess.run([sys.executable, "-m", "watchrun", "-C", str(root), "build"],
                          env=cli_env(), capture_output=True, timeout=60).returncode == 0


def test_closing_the_page_ends_its_session_and_a_new_page_starts_another(
        server: tuple[subprocess.Popen[str], int, Path]) -> None:
    from playwright.sync_api import sync_playwright

    proc, port, root = server
    pid_file = root / "hold.pid"
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            for _ in range(2):  # the second page: the first one's session left no lock
                page = browser.new_page()
                page.route(re.compile(r"^https?://(?!127\.0\.0\.1)"),
                           lambda route: route.abort())
                pid_file.unlink(missing_ok=True)
                page.goto(f"http://127.0.0.1:{port}/")
                poll(pid_file.exists, "hold to start",
                     sleep=lambda page=page: page.wait_for_timeout(50))
                worker = int(pid_file.read_text())
                session = descendants(psutil.Process(proc.pid))
                assert session
                page.close()
                poll(lambda session=session, worker=worker: all(gone(p.pid) for p in session)
                     and gone(worker), "the session to end with its page")
        finally:
            browser.close()
    assert proc.poll() is None  # the server goes on serving
    assert not worker_processes()


def test_options_of_dev_reach_each_pages_session(tmp_path: Path) -> None:
    """`--set` (and -j, the targets) are given again to the session each page starts."""
    from playwright.sync_api import sync_playwright

    files = dict(PROJECT)
    files["tasks/report.py"] = '''
        # /// task
        # after = ["hold"]
        # [params]
        # suffix = "!"
        # ///
        def run(hold, suffix):
            return hold.upper() + suffix
    '''
    root = write_project(tmp_path / "proj", files)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "watchrun", "-C", str(root), "dev", "--web", "--port", str(port),
         "-j", "1", "--set", "report.suffix=?!", "report"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cli_env(),
        stdin=subprocess.DEVNULL, start_new_session=True)
    screen = Screen()
    try:
        poll(lambda: listening(port), "the server to listen")
        with tempfile.TemporaryDirectory() as profile, sync_playwright() as pw:
            browser = pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1400, "height": 900})
            try:
                page = browser.new_page()
                page.route(re.compile(r"^https?://(?!127\.0\.0\.1)"),
                           lambda route: route.abort())
                page.on("websocket", screen.on_websocket)
                page.goto(f"http://127.0.0.1:{port}/")
                poll(lambda: (root / "hold.pid").exists(), "hold to start",
                     sleep=lambda: page.wait_for_timeout(50))
                session = next(p for p in descendants(psutil.Process(proc.pid))
                               if "dev" in p.cmdline())
                argv = session.cmdline()
                assert "--set=report.suffix=?!" in argv and argv[-1] == "report"
                assert argv[argv.index("-j") + 1] == "1"
                page.locator(".xterm-helper-textarea").focus()
                page.keyboard.press("End")  # report
                poll(lambda: "suffix = '?!'" in screen.text(), "the overridden param",
                     sleep=lambda: page.wait_for_timeout(50))
                page.keyboard.press("q")
                poll(lambda: gone(session.pid), "the session to end",
                     sleep=lambda: page.wait_for_timeout(50))
            finally:
                browser.close()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
    assert not worker_processes()
