"""blake3 of files behind a stat cache.

A cached hash is trusted while the file's stat key (size, mtime_ns, inode, ctime_ns) is the one
recorded with it. Two holes in that rule are closed here:

- Racy files. File times come from a coarse kernel clock (one tick, up to 10 ms), so a file
  rewritten in the same tick as it was hashed, at the same size, keeps its stat key. A hash is
  therefore only cached when the file's last change (ctime) is at least RACY_NS older than the
  moment hashing began; a later write then gets a newer ctime, and the key changes. A file that
  changed just before it was hashed is hashed again next time.
- Files that change while being read: the stat key is taken again after reading, and the hash is
  not cached when it differs.
"""

from __future__ import annotations

import os
import stat as statmod
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, TypeVar

from blake3 import blake3

from watchrun.state.content_hash import BIG_FILE as BIG_FILE
from watchrun.state.content_hash import CHUNK as CHUNK
from watchrun.state.content_hash import _read_buffer as _read_buffer
from watchrun.state.content_hash import _special_hash
from watchrun.state.content_hash import hash_bytes as hash_bytes
from watchrun.state.content_hash import hash_file_content as hash_file_content
from watchrun.state.statkeys import CacheEntry, key_of

if TYPE_CHECKING:
    from pathlib import Path  # only named in hints: it is not on the null-build path

    from watchrun.state.store import Store

RACY_NS = 50_000_000  # well above the kernel's timestamp granularity (1-10 ms)
PARALLEL_BYTES = 1024 * 1024  # less than this to hash in total: threads cost more than they save
SKIP_DIRS = frozenset({"__pycache__"})


class UnreadablePath(OSError):
    """A path that exists but cannot be looked at or read (a symlink loop, no permission, an
    I/O error). `where`: the file and line that asked for it, once someone knows them."""

    where: tuple[str, int | None] | None = None

    def message(self) -> str:
        place = ""
        if self.where is not None:
            file, line = self.where
            place = f"{_shown(file)}:{line}: " if line else f"{_shown(file)}: "
        return f"{place}cannot read {_shown(str(self.filename))}: {self.strerror}"


def _shown(path: str) -> str:
    relative = os.path.relpath(path) if os.path.isabs(path) else path
    return path if relative.startswith("..") else relative


def _unreadable(exc: OSError, path: str) -> UnreadablePath:
    return UnreadablePath(exc.errno, exc.strerror or str(exc), path)


P = TypeVar("P", str, "Path")
T = TypeVar("T")
R = TypeVar("R")


