"""The single-writer lock of a state folder: `flock` on `state_dir/lock`.

flock is released by the kernel when the last descriptor of the lock file closes, so a watchrun
killed with kill -9 never leaves a stale lock behind, and no pid file needs guessing. The lock file
holds the holder's description (json) so a second writer can say who is in the way; it is
believed only while the lock is held (a killed holder's stays in the file until the next writer
overwrites it, and is never shown). The file is opened with O_NOFOLLOW: a symlink planted in
its place is removed, never written through.

Descriptors survive `fork()`, and with them the lock: a worker forked from watchrun would keep
the project locked after watchrun itself was killed. Every held lock is therefore closed in forked
children (`os.register_at_fork`); closing a duplicate releases nothing in the parent.
"""

from __future__ import annotations

import errno
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
    """Take the lock at once, or raise LockedError naming the holder. OSError when the lock
    file cannot be made (a read-only or full disk)."""
    for _ in range(100):
        fd = _open_lock_file(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(read_holder(path), path) from None
        except BaseException:
            os.close(fd)
            raise
        if _still_named(fd, path):
            break
        os.close(fd)  # replaced meanwhile (a symlink removed by another writer): lock the new one
    else:
        raise OSError(f"the lock file {path} keeps being replaced")
    holder = LockHolder(pid=os.getpid(), command=command, started=time.time(),
                        host=os.uname().nodename)
    data = json.dumps(holder._asdict()).encode()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    except OSError:
        pass  # a full disk: the lock holds all the same, only the holder's name is unknown
    return WriterLock(path, fd)


def _open_lock_file(path: Path) -> int:
    """The lock file, never through a symlink: one planted there is removed (its target was
    emptied by every watchrun that took the lock through it)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
    os.unlink(path)
    return os.open(path, flags, 0o644)


def _still_named(fd: int, path: Path) -> bool:
    try:
        named = os.lstat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def read_holder(path: Path) -> LockHolder | None:
    """The holder described in the lock file, while it holds the lock; None when nobody does
    (a holder killed with kill -9 leaves its description behind, which is not believed), or
    the file is empty or unreadable (the holder is between taking the lock and writing it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # held: the description is the holder's
        else:
            return None  # nobody holds it: what the file says is a dead holder's
        raw = json.loads(os.pread(fd, 4096, 0))
        holder = LockHolder(pid=int(raw["pid"]), command=str(raw["command"]),
                            started=float(raw["started"]), host=str(raw["host"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    finally:
        os.close(fd)  # releases the shared lock, if it was taken
    return holder
