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

import contextlib
import errno
import fcntl
import os
import time

from watchrun.paths import LOCK

TYPE_CHECKING = False  # the lock is checked on the null-build path: see CONTRIBUTING.md
if TYPE_CHECKING:
    import weakref
    from collections.abc import Iterator
    from pathlib import Path


class LockHolder:
    """Who holds the lock, as it described itself."""

    __slots__ = ("command", "host", "pid", "started")

    def __init__(self, pid: int, command: str, started: float, host: str) -> None:
        self.pid = pid
        self.command = command
        self.started = started
        self.host = host

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LockHolder) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (f"LockHolder(pid={self.pid}, command={self.command!r}, "
                f"started={self.started}, host={self.host!r})")

    def _fields(self) -> tuple[int, str, float, str]:
        return (self.pid, self.command, self.started, self.host)

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
        global _held
        self.path = path
        self._fd: int | None = fd
        if _held is None:  # the first lock taken: the null-build check takes none of these
            import weakref

            _held = weakref.WeakValueDictionary()
            os.register_at_fork(after_in_child=_after_fork_in_child)
        _held[id(self)] = self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if _held is not None:
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


_held: weakref.WeakValueDictionary[int, WriterLock] | None = None  # every lock not released


def _after_fork_in_child() -> None:
    for lock in list(_held.values()) if _held is not None else ():
        lock._close_in_child()
    if _held is not None:
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
    import json

    data = json.dumps({"pid": holder.pid, "command": holder.command,
                       "started": holder.started, "host": holder.host}).encode()
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
        import json

        raw = json.loads(os.pread(fd, 4096, 0))
        holder = LockHolder(pid=int(raw["pid"]), command=str(raw["command"]),
                            started=float(raw["started"]), host=str(raw["host"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    finally:
        os.close(fd)  # releases the shared lock, if it was taken
    return holder


@contextlib.contextmanager
def try_lock(state_dir: str, *, shared: bool = False) -> Iterator[bool]:
    """The lock of a state folder taken at once for a short look, or not at all: yields
    whether it is held. It never creates the lock file (no lock file: no writer ever ran
    here, so nothing to look at) and never describes a holder; `shared` lets readers look
    together while keeping every writer out."""
    try:
        fd = os.open(os.path.join(state_dir, LOCK), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError:
            yield False  # a writer holds it
            return
        yield True
    finally:
        os.close(fd)  # releases the lock
