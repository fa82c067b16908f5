"""Opening the state database: trusting it, repairing it, or reading around it.

A database whose `user_version` is unknown or whose file is damaged is moved aside and rebuilt
by a writer (under the lock); a reader reads it as empty, with a message. Each message is
appended to the store's `messages` for the UI to print.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from watchrun.paths import DAMAGED_MARKER, LOCK
from watchrun.state import database, owner
from watchrun.state.lock import LockedError, WriterLock, acquire
from watchrun.state.values import StoreError


class DatabaseOpener:
    """Opens `state.db` of one state folder; what it had to say goes to `messages`."""

    def __init__(self, state_dir: Path, db_path: Path, messages: list[str]) -> None:
        self.state_dir = state_dir
        self.db_path = db_path
        self.messages = messages

    def check_folder_writable(self) -> None:
        if os.access(self.state_dir, os.W_OK):
            return
        try:
            read_only_fs = bool(os.statvfs(self.state_dir).f_flag & os.ST_RDONLY)
        except OSError:
            read_only_fs = False
        why = "is on a read-only file system" if read_only_fs else "is not writable by this user"
        raise StoreError(f"the state folder {self.state_dir} {why}; a build must write there "
                         "(make it writable, or set state_dir in watchrun.toml)")

    def open_readonly(self) -> sqlite3.Connection | None:
        if not self.db_path.exists():
            return None
        try:
            db = database.connect(self.db_path, readonly=True)
        except database.NotCreated:
            return None
        except database.Unusable as exc:
            self.messages.append(
                f"state database {self.db_path} is {exc}; showing no stored state (the next "
                "build moves it aside and starts a new one)")
            return None
        except database.CannotOpen as exc:
            raise StoreError(f"cannot open state database {self.db_path}: {exc}") from exc
        foreign = self._foreign(db)
        if foreign is not None:
            database.close_quietly(db)
            self.messages.append(
                f"state database {self.db_path} was {foreign}; showing no stored state and "
                "reading nothing from it (the next build moves it aside and starts a new one)")
            return None
        return db

    def _foreign(self, db: sqlite3.Connection) -> database.Unusable | None:
        """Why the database must not be trusted (None: it may). An empty one is harmless: a
        writer adopts it (a new database is empty until its stamp is written)."""
        try:
            if owner.stamped(self.state_dir, self.db_path):
                return None
        except owner.KeyUnavailable as exc:
            return database.Unusable("not authenticated", str(exc))
        if database.is_empty(db):
            return None
        return database.Unusable("not written by watchrun for this user",
                                 "it may have come with the project: a tarball, a repository, "
                                 "another account")

    def open_writable(self) -> sqlite3.Connection | None:
        try:
            return self._connect_trusted()
        except database.Unusable as exc:
            problem = exc
        except database.CannotOpen as exc:
            raise StoreError(f"cannot open state database {self.db_path}: {exc}") from exc
        # Never pull the file from under a watchrun that is using it (e.g. a newer version).
        try:
            probe = self.take_lock("repairing the state database")
        except LockedError as locked:
            who = locked.holder.describe() if locked.holder else "another process"
            self.messages.append(f"state database {self.db_path} is {problem}, but another "
                                 f"watchrun is using it ({who}); left it alone")
            return None  # acquire_lock() raises LockedError, or repairs once the lock is free
        try:
            return self._rebuild(problem)
        finally:
            probe.release()

    def _connect_trusted(self) -> sqlite3.Connection:
        """A writable connection to a database this user may trust (stamped, or adopted while
        empty). Unusable when it is damaged, foreign or a symlink."""
        self._unplant_symlinks()
        if os.path.islink(self.db_path):
            raise database.Unusable("a symbolic link", "watchrun never writes through one")
        database.check_header(self.db_path)
        db = database.connect(self.db_path, readonly=False)
        try:
            self._check_if_suspect(db)
            foreign = self._foreign(db)
            if foreign is not None:
                raise foreign
            if not owner.stamped(self.state_dir, self.db_path):
                owner.stamp(self.state_dir, self.db_path)
        except owner.KeyUnavailable as exc:
            database.close_quietly(db)
            raise StoreError(str(exc)) from exc
        except OSError as exc:
            database.close_quietly(db)
            raise database.CannotOpen(f"cannot write its owner stamp: {exc}") from exc
        except BaseException:
            database.close_quietly(db)
            raise
        return db

    def _check_if_suspect(self, db: sqlite3.Connection) -> None:
        """A database that SQLite found damaged while in use is checked whole before use."""
        marker = self.db_path.with_name(DAMAGED_MARKER)
        if not os.path.lexists(marker):
            return
        problems = database.integrity_problems(db)
        with contextlib.suppress(OSError):
            os.unlink(marker)
        if problems:
            raise database.Unusable("damaged", problems)


    def _unplant_symlinks(self) -> None:
        """SQLite would write through a symlink planted as the WAL or shared-memory file: a
        real one is never a symlink, so such a link is removed."""
        for suffix in ("-wal", "-shm"):
            extra = self.db_path.with_name(self.db_path.name + suffix)
            if os.path.islink(extra):
                os.unlink(extra)

    def _rebuild(self, problem: database.Unusable) -> sqlite3.Connection:
        """Move the unusable database aside and start a new one (the caller holds the lock)."""
        try:
            dest = database.move_aside(self.db_path)
            owner.remove_stamp(self.state_dir)
            self.messages.append(
                f"state database {self.db_path} was {problem}; moved it to {dest} and "
                "started a new one")
            return self._connect_trusted()
        except (database.Unusable, database.CannotOpen, OSError) as exc:
            raise StoreError(f"cannot rebuild state database {self.db_path}: {exc}") from exc

    def reopen_under_lock(self) -> sqlite3.Connection:
        """The database was left alone at opening because another writer held it; now the lock
        is ours, open it again (it may have been repaired meanwhile) or rebuild it."""
        try:
            return self._connect_trusted()
        except database.Unusable as exc:
            return self._rebuild(exc)
        except database.CannotOpen as exc:
            raise StoreError(f"cannot open state database {self.db_path}: {exc}") from exc

    def take_lock(self, command: str) -> WriterLock:
        try:
            return acquire(self.state_dir / LOCK, command)
        except OSError as exc:
            raise StoreError(f"cannot take the lock {self.state_dir / LOCK}: "
                             f"{exc.strerror or exc}") from exc
