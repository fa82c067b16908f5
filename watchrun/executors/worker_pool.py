"""The local executor's worker processes, from spawn to reaping.

Each worker is in a session and process group of its own, so a unit's group is its worker's
group while it runs and the unit's subprocesses are in it too: signals sent to the group reach
all of them. Control goes over a socketpair (frames, see protocol.py), not stdin/stdout, which
belong to the task. A second descriptor, the "life pipe", is held open only by this process:
when it closes (even by kill -9), each worker kills its own group.

A worker a unit needs is spawned at once (spawn()) and its job written to it then: the unit
starts even if the caller keeps the loop busy for a while. Idle workers (the free slots, the
spares) are spawned once no other worker is starting, not beside the ones units wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import time
from collections.abc import Callable

from watchrun.executors.base import death_cause
from watchrun.executors.protocol import Msg
from watchrun.executors.spawn import spawn
from watchrun.executors.warm_forks import WarmTemplates
from watchrun.executors.worker_handle import ControlChannel, WorkerHandle
from watchrun.executors.worker_process import SpawnedProcess, TemplateForkedProcess, signal_group
from watchrun.state.pgroups import process_start_time

log = logging.getLogger("watchrun.executor")

_STDERR_TAIL = 4000  # bytes of a worker's own stderr kept to explain a failed start
_CHANNEL_LINGER = 2.0  # seconds to read what a dead worker sent before its channel is closed
START_ATTEMPTS = 3  # workers in a row that die before they are ready: give up

PgroupCallback = Callable[[int, "float | None"], None]
MessageCallback = Callable[[WorkerHandle, Msg, tuple[object, ...]], None]
GoneCallback = Callable[[WorkerHandle, str], None]


class WorkerPool:
    """The workers and the idle ones among them (`idle`, the warmest last).

    `on_message(worker, kind, fields)` gets every frame a worker sends (READY included: it
    calls ready()); `on_gone(worker, cause)` is called once a worker is reaped, with why it
    ended. `idle_target()`: how many idle workers to keep. `on_pgroup`: see LocalExecutor."""

    def __init__(
        self,
        env: dict[str, str],
        templates: WarmTemplates,
        on_message: MessageCallback,
        on_gone: GoneCallback,
        idle_target: Callable[[], int],
        on_pgroup: PgroupCallback | None,
    ) -> None:
        self.env = env
        self.templates = templates
        self._on_message = on_message
        self._on_gone = on_gone
        self._idle_target = idle_target
        self._on_pgroup = on_pgroup
        self.workers: set[WorkerHandle] = set()
        self.idle: list[WorkerHandle] = []  # warm (or starting) workers without a unit
        self.closing = False
        self.start_error: str | None = None  # set when workers keep failing to start
        self._failed_starts = 0  # in a row
        self._starting = 0  # workers spawned and not ready (nor dead) yet
        self.ready_times: list[float] = []  # seconds from spawn to READY, per worker started

    async def wait_started(self) -> None:
        """Wait until every worker is ready, or workers keep failing to start."""
        while self.start_error is None:
            # a worker that died starting is replaced: wait for the replacements too
            starting = [w.ready for w in self.workers if not w.ready.done()]
            if not starting:
                break
            await asyncio.gather(*starting)

    def top_up(self) -> None:
        """Keep idle_target() idle workers. While a worker is starting, the idle ones wait for
        it to be ready: the worker a submitted unit waits for starts sooner without others
        starting beside it (each takes a core for a while)."""
        if self.closing or self.start_error is not None or self._starting:
            return
        while len(self.idle) < self._idle_target():
            self.idle.insert(0, self.spawn())  # at the cold end: warm ones are taken first

    def take(self) -> WorkerHandle:
        """The warmest idle worker, or a new one."""
        return self.idle.pop() if self.idle else self.spawn()

    def spawn(self, env: dict[str, str] | None = None) -> WorkerHandle:
        """A new worker; `env`: an environment of its own (exec, never forked nor reused)."""
        loop = asyncio.get_running_loop()
        worker = WorkerHandle(ready=loop.create_future())
        # a worker with an environment of its own serves its one unit: a stamp no other
        # has makes release() end it
        worker.stamp = self.templates.stamp if env is None else (-1,)
        self.workers.add(worker)
        self._starting += 1
        try:
            self._start_process(worker, env)
        except OSError as exc:  # could not even spawn it: _live reports it
            worker.stderr_tail += f"{type(exc).__name__}: {exc}".encode()
        worker.task = loop.create_task(self._live(worker))
        return worker

    def release(self, worker: WorkerHandle) -> None:
        """A worker whose unit ended normally: back to the pool, or ended if there are enough
        (or if libraries were installed since it started: it may hold the old ones)."""
        if (
            self.closing
            or len(self.idle) >= self._idle_target()
            or worker.stamp != self.templates.stamp
        ):
            self.retire(worker)
        else:
            self.idle.append(worker)

    def retire(self, worker: WorkerHandle) -> None:
        """Kill the worker with its whole group; _live reaps it and reports the group ended."""
        worker.retiring = True
        if worker in self.idle:
            self.idle.remove(worker)
        self.templates.forget(worker)
        worker.signal_group(signal.SIGKILL)

    def stop(self, worker: WorkerHandle) -> None:
        """SIGSTOP the worker's group. A stopped worker cannot end its group if watchrun dies:
        the group is recorded first, for the next run to end it."""
        self._report_start(worker)
        worker.signal_group(signal.SIGSTOP)

    def ready(self, worker: WorkerHandle) -> None:
        """The worker said READY."""
        self.ready_times.append(time.perf_counter() - worker.spawned)
        self._failed_starts = 0
        worker.ready.set_result(None)
        self._starting -= 1
        self.top_up()

    def check_installed(self) -> None:
        """If libraries were installed or upgraded, idle workers may hold old versions: they
        are ended."""
        if self.templates.installed_changed(all(w.unit is None for w in self.workers)):
            for worker in [w for w in self.idle if w.stamp != self.templates.stamp]:
                self.retire(worker)

    async def close(self) -> None:
        """Kill every worker with its group, reap them all, end the templates."""
        self.closing = True
        workers = list(self.workers)
        for worker in workers:
            self.retire(worker)
        await asyncio.gather(*(w.task for w in workers if w.task is not None))
        self.templates.close()

    # -- one worker's life ----------------------------------------------------------------------

    async def _live(self, worker: WorkerHandle) -> None:
        returncode: int | None = None
        try:
            proc = worker.proc
            if isinstance(proc, TemplateForkedProcess) and not await proc.started:
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

    def _start_process(self, worker: WorkerHandle, env: dict[str, str] | None = None) -> None:
        """Spawn the worker's process, with its control socket (worker.sock), or adopt one
        that `watchrun build` started early (see spawn.py), or ask the warm template for one.
        Our ends of its pipes are on the worker (closed by _reap)."""
        if env is not None:
            started = spawn(env)
        elif self.templates.usable():
            self.templates.start(worker)
            return
        else:
            started = self.templates.early.take(self.env) or spawn(self.env)
        worker.spawned = started.spawned
        worker.life_fd = started.life_fd
        worker.stderr_fd = started.stderr_fd
        worker.sock = started.sock
        worker.proc = SpawnedProcess(started.popen)
        worker.pid = started.popen.pid

    def _report_start(self, worker: WorkerHandle) -> None:
        """Report the worker's group (once). Not right after the spawn: /proc/PID/stat is read
        only after the exec that follows, which it would wait for."""
        if worker.reported or worker.proc is None or self._on_pgroup is None:
            return
        worker.reported = True
        pid = worker.proc.pid
        started = process_start_time(pid)
        # no /proc (not Linux): now is close enough to tell the group from a later one
        self._report_group(pid, time.time() if started is None else started)

    async def _connect(self, worker: WorkerHandle, ours: socket.socket) -> ControlChannel:
        """Our end of the control socket on the loop; the frames sent meanwhile go out."""
        channel = ControlChannel(functools.partial(self._on_message, worker))
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

    async def _serve(self, worker: WorkerHandle, channel: ControlChannel) -> None:
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

    async def _keep_stderr_tail(self, worker: WorkerHandle) -> None:
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

    async def _watch_exit(self, worker: WorkerHandle) -> None:
        """The channel alone does not tell a death: a process the task forked holds a copy of
        the worker's end. So when the worker exits, end its group (forked children too), and
        if something outside the group still holds the channel, stop listening after a while."""
        assert worker.proc is not None and worker.channel is not None
        await worker.proc.wait()
        # the leader is reaped; its group id cannot be reused while members remain
        signal_group(worker.proc.pid, signal.SIGKILL)
        await asyncio.sleep(_CHANNEL_LINGER)
        worker.channel.transport.abort()

    async def _reap(self, worker: WorkerHandle) -> int | None:
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

    def _gone(self, worker: WorkerHandle, returncode: int | None) -> None:
        self.workers.discard(worker)
        if worker in self.idle:
            self.idle.remove(worker)
        cause = death_cause(returncode)
        if not worker.ready.done():
            worker.ready.set_result(None)
            self._starting -= 1
            stderr = worker.stderr_tail.decode(errors="replace").strip()
            cause = f"the worker process failed to start ({cause}): {stderr}"
            if not worker.retiring and not self.closing:
                # once may be bad luck (killed from outside); again and again is a broken
                # environment: stop spawning and say why
                self._failed_starts += 1
                if self._failed_starts >= START_ATTEMPTS:
                    self.start_error = cause
                    log.error("%s", cause)
        self._on_gone(worker, cause)
