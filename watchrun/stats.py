"""`WATCHRUN_STATS=1`: where a command's time went, printed to stderr at its end (as ninja's
`-d stats` does), so that a slow build is measured instead of guessed at.

    with span("project load"):
        ...
    report()  # once, at the end of the command; nothing unless WATCHRUN_STATS is set

A span is a named phase: its count and its total wall time are kept, in the order the phases
first ran. Nested spans each count their own time. Stdlib only, and imported by the entry
point before anything else: it is on the null-build path, which CONTRIBUTING.md budgets.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False  # the typing module is not on the null-build path (see CONTRIBUTING.md)
if TYPE_CHECKING:
    from types import TracebackType
    from typing import TextIO

ENABLED = os.environ.get("WATCHRUN_STATS", "") not in ("", "0")
_STARTED = time.perf_counter()  # when the entry point imported this module
_totals: dict[str, list[float]] = {}  # phase -> [count, seconds]


class _Span:
    __slots__ = ("_name", "_start")

    def __init__(self, name: str) -> None:
        self._name = name
        self._start = 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        record(self._name, time.perf_counter() - self._start)


class _Off:
    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        return None


_OFF = _Off()


def span(name: str) -> _Span | _Off:
    """A context manager timing the phase `name` (does nothing when stats are off)."""
    return _Span(name) if ENABLED else _OFF


def record(name: str, seconds: float) -> None:
    entry = _totals.get(name)
    if entry is None:
        _totals[name] = [1, seconds]
    else:
        entry[0] += 1
        entry[1] += seconds


def report(out: TextIO | None = None) -> None:
    """Print the phases and the time since start-up, once; nothing when stats are off."""
    if not ENABLED:
        return
    stream = sys.stderr if out is None else out
    sys.stdout.flush()  # the command's own output first, on a terminal showing both
    total = time.perf_counter() - _STARTED
    lines = ["watchrun stats (WATCHRUN_STATS=1)", f"  {'phase':<28}{'count':>6}{'ms':>10}"]
    for name, (count, seconds) in _totals.items():
        lines.append(f"  {name:<28}{int(count):>6}{seconds * 1000:>10.1f}")
    lines.append(f"  {'total since start-up':<28}{'':>6}{total * 1000:>10.1f}")
    stream.write("\n".join(lines) + "\n")
    stream.flush()
    _totals.clear()
