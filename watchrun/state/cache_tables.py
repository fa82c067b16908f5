"""The store's caches: file hashes by stat key, per-module analyses, small named blobs."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from watchrun.state.transactions import Transactions


class CacheTables(Transactions):
    def __init__(self, state_dir: Path, readonly: bool) -> None:
        super().__init__(state_dir, readonly)
        # whether the analysis table holds nothing: a first load asks for every module's
        # analysis, and asking the table for each one would be wasted (None: not asked)
        self._no_analyses: bool | None = None

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
