"""Runs units in warm worker processes on this machine: the executor's front.

- `jobs` workers serve CALL units; a persistent unit (GENERATE, COLLECT, INNER_GENERATE) takes a
  worker of its own outside that count, because it mostly waits on its upstream. One spare warm
  worker is kept for the next persistent unit. A worker that finished a unit normally is reused.
  The workers: worker_pool.py (processes, groups, the life pipe) and warm_forks.py (forked from
  a template that has the tasks' libraries imported); the slots and pipelining: call_slots.py.
- Cancel: SIGINT, after `grace` SIGTERM, after another `grace` SIGKILL, to the group, each step
  logged (escalation.py). A cancelled (or dead) worker is killed with its whole group, reaped
  and replaced, so no subprocess of the unit survives it.
- A unit queued behind another on its worker (pipelining) is cancelled or paused when it
  starts; if its worker is retired or dies first, it moves to another worker (it has not
  started).
- Every job ends with exactly one DONE, FAILED, CANCELLED or DIED event.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import time

from watchrun.executors import protocol as proto
from watchrun.executors.base import EventKind, ExecEvent, Job, Mode, Sink, UnitKey, hand_to_sink
from watchrun.executors.call_slots import CallSlots
from watchrun.executors.escalation import escalate
from watchrun.executors.follow import runs
from watchrun.executors.job_wire import job_frame, job_label
from watchrun.executors.job_wire import job_spec as job_spec  # ray.py imports it from here
from watchrun.executors.limits import LocalLimits
from watchrun.executors.protocol import Msg
from watchrun.executors.spawn import EarlyWorkers, warm_supported, worker_env
from watchrun.executors.unit_book import UnitBook
from watchrun.executors.warm_forks import PreloadSource, WarmTemplates
from watchrun.executors.worker_handle import Unit, WorkerHandle
from watchrun.executors.worker_outputs import OutputHash
from watchrun.executors.worker_pool import PgroupCallback, WorkerPool
from watchrun.executors.yield_credit import Grants, credit_for

log = logging.getLogger("watchrun.executor")

SPARE_WORKERS = 1  # warm workers kept beyond the free CALL slots, for the next persistent unit
# A CALL job may be queued behind a running one whose task's recent units took less than this
# (seconds), while that one has not run that long yet: the wait it adds is at most about this.
PIPELINE_BELOW = 0.005
_TERMINAL = {Msg.DONE, Msg.FAILED, Msg.CANCELLED}
_YIELDED, _STARTED, _PUSHED = Msg.YIELDED, Msg.STARTED, Msg.PUSHED  # compared for every frame


class WorkerStartError(RuntimeError):
    """A worker process could not start; the message carries its stderr."""


class LocalExecutor:
    """The Executor of base.py on local processes. All methods run on one asyncio loop; `sink`
    is called on it, never from inside a method call of ours (so the caller may re-enter).

    `on_pgroup(pgid, start_time)` is called when a worker's process group starts (start_time:
    the leader's start time, as watchrun.state.pgroups.process_start_time gives it) and with
    None when it has ended, so the caller can record the groups in flight and end leftovers
    next time (watchrun.state.pgroups.end_groups).

    `pipeline_below`: see call_slots.py; 0 turns it off. `spare`: the warm workers kept
    beyond the free CALL slots (0 for a build with no persistent unit: on a machine of two
    cores a spare starting beside the busy workers slows them down).

    `preload`: workers are forked from a warm template that imports what it returns (see
    warm_forks.py; an empty list: nothing, but the template's process guarantees still hold).
    None, or a system without fork and /proc: workers are started with exec.

    `objects`: the store's object folder: workers pickle a big output into a file there (the
    DONE / YIELDED data is then its (path, digest), see bigpickle.py); None: as bytes.

    `early`: workers (or the warm template) started before this executor was made, adopted
    before any new one is started (see spawn.py)."""

    def __init__(
        self,
        sink: Sink,
        jobs: int,
        grace: float,
        on_pgroup: PgroupCallback | None = None,
        pipeline_below: float = PIPELINE_BELOW,
        spare: int = SPARE_WORKERS,
        preload: PreloadSource | None = None,
        objects: str | None = None,
        limits: LocalLimits | None = None,
        early: EarlyWorkers | None = None,
    ) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be at least 1, not {jobs}")
        self._sink = sink
        self._objects = objects
        self._grace = grace
        self._book: UnitBook[Unit] = UnitBook()
        self._slots = CallSlots(jobs, pipeline_below, spare)
        # the GPUs and memory budget of `resources`: what can never fit is refused at once
        self.limits = LocalLimits() if limits is None else limits
        self._outboxes: list[WorkerHandle] = []  # workers with frames to send at the turn's end
        self._grants = Grants()  # more yields a generator may send (yield_credit.py)
        env = worker_env()
        templates = WarmTemplates(
            preload if warm_supported() else None, env, lambda: self._pool.closing, early
        )
        self._pool = WorkerPool(
            env, templates, self._on_message, self._worker_gone, self._slots.idle_target,
            on_pgroup,
        )

    @property
    def ready_times(self) -> list[float]:
        """Seconds from spawn to READY, per worker started."""
        return self._pool.ready_times

    # -- the Executor protocol ------------------------------------------------------------------

    async def start(self) -> None:
        """Start the pool and wait until every worker is ready. Jobs may be submitted before
        it returns; they wait in the channel until their worker is up."""
        self._pool.top_up()
        await self._pool.wait_started()
        if self._pool.start_error is not None:
            raise WorkerStartError(self._pool.start_error)

    def free_slots(self) -> int:
        return self._slots.free(self._pool.workers)

    def set_jobs(self, jobs: int) -> None:
        self._slots.jobs = max(jobs, 1)
        self._pool.top_up()

    def submit(self, job: Job) -> None:
        self._book.check_new(job, self._pool.closing)
        refusal = self.limits.refusal(job)
        if refusal is not None:  # it would wait for ever: it fails now, on the next turn
            event = ExecEvent(job.key, EventKind.FAILED, error=refusal, refused=True)
            asyncio.get_running_loop().call_soon(hand_to_sink, self._sink, event)
            return
        gpu_env = self._gpu_env(job)
        host = None
        if job.mode is Mode.CALL:
            host = self._slots.admit(job, self._pool.workers, may_queue=gpu_env is None)
        if host is not None:
            unit = Unit(job, host, time.monotonic(), queued=True)
            host.queued = unit
        else:
            self._pool.check_installed()
            worker = self._pool.spawn(gpu_env) if gpu_env is not None else self._pool.take()
            unit = Unit(job, worker, time.monotonic())
            worker.unit = unit
        self._book.add(unit)
        frame = job_frame(job, self._objects, credit_for(job.mode))
        if host is not None:  # it waits anyway: no need to wake the worker now
            self._send_soon(host, frame)
        else:
            unit.worker.send(frame)
        self._pool.top_up()

    def follow(self, job: Job, leader_key: UnitKey) -> bool:
        """Queue a CALL job behind the unit `leader_key` (running on a worker of ours with
        nothing queued behind it), to start there as that one ends DONE if what it wrote
        makes the job dirty (`job.follows`, follow.py). False: not queued (the leader has
        ended, or its worker cannot take it); the caller submits it as usual when ready."""
        assert job.follows is not None and job.mode is Mode.CALL
        if self._pool.closing or self._book.get(job.key) is not None:
            return False
        leader = self._book.get(leader_key)
        if leader is None or leader.queued or leader.finished or leader.cancel_wanted \
                or leader.paused or leader.job.mode is not Mode.CALL:
            return False
        host = leader.worker
        if host.unit is not leader or host.queued is not None or host.retiring \
                or not host.ready.done() or job.resources is not None:
            return False
        self._slots.admit_follower()
        unit = Unit(job, host, time.monotonic(), queued=True)
        host.queued = unit
        self._book.add(unit)
        self._send_soon(host, job_frame(job, self._objects, credit_for(job.mode)))
        return True

    def push(self, key: UnitKey, kwargs: dict[str, bytes]) -> None:
        unit = self._book.taking_input(key)
        if unit is not None:
            self._send_soon(unit.worker, proto.encode(Msg.PUSH, kwargs))

    def end_input(self, key: UnitKey) -> None:
        unit = self._book.taking_input(key)
        if unit is not None:
            self._send_soon(unit.worker, proto.encode(Msg.END))

    def cancel(self, key: UnitKey) -> None:
        unit = self._book.get(key)
        if unit is None or unit.cancel_wanted:
            return
        unit.cancel_wanted = True
        if unit.queued:  # not started: a signal now would reach the unit before it
            return
        if not unit.worker.ready.done():
            # the worker is still starting, the unit has not begun: nothing to interrupt
            log.info("cancel %s: its worker was still starting; killed", key.format())
            unit.cancel_signal = signal.SIGKILL.name
            self._pool.retire(unit.worker)
            return
        self._start_escalation(unit)

    def pause(self, key: UnitKey) -> bool:
        unit = self._book.get(key)
        if unit is None or unit.worker.pid is None:
            return False
        if not unit.paused:
            if not unit.queued:  # a queued unit is stopped when it starts
                self._pool.stop(unit.worker)
            unit.paused = True
        return True

    def hold_yields(self, key: UnitKey, held: bool) -> bool:
        """The plan's read-ahead hold of a generator: its worker gets no more credit while
        held (yield_credit.py). False: not a generator of ours (the caller pauses it)."""
        unit = self._book.get(key)
        if unit is None or credit_for(unit.job.mode) is None:
            return False
        self._grants.hold(job_label(key), held)
        return True

    def resume(self, key: UnitKey) -> bool:
        unit = self._book.get(key)
        if unit is None or unit.worker.pid is None:
            return False
        if unit.paused:
            if not unit.queued:
                unit.worker.signal_group(signal.SIGCONT)
            unit.paused = False
        return True

    def running(self) -> list[UnitKey]:
        return self._book.running()

    async def close(self) -> None:
        """Cancel what runs (the full SIGINT -> SIGTERM -> SIGKILL sequence, at most 2 x grace),
        then kill every group and reap every process."""
        self._pool.closing = True
        for key in self._book.running():
            self.cancel(key)
        # the escalation ends with SIGKILL after 2 x grace; the margin covers reaping
        await self._book.wait_all_ended(2 * self._grace + 5.0)
        await self._pool.close()

    # -- frames that can wait for the end of this turn of the loop ------------------------------

    def _send_soon(self, worker: WorkerHandle, frame: bytes) -> None:
        """Send at the end of this turn of the loop, with the other frames for that worker
        by then: one write (and one wake-up of the worker) for the pushes that the events of
        one turn produce, instead of one each."""
        if not worker.outbox:
            if not self._outboxes:
                asyncio.get_running_loop().call_soon(self._flush)
            self._outboxes.append(worker)
        worker.outbox.append(frame)

    def _flush(self) -> None:
        for worker in self._outboxes:
            if worker.outbox:
                worker.send(b"")
        self._outboxes.clear()

    def _gpu_env(self, job: Job) -> dict[str, str] | None:
        """A unit asking for GPUs: the environment of a worker of its own, started (with
        exec, never forked from the template nor reused) with CUDA_VISIBLE_DEVICES set to the
        GPUs it holds, which CUDA reads once, when a process first uses it."""
        if job.resources is None or not job.resources.gpus:
            return None
        held = self.limits.take(job.key, job.resources.gpus)
        return {**self._pool.env, "CUDA_VISIBLE_DEVICES": ",".join(held)}

    # -- what workers say -----------------------------------------------------------------------

    def _on_message(self, worker: WorkerHandle, kind: Msg, fields: tuple[object, ...]) -> None:
        if kind is Msg.READY:
            self._pool.ready(worker)
            return
        unit = worker.unit
        if unit is None or unit.finished:
            return
        # the most frequent first: a generator's yields, a unit's start, its end
        if kind is _YIELDED:
            self._emit(unit, EventKind.YIELDED, fields[0])  # type: ignore[arg-type]
            self._grants.read_one(worker, job_label(unit.job.key))
        elif kind is _STARTED:
            self._emit(unit, EventKind.STARTED)
        elif kind in _TERMINAL:
            self._settle(worker, unit, kind, fields)
        elif kind is _PUSHED:
            self._emit(unit, EventKind.PUSHED)

    def _settle(
        self, worker: WorkerHandle, unit: Unit, kind: Msg, fields: tuple[object, ...]
    ) -> None:
        payload, duration = fields[0], fields[1]
        assert isinstance(duration, float)
        claims = fields[2] if kind is Msg.DONE and len(fields) > 2 else ()
        worker.unit = None
        self._end_unit(unit)
        follower = self._follower_of(worker, unit, kind is Msg.DONE, claims)  # type: ignore[arg-type]
        if kind is Msg.DONE and unit.job.mode is Mode.CALL:
            self._slots.record(unit.job.key.task, duration)
        if unit.cancel_signal is not None:
            # signals were sent: the worker may hold a pending one (or may even have taken the
            # queued unit's start for it); start afresh, and the queued unit elsewhere
            self._move_queued(worker)
            self._pool.retire(worker)
        else:
            if unit.paused:  # paused just as it finished
                worker.signal_group(signal.SIGCONT)
            if worker.queued is not None:
                self._promote(worker)
            else:
                self._pool.release(worker)
        self._pool.top_up()
        if kind is Msg.DONE:
            self._emit(unit, EventKind.DONE, data=payload, duration=duration,  # type: ignore[arg-type]
                       output_claims=claims, follower=follower)  # type: ignore[arg-type]
        elif kind is Msg.CANCELLED and unit.cancel_signal is not None:
            self._emit(unit, EventKind.CANCELLED, signal=unit.cancel_signal, duration=duration)
        else:  # FAILED, or a KeyboardInterrupt nobody asked for: the task raised it
            self._emit(unit, EventKind.FAILED, error=str(payload), duration=duration)

    def _follower_of(self, worker: WorkerHandle, leader: Unit, done: bool,
                     claims: tuple[OutputHash, ...]) -> UnitKey | None:
        """The leader just ended: the key of the job queued behind it (`follows`) if its
        worker goes on with it, as the worker decides (follow.runs, the same data). One that
        does not run is forgotten without an event: it never started, and the driver, told
        by the leader's event, resolves it as usual."""
        queued = worker.queued
        if queued is None or queued.job.follows is None:
            return None
        if leader.cancel_signal is None and runs(queued.job.follows, job_label(leader.job.key),
                                                 done, claims):
            return queued.job.key
        worker.queued = None
        self._end_unit(queued)
        return None

    def _worker_gone(self, worker: WorkerHandle, cause: str) -> None:
        """A worker was reaped: its queued unit moves, its running unit ends."""
        self._move_queued(worker)
        unit = worker.unit
        worker.unit = None
        if unit is None or unit.finished:
            if not worker.retiring and not self._pool.closing and self._pool.start_error is None:
                log.warning("idle worker %s died (%s); replacing it", worker.pid, cause)
            self._pool.top_up()
            return
        self._end_unit(unit)
        self._pool.top_up()
        duration = time.monotonic() - unit.submitted
        if unit.cancel_signal is not None:
            self._emit(unit, EventKind.CANCELLED, signal=unit.cancel_signal, duration=duration)
        else:
            log.warning("%s: worker %s died (%s)", unit.job.key.format(), worker.pid, cause)
            self._emit(unit, EventKind.DIED, error=cause, duration=duration)

    def _end_unit(self, unit: Unit) -> None:
        unit.finished = True
        if credit_for(unit.job.mode) is not None:
            self._grants.ended(job_label(unit.job.key))
        if unit.ended is not None:
            unit.ended.set_result(None)  # the escalation stops
        self.limits.give_back(unit.job.key)
        self._slots.release(unit)
        unit.queued = False
        self._book.remove(unit)

    def _emit(
        self,
        unit: Unit,
        kind: EventKind,
        data: bytes | None = None,
        *,
        error: str | None = None,
        signal: str | None = None,
        duration: float = 0.0,
        output_claims: tuple[OutputHash, ...] = (),
        follower: UnitKey | None = None,
    ) -> None:
        event = ExecEvent(unit.job.key, kind, data, error, signal, duration, unit.worker.pid,
                          output_claims=output_claims, follower=follower)
        hand_to_sink(self._sink, event)

    # -- units queued behind another (pipelining) -----------------------------------------------

    def _promote(self, worker: WorkerHandle) -> None:
        """The worker's unit ended normally: it goes on with the queued one."""
        unit = worker.queued
        assert unit is not None
        worker.queued = None
        worker.unit = unit
        unit.queued = False
        self._slots.started_queued()
        unit.submitted = time.monotonic()
        if unit.cancel_wanted:
            self._start_escalation(unit)
        elif unit.paused:
            self._pool.stop(worker)

    def _move_queued(self, worker: WorkerHandle) -> None:
        """The worker is retired or dead: its queued unit (not started) goes to another one,
        or, if it was cancelled meanwhile or we are closing, ends cancelled."""
        unit = worker.queued
        if unit is None:
            return
        worker.queued = None
        if unit.job.follows is not None:  # its leader did not end DONE here: it never runs
            self._end_unit(unit)
            return
        if unit.cancel_wanted or self._pool.closing:
            self._end_unit(unit)
            asyncio.get_running_loop().call_soon(
                functools.partial(self._emit, unit, EventKind.CANCELLED, signal="SIGINT")
            )
            return
        unit.queued = False
        self._slots.started_queued()
        target = self._pool.take()
        target.unit = unit
        unit.worker = target
        unit.submitted = time.monotonic()
        target.send(job_frame(unit.job, self._objects, credit_for(unit.job.mode)))
        if unit.paused:  # as pause() does, only if the worker has a process yet
            unit.paused = target.pid is not None
            self._pool.stop(target)

    # -- cancel ---------------------------------------------------------------------------------

    def _start_escalation(self, unit: Unit) -> None:
        loop = asyncio.get_running_loop()
        ended = unit.ended = loop.create_future()
        unit.escalation = loop.create_task(
            escalate(
                functools.partial(self._send_cancel_signal, unit),
                functools.partial(asyncio.shield, ended),
                self._grace,
            )
        )

    def _send_cancel_signal(self, unit: Unit, sig: signal.Signals) -> None:
        if unit.finished:
            return
        label = unit.job.key.format()
        if unit.cancel_signal is None:
            log.info("cancel %s: %s to process group %s", label, sig.name, unit.worker.pid)
        else:
            log.warning(
                "cancel %s: still running %.1f s after %s; %s to process group %s",
                label,
                self._grace,
                unit.cancel_signal,
                sig.name,
                unit.worker.pid,
            )
        unit.cancel_signal = sig.name
        unit.worker.signal_group(sig)
        if unit.paused:  # a stopped process cannot act on the signal
            unit.worker.signal_group(signal.SIGCONT)
            unit.paused = False
