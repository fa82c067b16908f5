"""The units an executor has in flight, by key: the bookkeeping every executor does alike
(submit refuses a unit already running, input goes only to units that take it, close waits
until the last unit has ended)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Generic, Protocol, TypeVar

from watchrun.executors.base import Job, Mode, UnitKey


class BookedUnit(Protocol):
    @property
    def job(self) -> Job: ...


U = TypeVar("U", bound=BookedUnit)

_TAKES_INPUT = (Mode.COLLECT, Mode.INNER_GENERATE)


class UnitBook(Generic[U]):
    def __init__(self) -> None:
        self._units: dict[UnitKey, U] = {}
        self._all_ended: asyncio.Future[None] | None = None  # while close() waits

    def check_new(self, job: Job, closing: bool) -> None:
        """Raise if `job` may not be submitted: the executor is closing, or its unit runs."""
        if closing:
            raise RuntimeError("the executor is closed")
        if job.key in self._units:
            raise ValueError(f"{job.key.format()} is already running")

    def add(self, unit: U) -> None:
        self._units[unit.job.key] = unit

    def get(self, key: UnitKey) -> U | None:
        return self._units.get(key)

    def taking_input(self, key: UnitKey) -> U | None:
        """The unit `key` if it runs (None if it has ended); ValueError if it is of a mode
        that takes no input (push, end_input)."""
        unit = self._units.get(key)
        if unit is not None and unit.job.mode not in _TAKES_INPUT:
            raise ValueError(f"{key.format()} is a {unit.job.mode.value} unit: it takes no input")
        return unit

    def remove(self, unit: U) -> None:
        """The unit has ended (its last event is on its way)."""
        del self._units[unit.job.key]
        if not self._units and self._all_ended is not None and not self._all_ended.done():
            self._all_ended.set_result(None)

    def running(self) -> list[UnitKey]:
        return list(self._units)

    def units(self) -> list[U]:
        return list(self._units.values())

    def __len__(self) -> int:
        return len(self._units)

    async def wait_all_ended(self, timeout: float) -> None:
        """Wait until no unit is in flight, at most `timeout` seconds."""
        if not self._units:
            return
        self._all_ended = asyncio.get_running_loop().create_future()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._all_ended), timeout)
