"""The null-build proof: `watchrun build` answers "all clean" from a few thousand stats.

A build that succeeded leaves in its state folder the evidence that everything is now clean: the
stat keys of the settings files, task files and local modules it loaded, the files each task's
input patterns matched, and the last hash of every input and output it looked at (an output's
after its task ran), with the stat key under which that hash was known. A build during which a
file changed under it leaves no proof.

The next `watchrun build` with the same arguments checks that evidence before it imports
anything else (asyncio, SQLite and the project model take ten times longer to import than the
check takes). When every stat key is unchanged, or a changed file still hashes to the same
content (after `touch`), a full build would compute the same signatures, find the same results
and run nothing: the proof prints the summary that build would print (with `--json`, the events
of the null build that wrote it) and exits 0. In any other case the normal build runs and
decides for itself.

Why it is safe:
- every writer (build, dev, clean, accept) deletes the proof as it takes the writer lock, and the
  proof is checked holding that lock, so no result in the store changed under it; the identity
  of the database file is checked too, in case it was deleted or replaced by hand;
- its stat keys are those the decision was made with: the project's are taken when it was
  loaded, the files' are the hasher's cache entries whose hash is the one that was used. A hash
  without a settled stat key (the file changed just before it was read) is checked by hashing;
- it names the watchrun and Python that wrote it, the arguments, and the installed packages (the
  mtimes of the site-packages folders change with every install or removal).

This module is imported by the console script before anything else: it keeps to the standard
library's cheapest modules.
"""

from __future__ import annotations

import contextlib
import fcntl
import marshal
import os
import sys
from array import array
from collections.abc import Callable, Iterable, Mapping  # loaded already (by re, functools)

import watchrun
from watchrun.state.statkeys import CacheEntry, StatKey, stat_key

TYPE_CHECKING = False
if TYPE_CHECKING:
    from watchrun.state.hashing import FileHasher

PROOF_FILE = "clean.proof"
PROOF_FORMAT = 3
PROOF_PURPOSE = b"watchrun null-build proof"
DEFAULT_STATE_DIR = ".watchrun"  # the only state folder the console script knows before config
CONFIG_FILES = ("watchrun.toml", "pyproject.toml")  # what load_config may read
DATABASE_FILE = "state.db"

Proof = dict[str, object]


def site_mtimes() -> list[tuple[str, int]]:
    """(folder, mtime) of the site-packages folders: an install or removal changes them."""
    found = []
    for entry in sys.path:
        if "-packages" in entry:
            try:
                found.append((entry, os.stat(entry).st_mtime_ns))
            except OSError:
                continue
    return found


def config_stats(root: str) -> dict[str, StatKey | None]:
    """Stat keys of the settings files load_config may read (None: absent), taken before it
    reads them."""
    return {path: stat_key(path) for path in (os.path.join(root, n) for n in CONFIG_FILES)}


def identity(root: str, targets: Iterable[str]) -> tuple[object, ...]:
    return (PROOF_FORMAT, watchrun.__version__, sys.version, sys.executable, root,
            tuple(targets))


def proof_path(state_dir: str) -> str:
    return os.path.join(state_dir, PROOF_FILE)


