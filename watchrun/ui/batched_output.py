"""Flushing an output stream once per turn of the event loop instead of once per line.

A build of thousands of units prints thousands of lines, and a write system call for each
outweighs the lines themselves. Lines written while the loop handles one batch of events are
flushed together right after it, so a reader still sees each event within the turn that
produced it.
"""

from __future__ import annotations

import asyncio
from typing import TextIO

from watchrun.ui.reader_gone import reader_left


class LoopFlush:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._scheduled = False

    def written(self, now: bool = False) -> None:
        """After a write: flush soon (or `now`, e.g. for the last line of a build)."""
        if now:
            self.stream.flush()
            return
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): nothing would flush later
            self.stream.flush()
            return
        self._scheduled = True
        loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        try:
            self.stream.flush()
        except BrokenPipeError:  # on its own turn of the loop: no printer call to raise into
            reader_left(self.stream)
