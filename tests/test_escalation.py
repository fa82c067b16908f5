"""The cancel escalation (executors/escalation.py) on virtual time, and once on a real process.

The asyncio tests run on an event loop whose clock jumps ahead whenever nothing is ready (trio's
autojump_clock idea): a 10-second escalation is asserted to the exact second without any real
sleep. The processes there are scripted fakes that react to signals; the last test sends the real
signals to a real process group.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from watchrun.executors.escalation import CANCEL_SIGNALS, Escalation, cancel_steps, escalate

INT, TERM, KILL = signal.SIGINT, signal.SIGTERM, signal.SIGKILL


class _AutojumpSelector(selectors.DefaultSelector):
    """Polls the real descriptors without blocking; when none is ready, jumps the virtual clock to
    the next timer instead of sleeping until it."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout is None:
            return ready if ready else super().select(timeout)
        self.now += max(timeout, 0.0)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._selector_clock = _AutojumpSelector()
        super().__init__(self._selector_clock)

    def time(self) -> float:
        return self._selector_clock.now


def run_virtual(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


class FakeProcess:
    """A process that ends `delay` seconds after it receives one of the signals it honours."""

    def __init__(self, honours: set[signal.Signals], delay: float = 0.0) -> None:
        self.honours = honours
        self.delay = delay
        self.received: list[tuple[float, signal.Signals]] = []
        self.ended_at: float | None = None
        self._ended = asyncio.get_running_loop().create_future()

    def send(self, sig: signal.Signals) -> None:
        loop = asyncio.get_running_loop()
        self.received.append((loop.time(), sig))
        if sig in self.honours:
            loop.call_later(self.delay, self._end)

    def _end(self) -> None:
        if not self._ended.done():
            self.ended_at = asyncio.get_running_loop().time()
            self._ended.set_result(None)

    async def wait(self) -> None:
        await asyncio.shield(self._ended)


def test_the_steps_are_sigint_sigterm_sigkill_with_grace_between() -> None:
    assert list(cancel_steps(5.0)) == [(INT, 5.0), (TERM, 5.0), (KILL, None)]
    assert tuple(sig for sig, _ in cancel_steps(0.0)) == CANCEL_SIGNALS


def test_a_process_that_ends_after_sigint_gets_nothing_more() -> None:
    async def main() -> tuple[FakeProcess, signal.Signals, float]:
        proc = FakeProcess({INT, TERM, KILL}, delay=1.5)
        last = await escalate(proc.send, proc.wait, grace=5.0)
        return proc, last, asyncio.get_running_loop().time()

    proc, last, finished = run_virtual(main)
    assert proc.received == [(0.0, INT)]
    assert last is INT
    assert proc.ended_at == 1.5
    assert finished == 1.5  # returned when the process ended, not at the end of the grace


def test_the_full_sequence_waits_grace_between_signals() -> None:
    async def main() -> tuple[FakeProcess, signal.Signals, float]:
        proc = FakeProcess({KILL})
        last = await escalate(proc.send, proc.wait, grace=5.0)
        return proc, last, asyncio.get_running_loop().time()

    proc, last, finished = run_virtual(main)
    assert proc.received == [(0.0, INT), (5.0, TERM), (10.0, KILL)]
    assert last is KILL
    assert finished == 10.0  # SIGKILL is the last word: no wait after it


def test_a_process_that_ignores_sigint_ends_at_sigterm() -> None:
    async def main() -> FakeProcess:
        proc = FakeProcess({TERM, KILL}, delay=0.25)
        assert await escalate(proc.send, proc.wait, grace=2.0) is TERM
        return proc

    proc = run_virtual(main)
    assert proc.received == [(0.0, INT), (2.0, TERM)]
    assert proc.ended_at == 2.25


def test_grace_zero_sends_all_three_at_once_in_order() -> None:
    async def main() -> FakeProcess:
        proc = FakeProcess({KILL})
        assert await escalate(proc.send, proc.wait, grace=0.0) is KILL
        return proc

    proc = run_virtual(main)
    assert proc.received == [(0.0, INT), (0.0, TERM), (0.0, KILL)]


def test_a_cancelled_escalation_stops_sending() -> None:
    """The executor cancels the escalation task when the unit ended by another way."""

    async def main() -> FakeProcess:
        proc = FakeProcess(set())
        task = asyncio.ensure_future(escalate(proc.send, proc.wait, grace=5.0))
        await asyncio.sleep(7.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(20.0)
        return proc

    proc = run_virtual(main)
    assert proc.received == [(0.0, INT), (5.0, TERM)]


# -- the synchronous driver (the Ray node relay polls) -------------------------------------------


def test_polling_driver_full_sequence() -> None:
    steps = Escalation(grace=5.0, now=100.0)
    assert steps.seconds_left(100.0) == 0.0
    assert steps.next_signal(100.0) is INT
    assert steps.next_signal(100.0) is None  # not due again at once
    assert steps.seconds_left(101.0) == 4.0
    assert steps.next_signal(104.9) is None
    assert steps.next_signal(105.0) is TERM
    assert steps.last is TERM
    assert steps.next_signal(109.0) is None
    assert steps.next_signal(111.0) is KILL
    assert steps.seconds_left(111.0) is None
    assert steps.next_signal(1000.0) is None  # nothing after SIGKILL
    assert steps.last is KILL


def test_polling_driver_grace_zero_sends_each_signal_on_consecutive_turns() -> None:
    steps = Escalation(grace=0.0, now=0.0)
    assert [steps.next_signal(0.0) for _ in range(4)] == [INT, TERM, KILL, None]


def test_polling_driver_late_turn_counts_grace_from_the_send() -> None:
    """A loop turn that comes late sends the due signal then, and the next grace starts then."""
    steps = Escalation(grace=1.0, now=0.0)
    assert steps.next_signal(0.0) is INT
    assert steps.next_signal(3.0) is TERM  # 2 s late: only one step, never two at once
    assert steps.deadline == 4.0


# -- one real process group ----------------------------------------------------------------------

_STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(child.pid, flush=True)
time.sleep(60)
"""


def test_real_group_that_ignores_sigint_and_sigterm_is_killed_whole() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _STUBBORN], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())

        async def main() -> signal.Signals:
            async def ended() -> None:
                while proc.poll() is None:
                    await asyncio.sleep(0.01)

            return await escalate(lambda sig: os.killpg(proc.pid, sig), ended, grace=0.2)

        started = time.monotonic()
        assert asyncio.run(main()) is KILL
        assert time.monotonic() - started >= 0.4
        assert proc.wait(timeout=10) == -KILL
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not _alive(child)  # the group was signalled, not only its leader
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, KILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
