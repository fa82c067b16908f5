"""The DAG widget: one row per task, its lanes to the left, drawn with the line API.

Only visible rows are rendered, each once until its task changes: rendered rows are kept as
strips and `refresh_tasks` drops and redraws just the rows named.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding, BindingType
from textual.events import Click
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from watchrun.engine.control import UnitState
from watchrun.ui.tui.layout import GraphLayout, GraphRow, glyph
from watchrun.ui.tui.state import Board, Progress

SYMBOLS = {
    UnitState.CLEAN: "●",
    UnitState.DIRTY: "○",
    UnitState.QUEUED: "◌",
    UnitState.RUNNING: "▶",
    UnitState.PAUSED: "‖",
    UnitState.FAILED: "✗",
    UnitState.CANCELLED: "⊘",
    UnitState.BROKEN: "!",
}
TONES = {  # theme colours of the states in text (the rows take theirs from the .tcss)
    UnitState.CLEAN: "success",
    UnitState.DIRTY: "warning",
    UnitState.QUEUED: "primary",
    UnitState.RUNNING: "accent",
    UnitState.PAUSED: "warning",
    UnitState.FAILED: "error",
    UnitState.CANCELLED: "warning",
    UnitState.BROKEN: "error",
}
KIND_TAGS = {"generator": "gen", "collector": "col"}
BAR = 8  # cells of the progress bar in a row
NAME_ROOM = 16  # rows show a progress bar if that leaves names this much room (or all they need)
COUNT = 15  # cells of "iter 1234/10000"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        minutes, secs = divmod(int(seconds), 60)
        return f"{minutes}m{secs:02}s"
    hours, minutes = divmod(int(seconds) // 60, 60)
    return f"{hours}h{minutes:02}m"


def format_rate(rate: float | None) -> str:
    if rate is None:
        return ""
    if rate >= 1000:
        return f"{rate / 1000:.1f}k/s"
    if rate >= 10:
        return f"{rate:.0f}/s"
    return f"{rate:.1f}/s" if rate >= 0.1 else f"{rate * 60:.1f}/min"


def bar_cells(progress: Progress, cells: int = BAR) -> tuple[int, int, int] | None:
    """(done, running, to do) cells of a bar; None while the total is unknown. A running
    unit takes at least one cell, so it shows on a bar of thousands."""
    total = progress.total
    if total is None:
        return None
    if total == 0:
        return cells, 0, 0
    done = cells * min(progress.done, total) // total
    running = -(-cells * progress.running // total) if progress.running else 0
    running = min(running, cells - done)
    return done, running, cells - done - running


def format_count(progress: Progress | None) -> str:
    """'57/100' with a total, '57' while it is unknown."""
    if progress is None:
        return ""
    if progress.total is None:
        return f"{progress.done}"
    return f"{progress.done}/{progress.total}"


class DagView(ScrollView, can_focus=True):
    """The tasks as rows, in the layout's order; a cursor selects one."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "dag--graph",
        "dag--cursor",
        "dag--detail",
        "dag--bar-done",
        "dag--bar-running",
        "dag--bar-todo",
        *(f"dag--{state.value}" for state in UnitState),
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "First", show=False),
        Binding("end", "jump(-1)", "Last", show=False),
    ]

    class Selected(Message):
        """The cursor moved to another task."""

        def __init__(self, name: str | None, paging: bool = False) -> None:
            super().__init__()
            self.name = name
            self.paging = paging  # a page at a time (PageUp/PageDown, perhaps held down)

    def __init__(self, board: Board, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.board = board
        self.graph = GraphLayout((), 0)
        self.index: dict[str, int] = {}
        self.cursor = 0
        self.folded: dict[str, int] = {}  # generator -> tasks of its scope hidden under it
        self._scopes = False  # some row is a generator or in a scope
        self._name_width = 0
        self._strips: dict[int, Strip] = {}
        self._styles: dict[str, Style] = {}
        self._base: Style | None = None

    # -- content -------------------------------------------------------------------------------
    @property
    def selected(self) -> str | None:
        rows = self.graph.rows
        return rows[self.cursor].name if 0 <= self.cursor < len(rows) else None

    def set_layout(self, graph: GraphLayout, folded: dict[str, int] | None = None,
                   select: str | None = None) -> None:
        """New rows (the project changed, a filter, a scope folded): keep the selected task if
        it is still there (or select `select`)."""
        keep = self.selected
        self.graph = graph
        self.folded = folded or {}
        self.index = graph.index()
        if select is not None and select in self.index:
            keep = select
        self._name_width = max((len(self._label(row.name)) for row in graph.rows), default=0)
        rows = self.board.rows
        # kind and progress columns only where there are generators: else the names get them
        self._scopes = any(rows[row.name].view.kind != "task" or rows[row.name].view.scope
                           for row in graph.rows if row.name in rows)
        self.cursor = self.index.get(keep, 0) if keep is not None else 0
        self.cursor = min(self.cursor, max(len(graph.rows) - 1, 0))
        self._strips.clear()
        self.virtual_size = Size(0, len(graph.rows))
        self.refresh()
        self.scroll_to_region(Region(0, self.cursor, 1, 1), animate=False, immediate=True)
        if self.selected != keep:
            self.post_message(self.Selected(self.selected))

    def _label(self, name: str) -> str:
        hidden = self.folded.get(name)
        return f"{name} ▸{hidden}" if hidden else name

    def _wide(self, width: int) -> bool:
        """Room for the bar and "iter" beside the lanes and a readable share of the names."""
        room = width - self.graph.width - 2 - len(self._right(None, True))
        return room >= min(self._name_width, NAME_ROOM)

    def wanted_width(self) -> int:
        """Columns the rows need in full: lanes, the longest name, the right-hand columns
        (and the scrollbar)."""
        return self.graph.width + 1 + self._name_width + len(self._right(None, True)) + 2

    def refresh_tasks(self, names: Iterable[str]) -> None:
        """Redraw the rows of these tasks (if they are on screen)."""
        top, height = round(self.scroll_offset.y), self.size.height
        for name in names:
            y = self.index.get(name)
            if y is None:
                continue
            self._strips.pop(y, None)
            if top <= y < top + height:
                self.refresh_line(y)

    def refresh_running(self) -> None:
        """Durations of running tasks tick: redraw their visible rows."""
        top, height = round(self.scroll_offset.y), self.size.height
        for row in self.graph.rows[top: top + height]:
            if self.board.state(row.name) in (UnitState.RUNNING, UnitState.PAUSED):
                self.refresh_tasks((row.name,))

    # -- the cursor ----------------------------------------------------------------------------
    def move(self, delta: int) -> None:
        self.go_to(self.cursor + delta)

    def go_to(self, y: int, paging: bool = False) -> None:
        if not self.graph.rows:
            return
        y = max(0, min(y, len(self.graph.rows) - 1))
        if y == self.cursor:
            return
        old, self.cursor = self.cursor, y
        self._strips.pop(old, None)
        self._strips.pop(y, None)
        top = round(self.scroll_offset.y)
        self.scroll_to_region(Region(0, y, 1, 1), animate=False, immediate=True)
        if round(self.scroll_offset.y) == top:  # else the scroll redraws every row
            self.refresh_line(old)
            self.refresh_line(y)
        self.post_message(self.Selected(self.selected, paging))

    def select(self, name: str) -> None:
        if name in self.index:
            self.go_to(self.index[name])

    def action_page(self, direction: int) -> None:
        self.go_to(self.cursor + direction * max(1, self.size.height - 1), paging=True)

    def action_jump(self, where: int) -> None:
        self.go_to(where if where >= 0 else len(self.graph.rows) - 1)

    def on_click(self, event: Click) -> None:
        self.go_to(event.y + round(self.scroll_offset.y))

    # -- drawing -------------------------------------------------------------------------------
    def on_resize(self) -> None:
        self._strips.clear()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()
        self._base = None
        self._strips.clear()

    def _style(self, name: str) -> Style:
        style = self._styles.get(name)
        if style is None:
            style = self.get_component_rich_style(name, partial=True)
            background = self.get_component_styles(name).background
            if 0 < background.a < 1:
                # a partial rich style drops the alpha ("$accent 50%" would be full accent, and
                # a selected running task orange on orange): blend it over our background
                blended = self.background_colors[1] + background
                style += Style(bgcolor=blended.rich_color)
            self._styles[name] = style
        return style

    def _base_style(self) -> Style:
        """The widget's own style, kept until the styles change (computing it costs more than
        drawing the row)."""
        style = self._base
        if style is None:
            style = self._base = self.rich_style
        return style

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        index = y + round(self.scroll_offset.y)
        if index >= len(self.graph.rows):
            return Strip.blank(width, self._base_style())
        strip = self._strips.get(index)
        if strip is None or strip.cell_length != width:
            strip = self._strips[index] = self._render_row(self.graph.rows[index], index, width)
        return strip

    def _right(self, name: str | None, wide: bool, progress: Progress | None = None) -> str:
        """Kind, count and duration of a row (the bar is drawn between them)."""
        board = self.board
        if name is None:
            kind, count, duration = "", "", ""
        else:
            kind = KIND_TAGS.get(board.rows[name].view.kind, "")
            count = format_count(progress)
            duration = format_duration(board.elapsed(name))
        if not self._scopes:
            return f" {duration:>6}"
        if wide:
            count = f"iter {count}" if count else ""
            return f" {kind:<3} {count:>{COUNT}} {' ' * BAR} {duration:>6}"
        return f" {kind:<3} {count:>{COUNT - 6}} {duration:>6}"

    def _styled(self, component: str, cursor: bool) -> Style:
        """The widget's style (under the cursor or not) with a component's on top."""
        key = ("+" if cursor else "-") + component
        style = self._styles.get(key)
        if style is None:
            base = self._base_style()
            if cursor:
                base = base + self._style("dag--cursor")
            style = self._styles[key] = base + self._style(component) if component else base
        return style

    def _render_row(self, row: GraphRow, index: int, width: int) -> Strip:
        board, name = self.board, row.name
        state = board.state(name)
        cursor = index == self.cursor
        state_style = self._styled(f"dag--{state.value}", cursor)
        graph_style = self._styled("dag--graph", cursor)
        detail_style = self._styled("dag--detail", cursor)
        wide = self._wide(width)
        progress = board.progress(name)
        right = self._right(name, wide, progress)
        graph = "".join(glyph(c) if i != row.node else "" for i, c in enumerate(row.cells))
        before, after = graph[: row.node], graph[row.node:].ljust(self.graph.width - row.node - 1)
        room = width - len(before) - 1 - len(after) - 1 - len(right)
        label = _fit(self._label(name), min(room, self._name_width))
        segments = [
            Segment(before, graph_style),
            Segment(SYMBOLS[state], state_style),
            Segment(after + " ", graph_style),
            Segment(label, state_style),
        ]
        cells = bar_cells(progress) if wide and progress is not None else None
        if cells is None:
            segments.append(Segment(right, detail_style))
        else:
            bar_at = len(right) - 6 - 1 - BAR
            done, running, todo = cells
            segments += [
                Segment(right[:bar_at], detail_style),
                Segment("█" * done, self._styled("dag--bar-done", cursor)),
                Segment("▓" * running, self._styled("dag--bar-running", cursor)),
                Segment("░" * todo, self._styled("dag--bar-todo", cursor)),
                Segment(right[bar_at + BAR:], detail_style),
            ]
        used = len(before) + 1 + len(after) + 1 + len(label) + len(right)
        if used <= width and label.isascii():  # the usual case: pad, no cropping to do
            segments.append(Segment(" " * (width - used), self._styled("", cursor)))
            return Strip(segments, width)
        return Strip(segments).crop_extend(0, width, self._styled("", cursor))


def _fit(text: str, room: int) -> str:
    """The name, cut with an ellipsis if there is not room for it, padded to fill the room."""
    if room <= 0:
        return ""
    if len(text) > room:
        return text[: max(room - 1, 0)] + "…"
    return text.ljust(room)
