"""`watchrun dev --no-tui --json` on the real two-node Ray cluster (tests/ray_fixtures.py), as a
JSON consumer sees it: every unit that starts ends with one event before it starts again, a
cancel that reaches a unit whose node worker is still starting is not lost, and pausing a task
stops its units on their nodes and its scheduling."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import cli_env, wait_for
from tests.devproc import DevProcess
from tests.ray_cluster import WORK_SCOPE, heavy_import_gate
from tests.ray_fixtures import TwoNodes, on_two_nodes

TERMINAL = {"unit_finished", "unit_failed", "unit_cancelled"}


def on_ray(cluster: TwoNodes) -> tuple[str, ...]:
    return ("--executor", "ray", "--address", cluster.address)


def unpaired(events: list[dict[str, Any]]) -> list[str]:
    """What breaks the rule "each `unit_started` is followed by exactly one terminal event of
    that unit (or a `unit_retry`: that attempt ended) before the unit starts again", and the
    units still open at the end."""
    running: dict[tuple[str, tuple[int, ...]], int] = {}
    problems = []
    for index, event in enumerate(events):
        name = event["event"]
        if name not in TERMINAL and name not in ("unit_started", "unit_retry"):
            continue
        unit = (event["task"], tuple(event["iter"]))
        if name == "unit_started":
            if unit in running:
                problems.append(f"{unit} started again at event {index} without ending "
                                f"(started at {running[unit]})")
            running[unit] = index
        elif running.pop(unit, None) is None:
            problems.append(f"{name} of {unit} at event {index}, which was not running")
    problems += [f"{unit} started at event {i} never ended" for unit, i in running.items()]
    return problems


def settle(proc: DevProcess, quiet_for: float = 3.0, timeout: float = 150.0) -> None:
    """Wait until the session is idle and stays quiet: the last change is fully handled."""
    deadline = time.monotonic() + timeout
    while True:
        proc.idle(timeout=max(deadline - time.monotonic(), 1.0))
        if not proc.quiet(quiet_for):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the session never settled: {proc.events[-20:]}")


HELPER = "K = {version}\n"

QUICK = """
# /// task
# ///
import time
from lib import helpers

def run():
    time.sleep({sleep})
    return helpers.K
"""

GENERATOR = """
# /// task
# kind = "generator"
# ///
def run():
    yield from range(4)
"""

STEP = """
# /// task
# after = ["gen"]
# ///
import time
from lib import helpers

def run(gen):
    time.sleep(0.15 + 0.05 * gen)
    return (gen, helpers.K)
"""


@on_two_nodes
def test_every_started_unit_ends_once_through_many_quick_saves(
        project: Callable[[dict[str, str]], Path], two_nodes: TwoNodes) -> None:
    """Saves that come while units run make them stale; some finish before the cancel
    reaches them on their node. Each start still gets its one end, and nothing stays open."""
    files = {f"tasks/quick{i}.py": QUICK.replace("{sleep}", str(0.1 + 0.1 * i))
             for i in range(3)}
    files.update({"lib/__init__.py": "", "lib/helpers.py": HELPER.format(version=0),
                  "tasks/gen.py": GENERATOR, "tasks/step.py": STEP})
    root = project(files)
    proc = DevProcess(root, *on_ray(two_nodes))
    try:
        proc.idle(timeout=150)
        for version in range(1, 16):
            (root / "lib/helpers.py").write_text(HELPER.format(version=version))
            time.sleep(0.1 + 0.05 * (version % 5))  # saves that land at every moment of a unit
        settle(proc)
    finally:
        assert proc.stop(timeout=60) in (0, 130), proc.stderr()
    events = proc.events
    problems = unpaired(events)
    assert not problems, problems
    # the last version ran to the end, every unit of it
    finished = [e for e in events if e["event"] == "unit_finished"]
    assert {e["task"] for e in finished} >= {"quick0", "quick1", "quick2", "step"}
    cancelled = [e for e in events if e["event"] == "unit_cancelled"]
    assert cancelled, "no save made a running unit stale: the test proves nothing"
    late = [e for e in cancelled if e["signal"] == "none"]
    print(f"{len(cancelled)} stale units, {len(late)} of them ended before the cancel came")


HEAVY = """
# /// task
# ///
import os
from pathlib import Path

