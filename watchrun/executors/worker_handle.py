"""The local executor's records: a Unit (a submitted job, from submit() to its last event), a
WorkerHandle (one worker process, from its spawn to its reaping) and the ControlChannel, our
end of a worker's control socket on the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable

from watchrun.executors import protocol as proto
from watchrun.executors.base import Job
from watchrun.executors.protocol import Msg
from watchrun.executors.worker_process import SpawnedProcess, TemplateForkedProcess, signal_group

log = logging.getLogger("watchrun.executor")

_READ_BUFFER = 1 << 16  # bytes read from a worker's socket at once (grows for larger frames)


class Unit:
    """A submitted job, from submit() to its last event. (Plain slotted classes in the
    executors, not dataclasses: they are on the start-up path of every command.)"""

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

    def __init__(
        self, job: Job, worker: WorkerHandle, submitted: float, queued: bool = False
    ) -> None:
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


class WorkerHandle:
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
        self.proc: SpawnedProcess | TemplateForkedProcess | None = None
        self.pid: int | None = None  # the process's, once spawned (read with every event)
        self.sock: socket.socket | None = None  # our end of the control socket
        self.channel: ControlChannel | None = None  # the socket on the loop, once connected
        self.pending: list[bytes] = []  # frames sent before the channel is up
        self.outbox: list[bytes] = []  # frames to send at the end of the turn
        self.unit: Unit | None = None  # the unit it runs (or will run first)
        self.queued: Unit | None = None  # a CALL unit sent to it to run next
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
            # start of a build the scheduler is still planning): the socket takes the frame
            # now, so that the worker can start on it once it is up.
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
            if isinstance(self.proc, TemplateForkedProcess) and self.proc.exited():
                return  # the template reaps it: its pid may soon be another process's
            signal_group(self.proc.pid, sig)
            if sig is signal.SIGKILL and not self.ready.done() and self.proc.pid > 0:
                # a worker just forked by the template may not have made its own group yet
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(self.proc.pid, sig)


class ControlChannel(asyncio.BufferedProtocol):
    """Our end of a worker's control socket. Frames are decoded as they arrive and handed over
    at once, in the turn of the loop that read them (a StreamReader would wake a task per
    frame). The socket is read into a buffer of ours, reused, rather than a new bytes object
    per read."""

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
