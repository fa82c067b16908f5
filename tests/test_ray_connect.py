"""Joining a Ray cluster as a user meets it: a typo in the port, an address where nothing
answers, a cluster that wants a token, `address = "auto"` on a loopback cluster, Ctrl-C while
connecting, the TUI's stderr, and a second attempt after a failed one.

Each is a usage error (exit 2, one sentence naming the address, nothing recorded as failed),
found before anything is planned."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO, cli_env, spawn_watchrun, wait_for, watchrun, write_project
from tests.ray_cluster import RayCluster
from tests.ray_fixtures import HAVE_RAY, on_the_cluster

ONE_TASK = {"tasks/t.py": "# /// task\n# ///\ndef run():\n    return 41 + 1\n"}
AUTH_VARIABLES = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")



def with_ray_installed(test: Callable[..., None]) -> Callable[..., None]:
    """Needs the Ray package, not the session's cluster."""
    marks = (pytest.mark.ray, pytest.mark.usefixtures("no_leaks"),
             pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed: "
                                "pip install 'watchrun[ray]'"))
    for mark in marks:
        test = mark(test)
    return test


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def silent_address() -> Iterator[str]:
    """A port that accepts TCP connections and never says a word (a firewall that swallows
    packets, or a service that is not Ray, look the same to a client)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def assert_usage_error(run_code: int, stderr: str, *words: str) -> None:
    assert run_code == 2, stderr
    assert "Traceback" not in stderr
    assert stderr.count("watchrun: error:") == 1, stderr
    for word in words:
        assert word in stderr, stderr


def assert_nothing_recorded(root: Path) -> None:
    status = watchrun(root, "status")
    assert "FAILED" not in status.stdout, status.stdout
    assert "never" in status.stdout, status.stdout


@with_ray_installed
@pytest.mark.parametrize("command", ["build", "dev"])
def test_a_port_where_nothing_listens_is_a_usage_error_at_once(
        tmp_path: Path, command: str) -> None:
    address = f"127.0.0.1:{_free_port()}"
    root = write_project(tmp_path / "proj", {
        **ONE_TASK, "watchrun.toml": f'[executor]\nkind = "ray"\naddress = "{address}"\n'})
    args = ["build"] if command == "build" else ["dev", "--no-tui"]
    # a hang would be Ray's own retrying (minutes): the subprocess timeout catches it
    run = watchrun(root, *args, timeout=60)
    assert_usage_error(run.code, run.stderr, address, "connection refused")
    assert "FAILED" not in run.stdout
    assert_nothing_recorded(root)


@with_ray_installed
def test_an_address_that_never_answers_fails_after_the_configured_wait(
        tmp_path: Path, silent_address: str) -> None:
    config = f'[executor]\nkind = "ray"\naddress = "{silent_address}"\nconnect_timeout = 1\n'
    root = write_project(tmp_path / "proj", {**ONE_TASK, "watchrun.toml": config})
    run = watchrun(root, "build", timeout=60)
    assert_usage_error(run.code, run.stderr, silent_address, "within 1 s", "connect_timeout")
    assert_nothing_recorded(root)


@with_ray_installed
def test_ctrl_c_while_connecting_exits_at_once(tmp_path: Path, silent_address: str) -> None:
    config = f'[executor]\nkind = "ray"\naddress = "{silent_address}"\nconnect_timeout = 300\n'
    root = write_project(tmp_path / "proj", {**ONE_TASK, "watchrun.toml": config})
    proc = spawn_watchrun(root, "build")
    try:
        # the client has connected once watchrun asks: then it waits for an answer
        wait_for(lambda: _connections_to(silent_address, proc.pid) > 0, timeout=30,
                 what="watchrun to connect")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr


def _connections_to(address: str, pid: int) -> int:
    port = int(address.rsplit(":", 1)[1])
    try:
        return sum(1 for c in psutil.Process(pid).net_connections(kind="tcp")
                   if c.raddr and c.raddr.port == port)
    except psutil.NoSuchProcess:
        return 0


@on_the_cluster
def test_a_cluster_that_wants_a_token_says_so(tmp_path: Path, ray_env: RayCluster,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for name in AUTH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.ray/auth_token either
    root = write_project(tmp_path / "proj", ONE_TASK)
    run = watchrun(root, "build", "--executor", "ray", "--address", ray_env.address,
                   timeout=60)
    assert_usage_error(run.code, run.stderr, ray_env.address, "token authentication",
                       "RAY_AUTH_TOKEN")
    assert_nothing_recorded(root)


@on_the_cluster
def test_address_auto_joins_a_cluster_listening_on_loopback(
        tmp_path: Path, ray_env: RayCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_project(tmp_path / "proj", {
        **ONE_TASK, "watchrun.toml": '[executor]\nkind = "ray"\naddress = "auto"\n'})
    # "auto" is resolved the way Ray resolves it, RAY_ADDRESS first: named here so that the
    # test finds this session's cluster whatever else runs on the machine; the address is
    # known only after Ray is imported, which is the case that hung
    monkeypatch.setenv("RAY_ADDRESS", ray_env.address)
    run = watchrun(root, "build", "--json", timeout=120)
    assert run.code == 0, run.stdout + run.stderr
    assert run.ran() == ["t"]
    assert watchrun(root, "show", "t").stdout.strip() == "42"


CONNECT_UNDER_TEXTUAL = """
import asyncio, io, os, sys
from pathlib import Path

