"""Interrupts in a worker. The parent cancels with SIGINT to the group. While the task's code
runs, SIGINT must raise KeyboardInterrupt in it. While the worker writes a frame, it must not: a
frame cut in half would corrupt the channel. So SIGINT raises only while `allowed`; otherwise it
is kept pending and raised when task code is about to run again."""

from __future__ import annotations

TYPE_CHECKING = False  # the worker starts without `typing` (see worker.py)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any


class Interrupts:
    allowed = False
    pending = False


def on_sigint(signum: int, frame: object) -> None:
    """The worker's SIGINT handler."""
    if Interrupts.allowed:
        raise KeyboardInterrupt
    Interrupts.pending = True


def interruptible(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call fn where a cancel may interrupt it (task code, pickling, waiting for input)."""
    Interrupts.allowed = True
    try:
        if Interrupts.pending:
            Interrupts.pending = False
            raise KeyboardInterrupt
        return fn(*args, **kwargs)
    finally:
        Interrupts.allowed = False


def uninterrupted(fn: Callable[..., Any], *args: Any) -> Any:
    """Call fn where a cancel must wait (writing a frame): it stays pending meanwhile."""
    allowed = Interrupts.allowed
    Interrupts.allowed = False
    try:
        return fn(*args)
    finally:
        Interrupts.allowed = allowed


def next_value(gen: Iterator[Any]) -> Any:
    """The generator's next value; a pending cancel is thrown into it at its `yield`."""
    Interrupts.allowed = True
    try:
        if Interrupts.pending and hasattr(gen, "throw"):
            Interrupts.pending = False
            return gen.throw(KeyboardInterrupt())
        if Interrupts.pending:
            Interrupts.pending = False
            raise KeyboardInterrupt
        return next(gen)
    finally:
        Interrupts.allowed = False
