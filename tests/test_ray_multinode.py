"""watchrun on a real two-node Ray cluster on this machine (tests/ray_fixtures.py: a head with
one CPU and a second node with two, both on loopback, the project folder shared by path).

Units land on both nodes; a node whose raylet is killed mid-build fails only its own units,
"node lost", without a hang and without losing the others' results; a unit that asks for what
no node has fails at once; `dev` cancels a unit running on the second node."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Run, cli_env, gone, read_pid, spawn_watchrun, wait_for, watchrun
from tests.devproc import DevProcess
from tests.ray_fixtures import TwoNodes, on_two_nodes

NODE_LINE = re.compile(r"\[watchrun\] ran on Ray node ([0-9a-f]{8}) \(127\.0\.0\.1\)")


def on_ray(cluster: TwoNodes) -> tuple[str, ...]:
    return ("--executor", "ray", "--address", cluster.address)


def node_of(root: Path, task: str) -> str:
    found = NODE_LINE.findall((root / ".watchrun" / "logs" / f"{task}.log").read_text())
    assert len(found) == 1, f"{task}'s log names no node"
    return str(found[0])


def on_second_node(cluster: TwoNodes, pid: int) -> bool:
    return pid in {proc.pid for proc in cluster.node.processes()}


# two units that each wait until both run: on a head with one CPU, the second spills to the
# other node
BARRIER = """
# /// task
# ///
import os, time
from pathlib import Path

def run():
    Path("started").mkdir(exist_ok=True)
    Path("started", "{name}").write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while len(list(Path("started").iterdir())) < 2:
        if time.monotonic() > deadline:
            return "alone"
        time.sleep(0.05)
    return "together"
"""


@on_two_nodes
def test_units_land_on_both_nodes(project: Callable[[dict[str, str]], Path],
                                  two_nodes: TwoNodes) -> None:
    names = ("a", "b")
    root = project({f"tasks/{n}.py": BARRIER.replace("{name}", n) for n in names})
    run = watchrun(root, "build", "--json", *on_ray(two_nodes), timeout=150)
    assert run.code == 0, run.stdout + run.stderr
    for name in names:
        assert watchrun(root, "show", name).stdout.strip() == "together"
    nodes = {node_of(root, name) for name in names}
    assert len(nodes) == 2 and two_nodes.node.node_id[:8] in nodes, nodes
    # the events say it too: each unit's end names the node it ran on (its full id)
    ended = {e["task"]: e["node"] for e in run.events if e["event"] == "unit_finished"}
    assert set(ended) == set(names) and len(set(ended.values())) == 2, ended
    assert two_nodes.node.node_id in ended.values(), ended
    assert {node[:8] for node in ended.values()} == nodes


@on_two_nodes
def test_jobs_default_to_the_clusters_cpus_once_connected(two_nodes: TwoNodes) -> None:
    """Three CPUs in the cluster, two on this machine: the executor's CALL slots are this
    machine's count until it has joined, the cluster's after."""
    out = subprocess.run([sys.executable, "-m", "tests.ray_cluster", "slots", two_nodes.address],
                         capture_output=True, text=True, timeout=150, env=cli_env(),
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-3000:]
    slots = json.loads(out.stdout.strip().splitlines()[-1])
    assert slots == {"before": os.cpu_count() or 1, "after": 3}


# waits for its own go file: a unit on the node that dies must not end well by chance
WAITER = """
# /// task
# ///
import os, time
from pathlib import Path

def run():
    Path("started").mkdir(exist_ok=True)
    Path("started", "{name}").write_text(str(os.getpid()))
    while not Path("go.{name}").exists():
        time.sleep(0.05)
    return "{name} done"
