"""`status` and `--dry-run`: every task's state and its reasons, without running anything."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from watchrun.engine.reasons import Reason, ReasonKind
from watchrun.engine.resolve import Resolver
from watchrun.project.loader import Project
from watchrun.state.store import UnitStatus


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
    reasons: list[Reason] = field(default_factory=list)
    duration: float | None = None
    error: str | None = None


def report(project: Project, resolver: Resolver, names: list[str] | None = None
           ) -> list[TaskReport]:
    """Walk the graph in order; a task whose upstreams are all clean is resolved exactly as the
    scheduler would; one with a dirty upstream is dirty because of it."""
    store = resolver.store
    outputs: dict[str, str] = {}
    dirty: set[str] = set()
    reports = []
    wanted = set(names) if names else None
    # to explain a task its upstreams must be resolved too, reported or not
    needed = project.graph.upstream_closure(names) if names else None
    for name in project.graph.order:
        task = project.tasks[name]
        if task.abstract or (needed is not None and name not in needed):
            continue
        last = store.unit_state(name)
        ups = project.graph.upstreams.get(name, {})
        implicit = project.graph.implicit.get(name, set())
        dirty_ups = sorted(u for u in {*ups.values(), *implicit} if u in dirty or
                           (u not in outputs and u in project.tasks))
        if dirty_ups:
            reasons = [Reason(ReasonKind.UPSTREAM_DIRTY, u) for u in dirty_ups]
        else:
            resolution = resolver.resolve(name, {a: outputs[u] for a, u in ups.items()})
            reasons = resolution.reasons
            if resolution.result is not None:
                outputs[name] = resolution.result.output
        if reasons:
            dirty.add(name)
        if wanted is not None and name not in wanted:
            continue
        reports.append(TaskReport(name, _state(reasons, last.status if last else None),
                                  reasons, last.duration if last else None,
                                  last.error if last else None))
    for name in sorted(project.broken):
        if wanted is None or name in wanted:
            reports.append(TaskReport(name, TaskState.BROKEN))
    return reports


def _state(reasons: list[Reason], last: UnitStatus | None) -> TaskState:
    if not reasons:
        return TaskState.CLEAN
    if last is None:
        return TaskState.NEVER_RUN
    if last is UnitStatus.FAILED:
        return TaskState.FAILED
    if last is UnitStatus.CANCELLED:
        return TaskState.CANCELLED
    return TaskState.DIRTY
