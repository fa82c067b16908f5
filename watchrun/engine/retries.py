"""The retry rule: which failed unit runs again, and how its attempts are told.

Synchronous and free of processes, like the plan, so the rule is proven over fakes
(tests/test_retries.py). The driver asks `after_failure` when a task unit ends FAILED, DIED or
timed out, and `launched` when it hands a unit to the executor.

The rule (the header's `retries`, SPEC section 2):
- a unit that failed (its code raised), died (its process was killed, its node lost) or ran
  past its `timeout` runs again, up to `retries` more times. A timeout counts because a hung
  call (a stalled download, an API that never answers) is the case retries exist for, and the
  user bounded its cost with `timeout` × `retries` themselves;
- a cancelled unit never does: the user, a change or fail-fast asked for it to stop; nor one
  the executor refused (it asks for more GPUs or memory than exist: it would fail again);
- nothing is retried once the build is stopping;
- a unit launched afresh (not as a retry: a change made it dirty again in `dev`) starts again
  at attempt 1.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from watchrun.executors.base import UnitKey


class Ending(enum.Enum):
    FAILED = "failed"  # run() raised
    DIED = "died"  # the process (or its node) died under it
    TIMED_OUT = "timed out"  # ran past `timeout`: cancelled by the driver, then failed
    CANCELLED = "cancelled"  # by the user, a change, fail-fast
    REFUSED = "refused"  # never ran: it asks for more than exists (GPUs, memory)


class Retry(NamedTuple):
    """A decision to run a unit again."""

    attempt: int  # the attempt about to start (2 for the first retry)
    of: int  # attempts in all: retries + 1
    cause: str  # why the previous attempt ended, in one line

    def log_line(self) -> str:
        return f"attempt {self.attempt} of {self.of}: previous attempt failed: {self.cause}"


def one_line(error: str) -> str:
    """The line of an error that says what happened: a traceback's last line
    ("ValueError: boom"), or the message itself."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "failed"


class Attempts:
    """Each running task unit's attempt number and the causes of its earlier attempts."""

    def __init__(self) -> None:
        self._attempt: dict[UnitKey, int] = {}  # the attempt running (or about to)
        self._causes: dict[UnitKey, list[str]] = {}  # why each earlier attempt ended
        self._retrying: set[UnitKey] = set()  # decided, not launched yet

    def launched(self, unit: UnitKey) -> bool:
        """The unit is handed to the executor; whether this is a retry (its log is then
        appended to, not started afresh)."""
        if unit in self._retrying:
            self._retrying.discard(unit)
            return True
        self._attempt.pop(unit, None)
        self._causes.pop(unit, None)
        return False

    def after_failure(self, unit: UnitKey, retries: int, ending: Ending, error: str,
                      stopping: bool = False) -> Retry | None:
        """A unit ended without a value: the retry to make, or None (it fails for good)."""
        attempt = self._attempt.get(unit, 1)
        if ending in (Ending.CANCELLED, Ending.REFUSED) or stopping or attempt > retries:
            return None
        cause = one_line(error)
        if ending is Ending.DIED:
            cause = f"its process died ({cause})"
        self._causes.setdefault(unit, []).append(cause)
        self._attempt[unit] = attempt + 1
        self._retrying.add(unit)
        return Retry(attempt + 1, retries + 1, cause)

    def retry_reason(self, unit: UnitKey) -> str | None:
        """Why a unit just launched runs: the attempt it is and why the one before ended, if
        it is a retry (its signature's reasons are those of its first attempt)."""
        attempt = self._attempt.get(unit)
        causes = self._causes.get(unit)
        if attempt is None or not causes:
            return None
        return f"retry, attempt {attempt}: previous attempt failed: {causes[-1]}"

    def history(self, unit: UnitKey, retries: int, error: str) -> str | None:
        """For a unit that failed for good after retries: its last cause, which attempt it
        was and why the earlier ones failed (the last line of its error, which `status` and
        the build's summary show)."""
        causes = self._causes.get(unit)
        if not causes:
            return None
        attempt = self._attempt.get(unit, 1)
        earlier = "; ".join(f"attempt {i}: {c}" for i, c in enumerate(causes, start=1))
        return (f"{one_line(error)} (failed on attempt {attempt} of {retries + 1}; earlier "
                f"attempts: {earlier})")

    def forget(self, unit: UnitKey) -> None:
        """The unit ended for good (a value, a final failure, a cancel)."""
        self._attempt.pop(unit, None)
        self._causes.pop(unit, None)
        self._retrying.discard(unit)
