"""`watchrun dev` in a terminal: the live DAG, the selected task, and keys to steer the engine.

The engine and this app share one asyncio loop. The engine publishes events to `app.inbox.put`
(cheap, never blocks, safe from any thread); a timer folds them into the board ~15 times a
second and redraws only the rows that changed, so a burst of thousands of events costs one
redraw, not thousands.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, TypeVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container
from textual.content import Content
from textual.events import Resize
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Static

from watchrun.engine import events as ev
from watchrun.engine.control import EngineControl, ErrorView, ProjectView, UnitState
from watchrun.ui.tui.dag import SYMBOLS, TONES, DagView
from watchrun.ui.tui.detail import DetailPane, LogTail, failed_unit
from watchrun.ui.tui.history import history_text
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

HELP = """\
[b]watchrun dev[/b] — every key

[b]Moving[/b]
  [b]↑ ↓[/b]  [b]j k[/b]     select a task          [b]PgUp PgDn Home End[/b]  jump
  [b]/[/b]           filter the tasks by name (enter keeps it, escape clears it)
  [b]enter[/b]       fold / unfold a generator's scope (on a task of the scope: its generator)

[b]Steering the selected task[/b]
  [b]space[/b]       pause / resume its running units (SIGSTOP / SIGCONT; the clock stops)
  [b]i[/b]           interrupt its running units (they stay cancelled until a change or r)
  [b]r[/b]           run it again where it stopped: its interrupted or failed units
  [b]R[/b]           force a rerun of every unit of it, and of what depends on it
  [b]P[/b]           pause / resume everything (scheduling too)

[b]Looking[/b]
  [b][ ][/b]         its log: an older / newer iteration (] past the newest follows again)
  [b]h[/b]           its recent runs: when, how long, outcome, why it ran
  [b]?[/b]           this help
  [b]q[/b]  [b]ctrl+c[/b]  quit: cancel what runs, end every process, exit

States:  ● clean  ○ dirty  ◌ queued  ▶ running
         ‖ paused  ✗ failed  ⊘ cancelled  ! broken (a project error in its file)
Bars:    █ done  ▓ running  ░ to do

Lanes flow down, from a task to those that use it; a horizontal line in a task's row
brings it its inputs. Where a line passes a lane it does not join, the lane stays unbroken.

Press escape, ? or q to close."""


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


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "dismiss", "Close"),
    ]

    def compose(self) -> ComposeResult:
        yield Static(Content.from_markup(HELP), id="help")


class HistoryScreen(ModalScreen[None]):
    """The recent runs of one task."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,h,q", "dismiss", "Close"),
    ]

    def __init__(self, text: Content) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        yield Static(self.text, id="history")


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


