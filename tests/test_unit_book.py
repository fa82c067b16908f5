"""UnitBook (executors/unit_book.py): the in-flight units every executor keeps by key."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.test_escalation import run_virtual
from watchrun.executors.base import Job, Mode, UnitKey
from watchrun.executors.unit_book import UnitBook


class _Unit:
    def __init__(self, job: Job) -> None:
        self.job = job


def _job(task: str, mode: Mode = Mode.CALL) -> Job:
    return Job(UnitKey(task), mode, Path("."), [], {}, "log")


def test_a_unit_in_flight_cannot_be_submitted_again_nor_anything_once_closing() -> None:
    book: UnitBook[_Unit] = UnitBook()
    book.add(_Unit(_job("a")))
    with pytest.raises(ValueError, match="a is already running"):
        book.check_new(_job("a"), closing=False)
    book.check_new(_job("b"), closing=False)
    with pytest.raises(RuntimeError, match="closed"):
        book.check_new(_job("b"), closing=True)


def test_input_goes_only_to_collectors_and_inner_generators() -> None:
    book: UnitBook[_Unit] = UnitBook()
    collector = _Unit(_job("c", Mode.COLLECT))
    book.add(collector)
    book.add(_Unit(_job("g", Mode.GENERATE)))
    assert book.taking_input(UnitKey("c")) is collector
    assert book.taking_input(UnitKey("gone")) is None  # ended meanwhile: input is dropped
    with pytest.raises(ValueError, match="g is a generate unit: it takes no input"):
        book.taking_input(UnitKey("g"))


def test_close_waits_for_the_last_unit_or_the_timeout() -> None:
    async def main() -> tuple[float, float, list[UnitKey]]:
        loop = asyncio.get_running_loop()
        book: UnitBook[_Unit] = UnitBook()
        first, second = _Unit(_job("a")), _Unit(_job("b"))
        book.add(first)
        book.add(second)
        loop.call_later(1.0, book.remove, first)
        loop.call_later(3.0, book.remove, second)
        await book.wait_all_ended(10.0)
        ended = loop.time()
        book.add(_Unit(_job("stuck")))
        await book.wait_all_ended(5.0)
        return ended, loop.time(), book.running()

    ended, gave_up, left = run_virtual(main)
    assert ended == 3.0
    assert gave_up == 8.0
    assert left == [UnitKey("stuck")]
