"""The pane beside the DAG: the selected task's facts, why it is dirty, its error and live log."""

from __future__ import annotations

import codecs
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.widgets import Log, Static

from watchrun.engine.control import UnitState
from watchrun.ui.tui.dag import (
    SYMBOLS,
    TONES,
    bar_cells,
    format_count,
    format_duration,
    format_rate,
)
from watchrun.ui.tui.records import LastRun
from watchrun.ui.tui.state import Board, Progress, same_file

FIRST_READ = 64 * 1024  # bytes of an existing log shown when it is first opened
MOST_PER_READ = 256 * 1024  # a log growing faster than this per poll is skipped ahead
LOG_LINES = 2000
DETAIL_BAR = 16  # cells of the progress bar in the detail pane
# The node a Ray unit runs on, first line of its log (ray_node.py), and the one it ran on, added
# at its end by the driver: its id's first 8 digits, then its IP when known
NODE_LINE = re.compile(r"^\[watchrun\] (?:runs|ran) on Ray node ([0-9a-f]{8}(?: \([^)\n]*\))?)$",
                       re.MULTILINE)
HEAD_BYTES = 256  # of a log read for its first line: the node's is short


class LogTail:
    """Follows one log file: each `read` returns what was appended since the last one.

    A file that shrank was rewritten (a new unit started): reading starts over."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.offset: int | None = None  # None: not read yet
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def read(self) -> tuple[bool, str]:
        """(start over?, new text)."""
        if self.path is None:
            return False, ""
        try:
            size = os.stat(self.path).st_size
        except OSError:
            return False, ""
        restart = self.offset is None or size < self.offset
        if self.offset is None:
            self.offset = max(0, size - FIRST_READ)
        elif size < self.offset:
            self.offset = 0
        if size - self.offset > MOST_PER_READ:
            self.offset, restart = size - MOST_PER_READ, True
        if size == self.offset:
            return restart, ""
        if restart:
            self._decoder.reset()
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(size - self.offset)
        except OSError:
            return restart, ""
        self.offset += len(data)
        return restart, self._decoder.decode(data)


class LogNode:
    """The Ray node a followed log names: its first line while the unit runs (that line may
    be older than what the pane reads of a long log), the driver's last line once it ended."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.label: str | None = None  # "1a2b3c4d (10.0.0.5)"
        self._head_read = path is None  # its first line was read whole (or there is none)

    def update(self, restart: bool, text: str) -> bool:
        """Take what the log's tail just read; True if the node it names changed."""
        before = self.label
        if restart and self.path is not None:  # rewritten: another attempt, maybe elsewhere
            self._head_read = False
        if not self._head_read:
            self._read_head()
        found = NODE_LINE.findall(text)
        if found:
            self.label = found[-1]
        return self.label != before

    def _read_head(self) -> None:
        assert self.path is not None
        try:
            with open(self.path, "rb") as f:
                head = f.read(HEAD_BYTES)
        except OSError:
            return  # not there yet
        first, newline, _ = head.decode(errors="replace").partition("\n")
        if not newline and len(head) < HEAD_BYTES:
            return  # being written, or empty so far: look again when it grows
        self._head_read = True
        found = NODE_LINE.match(first)
        if found:
            self.label = found[1]


def _section(label: str, *parts: str | tuple[str, str] | Content) -> Content:
    return Content.assemble((f"{label:<11}", "bold"), *parts, "\n")


def _names(names: Iterable[str]) -> str:
    return ", ".join(names) or "—"


