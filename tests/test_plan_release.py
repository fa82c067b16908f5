"""Releasing a scope's finished iterations (bounded memory, issue 14 point 3): the driver
(engine/scheduler.py and its parts) over a fake executor, on a real project and a real store,
without worker processes. The rule itself is proven in tests/test_plan.py."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Callable
from pathlib import Path

from watchrun.engine import events as ev
from watchrun.engine.events import EventBus
from watchrun.engine.scheduler import BuildOptions, Scheduler
from watchrun.executors.base import EventKind, ExecEvent, Job, Mode, Sink, UnitKey
from watchrun.session import Session, default_targets, open_session

ITEMS = 1500


def pipeline(items: int) -> dict[str, str]:
    """gen -> item -> total (a collector): the scope of plan_session.py's stream bench."""
    return {
        "tasks/gen.py": f"# /// task\n# kind = \"generator\"\n# ///\ndef run():\n"
                        f"    yield from range({items})\n",
        "tasks/item.py": "# /// task\n# after = [\"gen\"]\n# ///\ndef run(gen):\n"
                         "    return gen * 2\n",
        "tasks/total.py": "# /// task\n# kind = \"collector\"\n# after = [\"item\"]\n# ///\n"
                          "total = 0\n\ndef run(item):\n    global total\n    total += item\n"
                          "\ndef gather():\n    return total\n",
    }


class ScopeExecutor:
    """Does in the loop what the workers would: the generator yields `items` values, one per
    turn while not paused (the driver holds it at the read-ahead window); `item` returns its
    argument doubled after `run_for` seconds, `jobs` at a time; the collector adds up what it
    is pushed, confirming each push, and returns the sum at its end."""

    def __init__(self, items: int, jobs: int = 2, run_for: float = 0.0005) -> None:
        self.items = items
        self.jobs = jobs
        self.run_for = run_for
        self.sink: Sink | None = None
        self.busy: set[UnitKey] = set()
        self.paused: set[UnitKey] = set()
        self.next_value: dict[UnitKey, int] = {}
        self.sums: dict[UnitKey, int] = {}
        self.calls = 0

    async def start(self) -> None:
        pass

    def free_slots(self) -> int:
        return max(self.jobs - len(self.busy), 0)

    def submit(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        if job.mode is Mode.GENERATE:
            self.next_value[job.key] = 0
            loop.call_soon(self._yield, job.key)
        elif job.mode is Mode.COLLECT:
            self.sums[job.key] = 0
        else:
            assert len(self.busy) < self.jobs, "submitted beyond free_slots()"
            self.busy.add(job.key)
            self.calls += 1
            value = pickle.loads(job.kwargs["gen"]) * 2
            loop.call_later(self.run_for, self._done, job.key, value)

    def _yield(self, key: UnitKey) -> None:
        if key in self.paused:
            return
        value = self.next_value[key]
        if value == self.items:
            self._report(ExecEvent(key, EventKind.DONE, pickle.dumps(None)))
            return
        self.next_value[key] = value + 1
        self._report(ExecEvent(key, EventKind.YIELDED, pickle.dumps(value)))
        asyncio.get_running_loop().call_soon(self._yield, key)

    def _done(self, key: UnitKey, value: object) -> None:
        self.busy.discard(key)
        self._report(ExecEvent(key, EventKind.DONE, pickle.dumps(value)))

    def _report(self, event: ExecEvent) -> None:
        assert self.sink is not None
        self.sink(event)

    def push(self, key: UnitKey, kwargs: dict[str, bytes]) -> None:
        self.sums[key] += pickle.loads(kwargs["item"])
        asyncio.get_running_loop().call_soon(self._report, ExecEvent(key, EventKind.PUSHED))

    def end_input(self, key: UnitKey) -> None:
        asyncio.get_running_loop().call_soon(
            self._report, ExecEvent(key, EventKind.DONE, pickle.dumps(self.sums[key])))

    def cancel(self, key: UnitKey) -> None:
        pass

    def set_jobs(self, jobs: int) -> None:
        pass

    def hold_yields(self, key: UnitKey, held: bool) -> bool:
        return False  # held by pause(), as an executor without credits is

    def pause(self, key: UnitKey) -> bool:
        self.paused.add(key)
        return True

    def resume(self, key: UnitKey) -> bool:
        if key in self.paused:
            self.paused.discard(key)
            asyncio.get_running_loop().call_soon(self._yield, key)
        return True

    def running(self) -> list[UnitKey]:
        return sorted(self.busy)

    async def close(self) -> None:
        pass


class Watch:
    """Samples what the driver holds of the scope at each push into the collector."""

    def __init__(self) -> None:
        self.scheduler: Scheduler | None = None
        self.most_held = 0
        self.most_values = 0
        self.pushes = 0

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.Push) and self.scheduler is not None:
            self.pushes += 1
            s = self.scheduler
            self.most_held = max(self.most_held, s.readiness.held_iterations("gen"))
            self.most_values = max(self.most_values, len(s.values), len(s.seen))