import tests.ray_heavy_import  # a library that takes seconds to import (see that module)

def run():
    Path("ran.1").write_text(str(os.getpid()))
    return 1
"""


@on_two_nodes
def test_a_cancel_that_comes_while_the_node_worker_starts_ends_it_at_once(
        project: Callable[[dict[str, str]], Path], two_nodes: TwoNodes) -> None:
    """The unit's worker waits for its node template to import what the task imports when a
    save makes the unit stale: the worker is ended at once, and the stale unit never runs."""
    gate = heavy_import_gate()
    shutil.rmtree(gate, ignore_errors=True)
    gate.mkdir()
    root = project({"tasks/heavy.py": HEAVY})
    proc = DevProcess(root, *on_ray(two_nodes))
    try:
        wait_for(lambda: any(gate.glob("importing.*")), timeout=120,
                 what="the node to start the unit's worker")
        (root / "tasks/heavy.py").write_text(HEAVY.replace("ran.1", "ran.2"))
        proc.wait(lambda e: e["event"] == "change", timeout=30, what="the change")
        time.sleep(2.0)  # ray.cancel reaches the Ray worker while its watchrun worker starts
        (gate / "go").write_text("")
        let_go = time.monotonic()
        cancelled = proc.wait(lambda e: e["event"] == "unit_cancelled", timeout=60,
                              what="the stale unit's cancel")
        ended_in = time.monotonic() - let_go
        wait_for(lambda: (root / "ran.2").exists(), timeout=120, what="the new version to run")
        settle(proc)
    finally:
        (gate / "go").write_text("")
        assert proc.stop(timeout=60) in (0, 130), proc.stderr()
        shutil.rmtree(gate, ignore_errors=True)
    assert not (root / "ran.1").exists(), "the stale unit ran"
    # the node ends the starting worker (SIGKILL, as locally); Ray may also report the task
    # as cancelled itself (then the driver says SIGINT)
    assert cancelled["task"] == "heavy" and cancelled["signal"] in ("SIGKILL", "SIGINT")
    # at once, not after the cancel sequence (2 x grace) and the driver's own deadline
    print(f"cancelled {ended_in:.2f} s after the import ended: {cancelled}")
    assert ended_in < 2 * 2.0, ended_in
    assert not unpaired(proc.events), proc.events


@on_two_nodes
def test_space_in_the_tui_pauses_a_task_on_its_nodes_and_its_scheduling(
        project: Callable[[dict[str, str]], Path], two_nodes: TwoNodes) -> None:
    """`watchrun dev` with its TUI (tests/ray_cluster.py, tui_pause_scenario): `space` on a
    task whose units run on the cluster stops them on their nodes (SIGSTOP: their tick files
    stand still) and starts no new unit of it; `space` again resumes, and every unit ends."""
    toml = (f'jobs = 0\ngrace = 0.5\n[executor]\nkind = "ray"\n'
            f'address = "{two_nodes.address}"\n')
    root = project({**WORK_SCOPE, "watchrun.toml": toml})
    out = subprocess.run([sys.executable, "-m", "tests.ray_cluster", "tuipause", str(root)],
                         capture_output=True, text=True, timeout=170, env=cli_env(),
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    print({k: v for k, v in seen.items() if k != 'ticked_while_paused'})
    assert seen["said_on_pause"] == "work: paused (space resumes)", seen
    before, after = seen["ticked_while_paused"]
    assert before == after and seen["started_while_paused"] == 0, seen
    assert seen["said_on_resume"] == "work: resumed", seen
    assert seen["finished"] == 6, seen
