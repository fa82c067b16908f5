"""The SQLite file under a state folder: schema, opening, and repair.

Durability: WAL with `synchronous=NORMAL`. A commit is in the WAL file when `commit()` returns, so
a killed process loses nothing it committed; a power cut may lose the last commits (never
consistency: the database rolls back to an earlier commit). Objects a result points at are
fsynced before the result is written, so a result never outlives its object.

Opening is on the path of every null build, so it asks as little as it can: one pragma for the
schema version and a one-row read of each table (which also finds most damage at once). The
schema is created only when the version is 0, i.e. in a new file.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path

SCHEMA_VERSION = 1

# Rows of small fixed-size keys and values are WITHOUT ROWID (the primary key is the table);
# tables whose rows can be large (tracebacks, blobs) keep the rowid layout.
SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    task TEXT NOT NULL,
    signature TEXT NOT NULL,
    output TEXT NOT NULL,            -- object digest of the pickled output
    outputs TEXT NOT NULL,           -- 'path NUL hash NUL path NUL hash' of declared outputs
    duration REAL NOT NULL,
    finished REAL NOT NULL,
    PRIMARY KEY (task, signature)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS unit_states (
    task TEXT NOT NULL,
    iter TEXT NOT NULL,              -- '' outside any scope, '3', '3.1' nested
    signature TEXT NOT NULL,
    status TEXT NOT NULL,
    manifest TEXT NOT NULL,
    output TEXT,
    duration REAL,
    error TEXT,
    finished REAL NOT NULL,
    PRIMARY KEY (task, iter)
);
CREATE TABLE IF NOT EXISTS manifests (
    id TEXT PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS objects (   -- objects under INLINE_LIMIT bytes (bigger ones are files)
    digest TEXT PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS iterations (
    task TEXT NOT NULL,
    signature TEXT NOT NULL,         -- the generator's signature
    idx INTEGER NOT NULL,
    value TEXT NOT NULL,             -- object digest of the pickled value
    PRIMARY KEY (task, signature, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS generators (  -- generator runs that reached exhaustion
    task TEXT NOT NULL,
    signature TEXT NOT NULL,
    count INTEGER NOT NULL,
    finished REAL NOT NULL,
    PRIMARY KEY (task, signature)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stat_cache (
    path TEXT PRIMARY KEY,           -- absolute
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    hash TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS analysis (
    key TEXT PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS pgroups (   -- task process groups in flight, for reaping after a kill
    pgid INTEGER PRIMARY KEY,
    start_time REAL NOT NULL         -- the leader's start time: tells a reused pid apart
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    command TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    ok INTEGER
);
"""

TABLES = ("results", "unit_states", "manifests", "objects", "iterations", "generators",
          "stat_cache", "analysis", "kv", "pgroups", "runs")


class Unusable(Exception):
    """The file is damaged, foreign or of another schema: `summary` says which, `detail` how."""

    def __init__(self, summary: str, detail: str) -> None:
        super().__init__(f"{summary} ({detail})")
        self.summary = summary
        self.detail = detail


class NotCreated(Exception):
    """Read-only: the file exists but holds no schema yet (a writer is creating it)."""


class CannotOpen(Exception):
    """The file cannot be opened at all (permissions, disk, a busy lock): not its content."""


def connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    """A connection to a usable database, creating the schema in a new (writable) one.
    Raises Unusable (damaged, foreign or other schema), NotCreated or CannotOpen."""
    db: sqlite3.Connection | None = None
    try:
        if readonly:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                 isolation_level=None, timeout=5.0, check_same_thread=False)
        else:
            db = sqlite3.connect(path, isolation_level=None, timeout=5.0,
                                 check_same_thread=False)
        _prepare(db, readonly=readonly)
        return db
    except BaseException as exc:
        if db is not None:
            close_quietly(db)
        if isinstance(exc, sqlite3.OperationalError):
            raise CannotOpen(write_failure(exc) or str(exc)) from exc
        if isinstance(exc, sqlite3.DatabaseError):
            raise Unusable("damaged", str(exc)) from exc
        raise