def watched_scheduler(session: Session, executor: ScopeExecutor,
                      watch: Watch | HeldAtEachUnit) -> Scheduler:
    """The driver over the fake executor, its events sampled by `watch`."""
    bus = EventBus()
    bus.subscribe(watch)
    scheduler = Scheduler(session.project, session.store, session.hasher, executor, bus,
                          BuildOptions())
    watch.scheduler = scheduler
    executor.sink = scheduler.on_exec
    return scheduler


def test_a_scope_holds_a_bounded_number_of_iterations_and_a_replan_reads_back_the_rest(
        project: Callable[[dict[str, str]], Path]) -> None:
    root = project(pipeline(ITEMS))
    executor = ScopeExecutor(ITEMS)
    watch = Watch()

    async def run() -> tuple[int, int, int]:
        with open_session(root, "build", write=True) as session:
            scheduler = watched_scheduler(session, executor, watch)
            summary = await asyncio.wait_for(
                scheduler.build(default_targets(session.project)), 60)
            assert summary.ok and summary.ran == 1 + ITEMS + 1, summary
            assert scheduler.readiness.held_iterations("gen") == 0  # all committed at the end
            total = pickle.loads(session.store.get_object(scheduler.values[("total", ())]))
            # dev: `item` changed (its code, say, to the same result): every iteration is
            # resolved again, reading the released ones back from the store; all are clean
            # (their results are there), and only the collector runs again
            calls = executor.calls
            watch.scheduler = None  # the bound is the build's: a replan resolves at once
            scheduler.invalidate(session.project, {"item"})
            await asyncio.wait_for(scheduler.wait_idle(), 60)
            again = scheduler.summary
            assert again.ok and executor.calls == calls, again
            assert again.skipped == ITEMS and again.ran == 1, again
            total_again = pickle.loads(
                session.store.get_object(scheduler.values[("total", ())]))
            scheduler.flush()
            return total, total_again, scheduler.readiness.held_iterations("gen")

    total, total_again, held_after = asyncio.run(run())
    assert total == total_again == sum(2 * i for i in range(ITEMS))
    assert watch.pushes == ITEMS
    # what finishes between two commits (every 50 ms) plus the read-ahead window, far below
    # the scope's size; without the release rule these reach ITEMS
    assert watch.most_held <= ITEMS // 5, watch.most_held
    assert watch.most_values <= 3 * (ITEMS // 5), watch.most_values
    assert held_after == 0


class FailingAt(ScopeExecutor):
    """The same, but the unit of `item` for the value `bad` fails."""

    def __init__(self, items: int, bad: int) -> None:
        super().__init__(items)
        self.bad = bad

    def submit(self, job: Job) -> None:
        if job.mode is Mode.CALL and pickle.loads(job.kwargs["gen"]) == self.bad:
            self.busy.add(job.key)
            asyncio.get_running_loop().call_later(
                self.run_for, self._fail, job.key)
            return
        super().submit(job)

    def _fail(self, key: UnitKey) -> None:
        self.busy.discard(key)
        self._report(ExecEvent(key, EventKind.FAILED, error="ValueError: bad item\n"))

    def cancel(self, key: UnitKey) -> None:
        """The collector, which can no longer complete, is cancelled (as a worker would be)."""
        if self.sums.pop(key, None) is not None:
            asyncio.get_running_loop().call_soon(
                self._report, ExecEvent(key, EventKind.CANCELLED))


class HeldAtEachUnit:
    """The iterations the driver holds, sampled at every unit that finishes."""

    def __init__(self) -> None:
        self.scheduler: Scheduler | None = None
        self.most_held = 0
        self.finished = 0

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.UnitFinished) and self.scheduler is not None:
            self.finished += 1
            self.most_held = max(self.most_held, self.scheduler.readiness.held_iterations("gen"))


def test_a_failed_unit_does_not_stop_the_release_of_the_iterations_after_it(
        project: Callable[[dict[str, str]], Path]) -> None:
    """A sweep of a million items with one bad item must not hold every item after it: the
    failed unit's iteration is settled (the unit and what waits for it will have no value),
    so the release goes on past it."""
    root = project(pipeline(ITEMS))
    executor = FailingAt(ITEMS, bad=5)
    watch = HeldAtEachUnit()

    async def run() -> tuple[int, int]:
        with open_session(root, "build", write=True) as session:
            scheduler = watched_scheduler(session, executor, watch)
            summary = await asyncio.wait_for(
                scheduler.build(default_targets(session.project)), 60)
            assert not summary.ok and summary.failed == 1, summary
            scheduler.flush()
            state = session.store.unit_state("item", (5,))
            assert state is not None and state.output is None  # the failure is recorded
            return summary.ran, scheduler.readiness.held_iterations("gen")

    ran, held_after = asyncio.run(run())
    assert ran == 1 + ITEMS - 1  # every other item ran; the collector could not complete
    assert watch.finished == ITEMS
    # without the rule, every iteration after the bad one stays held: ITEMS - 5
    assert watch.most_held <= ITEMS // 5, watch.most_held
    assert held_after == 0
