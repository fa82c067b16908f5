"""Pickling a value that may be big, in the worker: a small pickle stays bytes (it travels in
the DONE / YIELDED frame as before); once it reaches BIG_PICKLE bytes it goes on straight into a
temporary file in the store's object folder, hashed (blake3) while written, and only the file's
path and digest travel. Neither the worker nor watchrun then holds the pickle in memory beside
the value: a 500 MB output costs its value plus a frame or so, not three copies.

The temporary file is named as the store names its own (objects.TEMP_PREFIX), so the store's
clean-up on taking its lock removes one that a killed worker left; the driver adopts (renames)
a complete one, or the worker deletes it when the unit fails after all.

Kept light (the worker imports it): blake3 is imported only when a pickle turns out big.
"""

from __future__ import annotations

import contextlib
import errno
import os

from watchrun.paths import OBJECT_TEMP_PREFIX

TYPE_CHECKING = False  # the worker starts without `typing` (see worker.py)
if TYPE_CHECKING:
    from typing import Any

# Store.INLINE_LIMIT, repeated: the worker must not import the store (sqlite3). A pickle this
# big would be a file in the store anyway. tests/test_bigpickle.py checks they agree.
BIG_PICKLE = 64 * 1024
TEMP_PREFIX = OBJECT_TEMP_PREFIX

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


# (path, digest) of a pickle written to a temporary file in the object folder: a plain tuple
# on the wire, told from a small pickle's bytes by its type
StoredPickle = tuple[str, str]


def write_error(exc: OSError) -> str:
    """The user's message for a failed write (as objects.describe_write_error)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on device writing its output"
    if exc.errno == errno.EROFS:
        return "the state folder is on a read-only file system: cannot write its output"
    return f"cannot write its output: {exc.strerror or exc}"


class SinkError(Exception):
    """The pickle could not be written (its message is the user's: `write_error`)."""


class PickleSink:
    """A file object for `pickle.Pickler`: bytes in memory until BIG_PICKLE, then a file."""

    __slots__ = ("_buffer", "_fd", "_folder", "_hasher", "path")

    def __init__(self, folder: str) -> None:
        self._folder = folder
        self._buffer: bytearray | None = bytearray()
        self._fd = -1
        self._hasher: Any = None
        self.path = ""

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        buffer = self._buffer
        if buffer is not None:
            if len(buffer) + len(view) < BIG_PICKLE:
                buffer += view
                return len(view)
            # big: what came so far goes first, then this piece as it is (pickle hands a
            # big bytes object over whole; copying it into the buffer would double it)
            try:
                self._open()
            except OSError as exc:
                raise SinkError(write_error(exc)) from None
            self._buffer = None
            self._put(memoryview(buffer))
        self._put(view)
        return len(view)

    def _open(self) -> None:
        from blake3 import blake3  # only for big pickles: a worker's start stays light

        self._hasher = blake3(max_threads=blake3.AUTO)
        name = f"{TEMP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}"
        path = os.path.join(self._folder, name)
        try:
            self._fd = os.open(path, _FLAGS, 0o644)
        except FileNotFoundError:  # a fresh state folder: nothing big stored yet
            os.makedirs(self._folder, exist_ok=True)
            self._fd = os.open(path, _FLAGS, 0o644)
        self.path = path

    def _put(self, view: memoryview) -> None:
        self._hasher.update(view)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            raise SinkError(write_error(exc)) from None

    def finish(self) -> bytes | StoredPickle:
        """The pickle: its bytes, or the (path, digest) of its complete file."""
        if self._buffer is not None:
            return bytes(self._buffer)
        os.close(self._fd)
        self._fd = -1
        return (self.path, self._hasher.hexdigest())

    def discard(self) -> None:
        """Drop a pickle that will not be sent (pickling failed, or the unit failed after)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self.path:
            discard_file(self.path)
            self.path = ""
        self._buffer = None


def discard_file(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
