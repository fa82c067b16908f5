"""The live session's rules that live in the driver (engine/replanning.py, the checks in
engine/scheduler.py), over a fake executor the test drives unit by unit, on a real project
and store: which unit starts on which upstream values after a change, without processes.
The same cases run end to end in tests/test_plan_dev_e2e.py."""

from __future__ import annotations

import asyncio
import os
import pickle
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.fake_executors import FakeExecutorBase, driver_for
from watchrun.engine.events import Event
from watchrun.engine.scheduler import Scheduler
from watchrun.executors.base import EventKind, ExecEvent, Job, UnitKey
from watchrun.project.loader import ProjectLoader
from watchrun.session import default_targets, open_session

# d reads a and b; a change to both (a helper they share, say) reruns them
DIAMOND = {
    "tasks/a.py": "# /// task\n# ///\ndef run():\n    return 1\n",
    "tasks/b.py": "# /// task\n# ///\ndef run():\n    return 2\n",
    "tasks/d.py": '# /// task\n# after = ["a", "b"]\n# ///\ndef run(a, b):\n    return a + b\n',
}
FIRST = {"a": 1, "b": 2, "d": 3}  # the values of the first build


class StepExecutor(FakeExecutorBase):
    """Runs what it is given until the test ends it with a value (`finish`) or an error
    (`fail`); with `auto`, every unit ends at once with its value from there."""

    def __init__(self, auto: dict[str, int] | None = None) -> None:
        super().__init__()
        self.auto = auto
        self.submitted: list[UnitKey] = []
        self.cancelling: list[UnitKey] = []
        # what each unit of d was started on: its arguments
        self.upstreams: list[dict[str, int]] = []

    def free_slots(self) -> int:
        return 4 - len(self.busy)

    def submit(self, job: Job) -> None:
        self.submitted.append(job.key)
        if job.key.task == "d":
            self.upstreams.append({k: pickle.loads(v) for k, v in job.kwargs.items()})
        self.busy.add(job.key)
        self._report(job.key, EventKind.STARTED)
        if self.auto is not None:
            asyncio.get_running_loop().call_soon(self.finish, job.key.task, self.auto[job.key.task])

    def finish(self, task: str, value: int) -> None:
        self.busy.discard(UnitKey(task))
        self._report(UnitKey(task), EventKind.DONE, pickle.dumps(value))

    def cancel(self, key: UnitKey) -> None:
        self.cancelling.append(key)

    def cancelled(self, task: str) -> None:
        """The unit being cancelled has ended (its worker took the signal)."""
        self.cancelling.remove(UnitKey(task))
        self.busy.discard(UnitKey(task))
        assert self.sink is not None
        self.sink(ExecEvent(UnitKey(task), EventKind.CANCELLED, signal="SIGINT"))

    def fail(self, task: str) -> None:
        self.busy.discard(UnitKey(task))
        assert self.sink is not None
        self.sink(ExecEvent(UnitKey(task), EventKind.FAILED, error="ValueError: no"))

    def _report(self, key: UnitKey, kind: EventKind, data: bytes | None = None) -> None:
        assert self.sink is not None
        self.sink(ExecEvent(key, kind, data))


async def turns(count: int = 20) -> None:
    """Let the driver handle what was reported."""
    for _ in range(count):
        await asyncio.sleep(0)


def after_a_change_to_a_and_b(root: Path, steps: Callable[[Scheduler, StepExecutor],
                                                          Awaitable[None]]
                              ) -> tuple[StepExecutor, list[Event]]:
    """dev: the first build settles, then a change reruns a and b (forced: their code is the
    same file here); `steps` finishes their units, and looks."""
    executor = StepExecutor(auto=FIRST)
    events: list[Event] = []

    async def run() -> None:
        with open_session(root, "dev", write=True) as session:
            scheduler = driver_for(session, executor, events)
            await asyncio.wait_for(scheduler.build(default_targets(session.project)), 10)
            assert sorted(k.task for k in executor.submitted) == ["a", "b", "d"]
            executor.auto = None
            executor.submitted.clear()
            executor.upstreams.clear()
            del events[:]
            scheduler.invalidate(session.project, {"a", "b"}, forced={"a", "b"})
            await turns()
            assert sorted(k.task for k in executor.submitted) == ["a", "b"]
            await steps(scheduler, executor)
            await asyncio.wait_for(scheduler.wait_idle(), 10)
            scheduler.finish_build()

    asyncio.run(run())
    return executor, events


