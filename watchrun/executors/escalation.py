"""The cancel escalation, written once: SIGINT, wait `grace`, SIGTERM, wait `grace`, SIGKILL.

A cancelled unit first gets SIGINT, so that Python code sees KeyboardInterrupt and may clean up.
If its process group is still alive `grace` seconds later it gets SIGTERM (a subprocess that
ignores SIGINT usually honours that), and after another `grace` SIGKILL, which nothing can
ignore. The sequence stops as soon as the process ends.

`cancel_steps` is the sequence itself. Two drivers walk it:

- `escalate`, a coroutine for the asyncio executor; it reads like the steps it takes;
- `Escalation`, for a synchronous loop that polls (the Ray node relay): it says which signal is
  due at a given time and when the next one will be.

Sending the signal (to which group, what to log, resuming a paused process first) is the
caller's: the `send` callback here.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Iterator

CANCEL_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)


def cancel_steps(grace: float) -> Iterator[tuple[signal.Signals, float | None]]:
    """The escalation: (signal to send, seconds to wait for the process to end before the next
    step). The last step's wait is None: after SIGKILL there is nothing left to escalate to."""
    yield signal.SIGINT, grace
    yield signal.SIGTERM, grace
    yield signal.SIGKILL, None


async def escalate(
    send: Callable[[signal.Signals], None],
    wait_for_end: Callable[[], Awaitable[object]],
    grace: float,
) -> signal.Signals:
    """Send the escalation's signals until the process ends; return the last signal sent.

    `wait_for_end()` gives an awaitable that completes when the process has ended; it is
    awaited once, across the steps, and cancelled if still pending when this returns (so give a
    coroutine or a future of your own making, not one someone else waits on). After SIGKILL
    this returns at once: reaping the process is the caller's business.
    """
    ending = asyncio.ensure_future(wait_for_end())
    try:
        for sig, patience in cancel_steps(grace):
            send(sig)
            if patience is None:
                return sig
            ended, _ = await asyncio.wait({ending}, timeout=patience)
            if ended:
                return sig
        raise AssertionError("cancel_steps ends with a step that waits for nothing")
    finally:
        ending.cancel()


class Escalation:
    """The escalation for a synchronous polling loop, on the caller's clock.

    Made when the cancel is asked for; the first call of `next_signal` gives SIGINT. Each loop
    turn calls `next_signal(now)` and sends what it returns, and waits at most
    `seconds_left(now)` for the process before the next turn.
    """

    __slots__ = ("_steps", "deadline", "last")

    def __init__(self, grace: float, now: float) -> None:
        self._steps = cancel_steps(grace)
        # when the next signal is due; None once the last one is sent
        self.deadline: float | None = now
        self.last: signal.Signals | None = None  # the last signal sent

    def next_signal(self, now: float) -> signal.Signals | None:
        """The signal to send now, or None if the next one is not due yet (or all were sent)."""
        if self.deadline is None or now < self.deadline:
            return None
        sig, patience = next(self._steps)
        self.last = sig
        self.deadline = None if patience is None else now + patience
        return sig

    def seconds_left(self, now: float) -> float | None:
        """Seconds until the next signal is due (0 if it is); None once all were sent."""
        if self.deadline is None:
            return None
        return max(self.deadline - now, 0.0)
