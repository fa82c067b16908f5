"""What the store remembers of a task's runs, read for the TUI: its last run and recent runs,
also from earlier sessions, and where each unit's log is.

A read-only connection of its own (SQLite in WAL mode lets it read while the engine writes);
it never writes and never takes the lock. What the engine has not committed yet is known to the
TUI from the session's events. Any failure to read (no database yet, a damaged one, a newer
schema) reads as "nothing known": the engine reports state problems, not the view.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchrun.paths import DATABASE, log_file

RECENT = 12  # runs listed per task


@dataclass(frozen=True)
class LastRun:
    """The latest stored run of a task: for a scoped task, its units taken together."""

    finished: float  # unix time the last unit ended
    duration: float  # of the unit; for many units, from the first start to the last end
    units: int
    failed: int
    cancelled: int

    @property
    def outcome(self) -> str:
        if self.failed:
            return "failed"
        if self.cancelled:
            return "cancelled"
        return "ok"


@dataclass(frozen=True)
class PastRun:
    """One run of a task, as the history lists it."""

    finished: float
    duration: float | None
    outcome: str  # "ok" | "failed" | "cancelled" | "stale" | "accepted" | "running" …
    why: str  # why it ran ("" when the store does not know)
    units: int = 1


class Records:
    """The store's memory of runs. `state_dir` None: nothing is known (tests, no store)."""

    def __init__(self, state_dir: Path | None) -> None:
        self.state_dir = state_dir
        self._db: sqlite3.Connection | None = None

    def log_path(self, task: str, iter: tuple[int, ...] = ()) -> Path | None:
        """Where the unit's captured output is (it may not exist yet). The engine's naming:
        `logs/<task>[.<i>…].log` under the state folder."""
        if self.state_dir is None:
            return None
        return Path(log_file(self.state_dir, task, iter))

    def last_run(self, task: str) -> LastRun | None:
        row = self._query(
            "SELECT count(*), max(finished), min(finished - coalesce(duration, 0)),"
            " sum(status = 'failed'), sum(status = 'cancelled'), max(duration)"
            " FROM unit_states WHERE task = ? AND status != 'accepted'", (task,))
        if not row or not row[0][0]:
            return None
        units, finished, first_start, failed, cancelled, longest = row[0]
        duration = longest if units == 1 else finished - first_start
        return LastRun(finished, max(0.0, duration or 0.0), units, failed or 0, cancelled or 0)

    def runs(self, task: str, limit: int = RECENT) -> list[PastRun]:
        """Recent runs, newest first: each stored result (one per signature that succeeded)
        and the latest outcome if that run did not succeed. Units of a scoped task are taken
        together per minute of their end (a run of a scope is many units)."""
        found = self._query(
            "SELECT finished, duration, 'ok' FROM results WHERE task = ?"
            " UNION ALL SELECT finished, duration, status FROM unit_states"
            " WHERE task = ? AND status NOT IN ('ok', 'accepted')"
            " ORDER BY 1 DESC LIMIT 5000", (task, task))
        runs: list[PastRun] = []
        for finished, duration, outcome in found:
            last = runs[-1] if runs else None
            if last is not None and last.outcome == outcome and last.finished - finished < 60:
                merged_duration = (last.duration or 0.0) + (duration or 0.0)
                runs[-1] = PastRun(last.finished, merged_duration, outcome, "", last.units + 1)
                continue
            if len(runs) == limit:
                break
            runs.append(PastRun(finished, duration, outcome, ""))
        return runs

    def _query(self, sql: str, params: tuple[object, ...]) -> list[Any]:
        db = self._connect()
        if db is None:
            return []
        try:
            return db.execute(sql, params).fetchall()
        except sqlite3.Error:
            self.close()  # perhaps moved aside and rebuilt: open it again next time
            return []

    def _connect(self) -> sqlite3.Connection | None:
        if self._db is not None or self.state_dir is None:
            return self._db
        path = self.state_dir / DATABASE
        if not path.is_file():
            return None
        try:
            uri = path.resolve().as_uri() + "?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=0.05)
        except sqlite3.Error:
            return None
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