from watchrun.executors.base import EventKind, Job, Mode, UnitKey
from watchrun.executors.ray import RayExecutor


class NoDescriptor(io.TextIOBase):  # what Textual puts in sys.stderr while the TUI runs
    def write(self, text):
        return len(text)


async def main(root, address):
    sys.stderr = NoDescriptor()
    events = []
    executor = RayExecutor(events.append, jobs=1, grace=0.3, address=address)

    def job(attempt):
        return Job(UnitKey("t"), Mode.CALL, root, [(root / "tasks" / "t.py", "tasks")], {},
                   root / ".watchrun" / "logs" / f"t{attempt}.log", fresh_log=True)

    async def outcome():
        while not events:
            await asyncio.sleep(0.01)
        event = events.pop()
        return event.kind.name + " " + (event.error or "")

    token = {name: os.environ.pop(name) for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    executor.submit(job(1))
    first = await outcome()
    os.environ.update(token)  # the user fixes what was wrong, then presses `r`
    executor.submit(job(2))
    second = await outcome()
    await executor.close()
    print(first.splitlines()[0], file=sys.__stdout__)
    print(second.splitlines()[0], file=sys.__stdout__)


asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
"""


@on_the_cluster
def test_the_tui_s_stderr_does_not_stop_ray_and_a_failed_join_is_tried_again(
        tmp_path: Path, ray_env: RayCluster) -> None:
    root = write_project(tmp_path / "proj", ONE_TASK)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CONNECT_UNDER_TEXTUAL), str(root),
         ray_env.address],
        capture_output=True, text=True, timeout=150, env=cli_env(), cwd=REPO,
        stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    first, second = proc.stdout.splitlines()[-2:]
    assert first.startswith("DIED") and "token authentication" in first
    assert second.startswith("DONE"), second
    assert "fileno" not in proc.stdout + proc.stderr


@on_the_cluster
def test_units_carry_their_task_name_in_ray_s_process_list(tmp_path: Path,
                                                          ray_env: RayCluster) -> None:
    waiter = ("# /// task\n# ///\nimport time\nfrom pathlib import Path\n\ndef run():\n"
              "    Path('started').write_text('')\n"
              "    while not Path('go').exists():\n        time.sleep(0.01)\n    return 1\n")
    root = write_project(tmp_path / "proj", {"tasks/sweep/point.py": waiter})
    proc = spawn_watchrun(root, "build", "--executor", "ray", "--address", ray_env.address)
    try:
        wait_for(lambda: (root / "started").exists(), timeout=120, what="the unit to start")
        titles = [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])]
        (root / "go").write_text("")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert any("watchrun:sweep.point" in title for title in titles), \
        [t for t in titles if t.startswith("ray::")]


@pytest.mark.parametrize("command", [["build"], ["dev", "--no-tui"]])
def test_an_address_without_the_ray_executor_is_refused(tmp_path: Path,
                                                        command: list[str]) -> None:
    """Not silently local: the user meant a cluster."""
    root = write_project(tmp_path / "proj", ONE_TASK)
    watchrun(root, "build")  # clean: the null-build path must refuse it too
    run = watchrun(root, *command, "--address", "127.0.0.1:6379", timeout=60)
    assert_usage_error(run.code, run.stderr, "--address 127.0.0.1:6379", "--executor ray")
    assert "ran" not in run.stdout


@with_ray_installed
def test_dev_takes_the_executor_and_address_options(tmp_path: Path) -> None:
    address = f"127.0.0.1:{_free_port()}"
    root = write_project(tmp_path / "proj", ONE_TASK)  # the settings say local
    run = watchrun(root, "dev", "--no-tui", "--executor", "ray", "--address", address,
                   timeout=60)
    assert_usage_error(run.code, run.stderr, address, "connection refused")
