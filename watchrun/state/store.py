"""The state of a project: SQLite (WAL) plus a content-addressed object store.

Layout of `state_dir`: `state.db` (see database.py for the schema and its durability),
`objects/ab/cdef…` (objects of INLINE_LIMIT bytes and more; smaller ones live in the database,
in the same transaction as the result that refers to them), and `lock` (see lock.py).

`Store` is the one object callers hold; its tables are written by concern, one class each:
transactions.py (the open transaction and a full disk), cache_tables.py, stored_objects.py,
result_tables.py, pgroup_tables.py; opening.py opens and repairs the database.
"""

from __future__ import annotations

import contextlib
import os
import stat as statmod
from pathlib import Path

from watchrun.paths import LOCK, LOGS_DIR
from watchrun.state import database
from watchrun.state.database import SCHEMA_VERSION
from watchrun.state.lock import LockedError, LockHolder, WriterLock, read_holder
from watchrun.state.objects import ObjectWriteError
from watchrun.state.opening import DatabaseOpener
from watchrun.state.pgroup_tables import PgroupTables
from watchrun.state.proof import discard_proof, proof_path
from watchrun.state.result_tables import LAST_UNITS, ResultTables
from watchrun.state.statkeys import StatKey, stat_key
from watchrun.state.stored_objects import INLINE_LIMIT
from watchrun.state.values import (
    ObjectDamaged,
    ObjectMissing,
    ReadOnlyStoreError,
    ResultRecord,
    StateDamaged,
    StateFull,
    StoreError,
    UnitState,
    UnitStatus,
)

__all__ = [
    "INLINE_LIMIT",
    "LAST_UNITS",
    "SCHEMA_VERSION",
    "LockHolder",
    "LockedError",
    "ObjectDamaged",
    "ObjectMissing",
    "ObjectWriteError",
    "ReadOnlyStoreError",
    "ResultRecord",
    "StateDamaged",
    "StateFull",
    "Store",
    "StoreError",
    "UnitState",
    "UnitStatus",
]


def _identity(folder: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class Store(ResultTables, PgroupTables):
    """Opens (creating if needed) `state_dir/state.db` and `state_dir/objects/`.

    A store whose `user_version` is unknown or whose file is damaged is moved aside and rebuilt;
    the message says so and is kept in `self.messages` for the UI to print. Read-only stores
    (`readonly=True`) never take the lock and never write.
    Writes are buffered in one transaction; `commit()` ends it (the scheduler calls it every few
    milliseconds and at the end), so thousands of results share one commit.

    Read-only stores open the database with `mode=ro`; a missing database reads as empty and is
    not created; a damaged one reads as empty (with a message) and is left for the next writer to
    repair. One thread at a time may use a store.
    """

    messages: list[str]

    def __init__(self, state_dir: Path, *, readonly: bool = False) -> None:
        super().__init__(state_dir, readonly)
        self.messages = []
        self._opener = DatabaseOpener(self.state_dir, self.db_path, self.messages)
        self._lock: WriterLock | None = None
        # the null-build proof as this writer found it when it took the lock (None: there
        # was none): a partial proof checked before is good only if it is that same file
        self.proof_at_lock: StatKey | None = None
        if readonly:
            self._db = self._opener.open_readonly()
        else:
            try:
                self.state_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the state folder {self.state_dir}: "
                                 f"{exc.strerror or exc}") from exc
            self._opener.check_folder_writable()
            self._db = self._opener.open_writable()
        self._folder = _identity(self.state_dir.parent)  # the project's folder, as opened

    def folder_moved(self) -> str | None:
        """A message when the project folder holding the state folder was renamed, moved or
        deleted since the store was opened (None: it is where it was). A long-lived command
        (`dev`) asks before it writes again, and stops: writing on would recreate the old
        path."""
        if self._folder is None or _identity(self.state_dir.parent) == self._folder:
            return None
        return (f"the project folder {self.state_dir.parent} was renamed, moved or deleted; "
                "stopping (start watchrun again where the project is now)")

    # -- the single-writer lock ----------------------------------------------------------------
    def acquire_lock(self, command: str) -> None:
        """Take the writer lock at once or raise LockedError naming the holder."""
        if self.readonly:
            raise ReadOnlyStoreError(f"the store at {self.state_dir} is read-only")
        if self._lock is not None and self._lock.held:
            return
        lock = self._opener.take_lock(command)
        try:
            if self._db is None:
                self._db = self._opener.reopen_under_lock()
            self._unplant_folder(LOGS_DIR)
        except BaseException:
            lock.release()
            raise
        self._lock = lock
        # Whatever this writer does may make the last build's null-build proof false.
        self.proof_at_lock = stat_key(proof_path(os.fspath(self.state_dir)))
        discard_proof(os.fspath(self.state_dir))
        # Only now is it safe: a temporary object file could belong to a running writer.
        self._objects.clean_temps()
        self._clean_temps()

    def _clean_temps(self) -> None:
        """Temporary files of `owner.write_file_atomically` (the stamp, the proof, the damage
        mark) left by a writer killed between writing and renaming them."""
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.state_dir):
                if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)

    def _unplant_folder(self, name: str) -> None:
        """Writes under the state folder never follow a symlink out of it: a symlink (or a
        file) where one of its folders belongs is removed (it is made when first needed)."""
        path = self.state_dir / name
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreError(f"cannot look at {path}: {exc.strerror or exc}") from exc
        if not statmod.S_ISDIR(st.st_mode):
            try:
                os.unlink(path)
            except OSError as exc:
                raise StoreError(f"{path} is not a folder and cannot be removed: "
                                 f"{exc.strerror or exc}") from exc
            self.messages.append(f"{path} was not a folder (a symbolic link?); removed it")

    def release_lock(self) -> None:
        if self._lock is None:
            return
        try:
            self.commit()  # the next writer must see everything this one did
        finally:
            self._lock.release()
            self._lock = None

    def lock_holder(self) -> LockHolder | None:
        """Who holds the writer lock, as written in the lock file (None: nobody, or unknown)."""
        return read_holder(self.state_dir / LOCK)


    def close(self, *, exiting: bool = False) -> None:
        """Commit and close. `exiting`: the process ends right after, so the database
        connection may be left open (see database.release)."""
        try:
            if self._db is not None:
                try:
                    if not self.readonly:
                        self.commit()
                finally:
                    database.release(self._db, exiting=exiting)
                    self._db = None
        finally:
            self.release_lock_quietly()

    def release_lock_quietly(self) -> None:
        """Release the lock without committing again (after close, or a failed commit)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
