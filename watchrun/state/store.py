"""The state of a project: SQLite (WAL) plus a content-addressed object store.

Layout of `state_dir`: `state.db` (see database.py for the schema and its durability),
`objects/ab/cdef…` (objects of INLINE_LIMIT bytes and more; smaller ones live in the database,
in the same transaction as the result that refers to them), and `lock` (see lock.py).
"""

from __future__ import annotations

import contextlib
import enum
import os
import pickle
import sqlite3
import stat as statmod
import time
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from watchrun.paths import DAMAGED_MARKER, DATABASE, LOCK, LOGS_DIR, OBJECTS_DIR
from watchrun.state import database, owner, pgroups
from watchrun.state.database import SCHEMA_VERSION
from watchrun.state.hashing import hash_bytes, hash_file_content
from watchrun.state.lock import LockedError, LockHolder, WriterLock, acquire, read_holder
from watchrun.state.objects import (
    TEMP_PREFIX,
    ObjectFiles,
    ObjectWriteError,
    check_digest,
    describe_write_error,
)
from watchrun.state.proof import discard_proof
from watchrun.state.statkeys import key_of

__all__ = [
    "INLINE_LIMIT",
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

INLINE_LIMIT = 64 * 1024  # objects smaller than this are rows, bigger ones files
BACKLOG_PIECE = 64  # rows per transaction when kept statements are committed piece by piece
# (halved each time a piece does not fit)


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


def _iter_text(iter: tuple[int, ...]) -> str:
    return ".".join(map(str, iter))


def _iter_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(i) for i in text.split(".")) if text else ()


