"""The stat key: what says a file is unchanged without reading it (size, mtime_ns, inode,
ctime_ns). Shared by the hasher's cache, the project cache and the null-build proof; kept free
of imports, as the proof is checked before anything else is loaded."""

from __future__ import annotations

import os

StatKey = tuple[int, int, int, int]  # size, mtime_ns, inode, ctime_ns
CacheEntry = tuple[int, int, int, int, str]  # a stat key and the hash known under it


def key_of(st: os.stat_result) -> StatKey:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def stat_key(path: str) -> StatKey | None:
    """The stat key of a path (following symlinks); None when it cannot be stat'ed."""
    try:
        return key_of(os.stat(path))
    except OSError:
        return None
