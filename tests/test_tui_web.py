"""`watchrun dev --web` in a real browser: the real CLI serves the TUI with textual-serve, headless
Chromium (Debian's package) opens the page through Playwright, keys typed in the page reach the
task's process, and `q` then stopping the server leaves nothing running.

Run with `pytest -m web`. Needs `apt-get install chromium` and `pip install playwright` (the
browser Playwright downloads is not used: `executable_path` points at the system's).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import cli_env, gone, worker_processes, write_project
from tests.tui_sessions import (
    CHROMIUM,
    HOLD_PROJECT,
    Screen,
    browser,
    descendants,
    free_port,
    listening,
    local_page,
    poll,
)

pytestmark = [
    pytest.mark.web,
    pytest.mark.timeout(120),
    pytest.mark.usefixtures("no_leaks"),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium is not installed"),
]

PROJECT = HOLD_PROJECT


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
    proc, port, root = server
    server_process = psutil.Process(proc.pid)
    screen = Screen()
    with browser(viewport={"width": 1400, "height": 900}) as context:
        page = local_page(context, screen)

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
    proc, port, root = server
    with browser() as context:
        page = local_page(context)
        page.goto(f"http://127.0.0.1:{port}/")
        pid_file = root / "hold.pid"
        poll(pid_file.exists, "hold to start", sleep=lambda: page.wait_for_timeout(50))
        worker = int(pid_file.read_text())
        session = descendants(psutil.Process(proc.pid))
        assert session
        os.kill(proc.pid, signal.SIGKILL)  # nothing tells the session: it must notice
        poll(lambda: all(gone(p.pid) for p in session) and gone(worker),
             "the session and its worker to end", sleep=lambda: page.wait_for_timeout(50))
    assert not worker_processes()
    # the project is not left locked
    (root / "hold.go").write_text("")
    assert subprocess.run([sys.executable, "-m", "watchrun", "-C", str(root), "build"],
                          env=cli_env(), capture_output=True, timeout=60).returncode == 0


def test_closing_the_page_ends_its_session_and_a_new_page_starts_another(
        server: tuple[subprocess.Popen[str], int, Path]) -> None:
    proc, port, root = server
    pid_file = root / "hold.pid"
    with browser() as context:
        for _ in range(2):  # the second page: the first one's session left no lock
            page = local_page(context)
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
    assert proc.poll() is None  # the server goes on serving
    assert not worker_processes()


def test_options_of_dev_reach_each_pages_session(tmp_path: Path) -> None:
    """`--set` (and -j, the targets) are given again to the session each page starts."""
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
        with browser(viewport={"width": 1400, "height": 900}) as context:
            page = local_page(context, screen)
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
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
    assert not worker_processes()