def test_a_downstream_waits_for_every_upstream_that_reruns(
        project: Callable[[dict[str, str]], Path]) -> None:
    """a ends first with a new value: d does not start on new a and the old b (it would
    run twice, and once on a mix no build would make); it starts once b's value is known,
    on both new values."""

    async def steps(scheduler: Scheduler, executor: StepExecutor) -> None:
        executor.finish("a", 10)
        await turns()
        assert UnitKey("d") not in executor.submitted, "d started before b's new value"
        executor.finish("b", 20)
        await turns()
        assert executor.submitted.count(UnitKey("d")) == 1
        executor.finish("d", 30)

    executor, _ = after_a_change_to_a_and_b(project(DIAMOND), steps)
    assert executor.upstreams == [{"a": 10, "b": 20}]


def test_the_same_values_again_leave_the_downstream_clean(
        project: Callable[[dict[str, str]], Path]) -> None:
    """Early cutoff: a and b rerun to the values they had; d neither starts nor reruns."""

    async def steps(scheduler: Scheduler, executor: StepExecutor) -> None:
        executor.finish("b", FIRST["b"])
        await turns()
        executor.finish("a", FIRST["a"])

    executor, events = after_a_change_to_a_and_b(project(DIAMOND), steps)
    assert UnitKey("d") not in executor.submitted
    assert [e for e in events if getattr(e, "task", None) == "d"] == []  # left as it was


def test_a_failed_upstream_leaves_the_downstream_unstarted(
        project: Callable[[dict[str, str]], Path]) -> None:
    """a has a new value, then b fails: d never starts (it had started on new a and the old
    b, and written its output from that mix, before b failed)."""

    async def steps(scheduler: Scheduler, executor: StepExecutor) -> None:
        executor.finish("a", 10)
        await turns()
        executor.fail("b")
        await turns()
        assert UnitKey("d") not in executor.submitted

    executor, _ = after_a_change_to_a_and_b(project(DIAMOND), steps)
    assert UnitKey("d") not in executor.submitted


ONE = {"tasks/t.py": "# /// task\n# ///\ndef run():\n    return 1\n"}


def test_an_edit_undone_while_its_unit_runs_is_decided_once_that_run_has_ended(
        project: Callable[[dict[str, str]], Path]) -> None:
    """t is edited (it reruns), and the edit undone while it runs: its run is stale and is
    cancelled. t is clean again under the code it had, but that is said after the stale
    run has ended: the events of t end on its skip, as its state does (they ended on
    `unit_cancelled` while status said clean)."""
    root = project(ONE)
    source = root / "tasks/t.py"
    executor = StepExecutor(auto={"t": 1})
    events: list[Event] = []

    def save(text: str, mtime: int) -> None:
        source.write_text(text)
        os.utime(source, ns=(mtime, mtime))

    async def run() -> None:
        with open_session(root, "dev", write=True) as session:
            loader = ProjectLoader(session.config, session.store, session.hasher)
            scheduler = driver_for(session, executor, events)
            await asyncio.wait_for(scheduler.build(default_targets(session.project)), 10)
            executor.auto = None
            del events[:]
            save(ONE["tasks/t.py"].replace("1", "2"), 10**18)
            scheduler.invalidate(loader.reload(), {"t"})
            await turns()
            assert executor.busy == {UnitKey("t")}
            save(ONE["tasks/t.py"], 2 * 10**18)
            scheduler.invalidate(loader.reload(), {"t"})
            await turns()
            assert executor.cancelling == [UnitKey("t")]
            assert [type(e).__name__ for e in events if getattr(e, "task", None) == "t"] == [
                "UnitStarted"], "t was decided while its stale run was still going"
            executor.cancelled("t")
            await asyncio.wait_for(scheduler.wait_idle(), 10)
            scheduler.finish_build()

    asyncio.run(run())
    assert [type(e).__name__ for e in events if getattr(e, "task", None) == "t"] == [
        "UnitStarted", "UnitCancelled", "UnitSkipped"]