def _prepare(db: sqlite3.Connection, *, readonly: bool) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version == 0:
        if db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is not None:
            raise Unusable("not made by watchrun", "it holds other tables")
        if readonly:
            raise NotCreated()
        _create(db)
    elif version != SCHEMA_VERSION:
        raise Unusable("written by another version of watchrun",
                       f"schema version {version}, this one reads {SCHEMA_VERSION}")
    if not readonly:
        db.execute("PRAGMA synchronous = NORMAL")
    for table in TABLES:
        db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()


def _create(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA journal_mode = WAL")  # persistent: set once, in the new file
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in SCHEMA.split(";\n"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # SQLite may have rolled back already (a full disk)
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


MAGIC = b"SQLite format 3\0"


def check_header(path: Path) -> None:
    """Unusable when the file exists, is not empty and does not start as a SQLite database
    does. SQLite itself may not notice: while page 1 is in the WAL it reads it from there,
    until a checkpoint copies it back over whatever was written in its place."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CannotOpen(str(exc)) from exc
    if head and head != MAGIC:
        raise Unusable("damaged", "its header is not a SQLite database's")


def integrity_problems(db: sqlite3.Connection) -> str:
    """What SQLite's quick_check finds wrong ("" when nothing). Reads the whole file."""
    try:
        rows = db.execute("PRAGMA quick_check(5)").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    found = [str(row[0]) for row in rows if row[0] != "ok"]
    return "; ".join(found)


def is_empty(db: sqlite3.Connection) -> bool:
    """Whether no table holds a row (a new database, or one whose first commit never came)."""
    return all(db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is None
               for table in TABLES)


# SQLite's primary result codes for what a later retry may get past (more space, a remount)
_FULL, _IOERR, _READONLY, _CANTOPEN = 13, 10, 8, 14


def write_failure(exc: sqlite3.OperationalError) -> str | None:
    """What a failed write means for the user, when it is the disk's doing (None: another
    error, e.g. a bug)."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc)
    if primary == _FULL or "disk is full" in text:
        return "no space left on device"
    if primary == _READONLY or "readonly database" in text:
        return "the state folder became read-only"
    if primary in (_IOERR, _CANTOPEN) or "disk I/O error" in text:
        return f"the disk failed to write ({text})"
    return None


def close_quietly(db: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        db.close()


# Connections left open by `release`, until the process ends.
_PARKED: list[sqlite3.Connection] = []


class ExitSoon:
    """Set by the console script, whose process ends with os._exit right after its command.

    Closing the last connection to a WAL database checkpoints it: every page the process wrote
    is copied back into the database file, with two fsyncs: at the end of a small build, more
    than the build's own work. A process about to end leaves its connection open
    instead (see `release`): its commits stay in the WAL, which the next connection reads back
    and SQLite folds in at a later automatic checkpoint, exactly as after a crash, which WAL is
    made to survive. Nothing committed is lost either way."""

    enabled = False


def release(db: sqlite3.Connection) -> None:
    """The end of a connection whose work is committed: closed, or parked if the process is
    about to end (see ExitSoon)."""
    if ExitSoon.enabled:
        _PARKED.append(db)
    else:
        close_quietly(db)


def move_aside(path: Path) -> Path:
    """Rename a bad database (and its WAL and shared-memory files, which must never be replayed
    into a new database) to `state.db.broken-<unixtime>`. Returns the new name."""
    stamp = int(time.time())
    dest = path.with_name(f"{path.name}.broken-{stamp}")
    n = 1
    while dest.exists():
        n += 1
        dest = path.with_name(f"{path.name}.broken-{stamp}-{n}")
    os.replace(path, dest)
    for suffix in ("-wal", "-shm"):
        extra = path.with_name(path.name + suffix)
        if extra.exists():
            os.replace(extra, dest.with_name(dest.name + suffix))
    return dest
