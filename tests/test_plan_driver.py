"""The driver (engine/scheduler.py) over a fake executor, on a real project and a real store:
rules that live between the plan and an executor, without worker processes."""

from __future__ import annotations

import asyncio
import os
import pickle
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import watchrun, write_project
from tests.fake_executors import FakeExecutorBase, driver_for
from watchrun.engine.events import Event, UnitCancelled, UnitStarted
from watchrun.engine.scheduler import BuildOptions, Scheduler
from watchrun.executors.base import EventKind, ExecEvent, Job, Mode, UnitKey
from watchrun.session import default_targets, open_session
from watchrun.state.store import Store


class ClusterExecutor(FakeExecutorBase):
    """Places units itself, as Ray does: before it is connected it offers this machine's
    CPUs; the first submit connects it (on a later turn of the loop), after which it offers
    the cluster's. Each unit then reports STARTED, and DONE after `run_for` seconds; a
    generator yields `yields` values (0, 1, ...) at once, outside the count of slots."""

    def __init__(self, before: int, cluster: int, run_for: float = 0.05, yields: int = 0
                 ) -> None:
        super().__init__()
        self.jobs = before
        self.yields = yields
        self.cluster = cluster
        self.run_for = run_for
        self.connected = False
        self.most_at_once = 0  # units running together before the first one ended
        self.ended = 0

    def free_slots(self) -> int:
        return max(self.jobs - len(self.busy), 0)

    def submit(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        if not self.connected:
            self.connected = True
            loop.call_soon(self._connect)
        if job.mode is Mode.GENERATE:
            for value in range(self.yields):
                loop.call_soon(self._yield, job.key, value)
            loop.call_soon(self._report, job.key, EventKind.DONE)
            return
        assert len(self.busy) < self.jobs, "submitted beyond free_slots()"
        self.busy.add(job.key)
        if not self.ended:
            self.most_at_once = max(self.most_at_once, len(self.busy))
        if self.connected:
            loop.call_soon(self._report, job.key, EventKind.STARTED)
        loop.call_later(self.run_for, self._report, job.key, EventKind.DONE)

    def _yield(self, key: UnitKey, value: int) -> None:
        assert self.sink is not None
        self.sink(ExecEvent(key, EventKind.YIELDED, pickle.dumps(value)))

    def _connect(self) -> None:
        self.jobs = self.cluster
        for key in sorted(self.busy):
            self._report(key, EventKind.STARTED)

    def _report(self, key: UnitKey, kind: EventKind) -> None:
        assert self.sink is not None
        if kind is EventKind.DONE:
            self.busy.discard(key)
            self.ended += 1
        self.sink(ExecEvent(key, kind, pickle.dumps(None) if kind is EventKind.DONE else None))


def build_with(root: Path, executor: ClusterExecutor) -> int:
    """Build every task of the project at `root` through the driver; the units that ran."""

    async def run() -> int:
        with open_session(root, "build", write=True) as session:
            scheduler = driver_for(session, executor)
            summary = await asyncio.wait_for(
                scheduler.build(default_targets(session.project)), 10)
            assert summary.ok, summary
            return summary.ran

    return asyncio.run(run())


def independent_tasks(count: int) -> dict[str, str]:
    return {f"tasks/t{i}.py": "# /// task\n# ///\ndef run():\n    return 1\n"
            for i in range(count)}


GENERATOR = {
    "tasks/gen.py": "# /// task\n# kind = \"generator\"\n# ///\ndef run():\n    yield 0\n",
    "tasks/item.py": "# /// task\n# after = [\"gen\"]\n# ///\ndef run(gen):\n    return gen\n",
}


def test_the_first_wave_fills_the_cluster_once_the_executor_is_connected(
        project: Callable[[dict[str, str]], Path]) -> None:
    root = project(independent_tasks(8))
    executor = ClusterExecutor(before=2, cluster=4)
    assert build_with(root, executor) == 8
    # 2 units were submitted before the connection, 2 more as soon as it was made: the
    # cluster's 4 CPUs were busy before any unit ended
    assert executor.most_at_once == 4


def test_a_scopes_first_wave_fills_the_cluster_once_connected(
        project: Callable[[dict[str, str]], Path]) -> None:
    """Units of a generator's scope take no places in busy workers' queues: only the jobs
    the plan counts start them, and those follow the cluster once it is connected."""
    root = project(GENERATOR)
    executor = ClusterExecutor(before=2, cluster=4, yields=8)
    assert build_with(root, executor) == 1 + 8
    assert executor.most_at_once == 4


def test_an_executor_that_offers_what_it_offered_keeps_its_jobs(
        project: Callable[[dict[str, str]], Path]) -> None:
    root = project(independent_tasks(6))
    executor = ClusterExecutor(before=2, cluster=2)
    assert build_with(root, executor) == 6
    assert executor.most_at_once == 2


def test_the_plan_is_asked_for_work_only_when_a_slot_is_free(
        project: Callable[[dict[str, str]], Path]) -> None:
    """A budget: the driver pumps several times per unit (a result, a wake, a check), and
    every pump with units ready used to ask the plan for work even with every slot taken."""
    root = project(independent_tasks(30))
    executor = ClusterExecutor(before=2, cluster=2, run_for=0.001)
    asked = 0

    async def run() -> int:
        nonlocal asked
        with open_session(root, "build", write=True) as session:
            scheduler = driver_for(session, executor)
            find_work = scheduler.plan.find_work

            def counted(slots: int, queued: int = 0) -> list[object]:
                nonlocal asked
                asked += 1
                return find_work(slots, queued)  # type: ignore[return-value]

            scheduler.plan.find_work = counted  # type: ignore[method-assign,assignment]
            summary = await asyncio.wait_for(
                scheduler.build(default_targets(session.project)), 10)
            return summary.ran

    assert asyncio.run(run()) == 30
    assert asked <= 2 * 30, asked


class CountingExecutor(ClusterExecutor):
    """Every unit ends at once (on the loop's next turn) with a value no unit had before, so
    each unit of a dirty chain changes what the next one reads."""

    def __init__(self) -> None:
        super().__init__(before=1, cluster=1, run_for=0.0)
        self.connected = True  # nothing to join
        self.values = 0

    def _report(self, key: UnitKey, kind: EventKind) -> None:
        assert self.sink is not None
        if kind is not EventKind.DONE:
            self.sink(ExecEvent(key, kind))
            return
        self.busy.discard(key)
        self.values += 1
        self.sink(ExecEvent(key, kind, pickle.dumps(self.values)))


def overlap_project(chain: int, clean: int) -> dict[str, str]:
    # `a<i>` sort before every `z<i>`: the dirty chain is the first thing the build starts
    files = {"src.txt": "0\n",
             "tasks/a00.py": '# /// task\n# inputs = ["src.txt"]\n# ///\ndef run():\n'
                             "    return 0\n"}
    for i in range(1, chain):
        files[f"tasks/a{i:02d}.py"] = (f'# /// task\n# after = ["a{i - 1:02d}"]\n# ///\n'
                                       f"def run(a{i - 1:02d}):\n    return 0\n")
    for i in range(clean):
        files[f"tasks/z{i:04d}.py"] = f"# /// task\n# ///\ndef run():\n    return {i}\n"
    return files


def test_a_dirty_chain_advances_while_the_clean_units_are_still_being_skipped(
        project: Callable[[dict[str, str]], Path]) -> None:
    """The decision behind test_build_overlap, without worker processes: a result that comes
    in while thousands of clean units are being resolved starts the next unit of the chain
    at once, rather than after the last skip."""
    root = project(overlap_project(chain=10, clean=2000))
    assert build_with(root, CountingExecutor()) == 10 + 2000
    (root / "src.txt").write_text("1\n")
    executor = CountingExecutor()
    executor.values = 10**6  # none of the first build's values
    events: list[Event] = []

    async def run() -> None:
        with open_session(root, "build", write=True) as session:
            scheduler = driver_for(session, executor, events)
            summary = await asyncio.wait_for(
                scheduler.build(default_targets(session.project)), 20)
            assert summary.ok and summary.ran == 10 and summary.skipped == 2000, summary

    asyncio.run(run())
    seen = [event.name for event in events]
    last_skip = len(seen) - 1 - seen[::-1].index("unit_skipped")
    assert seen[:last_skip].count("unit_finished") >= 5, "the chain waited for the skips"


class FailsOnce(ClusterExecutor):
    """Fails the first unit it is given (as a worker that compiled a broken file would), then
    runs every unit to the end."""

    def __init__(self) -> None:
        super().__init__(before=2, cluster=2, run_for=0.01)
        self.connected = True  # nothing to connect: no STARTED reports
        self.submitted: list[UnitKey] = []

    def submit(self, job: Job) -> None:
        self.submitted.append(job.key)
        if len(self.submitted) == 1:
            self.busy.add(job.key)
            asyncio.get_running_loop().call_soon(self._fail, job.key)
            return
        super().submit(job)

    def _fail(self, key: UnitKey) -> None:
        assert self.sink is not None
        self.busy.discard(key)
        self.sink(ExecEvent(key, EventKind.FAILED, error="SyntaxError: invalid syntax"))


def run_with_a_save_after_the_read(root: Path, executor: ClusterExecutor, seen: list[Event],
                                   held: Callable[[Scheduler, Store], None],
                                   after: Callable[[Scheduler, Store], None]) -> None:
    """dev: the task file is written after the project was read, and the build starts; once
    its units have ended, `held` looks at the driver; then the reload (the same code, no
    error) lets what waits go, and `after` looks once everything has run."""

    async def run() -> None:
        with open_session(root, "dev", write=True) as session:
            scheduler = driver_for(session, executor, seen)
            scheduler.code_read_ns = time.time_ns() - 10**9
            os.utime(root / "tasks/t.py")  # written after the read
            scheduler.start(default_targets(session.project))
            for _ in range(50):
                await asyncio.sleep(0.01)
            scheduler.flush()
            held(scheduler, session.store)
            scheduler.code_read_ns = time.time_ns()
            scheduler.hold_code(set())
            await asyncio.wait_for(scheduler.wait_idle(), 10)
            scheduler.flush()
            after(scheduler, session.store)

    asyncio.run(run())


ONE_TASK = {"tasks/t.py": "# /// task\n# ///\ndef run():\n    return 1\n"}


def test_a_unit_that_failed_while_its_file_changed_waits_for_the_reload_instead(
        project: Callable[[dict[str, str]], Path]) -> None:
    """dev: the file of a task changed after the project was read, and its unit failed (it
    compiled the new text). That is not the planned code failing: the unit is said to be
    cancelled and waits, held, until the next read of the project lets it go; a failure with
    the files as they were read stays a failure."""
    executor = FailsOnce()
    seen: list[Event] = []

    def held(scheduler: Scheduler, store: Store) -> None:
        assert executor.submitted == [UnitKey("t")]  # held: not started again
        assert scheduler.plan.code_held == {"t"} and scheduler.plan.ready_count() == 1

    run_with_a_save_after_the_read(project(ONE_TASK), executor, seen, held,
                                   lambda scheduler, store: None)
    kinds = [type(e).__name__ for e in seen if getattr(e, "task", None) == "t"]
    assert kinds == ["UnitStarted", "UnitCancelled", "UnitStarted", "UnitFinished"], kinds


def test_a_unit_that_succeeded_while_its_file_changed_is_not_recorded_under_the_old_code(
        project: Callable[[dict[str, str]], Path]) -> None:
    """dev: the unit ran the file saved after the project was read (a worker reads it when
    the unit starts). Its result belongs to no signature the plan knows: storing it under the
    old code's would make an exact revert of the edit find the new code's result clean. It is
    said to be cancelled, nothing is recorded, and it waits for the reload."""
    executor = ClusterExecutor(before=1, cluster=1, run_for=0.01)
    executor.connected = True
    seen: list[Event] = []
    recorded: list[int] = []

    def held(scheduler: Scheduler, store: Store) -> None:
        recorded.append(len(store.last_units()[1]))
        assert scheduler.plan.code_held == {"t"} and scheduler.plan.ready_count() == 1

    run_with_a_save_after_the_read(project(ONE_TASK), executor, seen, held,
                                   lambda scheduler, store: recorded.append(
                                       len(store.last_units()[1])))
    kinds = [type(e).__name__ for e in seen if getattr(e, "task", None) == "t"]
    assert kinds == ["UnitStarted", "UnitCancelled", "UnitStarted", "UnitFinished"], kinds
    cancelled = next(e for e in seen if isinstance(e, UnitCancelled))
    assert cancelled.signal == "none"
    assert recorded == [0, 1]  # stored only once it ran the code that was read


def test_a_unit_that_started_before_its_file_was_saved_counts_when_it_ends(
        project: Callable[[dict[str, str]], Path]) -> None:
    """dev: the save came while the unit ran (a typo saved mid-run, say): the unit read the
    planned code when it started, so its result is recorded as usual, whatever the file now
    holds; nothing waits for a reload."""
    root = project(ONE_TASK)
    executor = ClusterExecutor(before=1, cluster=1, run_for=0.3)
    executor.connected = True
    seen: list[Event] = []

    async def run() -> int:
        with open_session(root, "dev", write=True) as session:
            scheduler = driver_for(session, executor, seen)
            scheduler.code_read_ns = time.time_ns() - 10**9
            scheduler.start(default_targets(session.project))
            await asyncio.sleep(0.1)
            os.utime(root / "tasks/t.py")  # saved while the unit runs
            await asyncio.wait_for(scheduler.wait_idle(), 10)
            scheduler.flush()
            assert not scheduler.plan.code_held
            return len(session.store.last_units()[1])

    assert asyncio.run(run()) == 1
    kinds = [type(e).__name__ for e in seen if getattr(e, "task", None) == "t"]
    assert kinds == ["UnitStarted", "UnitFinished"], kinds


class SubmitsNothing(FakeExecutorBase):
    """A dry run's executor: it is asked for nothing."""

    jobs = 2

    def free_slots(self) -> int:
        return self.jobs

    def submit(self, job: Job) -> None:
        raise AssertionError(f"a dry run submitted {job.key.format()}")


def test_a_dry_run_below_a_clean_generator_longer_than_the_window_ends(tmp_path: Path
                                                                      ) -> None:
    """The stored values of a clean generator are replayed at most a window ahead of the
    slowest task of its scope, which moves on as units end; a dry run ends none, so the
    replay stood still and the build never ended (16 units said of 40). Without the window,
    every dirty unit of the scope is said, and the one below each."""
    from tests.test_generators_e2e import FORTY  # the project the end-to-end test builds

    root = write_project(tmp_path, FORTY)
    assert watchrun(root, "build").code == 0  # the generator's 40 values, stored
    task = root / "tasks/a.py"
    task.write_text(task.read_text().replace("x * 2", "x * 2 + 2"))
    events: list[Event] = []

    async def run() -> int:
        with open_session(root, "build", write=False) as session:
            scheduler = driver_for(session, SubmitsNothing(), events,
                                   BuildOptions(dry_run=True))
            summary = await asyncio.wait_for(
                scheduler.build(default_targets(session.project)), 5)
            return summary.ran

    assert asyncio.run(run()) == 41
    said = [(e.task, e.iter) for e in events if isinstance(e, UnitStarted)]
    assert sorted(said) == sorted([("a", (i,)) for i in range(40)] + [("coll", ())])