class WatchrunApp(App[str]):
    """The TUI. `WatchrunApp(control)`; subscribe `app.inbox.put` to the engine's bus.

    `records` reads the store's memory of runs (last run, history, each unit's log); without
    it the app knows only this session's events.

    The app's result is "quit" (q) or "interrupt" (Ctrl+C); either way `control.quit()` has
    been called before the app exits."""

    CSS_PATH = "watchrun.tcss"
    TITLE = "watchrun"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        # the footer lists what acts on the selection (moving is in the help: ?)
        Binding("down,j", "cursor(1)", "Select", key_display="↓/j", show=False),
        Binding("up,k", "cursor(-1)", "Select", key_display="↑/k", show=False),
        Binding("space", "toggle_pause", "Pause"),
        Binding("i", "interrupt", "Interrupt"),
        Binding("r", "continue", "Rerun"),
        Binding("R", "force", "Force", key_display="R"),
        Binding("f", "force", "Force", show=False),
        Binding("P", "pause_all", "All", key_display="P"),  # pause / resume everything
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("enter", "fold", "Fold", show=False),
        Binding("left_square_bracket", "step_log(-1)", "Older iter", show=False),
        Binding("right_square_bracket", "step_log(1)", "Newer iter", show=False),
        Binding("h", "history", "History"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "interrupt_app", "Quit", show=False, priority=True),
    ]

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
            # pane, ~30 ms) would slow the scrolling; the flush describes where it stops
            self._paged_at = time.monotonic()
            return
        self._paged_at = 0.0
        self._draw_detail()
        self._poll_log()

    # -- keys ----------------------------------------------------------------------------------
    def action_cursor(self, delta: int) -> None:
        self.dag.move(delta)

    def action_toggle_pause(self) -> None:
        name = self.dag.selected
        if name is None:
            return
        state = self.board.state(name)
        if state is UnitState.PAUSED and self.board.paused_all:
            self.say("everything is paused: P resumes", "warning")
        elif state is UnitState.PAUSED:
            self._pause(name, self.control.resume, paused=False)
        elif state is UnitState.RUNNING:
            self._pause(name, self.control.pause, paused=True)
        else:
            self.say(f"{name}: nothing running to pause ({state.value})", "warning")
        self.flush()

    def _pause(self, name: str, method: Callable[[str], str | None], paused: bool) -> None:
        verb = "paused" if paused else "resumed"
        try:
            why = method(name)
        except Exception as exc:  # the UI must outlive an engine bug
            why = str(exc)
        if why is None:
            self.board.set_paused(name, paused)
            self.say(f"{name}: {verb}" + (" (space resumes)" if paused else ""))
        else:
            self.say(f"{name}: not {verb}: {why}", "warning")

    def action_interrupt(self) -> None:
        name = self.dag.selected
        if name is None:
            return
        state = self.board.state(name)
        if state not in (UnitState.RUNNING, UnitState.PAUSED):
            self.say(f"{name}: nothing running to interrupt ({state.value})", "warning")
            return
        if self._steer(self.control.interrupt, name):
            self.say(f"{name}: interrupting (it stays cancelled: r continues it, R reruns all)")

    def action_continue(self) -> None:
        """r: run again what did not finish (interrupted, failed); never a clean task."""
        name = self.dag.selected
        if name is None:
            return
        state = self.board.state(name)
        if state in (UnitState.RUNNING, UnitState.PAUSED):
            self.say(f"{name}: already {state.value} (R forces a rerun of every unit)",
                     "warning")
            return
        if state is UnitState.CLEAN:
            self.say(f"{name}: clean, nothing to continue (R forces a rerun)", "warning")
            return
        if state is UnitState.BROKEN:
            self.say(f"{name}: its file has a project error: fix and save", "warning")
            return
        # the engine's "continue" (its units not done yet, clean ones skipped) when it has
        # one; an engine without it reruns the task
        method = getattr(self.control, "continue_task", None)
        if method is None:
            if self._steer(self.control.rerun, name):
                self.say(f"{name}: running it again")
        elif self._steer(method, name):
            self.say(f"{name}: running its {state.value} units again")

    def action_force(self) -> None:
        name = self.dag.selected
        if name is None:
            return
        force = getattr(self.control, "force", self.control.rerun)  # older engines lack it
        if self._steer(force, name):
            self.say(f"{name}: forced rerun of every unit, and of what depends on it")

    def action_pause_all(self) -> None:
        if self.board.paused_all:
            self._call(self.control.resume_all)
            self.board.set_paused_all(False)
            self.say("resumed everything")
        else:
            self._call(self.control.pause_all)
            self.board.set_paused_all(True)
            self.say("paused everything (P resumes)")
        self.flush()

    def action_filter(self) -> None:
        self.filter_box.display = True
        self.filter_box.value = self._pattern
        self.filter_box.focus()
        self.say("filter: type part of a name · enter keeps the filter · escape clears it")

    def on_input_changed(self, event: Input.Changed) -> None:
        self._set_filter(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.filter_box.display = bool(self._pattern)
        self.dag.focus()

    def _set_filter(self, pattern: str) -> None:
        if pattern == self._pattern:
            return
        self._pattern = pattern
        self._relayout()
        self.board.header_changed = True
        shown = len(self._graph.rows)
        total = sum(1 for t in self.view.tasks if not t.abstract)
        if pattern:
            self.say(f"filter {pattern!r}: {shown} of {total} tasks (escape clears)",
                     "information" if shown else "warning")
        else:
            self.say(f"filter cleared: {total} tasks")
        self.flush()

    def action_clear_filter(self) -> None:
        if not self._pattern and not self.filter_box.display:
            return
        self.filter_box.value = ""
        self.filter_box.display = False
        self._set_filter("")
        self.dag.focus()

    def action_fold(self) -> None:
        name = self.dag.selected
        if name is None:
            return
        if self._pattern:
            self.say("clear the filter (escape) to fold scopes", "warning")
            return
        row = self.board.rows[name]
        generator = name if name in self.board.members else (
            row.view.scope[-1] if row.view.scope else None)
        if generator is None:
            self.say(f"{name}: not in a generator's scope: nothing to fold", "warning")
            return
        if generator in self._folded:
            self._folded.discard(generator)
            self._relayout(select=generator)
            self.say(f"{generator}: scope unfolded")
        else:
            self._folded.add(generator)
            self._relayout(select=generator)
            hidden = self._hidden.get(generator, 0)
            self.say(f"{generator}: scope folded ({hidden} tasks under it; enter unfolds)")

    def action_step_log(self, delta: int) -> None:
        name = self.dag.selected
        if name is None:
            return
        row = self.board.rows[name]
        if not row.scoped:
            self.say(f"{name}: one unit, no iterations to step through", "warning")
            return
        newest = row.max_iter
        if not newest:
            self.say(f"{name}: no iteration has run in this session", "warning")
            return
        current, _ = self._log_unit(name)
        if not current:
            current = newest
        last = current[-1] + delta
        if last < 0:
            self.say(f"{name}: already at the first iteration", "warning")
            return
        target = (*current[:-1], last)
        if target > newest:
            self._pinned.pop(name, None)
            self.say(f"{name}: following the latest unit")
        else:
            self._pinned[name] = target
            self.say(f"{name}: log of iteration {failed_unit('', target)}")
        self._poll_log()

    def action_history(self) -> None:
        name = self.dag.selected
        if name is None:
            return
        self.push_screen(HistoryScreen(history_text(name, self.board, self.records)))

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        self._stop("quit")

    def action_interrupt_app(self) -> None:
        self._stop("interrupt")

    def _stop(self, result: str) -> None:
        if not self._quitting:
            self._quitting = True
            self._call(self.control.quit)
            self.records.close()
        self.exit(result)

    def _steer(self, method: Callable[[str], object], name: str) -> bool:
        """Ask the engine to act on a task: False (and the failure shown) if it raised."""
        try:
            method(name)
        except Exception as exc:  # the UI must outlive an engine bug
            self.say(f"{getattr(method, '__name__', 'engine')}: {exc}", "error")
            return False
        return True

    def _call(self, method: Callable[..., T], *args: str) -> T | None:
        """Call the engine; a failure is shown, never a crash of the UI."""
        try:
            return method(*args)
        except Exception as exc:  # the UI must outlive an engine bug
            self.say(f"{getattr(method, '__name__', 'engine')}: {exc}", "error")
            return None