def describe(board: Board, name: str, reasons: list[str], stored: LastRun | None = None,
             log_node: str | None = None) -> Content:
    """Everything the pane says about a task, above its log: first what matters while it runs
    (state, progress, why, time), so a short pane still shows it; then where it comes from.
    `log_node`: the Ray node the log shown names (LogNode)."""
    row = board.rows[name]
    view, state = row.view, board.state(name)
    lines = [
        Content.assemble((f"{SYMBOLS[state]} {name}", f"bold $text-{TONES[state]}"),
                         f"  {state.value}", ("  " + view.kind, "italic"), "\n"),
    ]
    progress = board.progress(name)
    if progress is not None:
        lines.append(_section("progress", *progress_parts(progress)))
    lines.append(_why(state, row.reasons, reasons))
    lines.append(_time(board, name, state, stored))
    node = _node(row.node, log_node, state)
    if node is not None:
        lines.append(_section("node", node))
    for error in board.errors:
        if row.broken and error.file and same_file(view.file, error.file):
            lines.append(Content.assemble((f"error      line {error.line}: ", "bold $text-error"),
                                          (error.message + "\n", "$text-error")))
    if row.error and state is UnitState.FAILED:
        lines.append(_section("error", (f"{failed_unit(name, row.error_iter)}: "
                                        f"{last_line(row.error)} (traceback in the log)",
                                        "$text-error")))
    lines.append(_section("file", view.file))
    if len(view.chain) > 1:
        lines.append(_section("extends", " → ".join(view.chain[1:])))
    if view.scope:
        lines.append(_section("scope", " › ".join(view.scope)))
    if view.priority:
        lines.append(_section("priority", str(view.priority)))
    if view.params:
        width = max(len(f"{p.name} = {p.value}") for p in view.params)
        lines.append(_section("params"))
        for p in view.params:
            lines.append(Content.assemble(f"  {p.name} = {p.value}".ljust(width + 4),
                                          (p.origin, "dim"), "\n"))
    lines.append(_section("upstream", _names(view.upstreams)))
    lines.append(_section("downstream", _names(view.downstreams)))
    return Content("").join(lines).rstrip("\n")  # no blank line under it: rows are dear


def _node(ended_on: str | None, log_node: str | None, state: UnitState) -> str | None:
    """Ray: where the task's unit runs, as its log says (Ray tells the driver only when a
    unit ends), else where its latest unit ran (the id's first 8 digits; with the IP when
    the log shown says the same node)."""
    if log_node is not None and (state in (UnitState.RUNNING, UnitState.PAUSED)
                                 or ended_on is None or log_node.startswith(ended_on[:8])):
        return log_node
    return ended_on[:8] if ended_on is not None else None


def progress_parts(progress: Progress) -> list[str | tuple[str, str]]:
    """'40/57 ████▓░░░ · 2 running · 12/s · ETA 5.0s' with the bar in colour."""
    parts: list[str | tuple[str, str]] = [format_count(progress)]
    cells = bar_cells(progress, DETAIL_BAR)
    if cells is not None:
        done, running, todo = cells
        parts += [" ", ("█" * done, "$success"), ("▓" * running, "$accent"),
                  ("░" * todo, "$text-muted")]
    else:
        parts.append(" so far")
    if progress.running:
        parts.append(f" · {progress.running} running")
    if progress.rate is not None:
        parts.append(f" · {format_rate(progress.rate)}")
    if progress.eta is not None:
        parts.append(f" · ETA {format_duration(progress.eta)}")
    return parts


def _time(board: Board, name: str, state: UnitState, stored: LastRun | None) -> Content:
    """Running for how long, or when the last run was and how long it took (from this
    session's events, else from the store: an earlier session's run)."""
    if state in (UnitState.RUNNING, UnitState.PAUSED):
        note = " (paused: the clock is stopped)" if state is UnitState.PAUSED else ""
        return _section("running", format_duration(board.elapsed(name)) or "—", note)
    row = board.rows[name]
    if row.duration is not None and row.ended is not None:
        return _section("last run", format_duration(row.duration),
                        f" · {when(row.ended, board.clock())}")
    if stored is not None:
        units = f" · {stored.units} units" if stored.units > 1 else ""
        outcome = "" if stored.outcome == "ok" else f" · {stored.outcome}"
        return _section("last run", format_duration(stored.duration),
                        f" · {when(stored.finished, board.clock())}{units}{outcome}")
    return _section("last run", "—")


