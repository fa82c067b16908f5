"""Events to screen: the inbox the engine feeds, folded into the board and drawn (the DAG,
the header, the project errors, the selected task's details and its log).

The engine and the app share one asyncio loop. The engine publishes events to `app.inbox.put`
(never blocks, safe from any thread); a timer folds them into the board ~15 times a second
and redraws only the rows that changed, so a burst of events is one redraw, not one each.
The keys that steer the engine are app.py's.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from textual.app import App, ComposeResult
from textual.containers import Container
from textual.content import Content
from textual.events import Resize
from textual.widgets import Footer, Input, Static

from watchrun.engine import events as ev
from watchrun.engine.control import EngineControl, ErrorView, ProjectView, UnitState
from watchrun.ui.tui.dag import SYMBOLS, TONES, DagView
from watchrun.ui.tui.detail import DetailPane, LogTail
from watchrun.ui.tui.layout import GraphLayout, layout, order_rows
from watchrun.ui.tui.records import LastRun, Records
from watchrun.ui.tui.state import Board

FLUSH_EVERY = 1 / 15  # seconds between two folds of the inbox into the screen
TICK_EVERY = 1.0  # running durations advance
LOG_POLL_EVERY = 0.25  # the selected task's log is read this often
WIDE_FROM = 120  # columns: from here the detail pane sits beside the DAG, else below it
DAG_SHARE = 0.55  # the most of a wide screen the DAG takes (its rows may need less)
PAGING_QUIET = 0.1  # seconds without a page key before the detail pane follows the cursor
DAG_MIN = 40  # columns the DAG keeps on a wide screen however short its names

T = TypeVar("T")


class Inbox:
    """Events waiting for the next redraw. `put` is an append to a deque: O(1), never blocks,
    and safe to call from another thread (deque appends and pops are atomic)."""

    def __init__(self) -> None:
        self._events: deque[ev.Event] = deque()

    def put(self, event: ev.Event) -> None:
        self._events.append(event)

    def drain(self) -> list[ev.Event]:
        events, pop = [], self._events.popleft
        for _ in range(len(self._events)):
            events.append(pop())
        return events

    def __len__(self) -> int:
        return len(self._events)


def structure(view: ProjectView) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """What the DAG's layout depends on: the tasks and their upstreams."""
    return tuple((t.name, t.upstreams) for t in view.tasks if not t.abstract)


def graph_of(view: ProjectView) -> GraphLayout:
    names = [t.name for t in view.tasks if not t.abstract]
    edges = [(up, t.name) for t in view.tasks if not t.abstract for up in t.upstreams]
    return layout(order_rows(names, edges), edges)


def visible_graph(view: ProjectView, folded: set[str], pattern: str
                  ) -> tuple[GraphLayout, dict[str, int]]:
    """The DAG as shown: only the tasks whose name holds `pattern` (any case), or else every
    task with the scopes of `folded` generators drawn as their generator. Returns the layout
    and how many tasks each folded generator hides."""
    tasks = [t for t in view.tasks if not t.abstract]
    if pattern:
        needle = pattern.lower()
        kept = [t.name for t in tasks if needle in t.name.lower()]
        keep = set(kept)
        edges = [(up, t.name) for t in tasks if t.name in keep for up in t.upstreams
                 if up in keep]
        return layout(order_rows(kept, edges), edges), {}
    if not folded:
        return graph_of(view), {}
    owner: dict[str, str] = {}
    for t in tasks:
        outer = next((g for g in t.scope if g in folded), None)
        if outer is not None:
            owner[t.name] = outer
    hidden: dict[str, int] = {}
    for generator in owner.values():
        hidden[generator] = hidden.get(generator, 0) + 1
    names = [t.name for t in tasks if t.name not in owner]
    edges = []
    for t in tasks:
        for up in t.upstreams:
            a, b = owner.get(up, up), owner.get(t.name, t.name)
            if a != b:
                edges.append((a, b))
    return layout(order_rows(names, edges), edges), hidden


