"""The workers `watchrun build` starts before it imports the engine (executors/spawn.py): the
console script hands its `EarlyWorkers` down to the executor, which adopts them instead of
starting its own; what nothing took is killed and reaped by `end`. Real processes throughout."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import psutil
import pytest

from tests.test_executor_local import GRACE, Harness, gone, make_job, write_task
from watchrun.executors.local import LocalExecutor
from watchrun.executors.spawn import EarlyWorkers, worker_env

pytestmark = pytest.mark.usefixtures("no_leaks")

PID_TASK = "import os\n\ndef run():\n    return (os.getpid(), os.getppid())\n"


def children() -> set[int]:
    return {p.pid for p in psutil.Process().children()}


def started_early(count: int) -> tuple[EarlyWorkers, set[int]]:
    """An EarlyWorkers that started `count` workers (or the template), and their pids."""
    before = children()
    early = EarlyWorkers()
    early.start(count)
    return early, children() - before


def run_one(root: Path, early: EarlyWorkers, warm: bool) -> tuple[int, int]:
    """(pid, parent pid) of the worker an executor made with `early` ran a unit in."""

    async def main() -> tuple[int, int]:
        harness = Harness(root)
        harness.executor = LocalExecutor(harness.sink, 1, GRACE, on_pgroup=harness.on_pgroup,
                                         preload=(lambda: []) if warm else None, early=early)
        try:
            job = make_job(root, "pids")
            harness.submit(job)
            pid, parent = await harness.result(job.key)
            return int(pid), int(parent)
        finally:
            await harness.executor.close()

    write_task(root, "pids", PID_TASK)
    return asyncio.run(main())


def test_the_executor_runs_its_first_unit_in_a_worker_started_early(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHRUN_NO_TEMPLATE", "1")  # workers started with exec
    early, pids = started_early(1)
    try:
        assert len(pids) == 1
        pid, _ = run_one(tmp_path, early, warm=False)
        assert {pid} == pids, "the executor started a worker of its own"
    finally:
        early.end()
    assert gone(pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the warm template: Linux")
def test_the_executor_forks_from_the_template_started_early(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHRUN_NO_TEMPLATE", raising=False)
    early, pids = started_early(1)
    try:
        assert len(pids) == 1
        template = pids.pop()
        pid, parent = run_one(tmp_path, early, warm=True)
        assert parent == template and pid != template
    finally:
        early.end()
    assert gone(template)


@pytest.mark.parametrize("template", [False, True], ids=["workers", "template"])
def test_what_nothing_took_is_killed_and_reaped(monkeypatch: pytest.MonkeyPatch,
                                                template: bool) -> None:
    """A build with nothing to run, or one stopped by a project error, takes nothing."""
    if template and not sys.platform.startswith("linux"):
        pytest.skip("the warm template: Linux")
    if template:
        monkeypatch.delenv("WATCHRUN_NO_TEMPLATE", raising=False)
    else:
        monkeypatch.setenv("WATCHRUN_NO_TEMPLATE", "1")
    early, pids = started_early(2)
    assert len(pids) == (1 if template else 2)
    early.end()
    assert children().isdisjoint(pids), "left running or unreaped (a zombie is still a child)"


def test_workers_started_in_another_environment_are_not_taken(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An executor whose workers need another environment must not run in these."""
    monkeypatch.setenv("WATCHRUN_NO_TEMPLATE", "1")
    early, pids = started_early(1)
    try:
        other = {**worker_env(), "WATCHRUN_TEST_OTHER": "1"}
        assert early.take(other) is None and early.take_template(other) is None
    finally:
        early.end()
    assert children().isdisjoint(pids)
