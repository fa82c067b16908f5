"""blake3 of a file's bytes, the one definition of a content hash: the driver's FileHasher and a
worker hashing the outputs it just wrote (executors/worker_outputs.py) must agree to the bit.
A worker imports this module, so it stays light: no typing, no pathlib."""

from __future__ import annotations

import errno
import mmap
import os
import stat as statmod
import threading

from blake3 import blake3

BIG_FILE = 4 * 1024 * 1024  # from here on, a file hashed alone is split across blake3's threads
# Files are read in pieces of this size into one reusable buffer per thread: the buffer and
# blake3's pass over it stay in a core's L2 cache (often 1-2 MiB), so each byte comes from memory
# once, in the kernel's copy; smaller pieces would mean more calls.
CHUNK = 1024 * 1024

_buffers = threading.local()  # each thread's read buffer (see `_read_buffer`)


def hash_bytes(data: bytes) -> str:
    """blake3 hex of `data` (the name of an object in the store)."""
    if len(data) >= BIG_FILE:
        return blake3(data, max_threads=blake3.AUTO).hexdigest()
    return blake3(data).hexdigest()


def hash_file_content(path: str, size: int, *, threads: int = blake3.AUTO) -> str:
    """blake3 hex of a file's bytes; `size` (from stat) picks the method. `threads`: blake3's
    own threads for a big file (AUTO: one per CPU), over a memory map; with threads=1, or for
    a smaller file, the file is read in CHUNK pieces on this thread. Something other than a
    regular file found at `path` by then (a fifo or device) is not read."""
    if size >= BIG_FILE and threads != 1:
        hasher = blake3(max_threads=threads)
        hasher.update_mmap(path)
        return hasher.hexdigest()
    return _read_and_hash(path)


def _read_and_hash(path: str) -> str:
    # Read, not mmap: a map costs more CPU than the copy it saves (a page table entry for every
    # 4 KiB page, then blake3 reading memory through them).
    # O_NONBLOCK: if a fifo took the file's place since its stat, opening it must not wait for
    # a writer (for a regular file the flag changes nothing).
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if statmod.S_ISDIR(st.st_mode):  # what reading it would have said (open() does not)
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if not statmod.S_ISREG(st.st_mode):
            return _special_hash(st)
        hasher = blake3()
        view = _read_buffer()
        while size := os.readv(fd, [view]):
            hasher.update(view[:size])  # blake3 lets go of the GIL for all but tiny pieces
        return hasher.hexdigest()
    finally:
        os.close(fd)


def _read_buffer() -> memoryview:
    """This thread's CHUNK-sized read buffer, made at its first use: a new one per file would
    cost more than reading a small file (allocating and zeroing 1 MiB).

    An anonymous map, not a bytearray: it starts on a page boundary. The kernel's copy into a
    destination 16 bytes past a cache line (where malloc puts a bytearray's bytes) is slower
    than into a page-aligned one."""
    view: memoryview | None = getattr(_buffers, "view", None)
    if view is None:
        view = _buffers.view = memoryview(mmap.mmap(-1, CHUNK))
    return view


def _special_hash(st: os.stat_result) -> str:
    # A fifo or device is not read (it could block forever); its kind stands for its content.
    return hash_bytes(f"special file, mode {statmod.S_IFMT(st.st_mode):o}".encode())
