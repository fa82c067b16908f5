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
from textual.widgets import Footer, Static

from watchrun.engine import events as ev
from watchrun.engine.control import EngineControl, ErrorView, ProjectView, UnitState
from watchrun.ui.tui.dag import SYMBOLS, TONES, DagView
from watchrun.ui.tui.detail import DetailPane, LogTail
from watchrun.ui.tui.layout import GraphLayout, layout, order_rows
from watchrun.ui.tui.state import Board

FLUSH_EVERY = 1 / 15  # seconds between two folds of the inbox into the screen
TICK_EVERY = 1.0  # running durations advance
LOG_POLL_EVERY = 0.25  # the selected task's log is read this often
WIDE_FROM = 120  # columns: from here the detail pane sits beside the DAG, else below it

T = TypeVar("T")

HELP = """\
[b]watchrun dev[/b] — keys

  [b]↑ ↓[/b]  [b]j k[/b]   select a task (PgUp PgDn Home End too)
  [b]space[/b]     pause / resume the selected task's running units
  [b]i[/b]         interrupt the selected task (stays cancelled until a change or r)
  [b]r[/b]         rerun the selected task (forced)
  [b]P[/b]         pause / resume everything
  [b]q[/b]         quit: cancel what runs, end every process, exit
  [b]?[/b]         this help

States:  ● clean  ○ dirty  ◌ queued  ▶ running
         ‖ paused  ✗ failed  ⊘ cancelled  ! broken (a project error in its file)

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


def structure(view: ProjectView) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """What the DAG's layout depends on: the tasks and their upstreams."""
    return tuple((t.name, t.upstreams) for t in view.tasks if not t.abstract)


def graph_of(view: ProjectView) -> GraphLayout:
    names = [t.name for t in view.tasks if not t.abstract]
    edges = [(up, t.name) for t in view.tasks if not t.abstract for up in t.upstreams]
    return layout(order_rows(names, edges), edges)