"""


def failures(run: Run) -> dict[str, str]:
    return {e["task"]: e["error"] for e in run.events if e["event"] == "unit_failed"}


@on_two_nodes
def test_a_lost_node_fails_only_its_units_and_a_rerun_runs_only_those(
        project: Callable[[dict[str, str]], Path], two_nodes: TwoNodes) -> None:
    names = ("w1", "w2", "w3")
    files = {f"tasks/{n}.py": WAITER.replace("{name}", n) for n in names}
    files["tasks/quick.py"] = "# /// task\n# ///\ndef run():\n    return 'quick'\n"
    root = project(files)
    build = spawn_watchrun(root, "build", "--json", *on_ray(two_nodes))
    try:
        wait_for(lambda: len(list((root / "started").glob("*"))) == 3, timeout=120,
                 what="the three waiters to run")
        pids = {n: read_pid(root / "started" / n) for n in names}
        lost = {n for n, pid in pids.items() if on_second_node(two_nodes, pid)}
        assert lost and lost != set(names), f"the second node runs {lost}"
        killed_at = two_nodes.node.kill_raylet()
        for name in set(names) - lost:
            (root / f"go.{name}").write_text("")
        stdout, stderr = build.communicate(timeout=120)
        ended_in = time.monotonic() - killed_at
    finally:
        if build.poll() is None:
            build.kill()
            build.wait()
    run = Run(build.returncode, stdout, stderr)
    assert run.code == 1, run.stdout + run.stderr
    # Ray's own report of the dead raylet stays out of the --json output
    assert all(line.startswith("{") for line in stdout.splitlines() if line), stdout
    failed = failures(run)
    assert set(failed) == lost, failed
    for name in lost:
        assert failed[name].startswith("node lost: Ray node "), failed[name]
        assert two_nodes.node.node_id[:8] in failed[name]
        wait_for(lambda: gone(pids[name]), what="the lost unit's process to end")  # noqa: B023
    # the others' results were committed
    for name in {*names, "quick"} - lost:
        assert watchrun(root, "show", name).stdout.strip() == (
            "quick" if name == "quick" else f"{name} done")
    print(f"kill of the raylet -> build ended: {ended_in:.1f} s")
    # a rerun (on the head alone now) runs the lost units and nothing else
    for name in lost:
        (root / f"go.{name}").write_text("")
    again = watchrun(root, "build", "--json", *on_ray(two_nodes), timeout=150)
    assert again.code == 0, again.stdout + again.stderr
    assert sorted(again.ran()) == sorted(lost)


@on_two_nodes
def test_a_request_no_node_can_meet_fails_at_once(
        project: Callable[[dict[str, str]], Path], two_nodes: TwoNodes) -> None:
    root = project({
        "tasks/train.py": "# /// task\n# resources = {gpus = 1}\n# ///\n"
                          "def run():\n    return 1\n",
        "tasks/huge.py": "# /// task\n# resources = {cpus = 64, memory = '1T'}\n# ///\n"
                         "def run():\n    return 1\n",
        "tasks/fine.py": "# /// task\n# resources = {cpus = 2, memory = '100M'}\n# ///\n"
                         "def run():\n    return 'fine'\n",
    })
    run = watchrun(root, "build", "--json", *on_ray(two_nodes), timeout=150)
    assert run.code == 1, run.stdout + run.stderr
    failed = failures(run)
    assert set(failed) == {"train", "huge"}, failed
    assert failed["train"].startswith("train asks for 1 GPU (its `resources`), and no node of "
                                      f"the Ray cluster at {two_nodes.address} has that much "
                                      "(the most one node has: 0 GPUs)"), failed["train"]
    assert "64 CPUs, 1024 GiB memory" in failed["huge"], failed["huge"]
    assert "the most one node has: 2 CPUs" in failed["huge"], failed["huge"]
    # cpus = 2 fits only the second node: it ran there
    assert node_of(root, "fine") == two_nodes.node.node_id[:8]


SPIN = """
# /// task
# resources = {cpus = 2}
# ///
import os, time
from pathlib import Path

def run():
    Path("spin.pid").write_text(str(os.getpid()))
    while True:
        time.sleep(0.05)  # version 1
