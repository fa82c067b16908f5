"""Messages between the local executor and its worker processes.

A frame is a 4-byte big-endian length, then a pickle of a tuple `(kind, *fields)` where kind is
the int value of a `Msg`. The worker imports this module, so it stays light: no asyncio, no
dataclasses, no typing machinery at run time.

Parent -> worker:  JOB(*JobSpec fields)  PUSH(kwargs)  END()
Worker -> parent:  READY(pid)  STARTED()  YIELDED(data)  PUSHED()
                   DONE(data, duration, claims)  FAILED(error, duration)
                   CANCELLED(error, duration)

`data` is a pickle's bytes, or, for a big one when the job names an object folder, the
(path, digest) of a temporary file holding it there (see bigpickle.py). `claims`: the worker's
hashes of the declared outputs it just wrote, as (path, size, mtime_ns, inode, ctime_ns, blake3)
tuples (worker_outputs.py).

A unit's STARTED is written together with its first other frame (for a short unit, its DONE),
or alone once the unit has run a while without sending anything (worker.START_NOTICE).
"""

from __future__ import annotations

import enum
import os
from collections import deque

try:  # the C pickler directly: `pickle` itself imports `re`, which a worker's start avoids
    from _pickle import Pickler as Pickler
    from _pickle import dumps as dumps
    from _pickle import loads as loads
except ImportError:  # pragma: no cover - only interpreters without the accelerator
    from pickle import Pickler as Pickler
    from pickle import dumps as dumps
    from pickle import loads as loads

# Every pickle that crosses the boundary (outputs, yields, frames) uses this protocol, so the
# same value always gives the same bytes, whichever executor produced it.
PICKLE_PROTOCOL = 5

HEADER_SIZE = 4
_READ_CHUNK = 1 << 16

# The values of base.Mode, repeated here because the worker does not import base.py (it is kept
# to the modules every job needs). tests/test_worker.py checks they agree.
CALL = "call"
GENERATE = "generate"
COLLECT = "collect"
INNER_GENERATE = "inner_generate"


class Msg(enum.IntEnum):
    JOB = 1
    PUSH = 2
    END = 3
    CREDIT = 4  # (job label, n): n more YIELDED frames of that job may be sent
    READY = 10
    STARTED = 11
    YIELDED = 12
    PUSHED = 13
    DONE = 14
    FAILED = 15
    CANCELLED = 16


class JobSpec:
    """What a worker needs to run one job: plain values only (str, bytes, ints, tuples).

    The one wire form of a job: fields() is what a JOB frame carries (and what the Ray relay
    ships), JobSpec(*fields) reads it back. job_wire.job_spec makes it from a base.Job."""

    __slots__ = (
        "chain",
        "credit",
        "ctx_iter",
        "ctx_name",
        "ctx_root",
        "follows",
        "fresh_log",
        "gather_kwargs",
        "kwargs",
        "label",
        "log_path",
        "mode",
        "objects",
        "outputs",
        "root",
        "sources",
        "start",
        "task",
    )

    def __init__(
        self,
        label: str,
        task: str,
        mode: str,
        root: str,
        chain: list[tuple[str, str]],
        kwargs: dict[str, bytes],
        log_path: str,
        start: int | None,
        gather_kwargs: dict[str, bytes],
        ctx_name: str,
        ctx_root: str,
        ctx_iter: tuple[int, ...],
        fresh_log: bool = False,
        sources: dict[str, bytes] | None = None,
        objects: str | None = None,
        outputs: tuple[str, ...] | None = None,
        follows: tuple[object, ...] | None = None,
        credit: int | None = None,
    ) -> None:
        self.label = label  # the unit as users see it: "task[3]"
        self.task = task
        self.mode = mode
        self.root = root
        self.chain = chain  # (module file, package): root ancestor first, the task last
        self.kwargs = kwargs
        self.log_path = log_path
        self.start = start
        self.gather_kwargs = gather_kwargs
        self.ctx_name = ctx_name
        self.ctx_root = ctx_root
        self.ctx_iter = ctx_iter
        self.fresh_log = fresh_log  # truncate the log instead of appending to it
        # chain file -> its source, shipped with the job (Ray: the node runs the code the
        # driver read); None: the worker reads the files
        self.sources = sources
        # the store's object folder: a big output or yield is pickled into a file there
        # (bigpickle.py); None: always as bytes in the frame (Ray: a node may not see it)
        self.objects = objects
        # the declared outputs, absolute (None: the worker reads them from the task's header)
        self.outputs = outputs
        # queued behind another job on this worker: the fields of a follow.Follow, which
        # say whether it runs once that one ends (None: it runs)
        self.follows = follows
        # a generator's YIELDED frames the executor may have unread: past them, the worker
        # waits for CREDIT before it takes the next value (None: no limit; Ray's relay reads
        # every frame at once)
        self.credit = credit

    def fields(self) -> tuple[object, ...]:
        """The JOB frame's fields: the wire form (plain values, no class to import)."""
        return (
            self.label,
            self.task,
            self.mode,
            self.root,
            self.chain,
            self.kwargs,
            self.log_path,
            self.start,
            self.gather_kwargs,
            self.ctx_name,
            self.ctx_root,
            self.ctx_iter,
            self.fresh_log,
            self.sources,
            self.objects,
            self.outputs,
            self.follows,
            self.credit,
        )


def encode(kind: Msg, *fields: object) -> bytes:
    body = dumps((int(kind), *fields), PICKLE_PROTOCOL)
    return len(body).to_bytes(HEADER_SIZE, "big") + body


def body_size(header: bytes | bytearray) -> int:
    return int.from_bytes(header, "big")


_BY_VALUE = {kind.value: kind for kind in Msg}  # read for every frame


def decode(body: bytes | bytearray | memoryview) -> tuple[Msg, tuple[object, ...]]:
    message = loads(body)
    return _BY_VALUE[message[0]], message[1:]


class FrameReader:
    """Blocking frame reader over a file descriptor (the worker's side of the socket)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = bytearray()
        # messages read ahead of their turn (while a generator waited for CREDIT): read()
        # gives them first, in order
        self.kept: deque[tuple[Msg, tuple[object, ...]]] = deque()

    def has_message(self) -> bool:
        """A whole message is already read: read() will not wait."""
        if self.kept:
            return True
        buffer = self._buffer
        return len(buffer) >= HEADER_SIZE and len(buffer) >= HEADER_SIZE + body_size(
            buffer[:HEADER_SIZE]
        )

    def read(self) -> tuple[Msg, tuple[object, ...]]:
        """The next message. Raises EOFError when the other side closed the channel."""
        if self.kept:
            return self.kept.popleft()
        return self.read_new()

    def read_new(self) -> tuple[Msg, tuple[object, ...]]:
        """The next message from the channel itself (not one kept)."""
        buffer = self._buffer
        while True:
            if len(buffer) >= HEADER_SIZE:
                end = HEADER_SIZE + body_size(buffer[:HEADER_SIZE])
                if len(buffer) >= end:
                    body = bytes(buffer[HEADER_SIZE:end])
                    del buffer[:end]
                    return decode(body)
                want = end - len(buffer)
            else:
                want = HEADER_SIZE
            chunk = os.read(self._fd, max(want, _READ_CHUNK))
            if not chunk:
                raise EOFError("the control channel was closed")
            buffer += chunk


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
