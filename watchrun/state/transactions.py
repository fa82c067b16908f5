"""Writes to the state database, buffered in one transaction, and what survives a full disk.

Hot inserts are queued and sent with executemany when something reads or commits; every
statement of the open transaction is journaled, so a commit the disk cannot take keeps them,
in order, for the next commit (see `commit`).
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from watchrun.paths import DAMAGED_MARKER, DATABASE
from watchrun.state import database, owner
from watchrun.state.values import ReadOnlyStoreError, StateDamaged, StateFull

BACKLOG_PIECE = 64  # rows per transaction when kept statements are committed piece by piece
# (halved each time a piece does not fit)

Statements = list[tuple[str, list[tuple[Any, ...]]]]


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


class Transactions:
    """The connection and its open transaction. Writes are buffered in one transaction;
    `commit()` ends it (the scheduler calls it every few milliseconds and at the end)."""

    def __init__(self, state_dir: Path, readonly: bool) -> None:
        self.state_dir = Path(state_dir)
        self.db_path = self.state_dir / DATABASE
        self.readonly = readonly
        self._db: sqlite3.Connection | None = None
        self._pending: dict[str, list[tuple[Any, ...]]] = {}  # queued hot inserts, by statement
        # statements run in the open transaction, in order: what a failed commit keeps
        self._journal: Statements = []
        # after a write failed (a full disk): the uncommitted statements, in order, tried again
        # by the next commit; nothing is run meanwhile
        self._backlog: Statements | None = None
        self._stall_cause = ""
        # bytes of objects written as rows since the last commit (the bulk of a transaction)
        self.uncommitted_bytes = 0

    def commit(self) -> None:
        """End the open transaction. StateFull when the database cannot take it (a full disk):
        nothing committed before is lost and these writes are kept for the next commit."""
        if self._db is None:
            return
        self.uncommitted_bytes = 0
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
        with executemany when something reads, commits or writes otherwise: a batch of rows is
        one statement, not one per row (the per-unit cost, CONTRIBUTING.md)."""
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
        return self._read(sql, params, all_rows=False)

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        rows: list[Any] = self._read(sql, params, all_rows=True)
        return rows

    def _read(self, sql: str, params: tuple[Any, ...], *, all_rows: bool) -> Any:
        """A query after the queued writes are sent (it must see them); nothing (None, or no
        rows) without a database. Damage SQLite reports is marked for the next writer."""
        if self._db is None:
            return [] if all_rows else None
        self._flush_pending()
        try:
            cursor = self._db.execute(sql, params)
            return cursor.fetchall() if all_rows else cursor.fetchone()
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError as exc:
            raise self._suspect(exc) from exc

    def _suspect(self, exc: sqlite3.DatabaseError) -> StateDamaged:
        """Leave a mark for the next writer (it checks the database whole) and say so."""
        with contextlib.suppress(OSError):
            owner.write_file_atomically(self.db_path.with_name(DAMAGED_MARKER), str(exc).encode())
        return StateDamaged(f"the state database {self.db_path} is damaged ({exc}); the next "
                            "build checks it, moves it aside and starts a new one")
