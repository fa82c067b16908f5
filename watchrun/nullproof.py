"""The null-build proof, checked: `watchrun build` answers "all clean" from a few thousand stats.

A build that succeeded leaves in its state folder the evidence that everything is now clean (its
trace, sealed after the commit: `engine/trace.py`). The next `watchrun build` with the same
arguments checks that evidence before it imports anything else. When every stat key is
unchanged, or a changed file still hashes to the same content (after `touch`), a full build
would compute the same signatures, find the same results and run nothing: the check prints what
that build would print (its summary line or, with `--json`, the events of the null build that
wrote the proof) and exits 0. In any other case the normal build runs and decides for itself.

Why it is safe:
- every writer (build, dev, clean, accept) deletes the proof as it takes the writer lock, and the
  proof is checked holding that lock (shared, so that null builds may look together), so no
  result in the store changed under it; the identity of the database file is checked too, in
  case it was deleted or replaced by hand;
- its stat keys are those the decision was made with: the project's are taken when it was
  loaded, the files' are the hasher's cache entries whose hash is the one that was used. A hash
  without a settled stat key (the file changed just before it was read) is checked by hashing;
- it names the watchrun and Python that wrote it, the arguments, and the installed packages (the
  mtimes of the site-packages folders change with every install or removal).

On the null-build path: the standard library's basics only (CONTRIBUTING.md, "Hot paths").
"""

from __future__ import annotations

import os
import sys
from array import array

from watchrun.paths import STATE_DIR
from watchrun.state.lock import try_lock
from watchrun.state.proof import (
    Proof,
    ProvenClean,
    database_identity,
    identity,
    join,
    proof_path,
    read_proof,
    settings_stats,
    site_mtimes,
    split,
    unpack_keys,
    write_proof,
)
from watchrun.state.statkeys import CacheEntry, stat_key

TYPE_CHECKING = False
if TYPE_CHECKING:
    from watchrun.state.hashing import FileHasher


def try_null_build(root_arg: str, targets: list[str], json_out: bool = False
                   ) -> int | ProvenClean | None:
    """Exit code 0 after printing what a null build prints (its summary, or with `json_out`
    its events) when the proof holds; what it still proves when only some observed files
    changed; None when the normal build has to decide on its own (no proof, the project or
    the settings changed, the lock is taken)."""
    root = os.path.realpath(root_arg)  # what load_config makes of `-C` (symlinks resolved)
    state_dir = os.path.join(root, STATE_DIR)
    with try_lock(state_dir, shared=True) as locked:
        if not locked:
            return None  # no writer ever ran here, or one is running: the normal build says who
        proof = read_proof(state_dir)
        if proof is None:
            return None
        changed = _changed(proof, root, state_dir, targets)
        if changed is None:
            return None
        if changed or (json_out and proof.get("events") is None):
            # some files changed, or the events to replay are not kept: the build runs, and
            # the proof tells it which tasks need no second look
            return _proven(proof, changed, state_dir)
    if json_out:
        _print_events(proof["events"])  # type: ignore[arg-type]
    else:
        sys.stdout.write(f"{proof['summary']}\n")
    sys.stdout.flush()
    return 0


def _print_events(events: str) -> None:
    """Each line of the null build that wrote the proof, with the time of now."""
    import time

    write = sys.stdout.write
    for line in events.split("\n") if events else ():
        head, _, tail = line.partition("\0")
        write(f"{head}{time.time()!r}{tail}\n")


def _proven(proof: Proof, changed: set[str], state_dir: str) -> ProvenClean | None:
    try:
        return ProvenClean(proof, changed, stat_key(proof_path(state_dir)))
    except (KeyError, TypeError, ValueError):
        return None  # written by another version


def _changed(proof: Proof, root: str, state_dir: str, targets: list[str]) -> set[str] | None:
    """The observed files whose content changed (none: the proof holds whole); None when the
    proof holds for nothing (the settings, the project, or too many files changed)."""
    try:
        if not _settings_hold(proof, root, state_dir, targets):
            return None
        return _files_changed(proof, state_dir)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return None  # another shape: written by another version


def _settings_hold(proof: Proof, root: str, state_dir: str, targets: list[str]) -> bool:
    return (proof["id"] == identity(root, targets)
            and proof["state_dir"] == state_dir
            and proof["db"] == database_identity(state_dir)
            and proof["configs"] == settings_stats(root)
            and proof["site"] == site_mtimes())


def _files_changed(proof: Proof, state_dir: str) -> set[str] | None:
    """The inputs and outputs (an edited data file, a deleted output; what only changed its
    stat key is hashed again), the project's files (an edited task), then new files. With
    all else as it was, a few changed contents still leave a proof of the tasks they do not
    touch; many (a checkout) end the check at once."""
    from watchrun.project.discovery import discover_in

    contents = _Contents(proof)
    same = contents.hold()
    if contents.changed is None and not same:
        return None
    absent: list[str] = proof["absent"]  # type: ignore[assignment]
    folders: list[str] = proof["folders"]  # type: ignore[assignment]
    holds = (_same_keys(split(proof["project"]),  # type: ignore[arg-type]
                        unpack_keys(proof["project_keys"]))  # type: ignore[arg-type]
             and not any(os.path.lexists(path) for path in absent)
             and join(discover_in(folders, state_dir)) == proof["discovered"]
             and _expansions_hold(proof, os.path.dirname(state_dir)))
    if not holds:
        return None
    if not same:
        return set(contents.changed or ())
    if contents.update():  # touched files: their new stat keys, for next time
        write_proof(state_dir, proof)
    return set()


