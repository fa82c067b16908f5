"""Big objects as files, named by their blake3 hex: `objects/ab/cdef…`.

A file only ever appears under its final name by `os.replace` of a complete, fsynced temporary
file, so whatever exists under a final name is whole; a temporary file left by a killed writer
is never read and is deleted by the next writer. Temporary files live in `objects/` itself (same
filesystem, so the rename is atomic) rather than in each `ab/` folder: clearing them is then one
directory listing, cheap enough to do on every start.
"""

from __future__ import annotations

import os
from pathlib import Path

TEMP_PREFIX = ".tmp-"
_HEX = frozenset("0123456789abcdef")


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
        try:
            return self.path(digest).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def write(self, digest: str, data: bytes) -> None:
        """Store `data` under `digest`, durably (it survives a power cut once this returns).
        Writing a name that exists is a no-op: same name, same bytes."""
        target = self.path(digest)
        if target.is_file():
            return
        folder = target.parent
        new_folder = not folder.is_dir()
        if new_folder:
            folder.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"{TEMP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
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
    path.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