def _identity(folder: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def safe_text(text: str) -> str:
    """Text SQLite (and any terminal) can take: lone surrogates (a file name that is not
    UTF-8, through os.listdir) become backslash escapes."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _safe_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(safe_text(v) if isinstance(v, str) else v for v in row)


_UNIT_COLUMNS = "task, iter, signature, status, manifest, output, duration, error, finished"




def _encode_outputs(outputs: dict[str, str]) -> str:
    # "path\0hash\0path\0hash": paths cannot hold NUL, and splitting is several times faster
    # than json on the null-build path, which reads every result.
    return "\0".join(f"{path}\0{digest}" for path, digest in sorted(outputs.items()))


def _decode_outputs(text: str) -> dict[str, str]:
    if not text:
        return {}
    parts = text.split("\0")
    return dict(zip(parts[::2], parts[1::2], strict=True))


def _result(task: str, signature: str, output: str, outputs: str, duration: float,
            finished: float, stored: bool) -> ResultRecord:
    return ResultRecord(task, signature, output, _decode_outputs(outputs), duration, finished,
                        stored)


_STATUSES = {status.value: status for status in UnitStatus}  # faster than UnitStatus(value)


def _unit_state(row: tuple[Any, ...]) -> UnitState:
    return UnitState(row[0], _iter_tuple(row[1]), row[2], _STATUSES[row[3]], *row[4:])


_MAX_LEFT_OUT = 500  # names in one NOT IN list (SQLite allows 32,766 parameters)

# A LEFT JOIN keeps unit_states outer, each result found by its key (left to choose, an inner
# join scanned the results and searched a task's states for each: 10,000 iterations took
# 10^8 steps, 23 s).
# `o.digest IS NOT NULL`: the output is an object of the database; else it must be a file.
LAST_UNITS = ("SELECT u.task, u.iter, u.signature, r.output, r.outputs, r.duration, r.finished,"
              " o.digest IS NOT NULL"
              " FROM unit_states u LEFT JOIN results r"
              " ON r.task = u.task AND r.signature = u.signature"
              " LEFT JOIN objects o ON o.digest = r.output")


class Store:
    """Opens (creating if needed) `state_dir/state.db` and `state_dir/objects/`.

    A store whose `user_version` is unknown or whose file is damaged is moved aside and rebuilt;
    the message says so and is kept in `self.messages` for the UI to print. Read-only stores
    (`readonly=True`) never take the lock and never write.
    Writes are buffered in one transaction; `commit()` ends it (the scheduler calls it every few
    milliseconds and at the end), so thousands of results cost one fsync-free commit.

    Read-only stores open the database with `mode=ro`; a missing database reads as empty and is
    not created; a damaged one reads as empty (with a message) and is left for the next writer to
    repair. One thread at a time may use a store.
    """

    messages: list[str]

    def __init__(self, state_dir: Path, *, readonly: bool = False) -> None:
        self.state_dir = Path(state_dir)
        self.db_path = self.state_dir / DATABASE
        self.readonly = readonly
        self.messages = []
        self._objects = ObjectFiles(self.state_dir / OBJECTS_DIR)
        self._lock: WriterLock | None = None
        self._db: sqlite3.Connection | None = None
        self._pending: dict[str, list[tuple[Any, ...]]] = {}  # queued hot inserts, by statement
        # statements run in the open transaction, in order: what a failed commit keeps
        self._journal: list[tuple[str, list[tuple[Any, ...]]]] = []
        # after a write failed (a full disk): the uncommitted statements, in order, tried again
        # by the next commit; nothing is run meanwhile
        self._backlog: list[tuple[str, list[tuple[Any, ...]]]] | None = None
        self._stall_cause = ""
        self._intact: dict[str, bool] = {}  # objects found whole (or not) by this store
        # whether the analysis table holds nothing: a first load asks for every module's
        # analysis, and a query each is a tenth of what parsing them costs (None: not asked)
        self._no_analyses: bool | None = None
        if readonly:
            self._db = self._open_readonly()
        else:
            try:
                self.state_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the state folder {self.state_dir}: "
                                 f"{exc.strerror or exc}") from exc
            self._check_folder_writable()
            self._db = self._open_writable()
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

    # -- opening -------------------------------------------------------------------------------
    def _check_folder_writable(self) -> None:
        if os.access(self.state_dir, os.W_OK):
            return
        try:
            read_only_fs = bool(os.statvfs(self.state_dir).f_flag & os.ST_RDONLY)
        except OSError:
            read_only_fs = False
        why = "is on a read-only file system" if read_only_fs else "is not writable by this user"
        raise StoreError(f"the state folder {self.state_dir} {why}; a build must write there "
                         "(make it writable, or set state_dir in watchrun.toml)")

    def _open_readonly(self) -> sqlite3.Connection | None:
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

    def _open_writable(self) -> sqlite3.Connection | None:
        try:
            return self._connect_trusted()
        except database.Unusable as exc:
            problem = exc
        except database.CannotOpen as exc:
            raise StoreError(f"cannot open state database {self.db_path}: {exc}") from exc
        # Never pull the file from under a watchrun that is using it (e.g. a newer version).
        try:
            probe = self._take_lock("repairing the state database")
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

    def _suspect(self, exc: sqlite3.DatabaseError) -> StateDamaged:
        """Leave a mark for the next writer (it checks the database whole) and say so."""
        with contextlib.suppress(OSError):
            owner.write_file_atomically(self.db_path.with_name(DAMAGED_MARKER), str(exc).encode())
        return StateDamaged(f"the state database {self.db_path} is damaged ({exc}); the next "
                            "build checks it, moves it aside and starts a new one")

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

    def _reopen_under_lock(self) -> sqlite3.Connection:
        """The database was left alone at opening because another writer held it; now the lock
        is ours, open it again (it may have been repaired meanwhile) or rebuild it."""
        try:
            return self._connect_trusted()
        except database.Unusable as exc:
            return self._rebuild(exc)
        except database.CannotOpen as exc:
            raise StoreError(f"cannot open state database {self.db_path}: {exc}") from exc

    def _take_lock(self, command: str) -> WriterLock:
        try:
            return acquire(self.state_dir / LOCK, command)
        except OSError as exc:
            raise StoreError(f"cannot take the lock {self.state_dir / LOCK}: "
                             f"{exc.strerror or exc}") from exc

    # -- the single-writer lock ----------------------------------------------------------------
    def acquire_lock(self, command: str) -> None:
        """Take the writer lock at once or raise LockedError naming the holder."""
        if self.readonly:
            raise ReadOnlyStoreError(f"the store at {self.state_dir} is read-only")
        if self._lock is not None and self._lock.held:
            return
        lock = self._take_lock(command)
        try:
            if self._db is None:
                self._db = self._reopen_under_lock()
            self._unplant_folder(LOGS_DIR)
        except BaseException:
            lock.release()
            raise
        self._lock = lock
        # Whatever this writer does may make the last build's null-build proof false.
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

    def commit(self) -> None:
        """End the open transaction. StateFull when the database cannot take it (a full disk):
        nothing committed before is lost and these writes are kept for the next commit."""
        if self._db is None:
            return
        if self._backlog is not None:
            self._retry_backlog()
            return
        self._flush_pending()
        if self._backlog is None and self._db.in_transaction:
            try:
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                self._stall(exc)
            else:
                self._journal = []
        if self._backlog is not None:
            raise StateFull(self._stall_cause, self.unsaved)

    @property
    def unsaved(self) -> int:
        """Rows waiting for a commit that failed (0: none)."""
        if self._backlog is None:
            return 0
        return sum(len(rows) for _, rows in (*self._backlog, *self._pending.items()))

    def _stall(self, exc: sqlite3.OperationalError) -> None:
        """A write failed for want of space (or a failing disk): roll back to the last commit
        and keep every uncommitted statement, in order, for the next commit."""
        journal = self._journal
        self._roll_back_and_free(exc)
        self._backlog = journal

    def _retry_backlog(self) -> None:
        """Commit the kept statements: all at once, else in order, a piece per transaction,
        as many as the space allows (any prefix of them is a consistent state: each unit's
        objects come before its result, its manifest before its state)."""
        assert self._db is not None and self._backlog is not None
        self._park_pending()
        backlog, self._backlog = self._backlog, None
        try:
            self._commit_statements(backlog)
            return
        except sqlite3.OperationalError as exc:
            self._roll_back_and_free(exc)
        left = list(backlog)
        piece = BACKLOG_PIECE
        while left:
            sql, rows = left[0]
            try:
                self._commit_statements([(sql, rows[:piece])])
            except sqlite3.OperationalError as exc:
                self._roll_back_and_free(exc)
                if piece > 1:
                    piece = max(1, min(piece, len(rows)) // 2)  # a smaller piece may fit
                    continue
                self._backlog = left
                raise StateFull(self._stall_cause, self.unsaved) from None
            if len(rows) > piece:
                left[0] = (sql, rows[piece:])
            else:
                left.pop(0)

    def _commit_statements(self, statements: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        assert self._db is not None
        self._journal = []
        if not self._db.in_transaction:
            self._db.execute("BEGIN")
        for sql, rows in statements:
            self._run(sql, rows)
        self._db.execute("COMMIT")

    def _roll_back_and_free(self, exc: sqlite3.OperationalError) -> None:
        """After a failed write: back to the last commit, and the WAL emptied into the
        database (what the failed transaction wrote there takes space no one will read)."""
        cause = database.write_failure(exc)
        if cause is None:
            raise exc
        self._stall_cause = cause
        assert self._db is not None
        self._journal = []
        with contextlib.suppress(sqlite3.Error):
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _park_pending(self) -> None:
        assert self._backlog is not None
        pending, self._pending = self._pending, {}
        self._backlog.extend(pending.items())

    def close(self) -> None:
        try:
            if self._db is not None:
                try:
                    if not self.readonly:
                        self.commit()
                finally:
                    database.release(self._db)
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

    @property
    def writable(self) -> bool:
        """Whether writes are possible now (not read-only, and the database is open)."""
        return not self.readonly and self._db is not None

    # -- plumbing ------------------------------------------------------------------------------
    def _check_writable(self) -> sqlite3.Connection:
        if self.readonly or self._db is None:
            raise ReadOnlyStoreError(f"the store at {self.state_dir} is read-only")
        return self._db

    def _write(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        """Run one statement in the open transaction; how many rows it changed (0 while the
        store waits for space: the statement is kept for the next commit)."""
        db = self._check_writable()
        self._flush_pending()
        if self._backlog is not None:
            self._backlog.append((sql, [params]))
            return 0
        try:
            if not db.in_transaction:
                db.execute("BEGIN")
            changed = self._run(sql, [params])
        except sqlite3.OperationalError as exc:
            self._journal.append((sql, [params]))
            self._stall(exc)
            return 0
        self._journal.append((sql, [params]))
        return changed

    def _run(self, sql: str, rows: list[tuple[Any, ...]]) -> int:
        """executemany, with text SQLite cannot take (lone surrogates) made safe rather than
        losing the batch. Returns how many rows changed."""
        assert self._db is not None
        try:
            try:
                return self._db.executemany(sql, rows).rowcount
            except UnicodeEncodeError:
                safe = [_safe_row(row) for row in rows]
                rows[:] = safe  # the journal keeps the safe form
                return self._db.executemany(sql, safe).rowcount
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError as exc:
            raise self._suspect(exc) from exc

    def _queue(self, sql: str, params: tuple[Any, ...]) -> None:
        """A hot insert (objects, results, unit states, iterations): kept in order and sent
        with executemany when something reads, commits or writes otherwise, so a scope of
        10,000 iterations costs a few statements per batch instead of one per row."""
        self._check_writable()
        rows = self._pending.get(sql)
        if rows is None:
            self._pending[sql] = rows = []
        rows.append(params)

    def _flush_pending(self) -> None:
        if not self._pending or self._db is None:
            return
        if self._backlog is not None:
            self._park_pending()
            return
        pending, self._pending = self._pending, {}
        try:
            if not self._db.in_transaction:
                self._db.execute("BEGIN")
            for sql, rows in pending.items():
                self._journal.append((sql, rows))
                self._run(sql, rows)
        except sqlite3.OperationalError as exc:
            done = {id(rows) for _, rows in self._journal}
            self._journal.extend(item for item in pending.items() if id(item[1]) not in done)
            self._stall(exc)  # a read goes on with what is committed; commit() says it

    def _row(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        if self._db is None:
            return None
        self._flush_pending()
        try:
            return self._db.execute(sql, params).fetchone()
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError as exc:
            raise self._suspect(exc) from exc

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        if self._db is None:
            return []
        self._flush_pending()
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError as exc:
            raise self._suspect(exc) from exc

    # -- objects -------------------------------------------------------------------------------
    def put_object(self, data: bytes, digest: str | None = None) -> str:
        """Store bytes under their blake3 hex; durable (tmp + rename) before returning.
        Small objects are rows of the open transaction: they become durable with the result
        that refers to them, in the same commit. ObjectWriteError (its message names the
        cause, e.g. "no space left on device writing its output") when a big one cannot be
        written: nothing refers to it then."""
        self._check_writable()
        if digest is None:
            digest = hash_bytes(data)
        else:
            check_digest(digest)
        if len(data) < INLINE_LIMIT:
            self._queue("INSERT OR IGNORE INTO objects (digest, data) VALUES (?, ?)",
                        (digest, data))
        else:
            self._objects.write(digest, data)
            self._note_intact(digest)
        return digest

    def new_object_file(self) -> tuple[int, Path]:
        """(open fd, path) of a temporary file in the object folder: a big output can be
        written (pickled) straight into it, then stored with `adopt_object`, so that neither
        the worker nor watchrun holds its bytes in memory (see objects.ObjectFiles)."""
        self._check_writable()
        try:
            return self._objects.new_temporary()
        except OSError as exc:
            raise ObjectWriteError(exc.errno, describe_write_error(exc)) from exc

    @property
    def object_folder(self) -> Path:
        """Where big objects and their temporary files live (a worker pickles into it)."""
        return self._objects.root

    def adopt_object(self, temporary: Path, digest: str | None = None) -> str:
        """Store a complete temporary file from `new_object_file` (or a worker's, in
        `object_folder`) as an object; its digest. A small one becomes a row (as put_object),
        a big one is renamed into place. `digest`: its blake3 hex, when its writer computed
        it while writing (the file is not read again)."""
        self._check_writable()
        temporary = Path(temporary)
        if temporary.parent != self._objects.root or not temporary.name.startswith(TEMP_PREFIX):
            raise ValueError(f"not a temporary object file: {temporary}")
        if os.lstat(temporary).st_size < INLINE_LIMIT:
            data = Path(temporary).read_bytes()
            os.unlink(temporary)
            return self.put_object(data)
        digest = self._objects.adopt(Path(temporary), digest)
        self._note_intact(digest)
        return digest

    def _note_intact(self, digest: str) -> None:
        """Remember the stat key under which a big object is known whole: `last_units` then
        checks it with a stat instead of reading it."""
        self._intact[digest] = True
        try:
            key = key_of(os.lstat(self._objects.path(digest)))
        except OSError:
            return
        if self.writable:
            self._queue("INSERT OR REPLACE INTO stat_cache (path, size, mtime_ns, ino, ctime_ns,"
                        " hash) VALUES (?, ?, ?, ?, ?, ?)",
                        (os.fspath(self._objects.path(digest)), *key, digest))

    def get_object(self, digest: str) -> bytes:
        """The object's bytes, checked against its name. ObjectMissing (a KeyError) if there
        is no such object, ObjectDamaged if its bytes changed (a writer removes it)."""
        row = self._row("SELECT data FROM objects WHERE digest = ?", (digest,))
        if row is not None:
            inline = bytes(row[0])
            if hash_bytes(inline) != digest:
                if self.writable:
                    self._write("DELETE FROM objects WHERE digest = ?", (digest,))
                raise ObjectDamaged(f"stored object {digest} is damaged (its bytes changed)")
            return inline
        data = self._objects.read(digest)
        if data is None:
            unsaved = self._unsaved_object(digest)
            if unsaved is not None:
                return unsaved
            raise ObjectMissing(f"stored object {digest} is missing "
                                f"({self._objects.path(digest)})")
        if hash_bytes(data) != digest:
            self._refuse(digest)
            raise ObjectDamaged(f"stored object {self._objects.path(digest)} is damaged "
                                "(its bytes do not match its name)")
        return data

    def load_object(self, digest: str) -> Any:
        """Unpickle an object, checked against its name first. A big one is hashed through a
        memory map and unpickled from its file: its bytes are never held in memory beside
        the value (a 500 MB output costs 500 MB, not 1 GB). Errors as get_object; whatever
        unpickling raises (a class that no longer imports) is the caller's."""
        path = self.object_path(digest)
        if path is None:
            return pickle.loads(self.get_object(digest))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise ObjectMissing(f"stored object {digest} is missing ({path})") from exc
        with os.fdopen(fd, "rb") as f:
            if hash_file_content(f"/proc/self/fd/{fd}" if os.path.isdir("/proc/self/fd")
                                 else os.fspath(path), os.fstat(fd).st_size) != digest:
                self._refuse(digest)
                raise ObjectDamaged(f"stored object {path} is damaged (its bytes do not match "
                                    "its name)")
            return pickle.load(f)

    def _unsaved_object(self, digest: str) -> bytes | None:
        """A small object still waiting for a commit (queued, or kept after a full disk)."""
        sql = "INSERT OR IGNORE INTO objects (digest, data) VALUES (?, ?)"
        batches = [*(self._backlog or ()), *self._journal, (sql, self._pending.get(sql, []))]
        for statement, rows in batches:
            if statement == sql:
                for row in rows:
                    if row[0] == digest:
                        return bytes(row[1])
        return None

    def _refuse(self, digest: str) -> None:
        self._intact[digest] = False
        if self.writable:
            self._objects.discard(digest)

    def object_intact(self, digest: str) -> bool:
        """Whether the object exists with the bytes its name says. Inline objects are checked by
        the caller's query; a file by its stat key against the one it was last known whole
        under, else by hashing it. A damaged file is removed by a writer."""
        known = self._intact.get(digest)
        if known is not None:
            return known
        try:
            path = self._objects.path(digest)
        except ValueError:
            return False  # not an object's name: no object can be found under it
        try:
            st = os.lstat(path)
        except OSError:
            self._intact[digest] = False
            return False
        entry = self.stat_cache_get(os.fspath(path))
        if entry is not None and entry[:4] == key_of(st) and entry[4] == digest \
                and statmod.S_ISREG(st.st_mode):
            self._intact[digest] = True
            return True
        if self._objects.intact(digest):
            self._note_intact(digest)
            return True
        self._refuse(digest)
        return False

    def has_object(self, digest: str) -> bool:
        if self._row("SELECT 1 FROM objects WHERE digest = ?", (digest,)) is not None:
            return True
        return self._objects.exists(digest)

    def object_path(self, digest: str) -> Path | None:
        """The file of a big object (for streaming it), None if it is inline or missing."""
        path = self._objects.path(digest)
        return path if path.is_file() and not path.is_symlink() else None

    # -- results and unit states ---------------------------------------------------------------
    def find_result(self, task: str, signature: str) -> ResultRecord | None:
        row = self._row("SELECT r.output, r.outputs, r.duration, r.finished,"
                        " o.digest IS NOT NULL FROM results r"
                        " LEFT JOIN objects o ON o.digest = r.output"
                        " WHERE r.task = ? AND r.signature = ?", (task, signature))
        if row is None:
            return None
        output, outputs, duration, finished, inline = row
        return _result(task, signature, output, outputs, duration, finished,
                       bool(inline) or self.object_intact(output))

    def result_signatures(self, task: str) -> set[str]:
        """Every signature a task has a result for."""
        return {row[0] for row in self._rows("SELECT signature FROM results WHERE task = ?",
                                             (task,))}

    def result_signatures_except(self, tasks: Collection[str]) -> dict[str, set[str]]:
        """Every signature each task has a result for, in one query, but for `tasks` (whose
        sets could be large: the tasks of a scope, asked for one by one when they are
        needed). With very many such tasks, nothing is left out."""
        sql = "SELECT task, signature FROM results"
        left_out = tuple(tasks) if len(tasks) <= _MAX_LEFT_OUT else ()
        if left_out:
            sql += f" WHERE task NOT IN ({','.join('?' * len(left_out))})"
        found: dict[str, set[str]] = {}
        for task, signature in self._rows(sql, left_out):
            found.setdefault(task, set()).add(signature)
        return found

    def last_units(self) -> tuple[dict[tuple[str, tuple[int, ...]], str], list[ResultRecord]]:
        """In one query: (task, iter) -> the signature of the latest thing that happened there,
        and the result stored under each such signature (what a null build finds, for every
        unit at once: asking unit by unit costs ten times as much)."""
        signatures: dict[tuple[str, tuple[int, ...]], str] = {}
        results: dict[tuple[str, str], ResultRecord] = {}
        for task, iter_text, signature, *result in self._rows(LAST_UNITS):
            signatures[(task, _iter_tuple(iter_text))] = signature
            if result[0] is not None and (task, signature) not in results:
                output, outputs, duration, finished, inline = result
                stored = bool(inline) or self.object_intact(output)
                results[(task, signature)] = _result(task, signature, output, outputs, duration,
                                                     finished, stored)
        return signatures, list(results.values())

    def record_result(self, record: ResultRecord) -> None:
        self._queue("INSERT OR REPLACE INTO results "
                    "(task, signature, output, outputs, duration, finished) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (record.task, record.signature, record.output,
                     _encode_outputs(record.outputs), record.duration,
                     record.finished))

    def set_unit_state(self, state: UnitState) -> None:
        error = None if state.error is None else safe_text(state.error)
        self._queue(f"INSERT OR REPLACE INTO unit_states ({_UNIT_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (state.task, _iter_text(state.iter), state.signature, state.status.value,
                     state.manifest, state.output, state.duration, error, state.finished))

    def unit_state(self, task: str, iter: tuple[int, ...] = ()) -> UnitState | None:
        row = self._row(f"SELECT {_UNIT_COLUMNS} FROM unit_states WHERE task = ? AND iter = ?",
                        (task, _iter_text(iter)))
        return None if row is None else _unit_state(row)

    def unit_states(self, task: str | None = None) -> Iterator[UnitState]:
        """Unit states ordered by task, then iteration (numerically)."""
        if task is None:
            rows = self._rows(f"SELECT {_UNIT_COLUMNS} FROM unit_states")
        else:
            rows = self._rows(f"SELECT {_UNIT_COLUMNS} FROM unit_states WHERE task = ?", (task,))
        states = [_unit_state(row) for row in rows]
        states.sort(key=lambda s: (s.task, s.iter))
        return iter(states)

    def top_level_states(self) -> list[UnitState]:
        """The states of every unit outside a scope, in one query."""
        return [_unit_state(row) for row in self._rows(
            f"SELECT {_UNIT_COLUMNS} FROM unit_states WHERE iter = ''")]

    def put_manifest(self, manifest_id: str, data: bytes) -> None:
        """Manifests are deduplicated by id; storing one twice is a no-op."""
        self._queue("INSERT OR IGNORE INTO manifests (id, data) VALUES (?, ?)",
                    (manifest_id, data))

    def get_manifest(self, manifest_id: str) -> bytes | None:
        row = self._row("SELECT data FROM manifests WHERE id = ?", (manifest_id,))
        return None if row is None else bytes(row[0])

    def forget(self, tasks: Iterable[str] | None = None) -> int:
        """Drop results and unit states (of these tasks, or all). Returns how many units.
        Stored generator iterations go too, so a generator that resumes (`start`) begins anew.
        Objects and manifests stay (they are shared by hash)."""
        tables = ("results", "iterations", "generators")
        if tasks is None:
            count = self._write("DELETE FROM unit_states")
            for table in tables:
                self._write(f"DELETE FROM {table}")
            return count
        count = 0
        for task in tasks:
            count += self._write("DELETE FROM unit_states WHERE task = ?", (task,))
            for table in tables:
                self._write(f"DELETE FROM {table} WHERE task = ?", (task,))
        return count

    # -- generator iterations ------------------------------------------------------------------
    def record_iteration(self, task: str, signature: str, index: int, value: str) -> None:
        self._queue("INSERT OR REPLACE INTO iterations (task, signature, idx, value) "
                    "VALUES (?, ?, ?, ?)", (task, signature, index, value))

    def iterations(self, task: str, signature: str) -> list[str]:
        """Stored value hashes of a generator run with this signature, by index, no gaps."""
        rows = self._rows("SELECT idx, value FROM iterations WHERE task = ? AND signature = ? "
                          "ORDER BY idx", (task, signature))
        values: list[str] = []
        for idx, value in rows:
            if idx != len(values):
                break  # a gap: what follows it cannot be resumed from
            values.append(value)
        return values

    def mark_generator_complete(self, task: str, signature: str, count: int) -> None:
        # not queued: it must follow the iterations it counts, also when kept statements are
        # committed piece by piece after a full disk
        self._write("INSERT OR REPLACE INTO generators (task, signature, count, finished) "
                    "VALUES (?, ?, ?, ?)", (task, signature, count, time.time()))

    def generator_complete(self, task: str, signature: str) -> int | None:
        """The number of iterations if this generator signature ran to exhaustion, else None."""
        row = self._row("SELECT count FROM generators WHERE task = ? AND signature = ?",
                        (task, signature))
        return None if row is None else int(row[0])

    # -- caches --------------------------------------------------------------------------------
    def stat_cache_get(self, path: str) -> tuple[int, int, int, int, str] | None:
        """(size, mtime_ns, inode, ctime_ns, hash) recorded for this absolute path."""
        row = self._row("SELECT size, mtime_ns, ino, ctime_ns, hash FROM stat_cache "
                        "WHERE path = ?", (path,))
        return None if row is None else (row[0], row[1], row[2], row[3], row[4])

    def stat_cache_put(self, path: str, size: int, mtime_ns: int, ino: int, ctime_ns: int,
                       digest: str) -> None:
        self._queue("INSERT OR REPLACE INTO stat_cache (path, size, mtime_ns, ino, ctime_ns, hash)"
                    " VALUES (?, ?, ?, ?, ?, ?)", (path, size, mtime_ns, ino, ctime_ns, digest))

    def stat_cache_put_many(self, entries: Iterable[tuple[str, int, int, int, int, str]]) -> None:
        """Many (path, size, mtime_ns, inode, ctime_ns, hash) rows at once."""
        self._check_writable()
        sql = ("INSERT OR REPLACE INTO stat_cache "
               "(path, size, mtime_ns, ino, ctime_ns, hash) VALUES (?, ?, ?, ?, ?, ?)")
        rows = self._pending.get(sql)
        if rows is None:
            self._pending[sql] = rows = []
        rows.extend(entries)

    def stat_cache_all(self) -> dict[str, tuple[int, int, int, int, str]]:
        """The whole stat cache in one query (a null build reads it once)."""
        rows = self._rows("SELECT path, size, mtime_ns, ino, ctime_ns, hash FROM stat_cache")
        return {row[0]: row[1:] for row in rows}

    def analysis_get(self, key: str) -> bytes | None:
        if self._no_analyses is None:
            self._no_analyses = self._row("SELECT 1 FROM analysis LIMIT 1") is None
        if self._no_analyses:
            return None
        row = self._row("SELECT data FROM analysis WHERE key = ?", (key,))
        return None if row is None else bytes(row[0])

    def analysis_put(self, key: str, data: bytes) -> None:
        self._no_analyses = False
        self._queue("INSERT OR REPLACE INTO analysis (key, data) VALUES (?, ?)", (key, data))

    def kv_get(self, key: str) -> bytes | None:
        """Small named blobs (e.g. the cached resolved project, third-party versions)."""
        row = self._row("SELECT data FROM kv WHERE key = ?", (key,))
        return None if row is None else bytes(row[0])

    def kv_put(self, key: str, data: bytes) -> None:
        self._write("INSERT OR REPLACE INTO kv (key, data) VALUES (?, ?)", (key, data))

    # -- process groups in flight --------------------------------------------------------------
    def record_pgroup(self, pgid: int, start_time: float) -> None:
        """Committed at once (with whatever else is pending): a kill -9 of watchrun right after
        must leave the group findable."""
        self._write("INSERT OR REPLACE INTO pgroups (pgid, start_time) VALUES (?, ?)",
                    (pgid, start_time))
        with contextlib.suppress(StateFull):  # kept: the scheduler's own commit says it
            self.commit()


    def drop_pgroup(self, pgid: int) -> None:
        # Buffered: a group that ended but is still recorded is harmless (see pgroups.py).
        self._queue("DELETE FROM pgroups WHERE pgid = ?", (pgid,))

    def recorded_pgroups(self) -> list[tuple[int, float]]:
        return [(int(p), float(t)) for p, t in self._rows("SELECT pgid, start_time FROM pgroups")]

    def reap_stale_pgroups(self) -> list[int]:
        """Kill (SIGCONT, then SIGKILL) recorded groups whose leader is still the same process
        (checked against its start time, so a reused pid is left alone); forget them all.
        Returns the pgids that were ended. Groups whose leader is gone but whose members live
        are ended too."""
        self._check_writable()
        recorded = self.recorded_pgroups()
        if not recorded:
            return []  # the usual case: no write, no commit
        ended = pgroups.end_groups(recorded)
        self._write("DELETE FROM pgroups")
        self.commit()
        return ended

    # -- runs ----------------------------------------------------------------------------------
    def begin_run(self, command: str) -> int:
        self._write("INSERT INTO runs (command, pid, started) VALUES (?, ?, ?)",
                    (command, os.getpid(), time.time()))
        row = self._row("SELECT max(id) FROM runs")
        return int(row[0]) if row is not None and row[0] is not None else 0

    def end_run(self, run_id: int, ok: bool) -> None:
        self._write("UPDATE runs SET finished = ?, ok = ? WHERE id = ?",
                    (time.time(), int(ok), run_id))

