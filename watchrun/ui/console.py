"""`build` output for people: plain lines (logs, pipes) or a live progress display on a terminal.

After the build, every failure is printed whole: its traceback (or cause of death) and the tail of
the unit's log.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import NamedTuple, TextIO

from watchrun.engine import events as ev
from watchrun.ui.batched_output import LoopFlush
from watchrun.ui.summary import summary_line

LOG_TAIL_LINES = 20


def _unit(task: str, it: tuple[int, ...]) -> str:
    return task + "".join(f"[{i}]" for i in it)


class Failure(NamedTuple):
    unit: str
    error: str
    log: Path | None


class PlainConsole:
    """One readable line per event that matters."""

    def __init__(self, stream: TextIO | None = None, verbose: bool = False,
                 dry_run: bool = False, log_dir: Path | None = None) -> None:
        self.stream = sys.stdout if stream is None else stream
        self.verbose = verbose
        self.dry_run = dry_run
        self.log_dir = log_dir
        self.failures: list[Failure] = []
        self.iterations_done = 0
        # --dry-run: task -> (its iteration units that would run, their reasons), said in
        # one line per task at the end (nothing finishes in a dry run to count them by)
        self.would_iterate: dict[str, tuple[int, list[str]]] = {}
        self._flush = LoopFlush(self.stream)

    def __call__(self, event: ev.Event) -> None:
        line = self.format(event)
        if line:
            self.stream.write(line + "\n")
            self._flush.written(now=isinstance(event, ev.URGENT))

    def _quiet_iteration(self, event: ev.Event) -> bool:
        """A scope of 10,000 iterations would print 20,000 lines: iteration units are counted
        in the summary and listed with -v; their failures always print."""
        if self.verbose or not isinstance(event, (ev.UnitStarted, ev.UnitFinished)):
            return False
        if event.iter and isinstance(event, ev.UnitFinished):
            self.iterations_done += 1
        elif event.iter and self.dry_run and isinstance(event, ev.UnitStarted):
            count, reasons = self.would_iterate.get(event.task, (0, []))
            reasons += [r for r in event.reasons if r not in reasons]
            self.would_iterate[event.task] = (count + 1, reasons)
        return bool(event.iter)

    def format(self, event: ev.Event) -> str | None:
        if self._quiet_iteration(event):
            return None
        if isinstance(event, ev.UnitFailed):
            return self._failed(event)
        if isinstance(event, ev.BuildFinished):
            return self._summary(event)
        if isinstance(event, ev.UnitStarted):
            verb = "would run" if self.dry_run else "run"
            return f"{verb:>9} {_unit(event.task, event.iter)}  ({'; '.join(event.reasons)})"
        if self.verbose and isinstance(event, (ev.UnitSkipped, ev.Iteration)):
            word = "clean" if isinstance(event, ev.UnitSkipped) else "iter"
            return f"{word:>9} {_unit(event.task, event.iter)}"
        return _plain_line(event)

    def _failed(self, event: ev.UnitFailed) -> str:
        self.failures.append(Failure(_unit(event.task, event.iter), event.error,
                                     self._log(event.task, event.iter)))
        first = event.error.strip().splitlines()[-1] if event.error.strip() else "failed"
        return f"{'FAILED':>9} {_unit(event.task, event.iter)}  {printable(first)}"

    def _log(self, task: str, it: tuple[int, ...]) -> Path | None:
        if self.log_dir is None:
            return None
        return self.log_dir / f"{task}{''.join(f'.{i}' for i in it)}.log"

    def _summary(self, event: ev.BuildFinished) -> str:
        lines = []
        for failure in self.failures:
            lines.append(f"\n--- {failure.unit} failed ---")
            lines.append(printable(failure.error.rstrip()))
            tail = _tail(failure.log)
            if tail:
                lines.append(f"--- last lines of its log ({failure.log}) ---")
                lines.append(tail)
        self.failures.clear()
        for task, (count, reasons) in self.would_iterate.items():
            units = f"{count} iteration unit{'s' if count != 1 else ''}"
            lines.append(f"{'would run':>9} {task}  ({units}: {'; '.join(reasons)})")
            self.iterations_done += count
        self.would_iterate.clear()
        note = ""
        if self.iterations_done and not self.verbose:
            note = f" ({self.iterations_done} of them iteration units; -v lists them)"
            self.iterations_done = 0
        lines.append(summary_line(event.ok, "would run" if self.dry_run else "ran", event.ran,
                                  event.skipped, event.failed, event.cancelled, note))
        return "\n".join(lines)


def _plain_line(event: ev.Event) -> str | None:
    """The events whose line depends on nothing but the event."""
    if isinstance(event, ev.UnitFinished):
        return f"{'done':>9} {_unit(event.task, event.iter)}  {event.duration:.2f}s"
    if isinstance(event, ev.UnitCancelled):
        return f"{'cancelled':>9} {_unit(event.task, event.iter)}  ({event.signal})"
    if isinstance(event, ev.UnitRetry):
        return (f"{'retry':>9} {_unit(event.task, event.iter)}  attempt {event.attempt}: "
                f"{printable(event.cause)}")
    if isinstance(event, ev.Gather):
        return f"{'gather':>9} {event.task}"
    if isinstance(event, ev.Change):
        return f"{'change':>9} {', '.join(event.paths)} -> {', '.join(event.dirty) or '-'}"
    if isinstance(event, ev.Error):
        where = f"{event.file}:{event.line}: " if event.file else ""
        return f"{where}error: {event.message}"
    if isinstance(event, ev.Idle):
        return f"{'idle':>9} watching for changes (Ctrl-C to stop)"
    return None


def _tail(path: Path | None) -> str:
    if path is None or not path.exists():
        return ""
    lines = path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    return printable("\n".join(lines))


# C0 and C1 control characters but newline and tab: a task's output may hold terminal escape
# sequences (colours, cursor moves, a title change, a hyperlink) that must not reach the
# user's terminal from a failure report
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))
             if c not in (0x09, 0x0A)}


def printable(text: str) -> str:
    """Text whose control characters are shown as escapes (`\\x1b[31m`), not obeyed."""
    return text.translate(_CONTROLS)


class LiveConsole:
    """On a terminal: a rich live line with counts and what runs, above the plain log lines."""

    def __init__(self, total: int, log_dir: Path | None, verbose: bool = False) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(highlight=False)
        self.plain = PlainConsole(stream=sys.stdout, verbose=verbose, log_dir=log_dir)
        self.total = total
        self.done = 0
        self.running: dict[str, float] = {}
        self.live = Live(self._render(), console=self.console, refresh_per_second=10,
                         transient=True)
        self.live.start()

    def _render(self) -> str:
        now = time.monotonic()
        runs = ", ".join(f"{u} {now - t:.0f}s" for u, t in list(self.running.items())[:4])
        more = f" +{len(self.running) - 4}" if len(self.running) > 4 else ""
        return f"[bold]{self.done}/{self.total}[/] units  running: {runs or '-'}{more}"

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.UnitStarted):
            self.running[_unit(event.task, event.iter)] = time.monotonic()
        elif isinstance(event, (ev.UnitFinished, ev.UnitFailed, ev.UnitCancelled)):
            self.running.pop(_unit(event.task, event.iter), None)
            self.done += 1
        elif isinstance(event, ev.UnitSkipped):
            self.done += 1
        if isinstance(event, ev.BuildFinished):
            self.live.stop()
        line = self.plain.format(event)
        if line:
            self.live.console.print(line, markup=False, highlight=False)
        self.live.update(self._render())
