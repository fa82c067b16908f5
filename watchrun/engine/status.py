"""`status`: every task's state and its reasons, without running anything.

It runs the scheduler itself in dry-run mode — generators replayed from the store, every unit
resolved exactly as a build would — and folds the units' outcomes into one line per task. So
`status`, `build --dry-run` and the TUI's "why dirty" can never disagree with what a build does.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from watchrun.engine import events as ev
from watchrun.engine.reasons import Reason, ReasonKind
from watchrun.engine.scheduler import BuildOptions, Scheduler
from watchrun.executors.base import Job, UnitKey
from watchrun.project.loader import Project
from watchrun.state.hashing import FileHasher
from watchrun.state.store import Store, UnitState, UnitStatus


class TaskState(enum.Enum):
    CLEAN = "clean"
    DIRTY = "dirty"
    FAILED = "failed"
    CANCELLED = "cancelled"
    NEVER_RUN = "never-run"
    BROKEN = "broken"


@dataclass
class TaskReport:
    task: str
    state: TaskState
    reasons: list[str] = field(default_factory=list)
    duration: float | None = None
    error: str | None = None
    priority: int = 0  # the header's `priority`, after inheritance


class _NoExecutor:
    """A dry run never starts a unit: any call here is a bug."""

    def free_slots(self) -> int:
        return 0

    def submit(self, job: Job) -> None:
        raise AssertionError(f"a dry run tried to start {job.key.format()}")

    def cancel(self, key: UnitKey) -> None:
        raise AssertionError(f"a dry run tried to cancel {key.format()}")


@dataclass
class _Units:
    would_run: int = 0
    clean: int = 0
    reasons: list[str] = field(default_factory=list)


def report(project: Project, store: Store, hasher: FileHasher,
           names: list[str] | None = None) -> list[TaskReport]:
    units: dict[str, _Units] = {}

    def fold(event: ev.Event) -> None:
        if isinstance(event, ev.UnitStarted):
            entry = units.setdefault(event.task, _Units())
            entry.would_run += 1
            entry.reasons.extend(r for r in event.reasons if r not in entry.reasons)
        elif isinstance(event, ev.UnitSkipped):
            units.setdefault(event.task, _Units()).clean += 1

    bus = ev.EventBus()
    bus.subscribe(fold)
    scheduler = Scheduler(project, store, hasher, _NoExecutor(),  # type: ignore[arg-type]
                          bus, BuildOptions(dry_run=True))
    order = [n for n in project.graph.order if not project.tasks[n].abstract]
    scheduler.start(names or order)
    wanted = set(names) if names else None
    reports = [_task_report(project, store, name, units.get(name), units)
               for name in order
               if name in scheduler.needed and (wanted is None or name in wanted)]
    for name in sorted(project.broken):
        if wanted is None or name in wanted:
            reports.append(TaskReport(name, TaskState.BROKEN))
    for rep in reports:
        task = project.tasks.get(rep.task)
        rep.priority = task.priority if task is not None else 0
    return reports


def _task_report(project: Project, store: Store, name: str, mine: _Units | None,
                 units: dict[str, _Units]) -> TaskReport:
    states = list(store.unit_states(name))
    last = max(states, key=lambda s: s.finished) if states else None
    duration = last.duration if last else None
    error = last.error if last else None
    if mine is not None and mine.would_run == 0:
        return TaskReport(name, TaskState.CLEAN, [], duration, error)
    if mine is not None:
        reasons = list(mine.reasons)
        if mine.would_run > 1 or mine.clean:
            total = mine.would_run + mine.clean
            reasons.insert(0, f"{mine.would_run} of {total} units")
    else:  # never reached: something upstream must run first
        graph = project.graph
        ups = sorted(u for u in graph.upstreams_of(name)
                     if u not in units or units[u].would_run)
        reasons = [Reason(ReasonKind.UPSTREAM_DIRTY, u).format() for u in ups] or [
            Reason(ReasonKind.UPSTREAM_DIRTY).format()]
    return TaskReport(name, _state(states), reasons, duration, error)


def _state(states: list[UnitState]) -> TaskState:
    if not states:
        return TaskState.NEVER_RUN
    statuses = {s.status for s in states}
    if UnitStatus.FAILED in statuses:
        return TaskState.FAILED
    if UnitStatus.CANCELLED in statuses:
        return TaskState.CANCELLED
    return TaskState.DIRTY
