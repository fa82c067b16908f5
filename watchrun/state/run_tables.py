"""Process groups in flight (for reaping after a kill) and the runs of watchrun commands."""

from __future__ import annotations

import contextlib
import os
import time

from watchrun.state import pgroups
from watchrun.state.transactions import Transactions
from watchrun.state.values import StateFull


class RunTables(Transactions):
    def record_pgroup(self, pgid: int, start_time: float) -> None:
        """Committed at once (with whatever else is pending): a kill -9 of watchrun right after
        must leave the group findable."""
        self._write("INSERT OR REPLACE INTO pgroups (pgid, start_time) VALUES (?, ?)",
                    (pgid, start_time))
        with contextlib.suppress(StateFull):  # kept: the scheduler's own commit says it
            self.commit()


    def drop_pgroup(self, pgid: int) -> None:
        # Buffered: a group that ended but is still recorded is harmless (see pgroups.py).
        self._queue("DELETE FROM pgroups WHERE pgid = ?", (pgid,))

    def recorded_pgroups(self) -> list[tuple[int, float]]:
        return [(int(p), float(t)) for p, t in self._rows("SELECT pgid, start_time FROM pgroups")]

    def reap_stale_pgroups(self) -> list[int]:
        """Kill (SIGCONT, then SIGKILL) recorded groups whose leader is still the same process
        (checked against its start time, so a reused pid is left alone); forget them all.
        Returns the pgids that were ended. Groups whose leader is gone but whose members live
        are ended too."""
        self._check_writable()
        recorded = self.recorded_pgroups()
        if not recorded:
            return []  # the usual case: no write, no commit
        ended = pgroups.end_groups(recorded)
        self._write("DELETE FROM pgroups")
        self.commit()
        return ended

    # -- runs ----------------------------------------------------------------------------------
    def begin_run(self, command: str) -> int:
        self._write("INSERT INTO runs (command, pid, started) VALUES (?, ?, ?)",
                    (command, os.getpid(), time.time()))
        row = self._row("SELECT max(id) FROM runs")
        return int(row[0]) if row is not None and row[0] is not None else 0

    def end_run(self, run_id: int, ok: bool) -> None:
        self._write("UPDATE runs SET finished = ?, ok = ? WHERE id = ?",
                    (time.time(), int(ok), run_id))
