"""What a failed `ray.init` is called (executors/ray_connect.py), without Ray: the messages
Ray gives for each failure, as seen on the two-node cluster of tests/ray_fixtures.py."""

from __future__ import annotations

import pytest

from watchrun.executors.ray_connect import explain_init_failure, session_start_failed

ADDRESS = "ray://127.0.0.1:10001"
# Ray Client's proxier could not start the process that serves the driver (Ray 2.x's message)
SESSION_FAILED = ConnectionAbortedError("Initialization failure from server:\n")
# a wrong token over ray://: Ray Client waits, then gives up
TIMED_OUT = ConnectionError("ray client connection timeout")


def test_a_session_the_client_server_could_not_start_is_retried_and_not_blamed_on_the_token(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert session_start_failed(SESSION_FAILED)
    text = explain_init_failure(ADDRESS, SESSION_FAILED)
    assert "could not start a session" in text and ADDRESS in text
    assert "token" not in text


def test_a_refused_token_is_still_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert not session_start_failed(TIMED_OUT)
    assert "refused this driver's token" in explain_init_failure(ADDRESS, TIMED_OUT)


def test_other_failures_are_reported_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    assert not session_start_failed(RuntimeError("Initialization failure from server"))
    assert explain_init_failure(ADDRESS, RuntimeError("boom")) == "RuntimeError: boom"
