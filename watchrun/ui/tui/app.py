"""`watchrun dev` in a terminal: the live DAG, the selected task, and keys to steer the engine.

What the screen shows and how events reach it is live.py's; this module is the keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.widgets import Input

from watchrun.engine.control import UnitState
from watchrun.ui.tui.detail import failed_unit
from watchrun.ui.tui.history import history_text
from watchrun.ui.tui.live import Inbox, LiveApp
from watchrun.ui.tui.screens import HELP, HelpScreen, HistoryScreen

__all__ = ["HELP", "Inbox", "WatchrunApp"]


class WatchrunApp(LiveApp):
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

    # -- keys ----------------------------------------------------------------------------------
    def action_cursor(self, delta: int) -> None:
        self.dag.move(delta)

    def action_toggle_pause(self) -> None:
        name = self.dag.selected
        if name is None:
            return
        state = self._state_now(name)
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
        state = self._state_now(name)
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
        state = self._state_now(name)
        if state in (UnitState.RUNNING, UnitState.PAUSED):
            self.say(f"{name}: already {state.value} (R forces a rerun of every unit)",
                     "warning")
            return
        if state is UnitState.CLEAN:  # nothing to continue: r reruns it (SPEC section 9)
            force = getattr(self.control, "force", self.control.rerun)
            if self._steer(force, name):
                self.say(f"{name}: clean, so a forced rerun of every unit")
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

    def _state_now(self, name: str) -> UnitState:
        """The task's state with the events that arrived since the last redraw folded in: a
        key pressed as a unit starts or stops decides on that, not on the screen of 60 ms ago."""
        self.flush()
        return self.board.state(name)

    def _steer(self, method: Callable[[str], object], name: str) -> bool:
        """Ask the engine to act on a task: False (and the failure shown) if it raised."""
        try:
            method(name)
        except Exception as exc:  # the UI must outlive an engine bug
            self.say(f"{getattr(method, '__name__', 'engine')}: {exc}", "error")
            return False
        return True
