"""watchrun through Ray Client (`ray://HOST:PORT`) on the real two-node cluster
(tests/ray_fixtures.py): a killed watchrun's units end within seconds, not after Ray Client's
reconnect grace (about 30 s), because the nodes stop hearing its heartbeat."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import cli_env, gone, wait_for, worker_processes
from tests.ray_fixtures import TwoNodes, on_two_nodes

# a unit with a subprocess of its own, both running until something ends them
SPAWNER = """
# /// task
# ///
import os, subprocess, time
from pathlib import Path

def run():
    kid = subprocess.Popen(["sleep", "300"])
    Path("pids").mkdir(exist_ok=True)
    Path("pids", "{name}").write_text(f"{os.getpid()} {kid.pid}")
    time.sleep(300)
"""


def client_address(cluster: TwoNodes) -> str:
    return f"ray://127.0.0.1:{cluster.head.client_port}"


def spawn_with_output(root: Path, *args: str) -> subprocess.Popen[str]:
    """watchrun with its output in files (nothing it prints can fill a pipe nobody reads), so
    that a failure can say what it printed."""
    out = (root.parent / "stdout").open("w")
    err = (root.parent / "stderr").open("w")
    with out, err:
        return subprocess.Popen([sys.executable, "-m", "watchrun", "-C", str(root), *args],
                                stdout=out, stderr=err, text=True, env=cli_env(),
                                stdin=subprocess.DEVNULL)


def what_it_printed(root: Path) -> str:
    return "".join(f"\n--- {name}:\n{(root.parent / name).read_text()[-4000:]}"
                   for name in ("stdout", "stderr"))


@on_two_nodes
def test_kill_9_of_watchrun_over_ray_client_ends_its_units_within_seconds(
        project: Callable[[dict[str, str]], Path], two_nodes: TwoNodes) -> None:
    names = ("a", "b")
    root = project({f"tasks/{n}.py": SPAWNER.replace("{name}", n) for n in names})
    build = spawn_with_output(root, "build", "--json", "--executor", "ray",
                              "--address", client_address(two_nodes))
    try:
        def both_running() -> bool:
            assert build.poll() is None, f"watchrun ended ({build.returncode}) before both " \
                f"units ran:{what_it_printed(root)}"
            return len(list((root / "pids").glob("*"))) == 2

        try:
            wait_for(both_running, timeout=150, what="both units and their subprocesses to run")
        except AssertionError as exc:
            if "timed out" in str(exc):
                raise AssertionError(f"{exc}; watchrun printed:{what_it_printed(root)}") from None
            raise
        pids = [int(pid) for n in names for pid in (root / "pids" / n).read_text().split()]
        time.sleep(2.0)  # the heartbeat has reached the nodes by now
        os.kill(build.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        build.wait(timeout=10)
        wait_for(lambda: all(gone(pid) for pid in pids), timeout=15,
                 what="the units and their subprocesses to end")
        ended_in = time.monotonic() - killed_at
        # nothing the nodes kept warm for it stays either
        wait_for(lambda: not worker_processes(), timeout=15, what="the idle workers to end")
    finally:
        if build.poll() is None:
            build.kill()
            build.wait()
    print(f"kill -9 of watchrun (ray://) -> its units ended: {ended_in:.1f} s")
    assert ended_in < 10, ended_in  # Ray Client alone keeps them about 30 s
