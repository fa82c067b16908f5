"""What the TUI knows about each task, folded from engine events.

`Board.apply` is the hot path (thousands of events a second): O(1) per event, no I/O. It records
which rows changed so the widget redraws only those.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from watchrun.engine import events as ev
from watchrun.engine.control import ErrorView, ProjectView, TaskView, UnitState
from watchrun.ui.tui.records import PastRun

SESSION_RUNS = 12  # runs of each task remembered from this session's events


@dataclass
class TaskRow:
    view: TaskView
    base: UnitState = UnitState.DIRTY  # the state when no unit of the task is in flight
    # units in flight, counted: after a change the engine may start a unit again before the
    # stale one's `unit_cancelled` arrives
    running: dict[tuple[int, ...], int] = field(default_factory=dict)
    paused: bool = False  # the user paused it (the engine sends no event for that)
    broken: bool = False  # its file has a project error
    in_build: bool = False  # part of the current (or last) build
    yields: int = 0  # generator: iterations seen in this build
    done: int = 0  # scoped task: units finished or skipped in this build
    pushes: int = 0  # collector or inner generator: values pushed in this build
    failures: int = 0  # units failed in this build
    started: float | None = None  # event time of the first start in this build
    ended: float | None = None  # event time of the last unit's end in this build
    duration: float | None = None  # of the last run
    error: str | None = None  # traceback of the last failure
    error_iter: tuple[int, ...] = ()
    reasons: list[str] = field(default_factory=list)  # why the last unit started
    node: str | None = None  # where its latest unit runs or ran (Ray), when the engine said
    starts: int = 0  # bumps with each start: the latest unit's log may be another file
    last_iter: tuple[int, ...] = ()  # the latest unit started (its log is followed)
    max_iter: tuple[int, ...] = ()  # the furthest iteration started in this session
    paused_since: float | None = None  # clock time the user paused it
    paused_for: float = 0.0  # seconds paused in this run (the timer does not count them)
    recorded: bool = True  # this run is in `runs` (a new run starts unrecorded)
    runs: deque[PastRun] = field(default_factory=lambda: deque(maxlen=SESSION_RUNS))

    @property
    def scoped(self) -> bool:
        return bool(self.view.scope)

    @property
    def consumer(self) -> bool:
        """A collector or an inner generator: one unit fed by pushes."""
        return self.scoped and self.view.kind in ("collector", "generator")


@dataclass(frozen=True)
class Progress:
    done: int
    total: int | None  # None while the generator still runs
    running: int = 0  # units in flight
    rate: float | None = None  # units (or iterations) per second while it runs
    eta: float | None = None  # seconds left at that rate, when the total is known


class Board:
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
        # the header's counts, kept up to date from the rows that change (a full count of
        # 10,000 rows at every redraw would cost 80 ms)
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

    # -- what the UI asks ----------------------------------------------------------------------
    def set_paused(self, name: str, paused: bool) -> None:
        row = self.rows.get(name)
        if row is not None:
            row.paused = paused
            self._pause_timer(row, paused or self.paused_all)
            self.changed.add(name)
            self.header_changed = True

    def sync_paused(self, paused: set[str]) -> None:
        """The engine's word on which tasks have a paused unit (a paused unit replaced by a
        rerun is not paused any more)."""
        for name, row in self.rows.items():
            if row.paused != (name in paused):
                row.paused = name in paused
                self.changed.add(name)
                self.header_changed = True

    def set_paused_all(self, paused: bool) -> None:
        self.paused_all = paused
        for row in self.rows.values():
            if not paused:
                row.paused = False
            self._pause_timer(row, paused or row.paused)
            if row.running:
                self.changed.add(row.view.name)
        self.header_changed = True

    def _pause_timer(self, row: TaskRow, stopped: bool) -> None:
        """A paused unit's time does not run: its pauses are left out of its duration."""
        now = self.clock()
        if stopped and row.paused_since is None:
            row.paused_since = now
        elif not stopped and row.paused_since is not None:
            row.paused_for += max(0.0, now - row.paused_since)
            row.paused_since = None

    def state(self, name: str) -> UnitState:
        row = self.rows[name]
        if row.broken:
            return UnitState.BROKEN
        if row.running:
            return UnitState.PAUSED if row.paused or self.paused_all else UnitState.RUNNING
        if row.scoped and not row.consumer and row.base in (UnitState.CLEAN, UnitState.QUEUED):
            generator = self.rows.get(row.view.scope[-1])
            if generator is not None and generator.running and row.done:
                # between two iterations: more units are coming
                return UnitState.PAUSED if generator.paused or self.paused_all else (
                    UnitState.RUNNING)
        return row.base

    def progress(self, name: str) -> Progress | None:
        """Iterations of a generator, or units done of a scoped task; None if nothing to show."""
        row = self.rows[name]
        if row.view.kind == "generator" and not row.scoped:
            if not row.in_build or (row.yields == 0 and not row.running):
                return None
            return self._measured(name, row.yields, None if row.running else row.yields, 0)
        if not row.scoped:
            return None
        done = row.pushes if row.consumer else row.done
        if done == 0 and not row.running:
            return None  # not reached in this build (or clean as a whole: nothing pushed)
        generator = self.rows.get(row.view.scope[-1])
        total = None
        if generator is not None and not generator.running and generator.in_build:
            total = generator.yields
        running = 0 if row.consumer else len(row.running)
        return self._measured(name, done, total, running)

    def _measured(self, name: str, done: int, total: int | None, running: int) -> Progress:
        """Rate and ETA while it runs (a paused task's clock is stopped: no rate, no ETA)."""
        rate = eta = None
        if self.state(name) is UnitState.RUNNING:
            elapsed = self.elapsed(name)
            if elapsed and elapsed > 0.5 and done:
                rate = done / elapsed
                if total is not None:
                    eta = max(0, total - done) / rate
        return Progress(done, total, running, rate, eta)

    def elapsed(self, name: str) -> float | None:
        """Seconds: running for so long (its pauses left out), or the last run's duration."""
        row = self.rows[name]
        if row.started is not None and self.state(name) in (UnitState.RUNNING, UnitState.PAUSED):
            now = self.clock() if row.paused_since is None else row.paused_since
            return max(0.0, now - row.started - row.paused_for)
        return row.duration

    def counts(self) -> dict[UnitState, int]:
        self._with_scopes(self.changed)
        self._recount(self.changed)
        return dict(self._counts)

    def take_changed(self) -> set[str]:
        """The rows to redraw since the last call (a generator's scope with it: the state of
        its tasks follows it)."""
        changed, self.changed = self.changed, set()
        self._with_scopes(changed)
        self._recount(changed)
        return changed

    def _with_scopes(self, names: set[str]) -> None:
        members = self.members
        for generator in [n for n in names if n in members]:
            names.update(members[generator])

    def _recount(self, names: Iterable[str]) -> None:
        states, counts, rows = self._states, self._counts, self.rows
        for name in names:
            if name not in rows:
                continue
            new, old = self.state(name), states.get(name)
            if new is not old:
                if old is not None:
                    counts[old] -= 1
                counts[new] += 1
                states[name] = new


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
