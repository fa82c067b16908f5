"""When the reader of what a command prints leaves (`watchrun build | head`).

A process that a shell pipes into `head` is ended by SIGPIPE at its next write; Python ignores
that signal and raises BrokenPipeError from the write instead. Raised inside the engine (an
event printed while a unit ends), it would leave the build stalled with a traceback. So the
printers of `build` and `dev` hand it here: what is still printed goes to /dev/null, and the
command stops as Ctrl-C would stop it (running units cancelled, finished work kept), with the
exit status a shell gives a writer killed by SIGPIPE.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any, TextIO

EXIT_READER_GONE = 141  # 128 + SIGPIPE

_stops: list[Callable[[int], object]] = []  # the running commands' ways to stop


@contextlib.contextmanager
def stop_when_reader_leaves(stop: Callable[[int], object]) -> Iterator[None]:
    """While the block runs, `stop(EXIT_READER_GONE)` is called once the reader has left."""
    _stops.append(stop)
    try:
        yield
    finally:
        _stops.remove(stop)


def reader_left(stream: TextIO) -> None:
    """A write or flush to `stream` found its reader gone."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())  # the next flush empties the buffer there
        os.close(devnull)
    for stop in list(_stops):
        _later(stop)


def printing_until_reader_leaves(printer: Callable[[Any], object], stream: TextIO
                                 ) -> Callable[[Any], None]:
    """`printer` (an event subscriber that writes to `stream`), stopping the command instead
    of raising when the stream's reader has left."""
    def call(event: Any) -> None:
        try:
            printer(event)
        except BrokenPipeError:
            reader_left(stream)
    return call


def _later(stop: Callable[[int], object]) -> None:
    """Not from inside the publish that failed: the engine is in the middle of a decision."""
    try:
        asyncio.get_running_loop().call_soon(stop, EXIT_READER_GONE)
    except RuntimeError:  # no loop: nothing is in the middle of anything
        stop(EXIT_READER_GONE)
