"""Objects: pickled values named by their blake3, small ones as rows, big ones as files."""

from __future__ import annotations

import os
import pickle
import stat as statmod
from pathlib import Path
from typing import Any

from watchrun.paths import OBJECTS_DIR
from watchrun.state.cache_tables import CacheTables
from watchrun.state.hashing import hash_bytes, hash_file_content
from watchrun.state.objects import (
    TEMP_PREFIX,
    ObjectFiles,
    ObjectWriteError,
    check_digest,
)
from watchrun.state.statkeys import key_of
from watchrun.state.values import ObjectDamaged, ObjectMissing
from watchrun.write_errors import describe_write_error

INLINE_LIMIT = 64 * 1024  # objects smaller than this are rows, bigger ones files


class StoredObjects(CacheTables):
    def __init__(self, state_dir: Path, readonly: bool) -> None:
        super().__init__(state_dir, readonly)
        self._objects = ObjectFiles(self.state_dir / OBJECTS_DIR)
        self._intact: dict[str, bool] = {}  # objects found whole (or not) by this store

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
            self.uncommitted_bytes += len(data)
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
            self.stat_cache_put(os.fspath(self._objects.path(digest)), *key, digest)

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
        the value. Errors as get_object; whatever
        unpickling raises (a class that no longer imports) is the caller's."""
        path = self._big_object_file(digest)
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

    def _big_object_file(self, digest: str) -> Path | None:
        """The file of a big object (for streaming it), None if it is inline or missing."""
        path = self._objects.path(digest)
        return path if path.is_file() and not path.is_symlink() else None
