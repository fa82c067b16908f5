"""A task's row in the TUI, and what the UI reads off the rows: a task's state, progress, elapsed
time, the header's counts, and the user's pauses. `Board` (state.py) folds events into them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from watchrun.engine.control import TaskView, UnitState
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


class RowReadings:
    """The rows as the UI reads them; the pauses the user asks for."""

    clock: Callable[[], float]
    rows: dict[str, TaskRow]
    members: dict[str, list[str]]  # generator -> the tasks in its scope
    paused_all: bool
    changed: set[str]  # rows to redraw
    header_changed: bool
    _states: dict[str, UnitState]
    _counts: dict[UnitState, int]

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