class FileHasher:
    """Content hashes of files and folders, rehashing only what the stat cache says changed.

    The stat key is (size, mtime_ns, inode, ctime_ns). Touching a file (mtime only) rehashes it
    but the hash stays the same. Many files are hashed one per thread; a big file alone is split
    across blake3's threads. A folder's hash covers the relative paths and hashes of every file
    below it. A missing path hashes to None.
    Safe to call from worker threads (blake3 releases the GIL); cache writes go through the store
    on the caller's thread via `flush()`.

    Folders: every regular file below, following symlinks to files but not into symlinked
    folders, skipping `__pycache__`. Errors other than "not found" (e.g. permission denied)
    propagate as OSError.

    `racy_ns`: how long before hashing a file must have last changed for its hash to be cached
    (see the module's docstring). `files_read` counts the files actually read.
    """

    def __init__(self, store: Store | None, *, racy_ns: int = RACY_NS,
                 cache: dict[str, CacheEntry] | None = None) -> None:
        self._store = store
        self._racy_ns = racy_ns
        if cache is None:
            cache = store.stat_cache_all() if store is not None else {}
        self._cache: dict[str, CacheEntry] = cache
        self._new: dict[str, CacheEntry] = {}
        # Hashes of files that changed too recently to cache: kept for this process only, so
        # that a build hashes a task's new output once, not again as the next task's input.
        # Their stat key could survive a rewrite in the same clock tick, which this process
        # then misses; they never reach the store, so the next build hashes them again.
        self._recent: dict[str, CacheEntry] = {}
        self._lock = threading.Lock()
        self.files_read = 0  # files whose content was hashed (not answered from the cache)

    def hash_path(self, path: Path) -> str | None:
        key = os.path.abspath(path)
        try:
            st = os.stat(key)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise _unreadable(exc, key) from None
        if statmod.S_ISDIR(st.st_mode):
            return self.hash_many([path])[path]
        cached = self._cached(key, st)
        return cached if cached is not None else self._hash_file(key, st)

    def hash_files(self, paths: Sequence[str]) -> dict[str, str | None]:
        """Absolute paths: the fast path of the common case, files whose stat key is cached
        (a null build asks this for every input and output); anything else goes through
        `hash_many`."""
        result: dict[str, str | None] = {}
        cache, recent = self._cache, self._recent
        todo: dict[str, os.stat_result] = {}
        for path in paths:
            try:
                st = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                result[path] = None
                continue
            except OSError as exc:
                raise _unreadable(exc, path) from None
            # this process's entry first: the stored one may be of the file's older content
            entry = recent.get(path) or cache.get(path)
            if (entry is not None and entry[1] == st.st_mtime_ns and entry[0] == st.st_size
                    and entry[2] == st.st_ino and entry[3] == st.st_ctime_ns):
                result[path] = entry[4]
            elif statmod.S_ISREG(st.st_mode):  # e.g. a task's new output: hashed with this stat
                todo[path] = st
            else:  # a folder, a fifo, a device
                return self.hash_many(list(paths))
        if todo:
            result.update(self._hash_files(todo))
        return result

    def hash_files_claimed(self, paths: Sequence[str],
                           claims: Sequence[tuple[str, int, int, int, int, str]]
                           ) -> dict[str, str | None]:
        """`hash_files`, taking a worker's hash of a file it just wrote (path, stat key,
        blake3; see executors/worker_outputs.py) instead of reading the file again, as long
        as the file's stat key is still the claimed one. A file changed since (another
        writer, a rewrite) is hashed here like any other.

        An accepted claim is kept for this process only, like any fresh file's hash (see
        `_recent`): its writer's clock may not be ours, so it cannot show the hash settled."""
        if not claims:
            return self.hash_files(paths)
        claimed = {claim[0]: claim for claim in claims}
        result: dict[str, str | None] = {}
        rest: list[str] = []
        for path in paths:
            claim = claimed.get(path)
            if claim is None:
                rest.append(path)
                continue
            try:
                st = os.stat(path)
            except OSError:
                rest.append(path)  # what it is now, hash_files says
                continue
            if (claim[1] == st.st_size and claim[2] == st.st_mtime_ns
                    and claim[3] == st.st_ino and claim[4] == st.st_ctime_ns
                    and statmod.S_ISREG(st.st_mode)):
                entry = claim[1:]
                if self._cache.get(path) != entry:
                    self._recent[path] = entry
                result[path] = claim[5]
            else:
                rest.append(path)
        if rest:
            result.update(self.hash_files(rest))
        return result

    def hash_many(self, paths: Sequence[P]) -> dict[P, str | None]:
        """Hash many paths (str or Path: plain strings are cheaper on hot paths), in parallel
        threads where they are big."""
        found: dict[str, str | None] = {}  # absolute file path -> hash
        todo: dict[str, os.stat_result] = {}
        plan: list[tuple[P, str | list[tuple[str, str]] | None]] = []
        for path in paths:
            key = os.path.abspath(path)
            try:
                st = os.stat(key)
            except (FileNotFoundError, NotADirectoryError):
                plan.append((path, None))
                continue
            except OSError as exc:
                raise _unreadable(exc, key) from None
            if statmod.S_ISDIR(st.st_mode):
                files = _list_folder(key)
                plan.append((path, [(rel, file_key) for rel, file_key, _ in files]))
            else:
                files = [("", key, st)]
                plan.append((path, key))
            for _rel, file_key, file_st in files:
                cached = self._cached(file_key, file_st)
                if cached is None:
                    todo[file_key] = file_st
                else:
                    found[file_key] = cached
        found.update(self._hash_files(todo))
        return {path: _assemble(item, found) for path, item in plan}

    def flush(self) -> None:
        """Write the new stat-cache entries to the store."""
        new = self.take_new()
        if not new or self._store is None or not self._store.writable:
            return
        self._store.stat_cache_put_many((path, *entry) for path, entry in new.items())

    def take_new(self) -> dict[str, CacheEntry]:
        """The cache entries made since the last call (hashes with a settled stat key)."""
        with self._lock:
            new, self._new = self._new, {}
        return new

    def cached_entry(self, path: str) -> CacheEntry | None:
        """The stat key and hash cached for an absolute file path."""
        return self._cache.get(path)

    def knows_file(self, path: str) -> bool:
        """Whether an absolute path was hashed (or cached) as a file."""
        return path in self._recent or path in self._cache

    def cached_below(self, folder: str) -> dict[str, CacheEntry]:
        """The cache entries of the files below an absolute folder path."""
        prefix = folder.rstrip(os.sep) + os.sep
        return {path: entry for path, entry in self._cache.items() if path.startswith(prefix)}

    # -- internals -----------------------------------------------------------------------------
    def forget_recent(self, paths: Iterable[Path | str] = ()) -> None:
        """Drop the process-only hashes of these paths (all: none given), e.g. when a watcher
        reports them changed."""
        if not paths:
            self._recent.clear()
        for path in paths:
            self._recent.pop(os.path.abspath(path), None)

    def _cached(self, key: str, st: os.stat_result) -> str | None:
        entry = self._recent.get(key) or self._cache.get(key)  # see hash_files
        if (entry is not None and entry[0] == st.st_size and entry[1] == st.st_mtime_ns
                and entry[2] == st.st_ino and entry[3] == st.st_ctime_ns):
            return entry[4]
        return None

    def _hash_file(self, key: str, st: os.stat_result, threads: int = blake3.AUTO
                   ) -> str | None:
        if not statmod.S_ISREG(st.st_mode):
            return _special_hash(st)
        started = time.time_ns()
        try:
            digest = hash_file_content(key, st.st_size, threads=threads)
            after = os.stat(key)
        except (FileNotFoundError, NotADirectoryError):
            return None  # removed (or replaced by a folder) while we looked
        except OSError as exc:
            raise _unreadable(exc, key) from None
        before = key_of(st)
        # ctime, not mtime: every write sets it to the kernel's clock, and nobody can set it back.
        settled = st.st_ctime_ns < started - self._racy_ns
        with self._lock:
            self.files_read += 1
            if key_of(after) == before:
                entry = (*before, digest)
                if settled:
                    self._cache[key] = entry
                    self._new[key] = entry
                else:
                    self._recent[key] = entry
        return digest

    def _hash_files(self, todo: dict[str, os.stat_result]) -> dict[str, str | None]:
        total = sum(st.st_size for st in todo.values())
        if len(todo) < 2 or total < PARALLEL_BYTES:
            return {key: self._hash_file(key, st) for key, st in todo.items()}
        # Largest first, so one big file does not start last and finish alone.
        order = sorted(todo.items(), key=lambda item: -item[1].st_size)
        cpus = os.cpu_count() or 1
        # Enough files to keep every CPU busy: one thread per file costs less than each file
        # split by blake3's threads.
        threads = 1 if len(order) >= cpus else blake3.AUTO
        digests = _map_in_threads(lambda item: self._hash_file(item[0], item[1], threads),
                                  order, min(len(order), cpus))
        return {key: digest for (key, _), digest in zip(order, digests, strict=True)}


