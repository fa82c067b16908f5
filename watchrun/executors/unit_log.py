"""A unit's log, where fds 1 and 2 point while it runs.

Most units of a large generator scope print nothing, and creating a file is a costly kernel
operation (the inode allocation) next to a trivial unit. So a missing log is not created up
front: the output goes to an unnamed file (O_TMPFILE) in the log's directory, which gets the
log's name (linkat) when it holds something at the end of the unit, or, so that it can be
followed live, once the unit has run for LIVE_AFTER seconds. An unnamed file a unit left empty
serves the next one. An existing log is truncated (or appended to) and used as it is.
"""

from __future__ import annotations

import _thread
import contextlib
import errno
import os

# O_NOFOLLOW: a symlink planted as a log is replaced, never written through (see UnitLog.open)
_LOG_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)  # Linux
# A unit whose log has no name yet gets one after it has run this long (seconds), so that its
# output can be followed live.
LIVE_AFTER = 0.05


class _Unnamed:
    """An unnamed file the output of a unit goes to, until it is given the log's name."""

    __slots__ = ("directory", "fd", "named", "path", "since")

    def __init__(self, fd: int, directory: str) -> None:
        self.fd = fd
        self.directory = directory
        self.path = ""  # the log it stands for: the running unit's, or the last one's
        self.since = 0.0  # time.perf_counter() when that unit started
        self.named = False


# errno values for "this filesystem (or kernel) has no unnamed files"
_NO_UNNAMED_FILES = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL}


class UnitLog:
    """Points fds 1 and 2 at a unit's log while it runs (see above)."""

    def __init__(self, stderr: int) -> None:
        self._stderr = stderr  # the worker's own, for what it has to say about logs
        self._spare: _Unnamed | None = None  # unnamed and empty: for the next unit
        self._current: _Unnamed | None = None  # the running unit writes to it
        self._lock = _thread.allocate_lock()  # the unit's end against tick() in the helper
        self._unnamed_files = _O_TMPFILE != 0  # False once the system said it has none
        self._proc_fds: int | None = None  # /proc/self/fd: to link an open file by its fd

    def open(self, path: str, fresh: bool, now: float) -> None:
        """Point fds 1 and 2 at the log (fresh: empty); `now`: time.perf_counter() at the
        unit's start. OSError: it cannot be written."""
        flags = _LOG_FLAGS | os.O_TRUNC if fresh else _LOG_FLAGS
        try:
            try:
                fd = os.open(path, flags)
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                os.unlink(path)  # a symlink in the log's place: the log starts anew
                raise FileNotFoundError(errno.ENOENT, "replaced a symlink", path) from None
        except FileNotFoundError:
            unnamed = self._unnamed(path) if self._unnamed_files else None
            if unnamed is None:
                fd = _create(path, flags)
            else:
                _point_std_at(unnamed.fd)
                unnamed.path = path
                unnamed.since = now
                self._current = unnamed  # from now on tick() may name it
                return
        _point_std_at(fd)
        os.close(fd)

    def tick(self, now: float) -> None:
        """From the helper thread: a unit that has run LIVE_AFTER seconds gets its log's name,
        output or not, so that it can be followed live."""
        if self._current is None:
            return
        with self._lock:
            unnamed = self._current
            if unnamed is not None and not unnamed.named and now - unnamed.since >= LIVE_AFTER:
                self._name(unnamed)

    def close(self) -> None:
        """After the unit, fds 1 and 2 restored: its unnamed log gets its name if the unit
        wrote to it; an empty one is kept for the next unit."""
        unnamed = self._current
        if unnamed is None:
            return
        with self._lock:
            self._current = None
            try:
                if unnamed.named:
                    os.close(unnamed.fd)
                elif os.fstat(unnamed.fd).st_size > 0:
                    self._name(unnamed)
                else:
                    self._spare = unnamed
            except OSError:  # the task closed our descriptor: start afresh next time
                pass

    def _unnamed(self, path: str) -> _Unnamed | None:
        """An unnamed file in the directory of the log `path`: the spare, or a new one."""
        spare = self._spare
        self._spare = None
        if spare is not None:
            written = os.fstat(spare.fd).st_size > 0
            # in the same directory (what os.path.dirname would say)
            here = path.startswith(spare.directory) and path.rfind("/") == len(spare.directory)
            if here and not written:
                return spare
            if written:  # a subprocess of the last unit wrote after the unit ended: its output
                self._name(spare)
            else:
                os.close(spare.fd)
        directory = os.path.dirname(path)
        try:
            if self._proc_fds is None:
                self._proc_fds = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
            flags = _O_TMPFILE | os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
            try:
                fd = os.open(directory, flags, 0o644)
            except FileNotFoundError:
                os.makedirs(directory, exist_ok=True)
                fd = os.open(directory, flags, 0o644)
        except OSError as exc:
            if self._proc_fds is not None and exc.errno not in _NO_UNNAMED_FILES:
                raise  # e.g. the directory is a file, or not writable: the unit fails
            self._unnamed_files = False  # create logs as they are needed from now on
            return None
        return _Unnamed(fd, directory)

    def _name(self, unnamed: _Unnamed) -> None:
        """Give the unnamed file its log's name. From then on it is the log: not reused."""
        unnamed.named = True
        source = str(unnamed.fd)
        try:
            try:
                os.link(source, unnamed.path, src_dir_fd=self._proc_fds)
            except FileExistsError:  # a log appeared meanwhile: replace it
                temporary = f"{unnamed.path}.{os.getpid()}.tmp"
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
                os.link(source, temporary, src_dir_fd=self._proc_fds)
                os.replace(temporary, unnamed.path)
        except OSError as exc:  # the output is lost, not the unit
            with contextlib.suppress(OSError):
                os.write(self._stderr, f"watchrun worker: {unnamed.path}: {exc}\n".encode())
        if unnamed is not self._current:
            os.close(unnamed.fd)


def _create(path: str, flags: int) -> int:
    try:
        return os.open(path, flags | os.O_CREAT, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return os.open(path, flags | os.O_CREAT, 0o644)


def _point_std_at(fd: int) -> None:
    os.dup2(fd, 1)
    os.dup2(fd, 2)
