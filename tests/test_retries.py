"""The retry rule (engine/retries.py), without processes: which failed unit runs again, with
which attempt number and cause. Microseconds each; the CLI's end-to-end proof is in
tests/test_limits_e2e.py."""

from __future__ import annotations

from watchrun.engine.retries import Attempts, Ending, Retry, one_line
from watchrun.executors.base import UnitKey

A = UnitKey("fetch", (3,))
TRACEBACK = 'Traceback (most recent call last):\n  File "x.py", line 3\nOSError: reset by peer\n'


def test_a_failed_unit_runs_again_up_to_retries_then_fails_for_good() -> None:
    attempts = Attempts()
    assert not attempts.launched(A)
    first = attempts.after_failure(A, 2, Ending.FAILED, TRACEBACK)
    assert first == Retry(2, 3, "OSError: reset by peer")
    assert first.log_line() == "attempt 2 of 3: previous attempt failed: OSError: reset by peer"
    assert attempts.launched(A)  # a retry: its log is appended to
    second = attempts.after_failure(A, 2, Ending.DIED, "killed by SIGKILL")
    assert second == Retry(3, 3, "its process died (killed by SIGKILL)")
    assert attempts.launched(A)
    assert attempts.after_failure(A, 2, Ending.FAILED, TRACEBACK) is None
    assert attempts.history(A, 2, TRACEBACK) == (
        "OSError: reset by peer (failed on attempt 3 of 3; earlier attempts: attempt 1: "
        "OSError: reset by peer; attempt 2: its process died (killed by SIGKILL))")


def test_no_retries_means_one_attempt() -> None:
    attempts = Attempts()
    attempts.launched(A)
    assert attempts.after_failure(A, 0, Ending.FAILED, TRACEBACK) is None
    assert attempts.history(A, 0, TRACEBACK) is None  # nothing to add to its error


def test_a_cancelled_unit_is_never_retried_nor_anything_while_stopping() -> None:
    attempts = Attempts()
    attempts.launched(A)
    assert attempts.after_failure(A, 5, Ending.CANCELLED, "SIGINT") is None
    assert attempts.after_failure(A, 5, Ending.FAILED, TRACEBACK, stopping=True) is None
    assert attempts.after_failure(A, 5, Ending.REFUSED, "asks for 1 GPU") is None


def test_a_timed_out_unit_is_retried() -> None:
    attempts = Attempts()
    attempts.launched(A)
    retry = attempts.after_failure(A, 1, Ending.TIMED_OUT, "timed out after 2 s")
    assert retry == Retry(2, 2, "timed out after 2 s")


def test_a_unit_launched_afresh_starts_again_at_attempt_one() -> None:
    # dev: a retry failed, then a change made the unit dirty again
    attempts = Attempts()
    attempts.launched(A)
    assert attempts.after_failure(A, 1, Ending.FAILED, TRACEBACK) is not None
    attempts.launched(A)  # the retry
    assert attempts.after_failure(A, 1, Ending.FAILED, TRACEBACK) is None
    attempts.forget(A)
    assert not attempts.launched(A)  # afresh
    assert attempts.after_failure(A, 1, Ending.FAILED, TRACEBACK) == Retry(
        2, 2, "OSError: reset by peer")


def test_units_count_their_attempts_apart() -> None:
    attempts = Attempts()
    other = UnitKey("fetch", (4,))
    attempts.launched(A)
    attempts.launched(other)
    assert attempts.after_failure(A, 1, Ending.FAILED, TRACEBACK) is not None
    assert attempts.after_failure(other, 1, Ending.FAILED, TRACEBACK) is not None
    attempts.launched(A)
    assert attempts.after_failure(A, 1, Ending.FAILED, TRACEBACK) is None


def test_the_cause_is_the_line_that_says_what_happened() -> None:
    assert one_line(TRACEBACK) == "OSError: reset by peer"
    assert one_line("timed out after 5 s") == "timed out after 5 s"
    assert one_line("\n\n") == "failed"
