"""The local executor's count of CALL slots, and pipelining.

`jobs` slots run CALL units; a unit asking for several cpus (`resources`) holds its worker and
one more slot per extra cpu. Persistent units (GENERATE, COLLECT, INNER_GENERATE) take no slot.

Pipelining: a worker whose CALL unit is short (its task's recent units took less than
`pipeline_below`, and this one has not yet) may get a second CALL job queued behind it, so that
it goes on without waiting for the round trip through the scheduler: free() counts those queue
places once every worker is busy. With `jobs` = 1, a task that has not run yet counts as short
when the recent units of the other tasks were (the job waits for that one slot anyway).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from watchrun.executors.base import Job, Mode, cpu_slots
from watchrun.executors.worker_handle import Unit, WorkerHandle


class CallSlots:
    def __init__(self, jobs: int, pipeline_below: float, spare: int) -> None:
        self.jobs = jobs
        self.busy = 0  # CALL units submitted and not ended, queued ones included
        self.queued = 0  # of those, the ones waiting behind another unit on its worker
        self._extra = 0  # slots beyond one taken by running CALL units asking for several cpus
        self._pipeline_below = pipeline_below  # 0: no pipelining
        self._spare = spare  # warm workers kept beyond the free slots
        self._typical: dict[str, float] = {}  # task -> recent duration of its CALL units
        self._typical_any: float | None = None  # recent duration of any CALL unit

    def _free(self) -> int:
        return self.jobs - self.busy + self.queued - self._extra

    def free(self, workers: Iterable[WorkerHandle]) -> int:
        """How many CALL units may be submitted now (queue places included once every worker is
        busy)."""
        free = self._free()
        if free > 0 or self._pipeline_below <= 0 or self.queued >= self.jobs:
            return max(free, 0)
        now = time.monotonic()
        return sum(1 for w in workers if self.can_queue_behind(w, now))

    def idle_target(self) -> int:
        """How many idle warm workers to keep: one per free slot, and the spares."""
        return max(self._free(), 0) + self._spare

    def slots_of(self, job: Job) -> int:
        """The slots a CALL job takes: its cpus, but never more than `jobs` (a unit asking
        for more runs alone rather than never)."""
        if job.resources is None:
            return 1
        return min(cpu_slots(job.resources.cpus), self.jobs)

    def admit(
        self, job: Job, workers: Iterable[WorkerHandle], may_queue: bool
    ) -> WorkerHandle | None:
        """Count a CALL job in. Returns the worker to queue it behind, or None if it runs on a
        worker of its own; raises RuntimeError if there is no slot for it (the caller should
        have asked free())."""
        extra = self.slots_of(job) - 1
        running = self.busy - self.queued
        if extra and running > 0 and self.free(workers) < extra + 1:
            raise RuntimeError(f"no {extra + 1} free slots for {job.key.format()}")
        host = None
        if running + self._extra >= self.jobs:
            host = self.host(workers) if may_queue else None
            if host is None:
                raise RuntimeError(f"no free slot for {job.key.format()}: wait for free_slots()")
            self.queued += 1
        self._extra += extra
        self.busy += 1
        return host

    def admit_follower(self) -> None:
        """Count in a CALL job queued behind its leader (follow.py): it holds no slot until
        it starts there."""
        self.queued += 1
        self.busy += 1

    def started_queued(self) -> None:
        """A queued unit starts (its worker went on with it, or it moved to another one)."""
        self.queued -= 1

    def release(self, unit: Unit) -> None:
        """The unit ended: its slots are free."""
        if unit.job.mode is Mode.CALL:
            self.busy -= 1
            self._extra -= self.slots_of(unit.job) - 1
        if unit.queued:
            self.queued -= 1

    def record(self, task: str, duration: float) -> None:
        """A CALL unit of `task` took `duration` seconds."""
        typical = self._typical.get(task, duration)
        self._typical[task] = (typical + duration) / 2
        recent = duration if self._typical_any is None else self._typical_any
        self._typical_any = (recent + duration) / 2

    def can_queue_behind(self, worker: WorkerHandle, now: float, patient: bool = False) -> bool:
        unit = worker.unit
        if (
            worker.queued is not None
            or unit is None
            or unit.job.mode is not Mode.CALL
            or worker.retiring
            or unit.paused
            or unit.cancel_wanted
            or not worker.ready.done()
        ):
            return False
        typical = self._typical.get(unit.job.key.task)
        if typical is None and self.jobs == 1:
            # a task not run yet (every task, in a first build) while the others were short:
            # with one slot the job would wait for this worker anyway, and queued it starts
            # without the round trip through the scheduler
            typical = self._typical_any
        below = self._pipeline_below
        if typical is None or typical >= below:
            return False
        return patient or now - unit.submitted < typical + below

    def host(self, workers: Iterable[WorkerHandle]) -> WorkerHandle | None:
        """The worker to queue a CALL job behind: the one most likely to be free first."""
        if self._pipeline_below <= 0:
            return None
        now = time.monotonic()
        candidates = list(workers)
        found = self._first_free(candidates, now, patient=False)
        # free() said yes a moment ago: keep its word
        return found if found is not None else self._first_free(candidates, now, patient=True)

    def _first_free(
        self, workers: list[WorkerHandle], now: float, patient: bool
    ) -> WorkerHandle | None:
        best = None
        for worker in workers:
            if self.can_queue_behind(worker, now, patient) and (
                best is None or _started(worker) < _started(best)
            ):
                best = worker
        return best


def _started(worker: WorkerHandle) -> float:
    return worker.unit.submitted if worker.unit is not None else 0.0
