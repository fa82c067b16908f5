"""What the TUI knows about each task, folded from engine events.

`Board.apply` is the hot path (thousands of events a second): O(1) per event, no I/O. It records
which rows changed so the widget redraws only those.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from watchrun.engine import events as ev
from watchrun.engine.control import ErrorView, ProjectView, UnitState
from watchrun.ui.tui.records import PastRun
from watchrun.ui.tui.rows import Progress, RowReadings, TaskRow

__all__ = ["Board", "Progress", "TaskRow", "describe_change", "same_file"]


class Board(RowReadings):
    """Task rows by name, the project errors, and the header's facts."""

    def __init__(self, view: ProjectView, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.rows: dict[str, TaskRow] = {}
        self.members: dict[str, list[str]] = {}  # generator -> the tasks in its scope
        self.errors: list[ErrorView] = []  # the view's, then those of events since a change
        self.reported: list[ErrorView] = []  # from `error` events since the last change
        self.watched = 0
        self.last_change: str | None = None
        self.paused_all = False
        self.building = False
        self.changed: set[str] = set()  # rows to redraw
        self.header_changed = True
        self.view_stale = False  # a change: the project may have been reloaded
        self.absent: set[str] = set()  # tasks named by events but not in the view
        # the header's counts, kept up to date from the rows that change: a redraw counts
        # only those, so its cost follows the events, not the project's size
        self._states: dict[str, UnitState] = {}
        self._counts = dict.fromkeys(UnitState, 0)
        self._handlers: dict[type[ev.Event], Callable[[ev.Event], None]] = {
            ev.BuildStarted: self._build_started,  # type: ignore[dict-item]
            ev.UnitStarted: self._unit_started,  # type: ignore[dict-item]
            ev.UnitSkipped: self._unit_skipped,  # type: ignore[dict-item]
            ev.UnitFinished: self._unit_finished,  # type: ignore[dict-item]
            ev.UnitFailed: self._unit_failed,  # type: ignore[dict-item]
            ev.UnitCancelled: self._unit_cancelled,  # type: ignore[dict-item]
            ev.Iteration: self._iteration,  # type: ignore[dict-item]
            ev.Push: self._push,  # type: ignore[dict-item]
            ev.BuildFinished: self._build_finished,  # type: ignore[dict-item]
            ev.Change: self._change,  # type: ignore[dict-item]
            ev.Idle: self._idle,
            ev.Error: self._error,  # type: ignore[dict-item]
        }
        self.load(view)

    # -- the project ---------------------------------------------------------------------------
    def load(self, view: ProjectView) -> None:
        """Take a (new) snapshot of the project, keeping what is known of tasks that remain.
        Only the rows whose task changed are redrawn (a 10,000-task view comes at every idle)."""
        old = self.rows
        self.rows = {}
        for task in view.tasks:
            if task.abstract:
                continue
            row = old.get(task.name)
            if row is None:
                row = TaskRow(task)
                self.changed.add(task.name)
            elif row.view != task:
                row.view = task
                self.changed.add(task.name)
            self.rows[task.name] = row
        gone = old.keys() - self.rows.keys()
        for name in gone:
            state = self._states.pop(name, None)
            if state is not None:
                self._counts[state] -= 1
        self.changed -= gone
        self.members = {}
        for member in self.rows.values():
            if member.view.scope:
                self.members.setdefault(member.view.scope[-1], []).append(member.view.name)
        self.absent -= self.rows.keys()
        self.errors = list(view.errors)
        self.errors += [e for e in self.reported if e not in self.errors]
        self.watched = view.watched_files
        self._mark_broken()
        self.header_changed = True

    def _mark_broken(self) -> None:
        files = {e.file for e in self.errors if e.file}
        if not files and not any(row.broken for row in self.rows.values()):
            return
        for row in self.rows.values():
            broken = any(same_file(row.view.file, f) for f in files)
            if broken != row.broken:
                row.broken = broken
                self.changed.add(row.view.name)

    # -- events --------------------------------------------------------------------------------
    def apply(self, event: ev.Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def apply_all(self, events: Iterable[ev.Event]) -> None:
        for event in events:
            self.apply(event)

    def _row(self, name: str) -> TaskRow | None:
        row = self.rows.get(name)
        if row is not None:
            self.changed.add(name)
            self.header_changed = True
        elif name not in self.absent:  # the view is older than the engine: ask again, once
            self.absent.add(name)
            self.view_stale = True
        return row

    def _build_started(self, event: ev.BuildStarted) -> None:
        self.building = True
        self.header_changed = True
        for name in event.tasks:
            row = self._row(name)
            if row is None:
                continue
            row.in_build = True
            row.yields = row.done = row.pushes = row.failures = 0
            row.started = row.ended = None
            row.paused_for = 0.0
            if not self.paused_all:  # its paused units are replaced: the new run's clock runs
                row.paused = False
                row.paused_since = None
            if row.base is UnitState.DIRTY:
                row.base = UnitState.QUEUED

    def _unit_started(self, event: ev.UnitStarted) -> None:
        row = self._row(event.task)
        if row is None:
            return
        row.running[event.iter] = row.running.get(event.iter, 0) + 1
        row.reasons = event.reasons
        row.node = event.node
        row.starts += 1
        row.last_iter = event.iter
        if event.iter > row.max_iter:
            row.max_iter = event.iter
        if row.started is None or (row.recorded and not row.scoped):
            # a new run (in `dev`, a rerun may come without a new build)
            row.started, row.paused_for = event.time, 0.0
        row.recorded = False
        row.in_build = True

    def _unit_skipped(self, event: ev.UnitSkipped) -> None:
        row = self._row(event.task)
        if row is None:
            return
        if event.iter and not row.consumer:
            row.done += 1
        self._settle(row, event, UnitState.CLEAN)

    def _unit_finished(self, event: ev.UnitFinished) -> None:
        row = self._row(event.task)
        if row is None:
            return
        _ended(row, event.iter)
        if event.iter and not row.consumer:
            row.done += 1
        if not row.scoped or row.consumer:
            row.duration = event.duration
        self._settle(row, event, UnitState.CLEAN)
        if row.view.kind == "generator":
            self._touch_scope(row.view.name)

    def _unit_failed(self, event: ev.UnitFailed) -> None:
        row = self._row(event.task)
        if row is None:
            return
        _ended(row, event.iter)
        row.failures += 1
        row.error = event.error
        row.error_iter = event.iter
        self._settle(row, event, UnitState.FAILED)
        if row.view.kind == "generator":
            self._touch_scope(row.view.name)

    def _unit_cancelled(self, event: ev.UnitCancelled) -> None:
        row = self._row(event.task)
        if row is None:
            return
        _ended(row, event.iter)
        self._settle(row, event, UnitState.CANCELLED)

    def _settle(self, row: TaskRow, event: ev.Event, state: UnitState) -> None:
        """A unit ended: the row's resting state, unless one of its units already failed."""
        row.ended = event.time
        node = getattr(event, "node", None)
        if node is not None:
            row.node = node
        if row.failures and state is not UnitState.CANCELLED:
            state = UnitState.FAILED
        row.base = state
        if not row.running:
            row.paused = False
            if row.paused_since is not None:
                row.paused_for += max(0.0, event.time - row.paused_since)
                row.paused_since = None
            # a failed or cancelled run has no duration in its event, yet it took this long
            # (and the previous run's duration would be wrong)
            per_iteration = row.scoped and not row.consumer
            if row.started is not None and (per_iteration or state is not UnitState.CLEAN):
                row.duration = max(0.0, row.ended - row.started - row.paused_for)
            if not per_iteration and not row.recorded and not isinstance(event, ev.UnitSkipped):
                self._record_run(row, state, event.time)

    def _record_run(self, row: TaskRow, state: UnitState, finished: float) -> None:
        """This run of the task is over: remember it for the history."""
        row.recorded = True
        units = (row.done or 1) if row.scoped and not row.consumer else 1
        why = "; ".join(row.reasons) if row.reasons else ""
        row.runs.appendleft(PastRun(finished, row.duration, state.value, why, units))

    def _record_scopes(self) -> None:
        """Per-iteration tasks ran as many units: their run ends with the build."""
        for row in self.rows.values():
            if row.scoped and not row.consumer and not row.recorded and not row.running:
                self._record_run(row, row.base, row.ended or self.clock())

    def _iteration(self, event: ev.Iteration) -> None:
        row = self._row(event.task)
        if row is not None:
            row.yields += 1

    def _push(self, event: ev.Push) -> None:
        row = self._row(event.task)
        if row is not None:
            row.pushes += 1

    def _touch_scope(self, generator: str) -> None:
        """The generator's total became known (or it stopped): its scope's rows change."""
        self.changed.update(self.members.get(generator, ()))

    def _build_finished(self, event: ev.BuildFinished) -> None:
        self.building = False
        self.header_changed = True
        self._record_scopes()
        for row in self.rows.values():
            if row.base is UnitState.QUEUED and not row.running:
                row.base = UnitState.DIRTY  # never ran: an upstream failed, or we stopped
                self.changed.add(row.view.name)

    def _change(self, event: ev.Change) -> None:
        for name in event.dirty:
            row = self._row(name)
            if row is not None:
                row.base = UnitState.DIRTY  # a running unit of it will be cancelled and rerun
        self.reported.clear()  # the reload publishes the errors that remain
        self.last_change = describe_change(event.paths, len(event.dirty))
        self.header_changed = True
        self.view_stale = True

    def _idle(self, event: ev.Event) -> None:
        self._record_scopes()
        self.building = False
        self.header_changed = True
        self.view_stale = True  # quiet now: a cheap moment to catch up (watched files, …)

    def _error(self, event: ev.Error) -> None:
        error = ErrorView(event.file, event.line, event.message)
        if error not in self.reported:
            self.reported.append(error)
        if error not in self.errors:
            self.errors.append(error)
            self._mark_broken()
            self.header_changed = True


def _ended(row: TaskRow, it: tuple[int, ...]) -> None:
    count = row.running.get(it, 0)
    if count > 1:
        row.running[it] = count - 1
    else:
        row.running.pop(it, None)


def describe_change(paths: list[str], dirty: int) -> str:
    """'tasks/base.py: 3 tasks dirty' (the first path, and how many more)."""
    where = paths[0] if paths else "?"
    if len(paths) > 1:
        where += f" (+{len(paths) - 1} more)"
    noun = "task" if dirty == 1 else "tasks"
    return f"{where}: {dirty} {noun} dirty"


def same_file(task_file: str, error_file: str) -> bool:
    """An error's file may be absolute or relative to the root; a task's is relative."""
    a, b = task_file.replace("\\", "/"), error_file.replace("\\", "/")
    return a == b or b.endswith("/" + a)