class LiveApp(App[str]):
    """The screen of `watchrun dev`, kept up to date from the engine's events; WatchrunApp
    (app.py) adds the keys."""

    def __init__(self, control: EngineControl, *, clock: Callable[[], float] = time.time,
                 records: Records | None = None) -> None:
        super().__init__()
        self.control = control
        self.records = records or Records(None)
        self.inbox = Inbox()
        view = control.view()
        self.view = view
        self.board = Board(view, clock)
        self._structure = structure(view)
        self._folded: set[str] = set()
        self._pattern = ""
        self._graph, self._hidden = visible_graph(view, self._folded, self._pattern)
        self._shown: tuple[str | None, UnitState | None, int] = (None, None, -1)
        self._reasons: list[str] = []
        self._stored: LastRun | None = None
        self._tail = LogTail(None)
        self._tail_key: tuple[object, ...] = ()
        self._traceback: str | None = None
        self._pinned: dict[str, tuple[int, ...]] = {}  # task -> iteration whose log is shown
        self._quitting = False
        self._paged_at = 0.0  # monotonic time of the last page key, until the pane follows
        self._header_shown = Content("")
        self._errors_shown: list[ErrorView] | None = None
        # kept, not queried: while the help screen is up, queries would search that screen
        self.header = Static(id="header", markup=False)
        self.errors = Static(id="errors", markup=False)
        self.main = Container(id="main")
        self.dag = DagView(self.board, id="dag")
        self.detail = DetailPane(id="detail")
        self.filter_box = Input(placeholder="filter tasks by name (enter keeps, escape clears)",
                                id="filter")
        self.feedback = Static("", id="feedback", markup=False)


    # -- building the screen -------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield self.header
        yield self.errors
        with self.main:
            yield self.dag
            yield self.detail
        yield self.filter_box
        yield self.feedback
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.filter_box.display = False
        self.dag.set_layout(self._graph, self._hidden)
        self.dag.focus()
        self.flush()
        self.set_interval(FLUSH_EVERY, self.flush)
        self.set_interval(TICK_EVERY, self._tick)
        self.set_interval(LOG_POLL_EVERY, self._poll_log)

    def on_resize(self, event: Resize) -> None:
        self._size_panes(event.size.width)

    def _size_panes(self, width: int) -> None:
        """Wide: the DAG as wide as its rows need, up to DAG_SHARE of the screen; the
        details and the log take the rest. Narrow: stacked, each the full width."""
        wide = width >= WIDE_FROM
        self.main.set_class(wide, "wide")
        if wide:
            wanted = max(DAG_MIN, self.dag.wanted_width())
            self.dag.styles.width = min(wanted, int(width * DAG_SHARE))
        else:
            self.dag.styles.width = "1fr"

    def say(self, message: str, severity: str = "information") -> None:
        """Feedback for a key, in the line above the keys (kept until the next one)."""
        self.feedback.update(message, layout=False)
        for level in ("information", "warning", "error"):
            self.feedback.set_class(level == severity, f"-{level}")

    # -- events to screen ----------------------------------------------------------------------
    def flush(self) -> None:
        """Fold the waiting events into the board and redraw what they changed."""
        board = self.board
        board.apply_all(self.inbox.drain())
        if board.view_stale:
            board.view_stale = False
            self._reload()
        changed = board.take_changed()
        if changed:
            self.dag.refresh_tasks(changed)
        if board.header_changed:
            board.header_changed = False
            self._draw_header()
        selected = self.dag.selected
        if self._paged_at and time.monotonic() - self._paged_at < PAGING_QUIET:
            return
        if selected is None or selected in changed or self._shown[0] != selected:
            self._draw_detail()
        if self._paged_at:
            self._paged_at = 0.0
            self._poll_log()

    def _reload(self) -> None:
        view = self._call(self.control.view)
        if view is None:
            return
        self.view = view
        self.board.load(view)
        shape = structure(view)
        if shape != self._structure:
            self._structure = shape
            self._relayout()

    def _relayout(self, select: str | None = None) -> None:
        self._folded &= {t.name for t in self.view.tasks}
        self._graph, self._hidden = visible_graph(self.view, self._folded, self._pattern)
        self.dag.set_layout(self._graph, self._hidden, select)
        if self.is_running:
            self._size_panes(self.size.width)

    def _tick(self) -> None:
        paused_tasks = getattr(self.control, "paused_tasks", None)  # older engines lack it
        if paused_tasks is not None:
            paused = self._call(paused_tasks)
            if paused is not None:
                self.board.sync_paused(paused)
        self.dag.refresh_running()
        selected = self.dag.selected
        if selected is not None and not self._paged_at and self.board.state(selected) in (
                UnitState.RUNNING, UnitState.PAUSED):
            self._draw_detail()

    def _draw_header(self) -> None:
        board = self.board
        counts = board.counts()
        parts: list[str | tuple[str, str]] = [("watchrun", "bold")]
        for state, count in counts.items():
            if count:
                parts.append("  ")
                parts.append((f"{SYMBOLS[state]} {count} {state.value}", f"$text-{TONES[state]}"))
        if board.paused_all:
            parts.append(("  PAUSED", "bold reverse"))
        if self._pattern:
            parts.append((f"  filter: {self._pattern!r}", "bold"))
        activity = "building" if board.building else "watching"
        change = board.last_change or "no change yet"
        parts.append(f"\n{activity} · {board.watched} files watched · last change: {change}")
        header = Content.assemble(*parts)
        if header != self._header_shown:
            self._header_shown = header
            self.header.update(header, layout=False)  # its height is fixed: no new layout
        if board.errors != self._errors_shown:
            self._errors_shown = list(board.errors)
            self._draw_errors()

    def _draw_errors(self) -> None:
        panel = self.errors
        errors = self.board.errors
        panel.display = bool(errors)
        if not errors:
            return
        noun = "error" if len(errors) == 1 else "errors"
        lines: list[str | tuple[str, str]] = [
            (f"✗ {len(errors)} project {noun} (fix and save; the rest keeps running)", "bold")]
        for error in errors:
            where = f"{error.file}:{error.line}" if error.line else (error.file or "project")
            lines.append(f"\n{where}: {error.message}")
        panel.update(Content.assemble(*lines))

    def _draw_detail(self) -> None:
        name = self.dag.selected
        state = self.board.state(name) if name is not None else None
        starts = self.board.rows[name].starts if name is not None else -1
        if (name, state, starts) != self._shown:
            self._shown = (name, state, starts)
            reasons = self._call(self.control.reasons, name) if name is not None else None
            self._reasons = reasons or []
            # the store's last run, for a task this session has not seen run (a busy scope
            # would otherwise cost a query at every start)
            row = self.board.rows[name] if name is not None else None
            wanted = row is not None and (row.duration is None or row.ended is None) and (
                state not in (UnitState.RUNNING, UnitState.PAUSED))
            self._stored = self.records.last_run(name) if name is not None and wanted else None
        self.detail.show(self.board, name, self._reasons, self._stored)

    # -- the log -------------------------------------------------------------------------------
    def _log_unit(self, name: str) -> tuple[tuple[int, ...], bool]:
        """The unit whose log is shown: the one the user stepped to, else a failed unit (its
        traceback first), else the latest unit started (the running one)."""
        pinned = self._pinned.get(name)
        if pinned is not None:
            return pinned, True
        row = self.board.rows[name]
        if self.board.state(name) is UnitState.FAILED and row.error is not None:
            return row.error_iter, False
        return row.last_iter, False

    def _log_path(self, name: str, it: tuple[int, ...]) -> Path | None:
        path = self.records.log_path(name, it)
        if path is not None and (path.exists() or self.board.rows[name].starts):
            return path  # the unit's own log (a unit that just started creates it soon)
        found = self._call(self.control.log_path, name)
        return Path(found) if found else None

    def _poll_log(self) -> None:
        name = self.dag.selected
        if name is None or self._paged_at:  # paging: the flush follows where it stops
            return
        row = self.board.rows[name]
        it, pinned = self._log_unit(name)
        failed = self.board.state(name) is UnitState.FAILED and row.error_iter == it
        key = (name, it, pinned, row.starts if not pinned else 0, failed)
        if key != self._tail_key or self._tail.path is None:
            path = self._log_path(name, it)
            self._traceback = row.error if failed else None
            if key != self._tail_key or path != self._tail.path:
                self._tail = LogTail(path)
                self.detail.follow(self._tail, self._log_title(name, it, pinned, path),
                                   self._traceback)
            self._tail_key = key
        restart, text = self._tail.read()
        if restart or text:
            self.detail.append(restart, text, self._traceback)

    def _log_title(self, name: str, it: tuple[int, ...], pinned: bool, path: Path | None
                   ) -> str:
        unit = name + "".join(f"[{i}]" for i in it)
        if path is None:
            return f"log  {unit}  (nothing captured yet)"
        if pinned:
            return f"log  {unit}  ({path.name}) · [ older, ] newer"
        if self.board.rows[name].scoped:
            return f"log  {unit}  ({path.name}) · following · [ ] iterations"
        return f"log  {unit}  ({path.name})"

    def on_dag_view_selected(self, message: DagView.Selected) -> None:
        if message.paging:
            # a page key may be held down: describing each task passed (a new layout of the
            # pane) would slow the scrolling; the flush describes where it stops
            self._paged_at = time.monotonic()
            return
        self._paged_at = 0.0
        self._draw_detail()
        self._poll_log()
    def _call(self, method: Callable[..., T], *args: str) -> T | None:
        """Call the engine; a failure is shown, never a crash of the UI."""
        try:
            return method(*args)
        except Exception as exc:  # the UI must outlive an engine bug
            self.say(f"{getattr(method, '__name__', 'engine')}: {exc}", "error")
            return None
