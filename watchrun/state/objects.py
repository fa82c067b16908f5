"""Big objects as files, named by their blake3 hex: `objects/ab/cdef…`.

A file only ever appears under its final name by `os.replace` of a complete, fsynced temporary
file, so whatever exists under a final name is whole; a temporary file left by a killed writer
is never read and is deleted by the next writer. Temporary files live in `objects/` itself (same
filesystem, so the rename is atomic) rather than in each `ab/` folder: clearing them is then one
directory listing, cheap enough to do on every start.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as statmod
from pathlib import Path

from watchrun.paths import OBJECT_TEMP_PREFIX
from watchrun.state.hashing import hash_file_content

TEMP_PREFIX = OBJECT_TEMP_PREFIX
_HEX = frozenset("0123456789abcdef")


class ObjectWriteError(OSError):
    """An object could not be written (a full disk, a read-only or failing one). `str()` is
    the message for the user: the output that did not fit fails its unit."""

    def __str__(self) -> str:
        return str(self.strerror)


def describe_write_error(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on device writing its output"
    if exc.errno == errno.EROFS:
        return "the state folder is on a read-only file system: cannot write its output"
    return f"cannot write its output: {exc.strerror or exc}"


def check_digest(digest: str) -> None:
    """Object names become paths: refuse anything that is not a lowercase hex digest."""
    if len(digest) < 3 or not _HEX.issuperset(digest):
        raise ValueError(f"not an object digest: {digest!r}")


class ObjectFiles:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        check_digest(digest)
        return self.root / digest[:2] / digest[2:]

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def read(self, digest: str) -> bytes | None:
        """The object's bytes; None when there is no such file. Never through a symlink."""
        try:
            fd = os.open(self.path(digest), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return None  # a planted symlink is not an object
            raise
        with os.fdopen(fd, "rb") as f:
            return f.read()

    def intact(self, digest: str) -> bool:
        """Whether the file holds the bytes its name says (hashing it: for big objects)."""
        path = self.path(digest)
        try:
            st = os.lstat(path)
            if not statmod.S_ISREG(st.st_mode):
                return False
            return hash_file_content(os.fspath(path), st.st_size) == digest
        except OSError:
            return False

    def discard(self, digest: str) -> None:
        """Remove a damaged object (the next writer of that output replaces it)."""
        _unlink_quietly(self.path(digest))

    def write(self, digest: str, data: bytes) -> None:
        """Store `data` under `digest`, durably (it survives a power cut once this returns).
        Writing a name that exists is a no-op: same name, same bytes."""
        try:
            self._write(digest, data)
        except ObjectWriteError:
            raise
        except OSError as exc:
            raise ObjectWriteError(exc.errno, describe_write_error(exc)) from exc

    def _write(self, digest: str, data: bytes) -> None:
        target = self.path(digest)
        if _is_plain_file(target):
            return
        folder = target.parent
        made_root = _real_dir(self.root)
        new_folder = _real_dir(folder) or made_root
        tmp = self.root / f"{TEMP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        _fsync_dir(folder)
        if new_folder:
            _fsync_dir(self.root)

    def new_temporary(self) -> tuple[int, Path]:
        """A new, open temporary file in the object folder, for a writer to put an object's
        bytes straight into (e.g. a worker pickling a big output): no process then holds
        them in memory. Give it back with `adopt`."""
        _real_dir(self.root)
        path = self.root / f"{TEMP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)
        return fd, path

    def adopt(self, temporary: Path, digest: str | None = None) -> str:
        """Make a complete temporary file an object: hashed (through a memory map) unless its
        writer hashed it while writing (`digest`), fsynced and renamed to its name. Returns
        the digest. ObjectWriteError as `write`; ValueError for a file that is not one of
        this folder's temporary files (nothing is renamed then)."""
        if temporary.parent != self.root or not temporary.name.startswith(TEMP_PREFIX):
            raise ValueError(f"not a temporary object file: {temporary}")
        if digest is not None:
            check_digest(digest)
        try:
            fd = os.open(temporary, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                size = os.fstat(fd).st_size
                os.fsync(fd)
            finally:
                os.close(fd)
            if digest is None:
                digest = hash_file_content(os.fspath(temporary), size)
            target = self.path(digest)
            if _is_plain_file(target):
                _unlink_quietly(temporary)  # same name, same bytes
                return digest
            new_folder = _real_dir(target.parent)
            os.replace(temporary, target)
            _fsync_dir(target.parent)
            if new_folder:
                _fsync_dir(self.root)
            return digest
        except OSError as exc:
            _unlink_quietly(temporary)
            raise ObjectWriteError(exc.errno, describe_write_error(exc)) from exc

    def clean_temps(self) -> int:
        """Delete temporary files of writers that died mid-write. Call only while holding the
        writer lock (another writer's temporary file is in use). Returns how many."""
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return 0
        removed = 0
        for entry in entries:
            if entry.name.startswith(TEMP_PREFIX):
                _unlink_quietly(Path(entry.path))
                removed += 1
        return removed


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(IsADirectoryError):
        path.unlink(missing_ok=True)


def _is_plain_file(path: Path) -> bool:
    try:
        return statmod.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _real_dir(folder: Path) -> bool:
    """Make `folder` a real directory (a planted symlink in its place is removed: a write must
    not follow it out of the state folder). Whether it had to be made."""
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        folder.mkdir(parents=True, exist_ok=True)
        return True
    if statmod.S_ISDIR(st.st_mode):
        return False
    os.unlink(folder)  # a symlink or a file where a folder belongs
    folder.mkdir()
    return True


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