def discard_proof(state_dir: str) -> None:
    """Called by every writer as it takes the lock: whatever it does may make the proof false."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(proof_path(state_dir))


def _database_identity(state_dir: str) -> tuple[object, ...] | None:
    """The database as the last writer left it: the stat keys of its file and WAL (a file
    truncated, replaced or written in place has another), and its header (SQLite's magic,
    page size and counters: a file overwritten in place is not a database of that shape).
    The WAL and the file do not change after the proof is written: the writer's connection is
    left open until the process ends (`database.ExitSoon`)."""
    path = os.path.join(state_dir, DATABASE_FILE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        header = os.pread(fd, 100, 0)
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not header.startswith(b"SQLite format 3\0"):
        return None
    return ((st.st_dev, st.st_ino), stat_key(path), _lstat_key(path + "-wal"), header)


def _lstat_key(path: str) -> StatKey | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


# -- the file's form ------------------------------------------------------------------------------
#
# Thousands of paths, hashes and stat keys are packed into a few big objects (paths joined by
# NUL, stat keys in one array of int64): reading the proof then unmarshals a few objects
# instead of tens of thousands of small ones.

_NO_KEY = (-1, -1, -1, -1)  # the stat key of a path whose hash was not settled (or a folder)


def _join(texts: Iterable[str]) -> str:
    return "\0".join(texts)


def _split(text: str) -> list[str]:
    return text.split("\0") if text else []


def _keys(keys: Iterable[StatKey]) -> bytes:
    packed = array("q")
    for key in keys:
        packed.extend(key)
    return packed.tobytes()


def _unpack_keys(data: bytes) -> array[int]:
    keys = array("q")
    keys.frombytes(data)
    return keys


# -- writing ------------------------------------------------------------------------------------

def make_proof(*, root: str, targets: Iterable[str], state_dir: str,
               configs: Mapping[str, StatKey | None], folders: Iterable[str],
               discovered: Iterable[str], project: Mapping[str, StatKey], absent: Iterable[str],
               expansions: Iterable[tuple[tuple[str, ...], tuple[str, ...]]],
               observed: Mapping[str, str | None],
               entry_of: Callable[[str], CacheEntry | None], is_file: Callable[[str], bool],
               entries_below: Callable[[str], Mapping[str, CacheEntry]], units: int,
               events: list[tuple[str, str]] | None) -> Proof:
    """The proof of a build that succeeded; `units`: how many a null build finds clean;
    `events`: the `--json` lines of a build that ran nothing, without their times (a build
    that ran something printed other events than a null build would: `--json` then takes
    the normal build). `is_file(path)`: the hasher knows the path as a file."""
    paths = list(observed)
    keys: list[StatKey] = []
    below: dict[str, CacheEntry] = {}  # the files below a folder input: their own entries
    for path in paths:
        digest, entry = observed[path], entry_of(path)
        if entry is not None and entry[4] == digest:
            keys.append(entry[:4])
            continue
        keys.append(_NO_KEY)  # a missing file, or one whose hash is not settled: hashed again
        if digest is not None and not is_file(path) and os.path.isdir(path):
            below.update(entries_below(path))
    return {
        "id": identity(root, targets), "db": None,  # see write_proof
        "configs": dict(configs), "folders": list(folders), "state_dir": state_dir,
        "discovered": _join(discovered), "project": _join(project),
        "project_keys": _keys(project.values()), "absent": list(absent),
        "site": site_mtimes(), "inputs": _unimplied(expansions, observed, root),
        "observed": _join(paths), "hashes": _join(observed[p] or "" for p in paths),
        "keys": _keys(keys), "below": below, "units": units,
        "events": None if events is None else "\n".join(f"{h}\0{t}" for h, t in events),
    }


def _unimplied(expansions: Iterable[tuple[tuple[str, ...], tuple[str, ...]]],
               observed: Mapping[str, str | None], root: str
               ) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """The input expansions the observed files do not already settle: a task's plain input
    paths (no glob) are each among the observed paths, whose existence the check looks at."""
    from watchrun.project.inputs import has_magic

    return [(patterns, matched) for patterns, matched in expansions
            if any(has_magic(p) for p in patterns)
            or not all(os.path.join(root, p) in observed for p in patterns)]


def write_proof(state_dir: str, proof: Proof) -> None:
    """Atomically (a crash must not leave half a proof), never through a symlink; a proof
    that cannot be written (a full disk) is only a null build that will not be quick."""
    from watchrun.state.owner import KeyUnavailable, mac, write_file_atomically

    proof["db"] = _database_identity(state_dir)  # now: the results it speaks of are committed
    if proof["db"] is None:
        return  # no database the proof could speak for
    data = marshal.dumps(proof)
    with contextlib.suppress(OSError, KeyUnavailable):
        write_file_atomically(proof_path(state_dir), mac(data, PROOF_PURPOSE) + data)


# -- checking -----------------------------------------------------------------------------------

def try_null_build(root_arg: str, targets: list[str], json_out: bool = False) -> int | None:
    """Exit code 0 after printing what a null build prints (its summary, or with `json_out`
    its events) when the proof holds; None when the normal build has to decide (no proof,
    anything changed, the lock is taken)."""
    root = os.path.realpath(root_arg)  # what load_config makes of `-C` (symlinks resolved)
    state_dir = os.path.join(root, DEFAULT_STATE_DIR)
    try:
        fd = os.open(os.path.join(state_dir, "lock"), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return None  # another writer: the normal build says who
        proof = _read(state_dir)
        if proof is None or (json_out and proof.get("events") is None) \
                or not _holds(proof, root, state_dir, targets):
            return None
    finally:
        os.close(fd)  # releases the lock
    if json_out:
        _print_events(proof["events"])  # type: ignore[arg-type]
    else:
        from watchrun.ui.summary import summary_line

        units = proof["units"]
        assert isinstance(units, int)
        sys.stdout.write(summary_line(True, "ran", 0, units, 0, 0) + "\n")
    sys.stdout.flush()
    return 0


def _print_events(events: str) -> None:
    """Each line of the null build that wrote the proof, with the time of now."""
    import time

    write = sys.stdout.write
    for line in events.split("\n") if events else ():
        head, _, tail = line.partition("\0")
        write(f"{head}{time.time()!r}{tail}\n")


def _read(state_dir: str) -> Proof | None:
    """The proof, if this user's watchrun wrote it (its MAC says so: marshal is not made to
    read hostile bytes, and a proof that came with the project must not answer for it)."""
    from watchrun.state.owner import MAC_BYTES, KeyUnavailable, mac, same_bytes

    try:
        fd = os.open(proof_path(state_dir), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            raw = f.read()
        if not same_bytes(raw[:MAC_BYTES], mac(raw[MAC_BYTES:], PROOF_PURPOSE)):
            return None
        proof = marshal.loads(raw[MAC_BYTES:])
    except (OSError, EOFError, ValueError, TypeError, KeyUnavailable):
        return None  # absent, not ours, or written by another Python
    return proof if isinstance(proof, dict) else None


def _holds(proof: Proof, root: str, state_dir: str, targets: list[str]) -> bool:
    try:
        return _settings_hold(proof, root, state_dir, targets) and _files_hold(proof, state_dir)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return False  # another shape: written by another version


def _settings_hold(proof: Proof, root: str, state_dir: str, targets: list[str]) -> bool:
    configs: dict[str, StatKey | None] = proof["configs"]  # type: ignore[assignment]
    return (proof["id"] == identity(root, targets)
            and proof["state_dir"] == state_dir
            and proof["db"] == _database_identity(state_dir)
            and all(stat_key(path) == key for path, key in configs.items())
            and proof["site"] == site_mtimes())


def _files_hold(proof: Proof, state_dir: str) -> bool:
    """In the order that finds the common changes first, so that a build that has work to do
    loses little here: the inputs and outputs (an edited data file, a deleted output; what
    only changed its stat key is hashed again), the project's files (an edited task), then
    new files."""
    from watchrun.project.discovery import discover_in

    contents = _Contents(proof)
    if not contents.hold():
        return False
    absent: list[str] = proof["absent"]  # type: ignore[assignment]
    folders: list[str] = proof["folders"]  # type: ignore[assignment]
    holds = (_same_keys(_split(proof["project"]),  # type: ignore[arg-type]
                        _unpack_keys(proof["project_keys"]))  # type: ignore[arg-type]
             and not any(os.path.lexists(path) for path in absent)
             and _join(discover_in(folders, state_dir)) == proof["discovered"]
             and _expansions_hold(proof, os.path.dirname(state_dir)))
    if holds and contents.update():  # touched files: their new stat keys, for next time
        write_proof(state_dir, proof)
    return holds


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
        self.paths = _split(proof["observed"])  # type: ignore[arg-type]
        self.hashes = _split(proof["hashes"])  # type: ignore[arg-type]
        self.keys = _unpack_keys(proof["keys"])  # type: ignore[arg-type]
        self.big: list[str] = []
        self._hasher: FileHasher | None = None

    def hold(self) -> bool:
        paths, hashes, keys = self.paths, self.hashes, self.keys
        if not (len(paths) == len(hashes) and len(keys) == 4 * len(paths)):
            return False
        for i, path in enumerate(paths):
            try:
                st = os.stat(path)
            except OSError:
                if not hashes[i]:
                    continue  # missing then, missing now
                return False
            if not hashes[i]:
                return False  # missing then, there now
            j = 4 * i
            if (keys[j] == st.st_size and keys[j + 1] == st.st_mtime_ns
                    and keys[j + 2] == st.st_ino and keys[j + 3] == st.st_ctime_ns):
                continue
            # a changed stat key, or a hash that was not settled: hash it again
            if st.st_size >= self.EAGER_BYTES:
                self.big.append(path)
            elif self.hasher.hash_files([path])[path] != hashes[i]:
                return False
        if self.big:
            found = self.hasher.hash_many(self.big)
            wanted = dict(zip(paths, hashes, strict=True))
            return all(found[path] == wanted[path] for path in self.big)
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
