"""The single-writer lock of a state folder: `flock` on `state_dir/lock`.

flock is released by the kernel when the last descriptor of the lock file closes, so a watchrun
killed with kill -9 never leaves a stale lock behind, and no pid file needs guessing. The lock file
holds the holder's description (json) so a second writer can say who is in the way.

Descriptors survive `fork()`, and with them the lock: a worker forked from watchrun would keep
the project locked after watchrun itself was killed. Every held lock is therefore closed in forked
children (`os.register_at_fork`); closing a duplicate releases nothing in the parent.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import weakref
from pathlib import Path
from typing import NamedTuple


class LockHolder(NamedTuple):
    pid: int
    command: str
    started: float
    host: str

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host}, `{self.command}`, since {when}"


class LockedError(Exception):
    def __init__(self, holder: LockHolder | None, lock_path: Path) -> None:
        self.holder = holder
        self.lock_path = lock_path
        super().__init__(str(holder))

    def message(self) -> str:
        """What to tell the user."""
        who = self.holder.describe() if self.holder else "another process"
        return (f"another watchrun is writing to this project ({who}); "
                f"wait for it to finish or stop it (lock: {self.lock_path})")


class WriterLock:
    """A held lock; `release()` (or the death of the process) gives it back."""

    def __init__(self, path: Path, fd: int) -> None:
        global _fork_hook_installed
        self.path = path
        self._fd: int | None = fd
        if not _fork_hook_installed:
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _fork_hook_installed = True
        _held[id(self)] = self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        _held.pop(id(self), None)
        if fd is None:
            return
        # Empty the description first, so nobody reads a holder that is gone.
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def _close_in_child(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None


_held: weakref.WeakValueDictionary[int, WriterLock] = weakref.WeakValueDictionary()
_fork_hook_installed = False


def _after_fork_in_child() -> None:
    for lock in list(_held.values()):
        lock._close_in_child()
    _held.clear()


def acquire(path: Path, command: str) -> WriterLock:
    """Take the lock at once, or raise LockedError naming the holder."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LockedError(read_holder(path), path) from None
    except BaseException:
        os.close(fd)
        raise
    holder = LockHolder(pid=os.getpid(), command=command, started=time.time(),
                        host=os.uname().nodename)
    data = json.dumps(holder._asdict()).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    return WriterLock(path, fd)


def read_holder(path: Path) -> LockHolder | None:
    """The description in the lock file; None when it is empty or unreadable (the holder is
    between taking the lock and writing it, or has just released it)."""
    try:
        raw = json.loads(path.read_bytes())
        return LockHolder(pid=int(raw["pid"]), command=str(raw["command"]),
                          started=float(raw["started"]), host=str(raw["host"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