def _map_in_threads(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """fn of each item, in `workers` threads (this one among them) that each take the next item
    when done with one. After an error, or an interrupt of this thread, no new item is started;
    the first error is raised once the other threads have stopped.

    Plain threads, not concurrent.futures: importing that (and the logging it imports) would
    weigh on every touched null build (CONTRIBUTING.md, "Hot paths")."""
    results: dict[int, R] = {}
    errors: list[BaseException] = []
    stop = threading.Event()
    indexes = iter(range(len(items)))
    lock = threading.Lock()

    def work() -> None:
        while not stop.is_set():
            with lock:
                index = next(indexes, None)
            if index is None:
                return
            try:
                results[index] = fn(items[index])
            except BaseException as error:  # raised again on the caller's thread
                errors.append(error)
                stop.set()

    helpers = [threading.Thread(target=work, name=f"hash-{n}", daemon=True)
               for n in range(1, workers)]
    for helper in helpers:
        helper.start()
    try:
        work()
    finally:
        stop.set()  # nothing is left to start, or this thread was interrupted
        for helper in helpers:
            helper.join()
    if errors:
        raise errors[0]
    return [results[index] for index in range(len(items))]


def _list_folder(root: str) -> list[tuple[str, str, os.stat_result]]:
    """(relative posix path, absolute path, stat) of every file below `root`."""
    found: list[tuple[str, str, os.stat_result]] = []
    pending = [(root, "")]
    while pending:
        folder, prefix = pending.pop()
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue  # removed while we walked
        except OSError as exc:
            raise _unreadable(exc, folder) from None
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if entry.name not in SKIP_DIRS:
                    pending.append((entry.path, f"{prefix}{entry.name}/"))
                continue
            try:
                st = entry.stat()  # follows a symlink to its file
            except (FileNotFoundError, NotADirectoryError):
                continue  # a dangling symlink, or removed
            except OSError as exc:
                raise _unreadable(exc, entry.path) from None
            if not statmod.S_ISDIR(st.st_mode):
                found.append((prefix + entry.name, entry.path, st))
    return found


def _assemble(item: str | list[tuple[str, str]] | None, found: dict[str, str | None]) -> str | None:
    if item is None:
        return None
    if isinstance(item, str):
        return found[item]
    return folder_hash((rel, found[key]) for rel, key in item)


def folder_hash(files: Iterable[tuple[str, str | None]]) -> str:
    """blake3 over the sorted (relative posix path, file hash) pairs; a file that vanished
    while the folder was hashed is left out."""
    hasher = blake3()
    for rel, digest in sorted(files, key=lambda pair: pair[0]):
        if digest is not None:
            hasher.update(f"{rel}\0{digest}\n".encode())
    return hasher.hexdigest()
