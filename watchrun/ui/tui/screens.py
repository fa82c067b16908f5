"""The modal screens of the TUI: every key (?) and a task's recent runs (h)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

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
