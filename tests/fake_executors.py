"""What the driver tests' fake executors share (tests/test_plan_driver.py,
tests/test_plan_follow.py): the Executor methods they do not exercise, and a driver made for a
session of a real project and store, reporting to the fake."""

from __future__ import annotations

from watchrun.engine.events import Event, EventBus
from watchrun.engine.scheduler import BuildOptions, Scheduler
from watchrun.executors.base import Sink, UnitKey
from watchrun.session import Session


class FakeExecutorBase:
    """No scopes, no pausing; `busy` holds the units it runs."""

    def __init__(self) -> None:
        self.sink: Sink | None = None
        self.busy: set[UnitKey] = set()

    async def start(self) -> None:
        pass

    def push(self, key: UnitKey, kwargs: dict[str, bytes]) -> None:
        raise AssertionError("no scopes here")

    def end_input(self, key: UnitKey) -> None:
        raise AssertionError("no scopes here")

    def cancel(self, key: UnitKey) -> None:
        pass

    def pause(self, key: UnitKey) -> bool:
        return False

    def set_jobs(self, jobs: int) -> None:
        pass

    def hold_yields(self, key: UnitKey, held: bool) -> bool:
        return False

    def resume(self, key: UnitKey) -> bool:
        return False

    def running(self) -> list[UnitKey]:
        return sorted(self.busy)

    async def close(self) -> None:
        pass


def driver_for(session: Session, executor: FakeExecutorBase, events: list[Event] | None = None,
               options: BuildOptions | None = None) -> Scheduler:
    """A driver of the session's project reporting to `executor`; `events` collects what it
    publishes."""
    options = BuildOptions() if options is None else options
    bus = EventBus()
    if events is not None:
        bus.subscribe(events.append)
    scheduler = Scheduler(session.project, session.store, session.hasher, executor,  # type: ignore[arg-type]
                          bus, options)
    executor.sink = scheduler.on_exec
    return scheduler
