"""What the store keeps and answers with, and the errors it raises."""

from __future__ import annotations

import enum
from typing import NamedTuple


class UnitStatus(enum.Enum):
    OK = "ok"
    FAILED = "failed"
    CANCELLED = "cancelled"
    STALE = "stale"  # finished, but a tracked input changed while it ran: not clean
    ACCEPTED = "accepted"  # declared clean by `watchrun accept`


class ResultRecord(NamedTuple):
    """A successful result, found by (task, signature). Tuples, like UnitState: a scope reads
    them by the ten thousand (the per-unit cost, CONTRIBUTING.md)."""

    task: str
    signature: str
    output: str  # blake3 hex of the pickled output (the object's name)
    outputs: dict[str, str]  # declared output path (relative posix) -> content hash after the run
    duration: float
    finished: float  # unix time
    # False when the object named by `output` is missing or damaged (found by `last_units` and
    # `find_result`): the unit is not clean, its producer must run again
    stored: bool = True


class UnitState(NamedTuple):
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


class StoreError(Exception):
    """The state folder or database cannot be opened at all (permissions, a full or failing
    disk): not something a rebuild fixes. `str()` is the message for the user."""


class ReadOnlyStoreError(RuntimeError):
    """A write to a store opened read-only: a bug in the caller, not a user error."""


class StateFull(StoreError):
    """The database could not take the last writes (a full disk, a read-only or failing one).
    Nothing committed before is lost, and the writes are kept in memory: the next `commit()`
    tries them again. `str()` is the message for the user."""

    def __init__(self, cause: str, kept: int) -> None:
        super().__init__(f"cannot save results in the state database: {cause}")
        self.cause = cause
        self.kept = kept  # rows waiting to be committed


class StateDamaged(StoreError):
    """SQLite found the database damaged while using it: the next writer checks it and, if it
    is, moves it aside and starts a new one."""


class ObjectMissing(StoreError, KeyError):
    """A stored output's object is gone (deleted by hand, or never written)."""

    def __str__(self) -> str:
        return str(self.args[0])


class ObjectDamaged(ObjectMissing):
    """An object whose bytes do not hash to its name: refused (and removed by a writer)."""