"""


@on_two_nodes
def test_dev_cancels_a_unit_running_on_the_second_node(
        project: Callable[[dict[str, str]], Path], two_nodes: TwoNodes) -> None:
    root = project({"tasks/spin.py": SPIN})
    proc = DevProcess(root, *on_ray(two_nodes))
    try:
        wait_for(lambda: (root / "spin.pid").exists(), timeout=120, what="the unit to run")
        pid = read_pid(root / "spin.pid")
        assert on_second_node(two_nodes, pid), "cpus = 2 fits only the second node"
        (root / "spin.pid").unlink()
        changed = SPIN.replace("time.sleep(0.05)  # version 1", "time.sleep(0.04)")
        (root / "tasks/spin.py").write_text(changed)
        cancelled = proc.wait(lambda e: e["event"] == "unit_cancelled", timeout=60,
                              what="the stale unit's cancel")
        assert cancelled["task"] == "spin"
        wait_for(lambda: gone(pid), what="the cancelled unit's process to end")
        # and the new version runs, on the second node again
        wait_for(lambda: (root / "spin.pid").exists(), timeout=120, what="the new unit")
        assert on_second_node(two_nodes, read_pid(root / "spin.pid"))
    finally:
        assert proc.stop(timeout=60) in (0, 130), proc.stderr()


# -- the request rules, fast (no cluster: the module imports no Ray until it connects) ----------

@pytest.mark.ray
def test_resources_become_the_ray_request() -> None:
    pytest.importorskip("ray")
    from watchrun.executors.ray_nodes import ray_options

    assert ray_options({}, persistent=False) == {"num_cpus": 1}
    assert ray_options({}, persistent=True) == {"num_cpus": 0}
    assert ray_options({"cpus": 0.5, "gpus": 1, "memory": "2G"}, persistent=False) == {
        "num_cpus": 0.5, "num_gpus": 1, "memory": 2 * 2**30}
    assert ray_options({"gpus": 0, "memory": 1000}, persistent=True) == {
        "num_cpus": 0, "memory": 1000}


@pytest.mark.ray
def test_a_request_fits_when_one_node_has_all_of_it() -> None:
    pytest.importorskip("ray")
    from watchrun.executors.ray_nodes import Cluster, Node

    cluster = object.__new__(Cluster)
    cluster.nodes = {
        "a": Node("a", "10.0.0.1", {"CPU": 8.0, "memory": 2.0**34}),
        "b": Node("b", "10.0.0.2", {"CPU": 2.0, "GPU": 1.0, "memory": 2.0**33}),
    }
    assert cluster.shortfall({"CPU": 8, "GPU": 0, "memory": 0}) is None
    assert cluster.shortfall({"CPU": 2, "GPU": 1, "memory": 0}) is None
    # enough CPUs on one node and a GPU on the other is not enough
    assert cluster.shortfall({"CPU": 4, "GPU": 1, "memory": 0}) == {"CPU": 8.0, "GPU": 1.0}
    assert cluster.shortfall({"CPU": 1, "GPU": 2, "memory": 0}) == {"GPU": 1.0}
    cluster.nodes = {}  # nothing known (Ray Client): Ray decides
    assert cluster.shortfall({"CPU": 99, "GPU": 9, "memory": 0}) is None


@pytest.mark.ray
def test_a_jobs_parsed_resources_become_the_same_request() -> None:
    # the executor reads the job's `resources` (parsed by the driver), not the header again
    pytest.importorskip("ray")
    from watchrun.executors.ray_nodes import ray_options, resources_table
    from watchrun.project.model import Resources

    assert ray_options(resources_table(None), persistent=True) == {"num_cpus": 0}
    assert ray_options(resources_table(Resources(cpus=0.5, gpus=1, memory=2 * 2**30)),
                       persistent=False) == {"num_cpus": 0.5, "num_gpus": 1,
                                             "memory": 2 * 2**30}


def test_the_tui_detail_names_the_node_of_the_latest_unit() -> None:
    """The engine's events carry the node (Ray); the detail pane shows it. No cluster: the
    board and the pane folded from events, as the app does."""
    from watchrun.engine import events as ev
    from watchrun.engine.control import ProjectView, TaskView
    from watchrun.ui.tui.detail import describe
    from watchrun.ui.tui.state import Board

    view = TaskView(name="train", kind="task", chain=("train",), upstreams=(),
                    downstreams=(), params=(), scope=(), file="tasks/train.py")
    board = Board(ProjectView([view], [], 1), clock=lambda: 0.0)
    board.apply(ev.UnitStarted(task="train", iter=(), reasons=["never run"], time=1.0))
    assert "node" not in str(describe(board, "train", []))  # not known yet
    node = "1a2b3c4d" + "0" * 48
    board.apply(ev.UnitFinished(task="train", iter=(), duration=1.0, node=node, time=2.0))
    assert "node       1a2b3c4d\n" in str(describe(board, "train", []))



RETRIED_WAITER = WAITER.replace("# ///\n", "# retries = 1\n# ///\n", 1)


@on_two_nodes
def test_a_unit_lost_with_its_node_reruns_on_another_with_retries(
        project: Callable[[dict[str, str]], Path], two_nodes: TwoNodes) -> None:
    """retries = 1: the units of the node whose raylet is killed run again on the head, the
    build ends 0, and every result is kept (with retries = 0 they fail "node lost": see
    test_a_lost_node_fails_only_its_units_and_a_rerun_runs_only_those)."""
    names = ("w1", "w2", "w3")
    files = {f"tasks/{n}.py": RETRIED_WAITER.replace("{name}", n) for n in names}
    # the first wave takes this machine's CPU count (2) until Ray is joined: a unit that
    # ends lets the scheduler use the cluster's three
    files["tasks/quick.py"] = "# /// task\n# ///\ndef run():\n    return 'quick'\n"
    root = project(files)
    build = spawn_watchrun(root, "build", "--json", *on_ray(two_nodes))
    try:
        wait_for(lambda: len(list((root / "started").glob("*"))) == 3, timeout=120,
                 what="the three waiters to run")
        pids = {n: read_pid(root / "started" / n) for n in names}
        lost = {n for n, pid in pids.items() if on_second_node(two_nodes, pid)}
        assert lost and lost != set(names), f"the second node runs {lost}"
        two_nodes.node.kill_raylet()
        for name in set(names) - lost:
            (root / f"go.{name}").write_text("")
        for name in lost:  # once the first attempt is gone, its rerun may finish
            wait_for(lambda: gone(pids[name]), timeout=30,  # noqa: B023 - used at once
                     what="the lost unit's process to end")
            (root / f"go.{name}").write_text("")
        stdout, stderr = build.communicate(timeout=150)
    finally:
        if build.poll() is None:
            build.kill()
            build.wait()
    run = Run(build.returncode, stdout, stderr)
    assert run.code == 0, run.stdout + run.stderr
    retried = {e["task"]: e["cause"] for e in run.events if e["event"] == "unit_retry"}
    assert set(retried) == lost, retried
    for name in lost:
        assert "node lost: Ray node " in retried[name], retried[name]
    finished = {e["task"]: e.get("node") for e in run.events if e["event"] == "unit_finished"}
    assert set(finished) == {*names, "quick"}, finished
    for name in lost:  # the rerun ran on a node that is left: the head
        assert finished[name] and finished[name] != two_nodes.node.node_id, finished
    for name in names:
        assert watchrun(root, "show", name).stdout.strip() == f"{name} done"
