"""The worker's end of the control channel: frames to the executor, in order, never cut by a
cancel; a unit's STARTED sent with its first frame; PUSHED answers grouped."""

from __future__ import annotations

import _thread
import time

from watchrun.executors import protocol as proto
from watchrun.executors.protocol import Msg
from watchrun.executors.worker_interrupts import uninterrupted

_PUSHED = proto.encode(Msg.PUSHED)
_STARTED = proto.encode(Msg.STARTED)
ACK_DELAY = 0.005  # seconds a PUSHED answer may wait to go with the next ones


class WorkerChannel:
    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.reader = proto.FrameReader(fd)
        # Frames are written by the main thread, and a unit's lone STARTED by the ticker's.
        self._write_lock = _thread.allocate_lock()
        self.unannounced = False  # the running unit's STARTED is not sent yet
        self._acks = 0  # PUSHED answers not sent yet
        self._acks_since = 0.0  # time.monotonic() of the first of them
        self.push_started = 0.0  # time.monotonic() when the push being run arrived
        # the running job's label, and the YIELDED frames it may still send before it waits
        # for CREDIT (None: no limit)
        self._label = ""
        self._credit: int | None = None

    def limit_yields(self, label: str, credit: int | None) -> None:
        """A job starts: `credit` YIELDED frames may go before the executor grants more."""
        self._label = label
        self._credit = credit

    def yielded(self) -> None:
        """One YIELDED frame was sent: with no credit left, wait for CREDIT (keeping what
        else comes meanwhile, a PUSH, END or the next JOB, for later). A cancel raises
        KeyboardInterrupt here, as in any wait for the executor."""
        if self._credit is None:
            return
        self._credit -= 1
        reader = self.reader
        while self._credit <= 0:
            kind, fields = reader.read_new()
            if kind is Msg.CREDIT:
                if fields[0] == self._label:  # a late grant for an ended job counts for none
                    self._credit += fields[1]  # type: ignore[operator]
            else:
                reader.kept.append((kind, fields))

    def send(self, kind: Msg, *fields: object) -> None:
        data = proto.encode(kind, *fields)
        if self._acks:  # in order
            data = self._acks * _PUSHED + data
            self._acks = 0
        uninterrupted(self.put, data)

    def put(self, data: bytes) -> None:
        """Write frames, after the running unit's STARTED if it is not sent yet (b"": that
        STARTED alone)."""
        with self._write_lock:
            if self.unannounced:
                self.unannounced = False
                data = _STARTED + data
            if data:
                proto.write_all(self._fd, data)

    def ack(self) -> None:
        """Answer a push with PUSHED. While more pushes are already here and take little
        time, the answers wait (about ACK_DELAY at most) and go together, in one write: one
        wake-up of the executor instead of one per push."""
        now = time.monotonic()
        if not self._acks:
            self._acks_since = now
        self._acks += 1
        if (
            not self.reader.has_message()
            or now - self._acks_since >= ACK_DELAY
            or now - self.push_started >= ACK_DELAY  # slow pushes: the next one would be too
        ):
            acks = self._acks
            self._acks = 0
            uninterrupted(self.put, acks * _PUSHED)
