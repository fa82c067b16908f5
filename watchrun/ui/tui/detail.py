"""The pane beside the DAG: the selected task's facts, why it is dirty, its error and live log."""

from __future__ import annotations

import codecs
import os
from collections.abc import Iterable
from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.widgets import Log, Static

from watchrun.engine.control import UnitState
from watchrun.ui.tui.dag import SYMBOLS, TONES, format_duration, format_progress
from watchrun.ui.tui.state import Board, same_file

FIRST_READ = 64 * 1024  # bytes of an existing log shown when it is first opened
MOST_PER_READ = 256 * 1024  # a log growing faster than this per poll is skipped ahead
LOG_LINES = 2000


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


def _section(label: str, *parts: str | tuple[str, str] | Content) -> Content:
    return Content.assemble((f"{label:<11}", "bold"), *parts, "\n")


def _names(names: Iterable[str]) -> str:
    return ", ".join(names) or "—"


def describe(board: Board, name: str, reasons: list[str]) -> Content:
    """Everything the pane says about a task, above its log."""
    row = board.rows[name]
    view, state = row.view, board.state(name)
    lines = [
        Content.assemble((f"{SYMBOLS[state]} {name}", f"bold $text-{TONES[state]}"),
                         f"  {state.value}", ("  " + view.kind, "italic"), "\n"),
        _section("file", view.file),
    ]
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
    lines.append(_why(state, row.reasons, reasons))
    lines.append(_section("upstream", _names(view.upstreams)))
    lines.append(_section("downstream", _names(view.downstreams)))
    last = format_duration(board.elapsed(name)) or "—"
    progress = format_progress(board.progress(name), wide=True)
    busy = state in (UnitState.RUNNING, UnitState.PAUSED)
    lines.append(_section("running" if busy else "last run", last,
                          f"   {progress}" if progress else ""))
    for error in board.errors:
        if row.broken and error.file and same_file(view.file, error.file):
            lines.append(Content.assemble((f"error      line {error.line}: ", "bold $text-error"),
                                          (error.message + "\n", "$text-error")))
    if row.error and state is UnitState.FAILED:
        where = "".join(f"[{i}]" for i in row.error_iter)
        lines.append(Content.assemble((f"error{where}\n", "bold $text-error"),
                                      (row.error.rstrip() + "\n", "$text-error")))
    return Content("").join(lines)


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

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="info-scroll"):
            yield self.info
        yield self.log_title
        yield self.log_view

    def show(self, board: Board, name: str | None, reasons: list[str]) -> None:
        if name is None or name not in board.rows:
            content = Content("No task selected.")
        else:
            content = describe(board, name, reasons)
        if content == self._shown:
            return
        # A new layout (costly, 10 ms and more) only if the text may take another height.
        width = self.info.size.width
        lines = content.plain.split("\n")
        shape = (len(lines), width) if max(map(len, lines)) < width else None
        self.info.update(content, layout=shape is None or shape != self._shape)
        self._shown, self._shape = content, shape

    def follow(self, tail: LogTail) -> None:
        self.log_view.clear()
        title = f"log  {tail.path.name}" if tail.path else "log  (none yet)"
        self.log_title.update(title, layout=False)

    def append(self, restart: bool, text: str) -> None:
        if restart:
            self.log_view.clear()
        if text:
            self.log_view.write(text)