def when(at: float, now: float) -> str:
    """'14:02:11 (5 min ago)'; with the date when it is not today."""
    moment = time.localtime(at)
    today = time.localtime(now)[:3] == moment[:3]
    clock = time.strftime("%H:%M:%S" if today else "%Y-%m-%d %H:%M", moment)
    return f"{clock} ({ago(now - at)})"


def ago(seconds: float) -> str:
    if seconds < 60:
        return "just now" if seconds < 5 else f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min ago"
    if seconds < 86400:
        return f"{seconds // 3600:.0f} h ago"
    return f"{seconds // 86400:.0f} days ago"


def failed_unit(name: str, iter: tuple[int, ...]) -> str:
    return name + "".join(f"[{i}]" for i in iter)


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "failed"


def _why(state: UnitState, started_for: list[str], reasons: list[str]) -> Content:
    if state in (UnitState.RUNNING, UnitState.PAUSED) and started_for:
        shown, label = started_for, "runs for"
    else:
        shown, label = reasons, "dirty"
    if not shown:
        return _section("dirty", "no (clean)" if state is UnitState.CLEAN else "—")
    parts = [_section(label, shown[0])]
    parts.extend(Content.assemble(" " * 11, reason, "\n") for reason in shown[1:])
    return Content("").join(parts)


class DetailPane(Vertical):
    """The selected task's description (scrolls) and its live log."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.info = Static(id="info", markup=False)
        self.log_title = Static("log", id="log-title", markup=False)
        self.log_view = Log(id="log", max_lines=LOG_LINES)
        self._shown: Content | None = None
        self._shape: tuple[int, int] | None = None  # lines and width, if none wraps
        self._node = LogNode(None)  # the node the followed log names
        self._last: tuple[Board, str | None, list[str], LastRun | None] | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="info-scroll"):
            yield self.info
        yield self.log_title
        yield self.log_view

    def show(self, board: Board, name: str | None, reasons: list[str],
             stored: LastRun | None = None) -> None:
        self._last = (board, name, reasons, stored)
        if name is None or name not in board.rows:
            content = Content("No task selected.")
        else:
            content = describe(board, name, reasons, stored, self._node.label)
        if content == self._shown:
            return
        # A new layout only if the text may take another height: Textual's layout pass
        # walks the whole screen, while a text of the same shape redraws in place.
        width = self.info.size.width
        lines = content.plain.split("\n")
        shape = (len(lines), width) if max(map(len, lines)) < width else None
        self.info.update(content, layout=shape is None or shape != self._shape)
        self._shown, self._shape = content, shape

    def follow(self, tail: LogTail, title: str, traceback: str | None = None) -> None:
        """Show another log: a failed unit's traceback first, then what it printed."""
        self.log_view.clear()
        self.log_title.update(title, layout=False)
        if traceback:
            self.log_view.write(traceback.rstrip() + "\n── its output ──\n")
        had = self._node.label
        self._node = LogNode(tail.path)
        if had is not None:  # that node was another log's
            self._show_again()

    def retitle(self, title: str) -> None:
        self.log_title.update(title, layout=False)

    def append(self, restart: bool, text: str, traceback: str | None = None) -> None:
        if self._node.update(restart, text):
            self._show_again()
        if restart and self.log_view.line_count:
            self.log_view.clear()
            if traceback:
                self.log_view.write(traceback.rstrip() + "\n── its output ──\n")
        if text:
            self.log_view.write(text)
            # Log scrolls at once, with the size it had: text written as the pane is laid
            # out (a new selection) would stay at its top. Scroll again once it has a size.
            self.log_view.call_after_refresh(self.log_view.scroll_end, animate=False,
                                             x_axis=False)

    def _show_again(self) -> None:
        """Describe the task again: the node its log names changed."""
        if self._last is not None:
            self.show(*self._last)
