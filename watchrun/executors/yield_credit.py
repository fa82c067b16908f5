"""How far a generator's worker may run ahead of the executor reading its yields.

The plan holds a generator once its scope has a window of units waiting (plan.py,
`throttled`), but it can only count the yields it has read. A generator that yields faster
than the driver reads would otherwise fill the socket with hundreds of values (or, for big
ones, files) before the hold comes. So a local generator job carries a credit: it may send
that many YIELDED frames, then waits (worker_channel.py) until the executor grants more for
those it has handed to the driver. The plan's hold is kept the same way: the grants are
withheld while it lasts, so a held generator waits at its next `yield` (no SIGSTOP, which
stays the user's pause). Ahead of its consumers it is then at most the window plus the credit.
"""

from __future__ import annotations

import asyncio

from watchrun.executors import protocol as proto
from watchrun.executors.base import Mode
from watchrun.executors.job_wire import job_label
from watchrun.executors.protocol import Msg
from watchrun.executors.worker_handle import WorkerHandle

# YIELDED frames a generator may have unread: few enough that the plan's window (at least 8)
# stays the bound that counts, enough that a fast generator seldom waits for the round trip
YIELD_CREDIT = 8

_STREAMING = (Mode.GENERATE, Mode.INNER_GENERATE)


def credit_for(mode: Mode) -> int | None:
    """The credit a job of this mode starts with (None: it yields nothing)."""
    return YIELD_CREDIT if mode in _STREAMING else None


class Grants:
    """Credits owed to generators for the yields read: one CREDIT frame per generator at the
    end of the loop's turn, not one per yield; none while the plan holds it."""

    def __init__(self) -> None:
        self._owed: dict[str, tuple[WorkerHandle, int]] = {}  # by job label
        self._held: set[str] = set()
        self._scheduled = False

    def read_one(self, worker: WorkerHandle, label: str) -> None:
        """A YIELDED frame of the job `label` on `worker` was handed on."""
        _, count = self._owed.get(label, (worker, 0))
        self._owed[label] = (worker, count + 1)
        if label not in self._held:
            self._send_soon()

    def hold(self, label: str, held: bool) -> None:
        """The plan holds the generator (its grants wait) or lets it go (they are sent)."""
        if held:
            self._held.add(label)
        else:
            self._held.discard(label)
            if label in self._owed:
                self._send_soon()

    def ended(self, label: str) -> None:
        self._owed.pop(label, None)
        self._held.discard(label)

    def _send_soon(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._send)

    def _send(self) -> None:
        self._scheduled = False
        for label in [label for label in self._owed if label not in self._held]:
            worker, count = self._owed.pop(label)
            unit = worker.unit  # the job may have ended since: then it is owed nothing
            if unit is not None and not unit.finished and job_label(unit.job.key) == label:
                worker.send(proto.encode(Msg.CREDIT, label, count))
