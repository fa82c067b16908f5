"""blake3 of files behind a stat cache.

INTERFACE FILE — implementation pending (helper C).
"""

from __future__ import annotations

from pathlib import Path

from watchrun.state.store import Store


class FileHasher:
    """Content hashes of files and folders, rehashing only what the stat cache says changed.

    The stat key is (size, mtime_ns, inode, ctime_ns). Touching a file (mtime only) rehashes it
    but the hash stays the same. Big files are hashed with mmap and blake3's threads. A folder's
    hash covers the relative paths and hashes of every file below it. A missing path hashes to None.
    Safe to call from worker threads (blake3 releases the GIL); cache writes go through the store
    on the caller's thread via `flush()`.
    """

    def __init__(self, store: Store | None) -> None:
        raise NotImplementedError

    def hash_path(self, path: Path) -> str | None:
        raise NotImplementedError

    def hash_many(self, paths: list[Path]) -> dict[Path, str | None]:
        """Hash many paths, in parallel threads where they are big."""
        raise NotImplementedError

    def flush(self) -> None:
        """Write the new stat-cache entries to the store."""
        raise NotImplementedError


def hash_bytes(data: bytes) -> str:
    raise NotImplementedError