def _same_keys(paths: list[str], keys: array[int]) -> bool:
    if len(keys) != 4 * len(paths):
        return False
    for i, path in enumerate(paths):
        try:
            st = os.stat(path)
        except OSError:
            return False
        j = 4 * i
        if (keys[j] != st.st_size or keys[j + 1] != st.st_mtime_ns or keys[j + 2] != st.st_ino
                or keys[j + 3] != st.st_ctime_ns):
            return False
    return True


class _Contents:
    """Every observed input and output has the content the build saw: by its stat key, else by
    hashing it again (after `touch`). Small files are hashed as they are found, so that an
    edited file ends the check at once; big ones together at the end, in parallel."""

    EAGER_BYTES = 1 << 20

    def __init__(self, proof: Proof) -> None:
        self.proof = proof
        self.paths = split(proof["observed"])  # type: ignore[arg-type]
        self.hashes = split(proof["hashes"])  # type: ignore[arg-type]
        self.keys = unpack_keys(proof["keys"])  # type: ignore[arg-type]
        self.big: list[str] = []
        self._hasher: FileHasher | None = None
        # the paths whose content changed; None once too many have for a partial proof
        # to be worth it (or the proof has no values to make one of)
        self.changed: list[str] | None = [] if "values" in proof else None
        self._most = max(16, len(self.paths) // 8)

    def hold(self) -> bool:
        """Whether every content is as it was; the changed ones are in `changed`."""
        paths = self.paths
        if not (len(paths) == len(self.hashes) and len(self.keys) == 4 * len(paths)):
            self.changed = None
            return False
        for i, path in enumerate(paths):
            if not self._as_seen(i, path) and not self._note(path):
                return False
        if self.big:
            found = self.hasher.hash_many(self.big)
            wanted = dict(zip(paths, self.hashes, strict=True))
            for path in self.big:
                if found[path] != wanted[path] and not self._note(path):
                    return False
        return not self.changed

    def _as_seen(self, i: int, path: str) -> bool:
        """Whether the content at `path` is what the proof saw (a big file whose stat key
        changed is put aside, to be hashed with the others at the end)."""
        hashes, keys = self.hashes, self.keys
        try:
            st = os.stat(path)
        except OSError:
            return not hashes[i]  # missing then, missing now
        if not hashes[i]:
            return False  # missing then, there now
        j = 4 * i
        if (keys[j] == st.st_size and keys[j + 1] == st.st_mtime_ns
                and keys[j + 2] == st.st_ino and keys[j + 3] == st.st_ctime_ns):
            return True
        # a changed stat key, or a hash that was not settled: hash it again
        if st.st_size >= self.EAGER_BYTES:
            self.big.append(path)
            return True
        return bool(self.hasher.hash_files([path])[path] == hashes[i])

    def _note(self, path: str) -> bool:
        """A changed content: whether to go on looking (for a partial proof)."""
        if self.changed is None or len(self.changed) >= self._most:
            self.changed = None
            return False
        self.changed.append(path)
        return True

    @property
    def hasher(self) -> FileHasher:
        if self._hasher is None:
            from watchrun.state.hashing import FileHasher  # blake3: only if something changed

            below: dict[str, CacheEntry] = self.proof["below"]  # type: ignore[assignment]
            self._hasher = FileHasher(None, cache=below)  # a folder's files, unless changed
        return self._hasher

    def update(self) -> bool:
        """Put the settled stat keys of the files hashed again into the proof; whether any."""
        fresh = self._hasher.take_new() if self._hasher is not None else {}
        if not fresh:
            return False
        below: dict[str, CacheEntry] = self.proof["below"]  # type: ignore[assignment]
        index = {path: i for i, path in enumerate(self.paths)}
        for path, entry in fresh.items():
            i = index.get(path)
            if i is None:
                below[path] = entry
            elif entry[4] == self.hashes[i]:
                self.keys[4 * i:4 * i + 4] = array("q", entry[:4])
        self.proof["keys"] = self.keys.tobytes()
        return True


def _expansions_hold(proof: Proof, root: str) -> bool:
    """Each task's input patterns match what they matched (but those that the observed files
    settle: see `_unimplied`)."""
    from watchrun.project.inputs import expand_inputs

    expansions: list[tuple[tuple[str, ...], tuple[str, ...]]] = proof["inputs"]  # type: ignore[assignment]
    return all(tuple(expand_inputs(patterns, root)) == matched
               for patterns, matched in expansions)
