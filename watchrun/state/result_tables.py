"""Results, unit states, manifests and generator iterations: what builds leave behind."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Iterator
from typing import Any

from watchrun.state.stored_objects import StoredObjects
from watchrun.state.transactions import safe_text
from watchrun.state.values import ResultRecord, UnitState, UnitStatus


def _iter_text(iter: tuple[int, ...]) -> str:
    return ".".join(map(str, iter))


def _iter_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(i) for i in text.split(".")) if text else ()


_UNIT_COLUMNS = "task, iter, signature, status, manifest, output, duration, error, finished"


def _encode_outputs(outputs: dict[str, str]) -> str:
    # "path\0hash\0path\0hash": paths cannot hold NUL, and a split is all it takes to read
    # back (the null build reads every result: a hot path, CONTRIBUTING.md).
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


_STATUSES = {status.value: status for status in UnitStatus}


def _unit_state(row: tuple[Any, ...]) -> UnitState:
    return UnitState(row[0], _iter_tuple(row[1]), row[2], _STATUSES[row[3]], *row[4:])


_MAX_LEFT_OUT = 500  # names in one (NOT) IN list (SQLite allows 32,766 parameters)

# A LEFT JOIN keeps unit_states outer, each result found by its key (left to choose, SQLite
# scanned the results and searched a task's states for each: quadratic in a scope's size).
# `o.digest IS NOT NULL`: the output is an object of the database; else it must be a file.
LAST_UNITS = ("SELECT u.task, u.iter, u.signature, r.output, r.outputs, r.duration, r.finished,"
              " o.digest IS NOT NULL"
              " FROM unit_states u LEFT JOIN results r"
              " ON r.task = u.task AND r.signature = u.signature"
              " LEFT JOIN objects o ON o.digest = r.output")


class ResultTables(StoredObjects):
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

    def result_signatures_except(self, tasks: Collection[str],
                                 only: Collection[str] | None = None) -> dict[str, set[str]]:
        """Every signature each task has a result for, in one query, but for `tasks` (whose
        sets could be large: the tasks of a scope, asked for one by one when they are
        needed). With very many such tasks, nothing is left out. `only`: of these tasks
        alone."""
        found: dict[str, set[str]] = {}
        sql = "SELECT task, signature FROM results"
        rows: Iterable[Any]
        if only is not None:
            rows = self._rows_of(f"{sql} WHERE task IN", only)
        else:
            left_out = tuple(tasks) if len(tasks) <= _MAX_LEFT_OUT else ()
            if left_out:
                sql += f" WHERE task NOT IN ({','.join('?' * len(left_out))})"
            rows = self._rows(sql, left_out)
        for task, signature in rows:
            found.setdefault(task, set()).add(signature)
        return found

    def last_units(self, only: Collection[str] | None = None
                   ) -> tuple[dict[tuple[str, tuple[int, ...]], str], list[ResultRecord]]:
        """In one query: (task, iter) -> the signature of the latest thing that happened there,
        and the result stored under each such signature (what a null build finds, for every
        unit at once, never unit by unit: the per-unit cost, CONTRIBUTING.md). `only`: the
        units of these tasks alone."""
        signatures: dict[tuple[str, tuple[int, ...]], str] = {}
        results: dict[tuple[str, str], ResultRecord] = {}
        rows = self._rows(LAST_UNITS) if only is None else \
            self._rows_of(f"{LAST_UNITS} WHERE u.task IN", only)
        for task, iter_text, signature, *result in rows:
            signatures[(task, _iter_tuple(iter_text))] = signature
            if result[0] is not None and (task, signature) not in results:
                output, outputs, duration, finished, inline = result
                stored = bool(inline) or self.object_intact(output)
                results[(task, signature)] = _result(task, signature, output, outputs, duration,
                                                     finished, stored)
        return signatures, list(results.values())

    def _rows_of(self, sql: str, names: Collection[str]) -> Iterator[Any]:
        """The rows of `sql ... IN (names)`, asked for _MAX_LEFT_OUT names at a time (an old
        SQLite takes at most 999 parameters a statement)."""
        listed = tuple(names)
        for start in range(0, len(listed), _MAX_LEFT_OUT):
            chunk = listed[start:start + _MAX_LEFT_OUT]
            yield from self._rows(f"{sql} ({','.join('?' * len(chunk))})", chunk)

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

    def top_level_states(self, only: Collection[str] | None = None) -> list[UnitState]:
        """The states of every unit outside a scope, in one query (`only`: of these tasks
        alone)."""
        sql = f"SELECT {_UNIT_COLUMNS} FROM unit_states WHERE iter = ''"
        rows = self._rows(sql) if only is None else self._rows_of(f"{sql} AND task IN", only)
        return [_unit_state(row) for row in rows]

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

    def iterations_from(self, task: str, signature: str, start: int, limit: int) -> list[str]:
        """Up to `limit` stored iterations of a generator run from index `start` on, in
        order, ending at a gap."""
        rows = self._rows("SELECT idx, value FROM iterations WHERE task = ? AND signature = ? "
                          "AND idx >= ? ORDER BY idx LIMIT ?", (task, signature, start, limit))
        values: list[str] = []
        for idx, value in rows:
            if idx != start + len(values):
                break
            values.append(value)
        return values

    def iteration(self, task: str, signature: str, index: int) -> str | None:
        """One stored iteration of a generator run (a value released from memory, asked for
        again)."""
        row = self._row("SELECT value FROM iterations WHERE task = ? AND signature = ? "
                        "AND idx = ?", (task, signature, index))
        return None if row is None else str(row[0])

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