class WatchrunApp(App[str]):
    """The TUI. `WatchrunApp(control)`; subscribe `app.inbox.put` to the engine's bus.

    The app's result is "quit" (q) or "interrupt" (Ctrl+C); either way `control.quit()` has
    been called before the app exits."""

    CSS_PATH = "watchrun.tcss"
    TITLE = "watchrun"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("down,j", "cursor(1)", "Select", key_display="↓/j"),
        Binding("up,k", "cursor(-1)", "Select", key_display="↑/k", show=False),
        Binding("space", "toggle_pause", "Pause"),
        Binding("i", "interrupt", "Interrupt"),
        Binding("r", "rerun", "Rerun"),
        Binding("f", "force", "Force", show=False),
        Binding("P", "pause_all", "Pause all", key_display="P"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "interrupt_app", "Quit", show=False, priority=True),
    ]

    def __init__(self, control: EngineControl, *, clock: Callable[[], float] = time.time
                 ) -> None:
        super().__init__()
        self.control = control
        self.inbox = Inbox()
        view = control.view()
        self.board = Board(view, clock)
        self._structure = structure(view)
        self._graph = graph_of(view)
        self._shown: tuple[str | None, UnitState | None, int] = (None, None, -1)
        self._reasons: list[str] = []
        self._tail = LogTail(None)
        self._tail_key: tuple[str | None, int] = (None, -1)
        self._quitting = False
        self._header_shown = Content("")
        self._errors_shown: list[ErrorView] | None = None
        # kept, not queried: while the help screen is up, queries would search that screen
        self.header = Static(id="header", markup=False)
        self.errors = Static(id="errors", markup=False)
        self.main = Container(id="main")
        self.dag = DagView(self.board, id="dag")
        self.detail = DetailPane(id="detail")

    # -- building the screen -------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield self.header
        yield self.errors
        with self.main:
            yield self.dag
            yield self.detail
        yield Footer()

    def on_mount(self) -> None:
        self.dag.set_layout(self._graph)
        self.dag.focus()
        self.flush()
        self.set_interval(FLUSH_EVERY, self.flush)
        self.set_interval(TICK_EVERY, self._tick)
        self.set_interval(LOG_POLL_EVERY, self._poll_log)

    def on_resize(self, event: Resize) -> None:
        self.main.set_class(event.size.width >= WIDE_FROM, "wide")

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
        if selected is None or selected in changed or self._shown[0] != selected:
            self._draw_detail()

    def _reload(self) -> None:
        view = self._call(self.control.view)
        if view is None:
            return
        self.board.load(view)
        shape = structure(view)
        if shape != self._structure:
            self._structure = shape
            self._graph = graph_of(view)
            self.dag.set_layout(self._graph)

    def _tick(self) -> None:
        paused_tasks = getattr(self.control, "paused_tasks", None)  # older engines lack it
        if paused_tasks is not None:
            paused = self._call(paused_tasks)
            if paused is not None:
                self.board.sync_paused(paused)
        self.dag.refresh_running()
        selected = self.dag.selected
        if selected is not None and self.board.state(selected) in (UnitState.RUNNING,
                                                                    UnitState.PAUSED):
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
        self.detail.show(self.board, name, self._reasons)

    def _poll_log(self) -> None:
        name = self.dag.selected
        key = (name, self.board.rows[name].starts if name is not None else -1)
        if key != self._tail_key:
            path = self._call(self.control.log_path, name) if name is not None else None
            found = Path(path) if path else None
            if found != self._tail.path or self._tail_key[0] != name:
                self._tail = LogTail(found)
                self.detail.follow(self._tail)
            # no log yet (the worker of a unit that just started creates it): ask again at
            # the next poll rather than wait for the next start
            self._tail_key = key if found is not None else (name, -2)
        restart, text = self._tail.read()
        if restart or text:
            self.detail.append(restart, text)

    def on_dag_view_selected(self, message: DagView.Selected) -> None:
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
            self.notify("everything is paused: P resumes", severity="warning")
        elif state is UnitState.PAUSED:
            self._pause(name, self.control.resume, paused=False)
        elif state is UnitState.RUNNING:
            self._pause(name, self.control.pause, paused=True)
        else:
            self.notify(f"{name}: nothing running to pause", severity="warning")
        self.flush()

    def _pause(self, name: str, method: Callable[[str], str | None], paused: bool) -> None:
        verb = "paused" if paused else "resumed"
        try:
            why = method(name)
        except Exception as exc:  # the UI must outlive an engine bug
            why = str(exc)
        if why is None:
            self.board.set_paused(name, paused)
            self.notify(f"{name}: {verb}" + (" (space resumes)" if paused else ""))
        else:
            self.notify(f"{name}: not {verb}: {why}", severity="warning", timeout=8)

    def action_interrupt(self) -> None:
        name = self.dag.selected
        if name is not None:
            self._call(self.control.interrupt, name)
            self.notify(f"{name}: interrupting (r reruns it)")

    def action_rerun(self) -> None:
        name = self.dag.selected
        if name is not None:
            self._call(self.control.rerun, name)
            self.notify(f"{name}: rerun requested")

    def action_force(self) -> None:
        name = self.dag.selected
        force = getattr(self.control, "force", None)  # older engines lack it
        if name is not None and force is not None:
            self._call(force, name)
            self.notify(f"{name}: forced rerun requested")

    def action_pause_all(self) -> None:
        if self.board.paused_all:
            self._call(self.control.resume_all)
            self.board.set_paused_all(False)
            self.notify("resumed everything")
        else:
            self._call(self.control.pause_all)
            self.board.set_paused_all(True)
            self.notify("paused everything (P resumes)")
        self.flush()

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
        self.exit(result)

    def _call(self, method: Callable[..., T], *args: str) -> T | None:
        """Call the engine; a failure is shown, never a crash of the UI."""
        try:
            return method(*args)
        except Exception as exc:  # the UI must outlive an engine bug
            self.notify(f"{getattr(method, '__name__', 'engine')}: {exc}", severity="error",
                        timeout=10)
            return None

