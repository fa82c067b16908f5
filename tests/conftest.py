"""Shared fixtures: small projects in temporary folders, the real CLI, and a leak check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
# the Ray cluster fixtures: one cluster per session, whichever module asks for it
pytest_plugins = ["tests.ray_fixtures"]


def write_project(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]

    def units(self, event: str) -> list[tuple[str, tuple[int, ...]]]:
        return [(e["task"], tuple(e["iter"])) for e in self.events if e["event"] == event]

    def ran(self) -> list[str]:
        """Names of the tasks that started a unit, in order (with [i] for iterations)."""
        return [t + "".join(f"[{i}]" for i in it) for t, it in self.units("unit_started")]


# Every process this test session starts carries this tag, so the leak check sees only ours
# (other test sessions may run on the same machine).
SESSION_TAG = f"{os.getpid()}-{time.time()}"


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["WATCHRUN_TEST_SESSION"] = SESSION_TAG
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("NO_COLOR", None)
    return env


def watchrun(root: Path, *args: str, timeout: float = 60) -> Run:
    proc = subprocess.run(
        [sys.executable, "-m", "watchrun", "-C", str(root), *args],
        capture_output=True, text=True, timeout=timeout, env=cli_env(), stdin=subprocess.DEVNULL,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def spawn_watchrun(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "watchrun", "-C", str(root), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
        stdin=subprocess.DEVNULL,
    )


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
             ) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def read_pid(path: Path, timeout: float = 10.0) -> int:
    """Wait until a task has written its pid file completely, then read it."""
    wait_for(lambda: path.exists() and path.read_text().strip().isdigit(), timeout,
             what=f"{path.name} to be written")
    return int(path.read_text())


def gone(pid: int) -> bool:
    try:
        return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # it ended between the two looks
        return True


def worker_processes() -> list[psutil.Process]:
    """Live watchrun workers started by this test session."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if not any("watchrun.executors.worker" in part for part in cmd) or \
                proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if proc.environ().get("WATCHRUN_TEST_SESSION") == SESSION_TAG:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.fixture
def project(tmp_path: Path) -> Callable[[dict[str, str]], Path]:
    def make(files: dict[str, str]) -> Path:
        return write_project(tmp_path / "proj", files)

    return make


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """After the test, no watchrun worker may be alive (they must not outlive watchrun).
    `watchrun dev` processes a failed test left behind are stopped first."""
    from tests.devproc import DevProcess

    yield
    while DevProcess.started:
        proc = DevProcess.started.pop()
        if proc.proc.poll() is None or not (proc.proc.stdout and proc.proc.stdout.closed):
            proc.stop()
    try:
        wait_for(lambda: not worker_processes(), timeout=5, what="workers to exit")
    except AssertionError:
        leftovers = worker_processes()
        for proc in leftovers:
            proc.kill()
        raise AssertionError(
            f"workers outlived watchrun: {[p.pid for p in leftovers]}") from None
