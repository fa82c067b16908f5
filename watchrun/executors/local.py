"""Runs units in warm worker processes on this machine.

A pool of watchrun.executors.worker processes, each in a session and process group of its own,
so a unit's group is its worker's group while it runs and the unit's subprocesses are in it too:
signals sent to the group reach all of them.

- `jobs` workers serve CALL units; a persistent unit (GENERATE, COLLECT, INNER_GENERATE) takes a
  worker of its own outside that count, because it mostly waits on its upstream. One spare warm
  worker is kept for the next persistent unit. A worker that finished a unit normally is reused.
- A worker a unit needs is spawned within submit() and its job written to it then: the unit
  starts even if the caller keeps the loop busy for a while. Idle workers (the free slots, the
  spare) are spawned once no other worker is starting, not beside the ones units wait for.
- Control goes over a socketpair (frames, see protocol.py), not stdin/stdout, which belong to
  the task. A second descriptor, the "life pipe", is held open only by this process: when it
  closes (even by kill -9), each worker kills its own group.
- Cancel: SIGINT, after `grace` SIGTERM, after another `grace` SIGKILL, to the group, each step
  logged. A cancelled (or dead) worker is killed with its whole group, reaped and replaced, so no
  subprocess of the unit survives it.
- Pipelining: a worker whose CALL unit is short (its task's recent units took less than
  PIPELINE_BELOW, and this one has not yet) may get a second CALL job queued behind it, so that
  it goes on without waiting for the round trip through the scheduler: free_slots() counts those
  queue places once every worker is busy. With `jobs` = 1, a task that has not run yet counts as
  short when the recent units of the other tasks were (the job waits for that one slot anyway).
  A queued unit is cancelled or paused when it starts; if its worker is retired or dies first,
  it moves to another worker (it has not started).
- Every job ends with exactly one DONE, FAILED, CANCELLED or DIED event.
- Warm template (`preload`, Linux): workers are forked by a template process (template.py,
  warm.py) that has the tasks' libraries imported. Such a worker is not our child: the template
  tells its pid and how it ended (_Forked). Until the template is ready (its imports done), the
  workers wait; a template that dies is replaced (without the module it died importing), and
  after repeated failures workers are started with exec. When the modules to preload change, a
  new template is built in the background; when installed libraries change, idle workers are
  ended and forks wait for the new template.
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import functools
import itertools
import logging
import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence

from watchrun.executors import protocol as proto
from watchrun.executors.base import (
    EventKind,
    ExecEvent,
    Job,
    Mode,
    Sink,
    UnitKey,
    cpu_slots,
    death_cause,
    hand_to_sink,
)
from watchrun.executors.escalation import escalate
from watchrun.executors.job_wire import job_frame
from watchrun.executors.job_wire import job_spec as job_spec  # ray.py imports it from here
from watchrun.executors.limits import LocalLimits
from watchrun.executors.protocol import Msg
from watchrun.executors.spawn import (
    close_all,
    popen_worker,
    spawn,
    take_early,
    take_early_template,
    warm_supported,
    worker_env,
    worker_pipes,
)
from watchrun.executors.warm import TemplateLink, installed_stamp, preload_log, start_template
from watchrun.state.pgroups import process_start_time

log = logging.getLogger("watchrun.executor")

SPARE_WORKERS = 1  # warm workers kept beyond the free CALL slots, for the next persistent unit
_STDERR_TAIL = 4000  # bytes of a worker's own stderr kept to explain a failed start
_READ_BUFFER = 1 << 16  # bytes read from a worker's socket at once (grows for larger frames)
_CHANNEL_LINGER = 2.0  # seconds to read what a dead worker sent before its channel is closed
_TERMINAL = {Msg.DONE, Msg.FAILED, Msg.CANCELLED}
_YIELDED, _STARTED, _PUSHED = Msg.YIELDED, Msg.STARTED, Msg.PUSHED  # read for every frame
_START_ATTEMPTS = 3  # workers in a row that die before they are ready: give up
# A CALL job may be queued behind a running one whose task's recent units took less than this
# (seconds), while that one has not run that long yet: the wait it adds is at most about this.
PIPELINE_BELOW = 0.005
PRELOAD_PATIENCE = 30.0  # seconds a worker waits for the template's imports, then exec
INSTALL_CHECK = 0.05  # seconds between two looks at the installed libraries (see submit)

PgroupCallback = Callable[[int, "float | None"], None]
# what the warm template should preload: (top-level module, version) pairs (see
# warm.wanted_modules); asked again at each worker start, so that a change (a `pip install`
# during `dev`, a task importing a new library) gets a new template
PreloadSource = Callable[[], Sequence[tuple[str, str]]]


class WorkerStartError(RuntimeError):
    """A worker process could not start; the message carries its stderr."""


class _Unit:
    """A submitted job, from submit() to its last event. (Slotted classes here, not
    dataclasses: making a dataclass costs milliseconds at every start of watchrun.)"""

    __slots__ = (
        "cancel_signal",
        "cancel_wanted",
        "ended",
        "escalation",
        "finished",
        "job",
        "paused",
        "queued",
        "submitted",
        "worker",
    )

    def __init__(self, job: Job, worker: _Worker, submitted: float, queued: bool = False) -> None:
        self.job = job
        self.worker = worker
        self.submitted = submitted  # time.monotonic()
        self.cancel_signal: str | None = None  # the last signal sent to cancel it
        self.escalation: asyncio.Task[signal.Signals] | None = None  # see escalation.py
        self.ended: asyncio.Future[None] | None = None  # resolved when it ends, if cancelled
        self.paused = False
        self.finished = False
        self.queued = queued  # waits behind its worker's current unit (pipelining)
        # cancel() was called: the escalation runs (or starts when a queued unit starts)
        self.cancel_wanted = False


class _Process:
    """A worker process, spawned at once with subprocess.Popen, and reaped through a pidfd
    watched by the loop (Linux) or else by a thread blocked in waitpid. (asyncio would spawn
    it on a later turn of the loop, after whatever the caller of submit() does first: at the
    start of a build, tens of milliseconds during which the first unit waits for nothing.)"""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.pid = popen.pid
        self.returncode: int | None = None  # set once reaped: until then the pid is ours
        self._popen = popen
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = self._loop.create_future()
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # not Linux (>= 5.3)
            self._pidfd = -1
            _thread.start_new_thread(self._wait_in_thread, ())
        else:
            self._loop.add_reader(self._pidfd, self._on_exit)

    async def wait(self) -> int | None:
        # shielded: several coroutines wait, and one of them being cancelled stops no other
        return await asyncio.shield(self._exited)

    def _on_exit(self) -> None:
        """The pidfd is readable: the process has exited, waitpid does not block."""
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        _, status = os.waitpid(self.pid, 0)
        self._reaped(status)

    def _wait_in_thread(self) -> None:
        _, status = os.waitpid(self.pid, 0)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            self._loop.call_soon_threadsafe(self._reaped, status)

    def _reaped(self, status: int) -> None:
        # Popen's own returncode too: it would otherwise try to reap the pid again later
        self.returncode = self._popen.returncode = os.waitstatus_to_exitcode(status)
        self._exited.set_result(self.returncode)


class _Forked:
    """A worker process forked by the warm template. Not our child: the template tells its pid
    (`started`) and, once it has reaped it, how it ended. Until the template has forked it, the
    worker's ends of its pipes are kept here, so that another template (or an exec) can start
    it instead."""

    def __init__(self, child_fds: tuple[int, int, int]) -> None:
        loop = asyncio.get_running_loop()
        self.pid = 0  # 0 until forked (and then never a group we may signal)
        self.returncode: int | None = None
        self.child_fds: tuple[int, int, int] | None = child_fds
        self.link: TemplateLink | None = None  # the template asked to fork it
        self.started: asyncio.Future[int] = loop.create_future()  # the pid, 0: never started
        self._exited: asyncio.Future[int | None] = loop.create_future()
        # the process itself, whatever its pid comes to mean: readable once it has exited,
        # which is before the template reaps it and the pid may be given to another process
        self._pidfd = -1

    async def wait(self) -> int | None:
        return await asyncio.shield(self._exited)

    def forked(self, pid: int) -> None:
        self.release_fds()
        self.pid = pid
        with contextlib.suppress(AttributeError, OSError):  # gone already: ended() follows
            self._pidfd = os.pidfd_open(pid)
        if not self.started.done():
            self.started.set_result(pid)

    def exited(self) -> bool:
        """Whether it has exited, though the template may not have said so yet."""
        if self.returncode is not None:
            return True
        if self._pidfd < 0:
            return False
        return bool(select.select([self._pidfd], [], [], 0)[0])

    def ended(self, returncode: int | None) -> None:
        """It exited (or was never started: returncode None)."""
        self.release_fds()
        if not self.started.done():
            self.started.set_result(self.pid)
        self.returncode = returncode if returncode is not None else -signal.SIGKILL
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        if not self._exited.done():
            self._exited.set_result(returncode)

    def release_fds(self) -> None:
        if self.child_fds is not None:
            close_all(self.child_fds)
            self.child_fds = None


class _Worker:
    """One worker process, from its spawn to its reaping."""

    __slots__ = (
        "channel",
        "life_fd",
        "outbox",
        "pending",
        "pid",
        "proc",
        "queued",
        "ready",
        "reported",
        "retiring",
        "sock",
        "spawned",
        "stamp",
        "stderr_fd",
        "stderr_tail",
        "task",
        "unit",
    )

    def __init__(self, ready: asyncio.Future[None]) -> None:
        self.ready = ready
        self.proc: _Process | _Forked | None = None
        self.pid: int | None = None  # the process's, once spawned (read with every event)
        self.sock: socket.socket | None = None  # our end of the control socket
        self.channel: _Channel | None = None  # the socket on the loop, once connected
        self.pending: list[bytes] = []  # frames sent before the channel is up
        self.outbox: list[bytes] = []  # frames to send at the end of the turn
        self.unit: _Unit | None = None  # the unit it runs (or will run first)
        self.queued: _Unit | None = None  # a CALL unit sent to it to run next
        self.retiring = False  # killed on purpose: its death is not news
        self.reported = False  # its group was reported to on_pgroup
        self.life_fd: int | None = None  # our end of the life pipe
        self.stderr_fd: int | None = None  # the read end of the worker's stderr, until read
        self.stderr_tail = bytearray()
        self.task: asyncio.Task[None] | None = None
        self.spawned = 0.0
        self.stamp: tuple[int, ...] = ()  # the installed libraries when it started

    def send(self, frame: bytes) -> None:
        if self.outbox:  # in order
            self.outbox.append(frame)
            frame = b"".join(self.outbox)
            self.outbox.clear()
        if self.channel is not None:
            self.channel.transport.write(frame)
        elif self.pending or self.sock is None:
            self.pending.append(frame)
        else:
            # The channel is made on the loop's next turn, which may come long after (at the
            # start of a build, the scheduler's first steps take tens of milliseconds): the
            # socket takes the frame now, so that the worker can start on it once it is up.
            try:
                sent = self.sock.send(frame)
            except BlockingIOError:
                sent = 0
            except OSError:  # it died at once (EPIPE, ECONNRESET): its death fails the unit
                return
            if sent < len(frame):
                self.pending.append(frame[sent:])

    def signal_group(self, sig: signal.Signals) -> None:
        # Only while the worker is not reaped: until then its pid, hence its group id, cannot
        # be reused by an unrelated process.
        if self.proc is not None and self.proc.returncode is None:
            if isinstance(self.proc, _Forked) and self.proc.exited():
                return  # the template reaps it: its pid may soon be another process's
            _signal_group(self.proc.pid, sig)
            if sig is signal.SIGKILL and not self.ready.done() and self.proc.pid > 0:
                # a worker just forked by the template may not have made its own group yet
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(self.proc.pid, sig)


class _Channel(asyncio.BufferedProtocol):
    """Our end of a worker's control socket. Frames are decoded as they arrive and handed over
    at once: with a StreamReader, each frame would cost a task wake-up and a turn of the loop.
    The socket is read into a buffer of ours: a plain Protocol gets a new 256 KiB bytes object
    per read, an allocation that costs more than the read itself."""

    def __init__(self, deliver: Callable[[Msg, tuple[object, ...]], None]) -> None:
        self._deliver = deliver
        self._buffer = memoryview(bytearray(_READ_BUFFER))
        self._filled = 0  # bytes of the buffer read and not decoded yet
        self.transport: asyncio.Transport
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer[self._filled :]

    def buffer_updated(self, nbytes: int) -> None:
        buffer = self._buffer
        filled = self._filled + nbytes
        header = proto.HEADER_SIZE
        start = 0
        end = 0
        try:
            while filled - start >= header:
                end = start + header + int.from_bytes(buffer[start : start + header], "big")
                if end > filled:
                    break
                kind, fields = proto.decode(buffer[start + header : end])
                start = end
                self._deliver(kind, fields)
        except Exception:  # a bug of ours: log it; the worker is then ended and replaced
            log.exception("a message from a worker could not be handled")
            self.transport.abort()
            return
        rest = filled - start
        self._filled = rest
        if end - start > len(buffer):  # a frame larger than the buffer: make room for it
            self._buffer = memoryview(bytearray(max(end - start, 2 * len(buffer))))
            self._buffer[:rest] = buffer[start:filled]
        elif rest == 0 and len(buffer) > _READ_BUFFER:  # that large frame is decoded
            self._buffer = memoryview(bytearray(_READ_BUFFER))
        elif rest and start:
            buffer[:rest] = buffer[start:filled]


class LocalExecutor:
    """The Executor of base.py on local processes. All methods run on one asyncio loop; `sink`
    is called on it, never from inside a method call of ours (so the caller may re-enter).

    `on_pgroup(pgid, start_time)` is called when a worker's process group starts (start_time:
    the leader's start time, as watchrun.state.pgroups.process_start_time gives it) and with
    None when it has ended, so the caller can record the groups in flight and end leftovers
    next time (watchrun.state.pgroups.end_groups).

    `pipeline_below`: see Pipelining above; 0 turns it off. `spare`: the warm workers kept
    beyond the free CALL slots (0 for a build with no persistent unit: on a machine of two
    cores a spare starting beside the busy workers slows them down).

    `preload`: workers are forked from a warm template that imports what it returns (see
    template.py and warm.py; an empty list: nothing, but the template's process guarantees
    still hold). None, or a system without fork and /proc: workers are started with exec."""

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
    ) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be at least 1, not {jobs}")
        self._sink = sink
        # the store's object folder: workers pickle a big output into a file there (the
        # DONE / YIELDED data is then its (path, digest), see bigpickle.py); None: as bytes
        self._objects = objects
        self._jobs = jobs
        self._grace = grace
        self._on_pgroup = on_pgroup
        self._env = worker_env()
        self._workers: set[_Worker] = set()
        self._idle: list[_Worker] = []  # warm (or starting) workers without a unit; last = warmest
        self._units: dict[UnitKey, _Unit] = {}
        self._busy_calls = 0  # CALL units submitted and not ended, queued ones included
        self._queued_calls = 0
        # slots beyond one taken by running CALL units asking for several cpus (`resources`):
        # a 2-cpu unit holds its worker and one more slot
        self._extra_slots = 0
        # the GPUs and memory budget of `resources`: what can never fit is refused at once
        self.limits = LocalLimits() if limits is None else limits
        self._pipeline_below = pipeline_below  # 0: no pipelining
        self._spare = spare
        self._typical: dict[str, float] = {}  # task -> recent duration of its CALL units
        self._typical_any: float | None = None  # recent duration of any CALL unit
        self._outboxes: list[_Worker] = []  # workers with frames to send at the end of the turn
        self._closing = False
        self._all_finished: asyncio.Future[None] | None = None
        self._start_error: str | None = None  # set when workers keep failing to start
        self._failed_starts = 0  # in a row
        self._starting = 0  # workers spawned and not ready (nor dead) yet
        self.ready_times: list[float] = []  # seconds from spawn to READY, per worker started
        # the warm template (see _Forked): the one forks go to, and a successor being built
        self._preload = preload if preload is not None and warm_supported() else None
        self._template: TemplateLink | None = None
        self._successor: TemplateLink | None = None
        self._retired_templates: list[TemplateLink] = []  # still with workers of theirs
        self._unsafe: set[str] = set()  # modules a template reported unsafe to fork
        self._template_failures = 0
        self._waiting_fork: list[_Worker] = []  # until the template is ready
        self._forking: dict[int, _Worker] = {}  # token -> worker: asked, no answer yet
        self._forked: dict[int, _Worker] = {}  # pid -> worker: forked, not exited
        self._tokens = itertools.count(1)
        self._stamp = installed_stamp() if self._preload is not None else ()
        self._stamp_checked = time.monotonic()
        if self._preload is not None:
            # the template's imports start now, beside the scheduler's planning, not at the
            # first unit (on the loop's next turn: the caller may still be making the project)
            with contextlib.suppress(RuntimeError):  # no loop running: at the first unit
                asyncio.get_running_loop().call_soon(self._warm_up)

    # -- the Executor protocol ------------------------------------------------------------------

    async def start(self) -> None:
        """Start the pool and wait until every worker is ready. Jobs may be submitted before
        it returns; they wait in the channel until their worker is up."""
        self._top_up()
        while self._start_error is None:
            # a worker that died starting is replaced: wait for the replacements too
            starting = [w.ready for w in self._workers if not w.ready.done()]
            if not starting:
                break
            await asyncio.gather(*starting)
        if self._start_error is not None:
            raise WorkerStartError(self._start_error)

    def free_slots(self) -> int:
        free = self._jobs - self._busy_calls + self._queued_calls - self._extra_slots
        if free > 0 or self._pipeline_below <= 0 or self._queued_calls >= self._jobs:
            return max(free, 0)  # places in queues count once every worker is busy
        now = time.monotonic()
        return sum(1 for w in self._workers if self._can_queue_behind(w, now))

    def submit(self, job: Job) -> None:
        if self._closing:
            raise RuntimeError("the executor is closed")
        if job.key in self._units:
            raise ValueError(f"{job.key.format()} is already running")
        refusal = self.limits.refusal(job)
        if refusal is not None:  # it would wait for ever: it fails now, on the next turn
            event = ExecEvent(job.key, EventKind.FAILED, error=refusal, refused=True)
            asyncio.get_running_loop().call_soon(hand_to_sink, self._sink, event)
            return
        gpu_env = self._gpu_env(job)
        host = None
        if job.mode is Mode.CALL:
            extra = self._slots_of(job) - 1
            if extra and self._busy_calls - self._queued_calls > 0 and (
                    self.free_slots() < extra + 1):
                raise RuntimeError(f"no {extra + 1} free slots for {job.key.format()}")
            self._extra_slots += extra
            if self._busy_calls - self._queued_calls + self._extra_slots - extra >= self._jobs:
                host = self._host() if gpu_env is None else None
                if host is None:
                    raise RuntimeError(
                        f"no free slot for {job.key.format()}: wait for free_slots()"
                    )
            self._busy_calls += 1
        if host is not None:
            unit = _Unit(job, host, time.monotonic(), queued=True)
            host.queued = unit
            self._queued_calls += 1
        else:
            self._check_installed()
            if gpu_env is not None:
                worker = self._spawn(gpu_env)
            else:
                worker = self._idle.pop() if self._idle else self._spawn()
            unit = _Unit(job, worker, time.monotonic())
            worker.unit = unit
        self._units[job.key] = unit
        frame = job_frame(job, self._objects)
        if host is not None:  # it waits anyway: no need to wake the worker now
            self._send_soon(host, frame)
        else:
            unit.worker.send(frame)
        self._top_up()

    def push(self, key: UnitKey, kwargs: dict[str, bytes]) -> None:
        unit = self._persistent(key)
        if unit is not None:
            self._send_soon(unit.worker, proto.encode(Msg.PUSH, kwargs))

    def end_input(self, key: UnitKey) -> None:
        unit = self._persistent(key)
        if unit is not None:
            self._send_soon(unit.worker, proto.encode(Msg.END))

    def cancel(self, key: UnitKey) -> None:
        unit = self._units.get(key)
        if unit is None or unit.cancel_wanted:
            return
        unit.cancel_wanted = True
        if unit.queued:  # not started: a signal now would reach the unit before it
            return
        if not unit.worker.ready.done():
            # the worker is still starting, the unit has not begun: nothing to interrupt
            log.info("cancel %s: its worker was still starting; killed", key.format())
            unit.cancel_signal = signal.SIGKILL.name
            self._retire(unit.worker)
            return
        self._start_escalation(unit)

    def pause(self, key: UnitKey) -> bool:
        unit = self._units.get(key)
        if unit is None or unit.worker.pid is None:
            return False
        if not unit.paused:
            if not unit.queued:  # a queued unit is stopped when it starts
                self._stop(unit.worker)
            unit.paused = True
        return True

    def resume(self, key: UnitKey) -> bool:
        unit = self._units.get(key)
        if unit is None or unit.worker.pid is None:
            return False
        if unit.paused:
            if not unit.queued:
                unit.worker.signal_group(signal.SIGCONT)
            unit.paused = False
        return True

    def running(self) -> list[UnitKey]:
        return list(self._units)

    async def close(self) -> None:
        """Cancel what runs (the full SIGINT -> SIGTERM -> SIGKILL sequence, at most 2 x grace),
        then kill every group and reap every process."""
        self._closing = True
        for key in list(self._units):
            self.cancel(key)
        if self._units:
            self._all_finished = asyncio.get_running_loop().create_future()
            # the escalation ends with SIGKILL after 2 x grace; the margin covers reaping
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._all_finished, 2 * self._grace + 5.0)
        workers = list(self._workers)
        for worker in workers:
            self._retire(worker)
        await asyncio.gather(*(w.task for w in workers if w.task is not None))
        self._close_templates()

    def _close_templates(self) -> None:
        """End every template (with any worker it still has) and reap it."""
        links = [self._template, self._successor, *self._retired_templates]
        self._template = self._successor = None
        self._retired_templates.clear()
        for link in links:
            if link is not None:
                link.close()

    # -- frames that can wait for the end of this turn of the loop ------------------------------

    def _send_soon(self, worker: _Worker, frame: bytes) -> None:
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

    # -- the pool -------------------------------------------------------------------------------

    def _target(self) -> int:
        free = self._jobs - self._busy_calls + self._queued_calls - self._extra_slots
        return max(free, 0) + self._spare

    def _slots_of(self, job: Job) -> int:
        """The slots a CALL job takes: its cpus, but never more than `jobs` (a unit asking
        for more runs alone rather than never)."""
        if job.resources is None:
            return 1
        return min(cpu_slots(job.resources.cpus), self._jobs)

    def _top_up(self) -> None:
        """Keep _target() idle workers. While a worker is starting, the idle ones wait for it
        to be ready: the worker a submitted unit waits for starts sooner without others
        starting beside it (each takes a core for tens of milliseconds)."""
        if self._closing or self._start_error is not None or self._starting:
            return
        while len(self._idle) < self._target():
            self._idle.insert(0, self._spawn())  # at the cold end: warm ones are taken first

    def _check_installed(self) -> None:
        """Every INSTALL_CHECK seconds at most: if libraries were installed or upgraded
        (`pip install` during `dev`), idle workers may hold old versions: they are ended, and
        the next ones start from a template that imports the new ones."""
        if self._preload is None:
            return
        now = time.monotonic()
        if now - self._stamp_checked < INSTALL_CHECK:
            return
        self._stamp_checked = now
        stamp = installed_stamp()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        for worker in [w for w in self._idle if w.stamp != stamp]:
            self._retire(worker)
        if self._template is not None:  # it may hold old versions too: a new one, waited for
            self._template.wanted = []
            self._template.outdated = True
    def _gpu_env(self, job: Job) -> dict[str, str] | None:
        """A unit asking for GPUs: the environment of a worker of its own, started (with
        exec, never forked from the template nor reused) with CUDA_VISIBLE_DEVICES set to the
        GPUs it holds, which CUDA reads once, when a process first uses it."""
        if job.resources is None or not job.resources.gpus:
            return None
        held = self.limits.take(job.key, job.resources.gpus)
        return {**self._env, "CUDA_VISIBLE_DEVICES": ",".join(held)}

    def _spawn(self, env: dict[str, str] | None = None) -> _Worker:
        loop = asyncio.get_running_loop()
        worker = _Worker(ready=loop.create_future())
        # a worker with an environment of its own serves its one unit: a stamp no other
        # has makes _release end it
        worker.stamp = self._stamp if env is None else (-1,)
        self._workers.add(worker)
        self._starting += 1
        try:
            self._start_process(worker, env)
        except OSError as exc:  # could not even spawn it: _live reports it
            worker.stderr_tail += f"{type(exc).__name__}: {exc}".encode()
        worker.task = loop.create_task(self._live(worker))
        return worker

    def _release(self, worker: _Worker) -> None:
        """A worker whose unit ended normally: back to the pool, or ended if there are enough
        (or if libraries were installed since it started: it may hold the old ones)."""
        if self._closing or len(self._idle) >= self._target() or worker.stamp != self._stamp:
            self._retire(worker)
        else:
            self._idle.append(worker)

    def _retire(self, worker: _Worker) -> None:
        """Kill the worker with its whole group; _live reaps it and reports the group ended."""
        worker.retiring = True
        if worker in self._idle:
            self._idle.remove(worker)
        if worker in self._waiting_fork:  # never started: nothing to kill
            self._waiting_fork.remove(worker)
            assert isinstance(worker.proc, _Forked)
            worker.proc.ended(None)
        worker.signal_group(signal.SIGKILL)

    # -- one worker's life ----------------------------------------------------------------------

    async def _live(self, worker: _Worker) -> None:
        returncode: int | None = None
        try:
            if isinstance(worker.proc, _Forked) and not await worker.proc.started:
                return  # never started (the finally reaps what there is)
            self._report_start(worker)
            if worker.sock is not None:
                channel = await self._connect(worker, worker.sock)
                await self._serve(worker, channel)
        except Exception:  # a bug of ours: log it, and still reap and replace the worker
            log.exception("worker %s failed", worker.pid)
        finally:
            returncode = await self._reap(worker)
            self._gone(worker, returncode)

    def _start_process(self, worker: _Worker, env: dict[str, str] | None = None) -> None:
        """Spawn the worker's process, with its control socket (worker.sock), or adopt one
        that `watchrun build` started early (see spawn.py), or ask the warm template for one.
        Our ends of its pipes are on the worker (closed by _reap). `env`: an environment of
        its own (exec, never the template's)."""
        if env is not None:
            started = spawn(env)
        elif self._preload is not None and self._template_failures < _START_ATTEMPTS:
            self._start_forked(worker)
            return
        else:
            started = take_early(self._env) or spawn(self._env)
        worker.spawned = started.spawned
        worker.life_fd = started.life_fd
        worker.stderr_fd = started.stderr_fd
        worker.sock = started.sock
        worker.proc = _Process(started.popen)
        worker.pid = started.popen.pid

    # -- the warm template ---------------------------------------------------------------------

    def _start_forked(self, worker: _Worker) -> None:
        """Have the template fork the worker: now if it is ready, else once it is."""
        ours, theirs = worker_pipes()
        worker.spawned = time.perf_counter()
        worker.sock, worker.life_fd, worker.stderr_fd = ours
        worker.proc = _Forked(theirs)
        link = self._current_template()
        if link is not None and link.ready.done() and link is self._template:
            self._send_fork(link, worker)
        else:
            self._waiting_fork.append(worker)
            if link is None:  # no template could be started: exec
                self._fall_back()
            else:
                asyncio.get_running_loop().call_later(PRELOAD_PATIENCE, self._impatient, worker)

    def _impatient(self, worker: _Worker) -> None:
        """A worker has waited PRELOAD_PATIENCE for the template's imports (one that hangs, on
        a network filesystem, say): it is started with exec instead and imports for itself."""
        if worker in self._waiting_fork and not self._closing:
            log.warning("the warm template is still importing after %.0f s: a worker starts "
                        "without it", PRELOAD_PATIENCE)
            self._waiting_fork.remove(worker)
            waiting, self._waiting_fork = self._waiting_fork, [worker]
            self._fall_back()
            self._waiting_fork = waiting

    def _warm_up(self) -> None:
        if self._template is None and not self._closing and self._template_failures == 0:
            self._current_template()

    def _wanted(self) -> list[tuple[str, str]]:
        assert self._preload is not None
        try:
            wanted = self._preload()
        except Exception:  # the caller's bug: preload nothing rather than fail the build
            log.exception("could not tell which modules to preload")
            wanted = []
        return [(module, version) for module, version in wanted if module not in self._unsafe]

    def _current_template(self) -> TemplateLink | None:
        """The template forks go to; starts one, or a successor if what should be preloaded
        changed. Until the successor is ready the current one serves, unless a library it
        holds has another version now (a `pip install` meanwhile): a worker forked from it
        would run the old code, so forks wait for the successor."""
        wanted = self._wanted()
        if self._template is None:
            self._template = self._start_template(wanted)
            return self._template
        if self._template.wanted != wanted and (
            self._successor is None or self._successor.wanted != wanted
        ):
            if self._successor is not None:
                self._retire_template(self._successor)
            preload_log.info("the modules to preload changed: a new warm template is starting")
            self._successor = self._start_template(wanted)
        if self._successor is not None and (
            self._template.outdated or _outdated(self._template.wanted, wanted)
        ):
            return self._successor
        return self._template

    def _start_template(self, wanted: list[tuple[str, str]]) -> TemplateLink | None:
        try:
            process = take_early_template(self._env) or start_template(self._env)
        except OSError as exc:
            log.warning("the warm template could not be started (%s): workers start cold", exc)
            self._template_failures = _START_ATTEMPTS
            return None
        link = TemplateLink(process, [module for module, _ in wanted], self._on_forked,
                            self._on_exited, self._on_template_gone)
        link.wanted = wanted
        link.ready.add_done_callback(lambda _: self._template_ready(link))
        return link

    def _template_ready(self, link: TemplateLink) -> None:
        if not link.alive or link.restart:
            return  # _on_template_gone deals with it
        self._template_failures = 0
        if link is self._successor:
            self._successor = None
            if self._template is not None:
                self._retire_template(self._template)
            self._template = link
        if link is self._template:
            waiting, self._waiting_fork = self._waiting_fork, []
            for worker in waiting:
                self._send_fork(link, worker)

    def _retire_template(self, link: TemplateLink) -> None:
        """No new forks from it; ended once its last worker has."""
        if link.forks <= 0 and not any(w.proc.link is link for w in self._forking.values()
                                       if isinstance(w.proc, _Forked)):
            link.close()
        else:
            self._retired_templates.append(link)

    def _send_fork(self, link: TemplateLink, worker: _Worker) -> None:
        proc = worker.proc
        assert isinstance(proc, _Forked) and proc.child_fds is not None
        token = next(self._tokens)
        self._forking[token] = worker
        proc.link = link
        if not link.fork(token, list(proc.child_fds)) and not link.alive:
            # gone, and _on_template_gone already ran: do its part
            del self._forking[token]
            self._waiting_fork.append(worker)
            self._fall_back()

    def _on_forked(self, token: int, pid: int) -> None:
        worker = self._forking.pop(token, None)
        if worker is None:
            return
        proc = worker.proc
        assert isinstance(proc, _Forked)
        if not pid:
            worker.stderr_tail += b"the warm template could not fork a worker"
            proc.ended(None)
            return
        worker.pid = pid
        self._forked[pid] = worker
        proc.forked(pid)
        if worker.retiring:  # retired while it was being forked
            worker.signal_group(signal.SIGKILL)

    def _on_exited(self, pid: int, returncode: int) -> None:
        worker = self._forked.pop(pid, None)
        if worker is not None and isinstance(worker.proc, _Forked):
            link = worker.proc.link
            worker.proc.ended(returncode)
            if link in self._retired_templates and link is not None and link.forks <= 0:
                self._retired_templates.remove(link)
                link.close()

    def _on_template_gone(self, link: TemplateLink) -> None:
        """A template ended: its workers with it (those it forked are killed by their guards;
        we kill their groups too). Those it had not forked yet go to the next template."""
        for pid, worker in list(self._forked.items()):
            if isinstance(worker.proc, _Forked) and worker.proc.link is link:
                del self._forked[pid]
                _signal_group(pid, signal.SIGKILL)
                worker.proc.ended(-signal.SIGKILL)
        for token, worker in list(self._forking.items()):
            if isinstance(worker.proc, _Forked) and worker.proc.link is link:
                del self._forking[token]
                if worker.retiring or self._closing:
                    worker.proc.ended(None)
                else:
                    self._waiting_fork.append(worker)
        if link in self._retired_templates:
            self._retired_templates.remove(link)
        if link is self._successor:
            self._successor = None
        link.close()
        if link is self._template:
            self._template = None
            if not self._closing:
                self._replace_template(link)

    def _replace_template(self, link: TemplateLink) -> None:
        """The template forks went to ended: start another for the workers waiting, or exec
        them if templates keep failing."""
        if link.restart:  # a module was not fork-safe: the same without it
            self._unsafe.update(module for module, _ in link.skipped[-1:])
        elif link.importing is not None:  # it died importing this one: the same without it
            self._unsafe.add(link.importing)
            preload_log.warning("not preloaded: %s: the warm template died importing it (%s)",
                                link.importing, death_cause(link.process.popen.poll()))
        else:
            self._template_failures += 1
            tail = link.stderr_tail.decode(errors="replace").strip()
            log.warning("the warm template ended (%s)%s", death_cause(link.process.popen.poll()),
                        f": {tail}" if tail else "")
        if self._waiting_fork:
            if self._template_failures < _START_ATTEMPTS:
                self._current_template()
            else:
                self._fall_back()

    def _fall_back(self) -> None:
        """No template: the workers waiting for one are started with exec instead."""
        waiting, self._waiting_fork = self._waiting_fork, []
        for worker in waiting:
            proc = worker.proc
            assert isinstance(proc, _Forked) and proc.child_fds is not None
            try:
                popen = popen_worker(self._env, proc.child_fds)
            except OSError as exc:
                worker.stderr_tail += f"{type(exc).__name__}: {exc}".encode()
                proc.ended(None)
                continue
            worker.proc = _Process(popen)
            worker.pid = popen.pid
            proc.forked(popen.pid)  # _live goes on, with the new process

    def _stop(self, worker: _Worker) -> None:
        """SIGSTOP the worker's group. A stopped worker cannot end its group if watchrun dies:
        the group is recorded first, for the next run to end it."""
        self._report_start(worker)
        worker.signal_group(signal.SIGSTOP)

    def _report_start(self, worker: _Worker) -> None:
        """Report the worker's group (once). Not right after the spawn: /proc/PID/stat is read
        only after the exec that follows, which it would wait for (up to milliseconds)."""
        if worker.reported or worker.proc is None or self._on_pgroup is None:
            return
        worker.reported = True
        pid = worker.proc.pid
        started = process_start_time(pid)
        # no /proc (not Linux): now is close enough to tell the group from a later one
        self._report_group(pid, time.time() if started is None else started)

    async def _connect(self, worker: _Worker, ours: socket.socket) -> _Channel:
        """Our end of the control socket on the loop; the frames sent meanwhile go out."""
        channel = _Channel(functools.partial(self._on_message, worker))
        try:
            await asyncio.get_running_loop().create_connection(lambda: channel, sock=ours)
        except BaseException:
            ours.close()
            raise
        worker.channel = channel
        for frame in worker.pending:
            channel.transport.write(frame)
        worker.pending.clear()
        return channel

    async def _serve(self, worker: _Worker, channel: _Channel) -> None:
        assert worker.proc is not None
        drain = asyncio.ensure_future(self._keep_stderr_tail(worker))
        watch = asyncio.ensure_future(self._watch_exit(worker))
        try:
            await channel.closed
        finally:
            watch.cancel()
            # The channel closed: the worker is dead or broken. End its group (if it has
            # exited already, _watch_exit did); the stderr pipe closes when the group is dead
            # (a process that left the group could keep it open: do not wait for it long).
            worker.signal_group(signal.SIGKILL)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(drain, 2.0)

    async def _keep_stderr_tail(self, worker: _Worker) -> None:
        """Keep the end of what the worker itself wrote to stderr (while no unit runs, that
        is only what explains a failed start or a crash)."""
        assert worker.stderr_fd is not None
        stream = asyncio.StreamReader()
        pipe = os.fdopen(worker.stderr_fd, "rb", buffering=0)
        worker.stderr_fd = None  # the transport owns it now
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(stream), pipe
        )
        try:
            tail = worker.stderr_tail
            while chunk := await stream.read(4096):
                tail += chunk
                del tail[:-_STDERR_TAIL]
        finally:
            transport.close()

    async def _watch_exit(self, worker: _Worker) -> None:
        """The channel alone does not tell a death: a process the task forked holds a copy of
        the worker's end. So when the worker exits, end its group (forked children too), and
        if something outside the group still holds the channel, stop listening after a while."""
        assert worker.proc is not None and worker.channel is not None
        await worker.proc.wait()
        # the leader is reaped; its group id cannot be reused while members remain
        _signal_group(worker.proc.pid, signal.SIGKILL)
        await asyncio.sleep(_CHANNEL_LINGER)
        worker.channel.transport.abort()

    async def _reap(self, worker: _Worker) -> int | None:
        returncode = None
        if worker.proc is not None:
            worker.signal_group(signal.SIGKILL)  # its subprocesses too
            returncode = await worker.proc.wait()
            if worker.reported:
                self._report_group(worker.proc.pid, None)
        if worker.channel is not None:
            worker.channel.transport.close()
            await worker.channel.closed
        elif worker.sock is not None:
            worker.sock.close()
        for fd in (worker.life_fd, worker.stderr_fd):
            if fd is not None:
                os.close(fd)
        worker.life_fd = worker.stderr_fd = None
        return returncode

    def _report_group(self, pgid: int, start_time: float | None) -> None:
        if self._on_pgroup is None:
            return
        try:
            self._on_pgroup(pgid, start_time)
        except Exception:  # the caller's bug must not leave a process unreaped
            log.exception("on_pgroup failed for process group %d", pgid)

    def _gone(self, worker: _Worker, returncode: int | None) -> None:
        self._workers.discard(worker)
        if worker in self._idle:
            self._idle.remove(worker)
        cause = death_cause(returncode)
        if not worker.ready.done():
            worker.ready.set_result(None)
            self._starting -= 1
            stderr = worker.stderr_tail.decode(errors="replace").strip()
            cause = f"the worker process failed to start ({cause}): {stderr}"
            if not worker.retiring and not self._closing:
                # once may be bad luck (killed from outside); again and again is a broken
                # environment: stop spawning and say why
                self._failed_starts += 1
                if self._failed_starts >= _START_ATTEMPTS:
                    self._start_error = cause
                    log.error("%s", cause)
        self._move_queued(worker)
        unit = worker.unit
        worker.unit = None
        if unit is None or unit.finished:
            if not worker.retiring and not self._closing and self._start_error is None:
                log.warning("idle worker %s died (%s); replacing it", worker.pid, cause)
            self._top_up()
            return
        self._end_unit(unit)
        self._top_up()
        duration = time.monotonic() - unit.submitted
        if unit.cancel_signal is not None:
            self._emit(unit, EventKind.CANCELLED, signal=unit.cancel_signal, duration=duration)
        else:
            log.warning("%s: worker %s died (%s)", unit.job.key.format(), worker.pid, cause)
            self._emit(unit, EventKind.DIED, error=cause, duration=duration)

    # -- messages from a worker -----------------------------------------------------------------

    def _on_message(self, worker: _Worker, kind: Msg, fields: tuple[object, ...]) -> None:
        if kind is Msg.READY:
            self._ready(worker)
            return
        unit = worker.unit
        if unit is None or unit.finished:
            return
        # the most frequent first: a generator's yields, a unit's start, its end
        if kind is _YIELDED:
            self._emit(unit, EventKind.YIELDED, fields[0])  # type: ignore[arg-type]
        elif kind is _STARTED:
            self._emit(unit, EventKind.STARTED)
        elif kind in _TERMINAL:
            self._settle(worker, unit, kind, fields)
        elif kind is _PUSHED:
            self._emit(unit, EventKind.PUSHED)

    def _ready(self, worker: _Worker) -> None:
        self.ready_times.append(time.perf_counter() - worker.spawned)
        self._failed_starts = 0
        worker.ready.set_result(None)
        self._starting -= 1
        self._top_up()

    def _settle(self, worker: _Worker, unit: _Unit, kind: Msg, fields: tuple[object, ...]) -> None:
        payload, duration = fields
        assert isinstance(duration, float)
        worker.unit = None
        self._end_unit(unit)
        if kind is Msg.DONE and unit.job.mode is Mode.CALL:
            typical = self._typical.get(unit.job.key.task, duration)
            self._typical[unit.job.key.task] = (typical + duration) / 2
            recent = duration if self._typical_any is None else self._typical_any
            self._typical_any = (recent + duration) / 2
        if unit.cancel_signal is not None:
            # signals were sent: the worker may hold a pending one (or may even have taken the
            # queued unit's start for it); start afresh, and the queued unit elsewhere
            self._move_queued(worker)
            self._retire(worker)
        else:
            if unit.paused:  # paused just as it finished
                worker.signal_group(signal.SIGCONT)
            if worker.queued is not None:
                self._promote(worker)
            else:
                self._release(worker)
        self._top_up()
        if kind is Msg.DONE:
            self._emit(unit, EventKind.DONE, data=payload, duration=duration)  # type: ignore[arg-type]
        elif kind is Msg.CANCELLED and unit.cancel_signal is not None:
            self._emit(unit, EventKind.CANCELLED, signal=unit.cancel_signal, duration=duration)
        else:  # FAILED, or a KeyboardInterrupt nobody asked for: the task raised it
            self._emit(unit, EventKind.FAILED, error=str(payload), duration=duration)

    def _end_unit(self, unit: _Unit) -> None:
        unit.finished = True
        if unit.ended is not None:
            unit.ended.set_result(None)  # the escalation stops
        del self._units[unit.job.key]
        self.limits.give_back(unit.job.key)
        if unit.job.mode is Mode.CALL:
            self._busy_calls -= 1
            self._extra_slots -= self._slots_of(unit.job) - 1
        if unit.queued:
            self._queued_calls -= 1
            unit.queued = False
        if not self._units and self._all_finished is not None and not self._all_finished.done():
            self._all_finished.set_result(None)

    def _emit(
        self,
        unit: _Unit,
        kind: EventKind,
        data: bytes | None = None,
        *,
        error: str | None = None,
        signal: str | None = None,
        duration: float = 0.0,
    ) -> None:
        event = ExecEvent(unit.job.key, kind, data, error, signal, duration, unit.worker.pid)
        hand_to_sink(self._sink, event)

    # -- pipelining -----------------------------------------------------------------------------

    def _can_queue_behind(self, worker: _Worker, now: float, patient: bool = False) -> bool:
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
        if typical is None and self._jobs == 1:
            # a task not run yet (every task, in a first build) while the others were short:
            # with one slot the job would wait for this worker anyway, and queued it starts
            # without the round trip through the scheduler
            typical = self._typical_any
        below = self._pipeline_below
        if typical is None or typical >= below:
            return False
        return patient or now - unit.submitted < typical + below

    def _host(self) -> _Worker | None:
        """The worker to queue a CALL job behind: the one most likely to be free first."""
        if self._pipeline_below <= 0:
            return None
        now = time.monotonic()
        host = self._first_free(now, patient=False)
        # free_slots() said yes a moment ago: keep its word
        return host if host is not None else self._first_free(now, patient=True)

    def _first_free(self, now: float, patient: bool) -> _Worker | None:
        """Of the workers a job may be queued behind, the one most likely to be free first."""
        best = None
        for worker in self._workers:
            if self._can_queue_behind(worker, now, patient) and (
                best is None or _started(worker) < _started(best)
            ):
                best = worker
        return best

    def _promote(self, worker: _Worker) -> None:
        """The worker's unit ended normally: it goes on with the queued one."""
        unit = worker.queued
        assert unit is not None
        worker.queued = None
        worker.unit = unit
        unit.queued = False
        self._queued_calls -= 1
        unit.submitted = time.monotonic()
        if unit.cancel_wanted:
            self._start_escalation(unit)
        elif unit.paused:
            self._stop(worker)

    def _move_queued(self, worker: _Worker) -> None:
        """The worker is retired or dead: its queued unit (not started) goes to another one,
        or, if it was cancelled meanwhile or we are closing, ends cancelled."""
        unit = worker.queued
        if unit is None:
            return
        worker.queued = None
        if unit.cancel_wanted or self._closing:
            self._end_unit(unit)
            asyncio.get_running_loop().call_soon(
                functools.partial(self._emit, unit, EventKind.CANCELLED, signal="SIGINT")
            )
            return
        unit.queued = False
        self._queued_calls -= 1
        target = self._idle.pop() if self._idle else self._spawn()
        target.unit = unit
        unit.worker = target
        unit.submitted = time.monotonic()
        target.send(job_frame(unit.job, self._objects))
        if unit.paused:  # as pause() does, only if the worker has a process yet
            unit.paused = target.pid is not None
            self._stop(target)

    # -- cancel ---------------------------------------------------------------------------------

    def _start_escalation(self, unit: _Unit) -> None:
        loop = asyncio.get_running_loop()
        ended = unit.ended = loop.create_future()
        unit.escalation = loop.create_task(
            escalate(
                functools.partial(self._send_cancel_signal, unit),
                functools.partial(asyncio.shield, ended),
                self._grace,
            )
        )

    def _send_cancel_signal(self, unit: _Unit, sig: signal.Signals) -> None:
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

    def _persistent(self, key: UnitKey) -> _Unit | None:
        unit = self._units.get(key)
        if unit is not None and unit.job.mode not in (Mode.COLLECT, Mode.INNER_GENERATE):
            raise ValueError(f"{key.format()} is a {unit.job.mode.value} unit: it takes no input")
        return unit


# ---------------------------------------------------------------------------------------------


def _outdated(held: list[tuple[str, str]], wanted: list[tuple[str, str]]) -> bool:
    """Whether a template that preloaded `held` has a module whose version is not the one
    wanted now (one it lacks is only imported by the worker itself: not stale)."""
    versions = dict(held)
    return any(versions.get(module, version) != version for module, version in wanted)


def _started(worker: _Worker) -> float:
    return worker.unit.submitted if worker.unit is not None else 0.0


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    if pgid <= 0:  # a worker not forked yet: 0 would be our own group
        return
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        log.warning("not allowed to send %s to process group %d", sig.name, pgid)
