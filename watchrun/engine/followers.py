"""The driver's record of units queued behind a running one on its worker (`watchrun build`,
executors/follow.py): from their queuing to their leader's end, when the executor says whether
the worker went on with them. One that started is adopted by the driver as it resolves it (it
runs already: no job is sent); one that did not is forgotten and resolved as usual."""

from __future__ import annotations

from watchrun.executors.base import Job, UnitKey


class Followers:
    def __init__(self) -> None:
        self._behind: dict[UnitKey, Job] = {}  # leader -> the job queued behind it
        self._started: dict[UnitKey, Job] = {}  # followers running, not adopted yet

    def __bool__(self) -> bool:
        return bool(self._behind or self._started)

    def queued(self, leader: UnitKey, job: Job) -> None:
        self._behind[leader] = job

    def leader_ended(self, leader: UnitKey, started: UnitKey | None) -> None:
        """The leader's end, and the follower its worker started on it (the DONE event's
        `follower`), if any."""
        job = self._behind.pop(leader, None)
        if job is not None and job.key == started:
            self._started[started] = job

    def take_started(self, unit: UnitKey) -> Job | None:
        """The job of `unit` if it runs as a follower and the driver has not adopted it."""
        return self._started.pop(unit, None)
