"""The state of a project: SQLite (WAL) plus a content-addressed object store.

INTERFACE FILE — implementation pending (helper C). Keep these names and signatures.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

SCHEMA_VERSION = 1


class UnitStatus(enum.Enum):
    OK = "ok"
    FAILED = "failed"
    CANCELLED = "cancelled"
    STALE = "stale"  # finished, but a tracked input changed while it ran: not clean
    ACCEPTED = "accepted"  # declared clean by `watchrun accept`


@dataclass(frozen=True)
class ResultRecord:
    """A successful result, found by (task, signature)."""

    task: str
    signature: str
    output: str  # blake3 hex of the pickled output (the object's name)
    outputs: dict[str, str]  # declared output path (relative posix) -> content hash after the run
    duration: float
    finished: float  # unix time


@dataclass(frozen=True)
class UnitState:
    """The latest thing that happened at one position (task, iter): what `status` reports."""

    task: str
    iter: tuple[int, ...]
    signature: str
    status: UnitStatus
    manifest: str  # id (hash) of the manifest: the signature's components, for "why dirty"
    output: str | None
    duration: float | None
    error: str | None  # formatted traceback or cause of death
    finished: float


@dataclass(frozen=True)
class LockHolder:
    pid: int
    command: str
    started: float
    host: str


class LockedError(Exception):
    def __init__(self, holder: LockHolder | None, lock_path: Path) -> None:
        self.holder = holder
        self.lock_path = lock_path
        super().__init__(str(holder))


class Store:
    """Opens (creating if needed) `state_dir/state.db` and `state_dir/objects/`.

    A store whose `user_version` is unknown or whose file is damaged is moved aside and rebuilt;
    the message says so and is kept in `self.messages` for the UI to print. Read-only stores
    (`readonly=True`) never take the lock and never write.
    Writes are buffered in one transaction; `commit()` ends it (the scheduler calls it every few
    milliseconds and at the end), so thousands of results cost one fsync-free commit.
    """

    messages: list[str]

    def __init__(self, state_dir: Path, *, readonly: bool = False) -> None:
        raise NotImplementedError

    # -- the single-writer lock ----------------------------------------------------------------
    def acquire_lock(self, command: str) -> None:
        """Take the writer lock at once or raise LockedError naming the holder."""
        raise NotImplementedError

    def release_lock(self) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- objects -------------------------------------------------------------------------------
    def put_object(self, data: bytes, digest: str | None = None) -> str:
        """Store bytes under their blake3 hex; durable (tmp + rename) before returning."""
        raise NotImplementedError

    def get_object(self, digest: str) -> bytes:
        raise NotImplementedError

    def has_object(self, digest: str) -> bool:
        raise NotImplementedError

    # -- results and unit states ---------------------------------------------------------------
    def find_result(self, task: str, signature: str) -> ResultRecord | None:
        raise NotImplementedError

    def record_result(self, record: ResultRecord) -> None:
        raise NotImplementedError

    def set_unit_state(self, state: UnitState) -> None:
        raise NotImplementedError

    def unit_state(self, task: str, iter: tuple[int, ...] = ()) -> UnitState | None:
        raise NotImplementedError

    def unit_states(self, task: str | None = None) -> Iterator[UnitState]:
        raise NotImplementedError

    def put_manifest(self, manifest_id: str, data: bytes) -> None:
        """Manifests are deduplicated by id; storing one twice is a no-op."""
        raise NotImplementedError

    def get_manifest(self, manifest_id: str) -> bytes | None:
        raise NotImplementedError

    def forget(self, tasks: Iterable[str] | None = None) -> int:
        """Drop results and unit states (of these tasks, or all). Returns how many units."""
        raise NotImplementedError

    # -- generator iterations ------------------------------------------------------------------
    def record_iteration(self, task: str, signature: str, index: int, value: str) -> None:
        raise NotImplementedError

    def iterations(self, task: str, signature: str) -> list[str]:
        """Stored value hashes of a generator run with this signature, by index, no gaps."""
        raise NotImplementedError

    def mark_generator_complete(self, task: str, signature: str, count: int) -> None:
        raise NotImplementedError

    def generator_complete(self, task: str, signature: str) -> int | None:
        """The number of iterations if this generator signature ran to exhaustion, else None."""
        raise NotImplementedError

    # -- caches --------------------------------------------------------------------------------
    def stat_cache_get(self, path: str) -> tuple[int, int, int, int, str] | None:
        """(size, mtime_ns, inode, ctime_ns, hash) recorded for this absolute path."""
        raise NotImplementedError

    def stat_cache_put(self, path: str, size: int, mtime_ns: int, ino: int, ctime_ns: int,
                       digest: str) -> None:
        raise NotImplementedError

    def stat_cache_all(self) -> dict[str, tuple[int, int, int, int, str]]:
        """The whole stat cache in one query (a null build reads it once)."""
        raise NotImplementedError

    def analysis_get(self, key: str) -> bytes | None:
        raise NotImplementedError

    def analysis_put(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def kv_get(self, key: str) -> bytes | None:
        """Small named blobs (e.g. the cached resolved project, third-party versions)."""
        raise NotImplementedError

    def kv_put(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    # -- process groups in flight --------------------------------------------------------------
    def record_pgroup(self, pgid: int, start_time: float) -> None:
        raise NotImplementedError

    def drop_pgroup(self, pgid: int) -> None:
        raise NotImplementedError

    def reap_stale_pgroups(self) -> list[int]:
        """Kill (SIGCONT, then SIGKILL) recorded groups whose leader is still the same process
        (checked against its start time, so a reused pid is left alone); forget them all.
        Returns the pgids that were ended."""
        raise NotImplementedError

    # -- runs ----------------------------------------------------------------------------------
    def begin_run(self, command: str) -> int:
        raise NotImplementedError

    def end_run(self, run_id: int, ok: bool) -> None:
        raise NotImplementedError
