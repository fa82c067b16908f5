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
from collections.abc import Callable, Iterable, Mapping  # loaded already (by re, functools)

import watchrun
from watchrun.state.statkeys import CacheEntry, StatKey, stat_key

PROOF_FILE = "clean.proof"
PROOF_FORMAT = 1
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


def _database_identity(state_dir: str) -> tuple[int, int] | None:
    try:
        st = os.stat(os.path.join(state_dir, DATABASE_FILE))
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


# -- writing ------------------------------------------------------------------------------------

def make_proof(*, root: str, targets: Iterable[str], state_dir: str,
               configs: Mapping[str, StatKey | None], folders: Iterable[str],
               discovered: Iterable[str], project: Mapping[str, StatKey], absent: Iterable[str],
               expansions: Iterable[tuple[tuple[str, ...], tuple[str, ...]]],
               observed: Mapping[str, str | None],
               entry_of: Callable[[str], CacheEntry | None],
               entries_below: Callable[[str], Mapping[str, CacheEntry]], units: int,
               events: list[tuple[str, str]] | None) -> Proof:
    """The proof of a build that succeeded; `units`: how many a null build finds clean;
    `events`: the `--json` lines of a build that ran nothing, without their times (a build
    that ran something printed other events than a null build would: `--json` then takes
    the normal build)."""
    entries: dict[str, CacheEntry] = {}
    for path, digest in observed.items():
        entry = entry_of(path)
        if entry is not None and entry[4] == digest:
            entries[path] = entry
        elif digest is not None and os.path.isdir(path):  # a folder input: its files' entries
            entries.update(entries_below(path))
        # else: a missing file, or one whose hash is not settled: checked by hashing it
    return {
        "id": identity(root, targets), "db": _database_identity(state_dir),
        "configs": dict(configs), "folders": list(folders), "state_dir": state_dir,
        "discovered": list(discovered), "project": dict(project), "absent": list(absent),
        "site": site_mtimes(), "inputs": list(expansions), "observed": dict(observed),
        "entries": entries, "units": units, "events": events,
    }


def write_proof(state_dir: str, proof: Proof) -> None:
    """Atomically: a reader holds the lock, but a crash must not leave half a proof."""
    path = proof_path(state_dir)
    temp = f"{path}.{os.getpid()}.tmp"
    with open(temp, "wb") as f:
        marshal.dump(proof, f)
    os.replace(temp, path)


# -- checking -----------------------------------------------------------------------------------

def try_null_build(root_arg: str, targets: list[str], json_out: bool = False) -> int | None:
    """Exit code 0 after printing what a null build prints (its summary, or with `json_out`
    its events) when the proof holds; None when the normal build has to decide (no proof,
    anything changed, the lock is taken)."""
    root = os.path.realpath(root_arg)  # what load_config makes of `-C` (symlinks resolved)
    state_dir = os.path.join(root, DEFAULT_STATE_DIR)
    try:
        fd = os.open(os.path.join(state_dir, "lock"), os.O_RDWR | os.O_CLOEXEC)
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


def _print_events(events: list[tuple[str, str]]) -> None:
    import time

    write = sys.stdout.write
    for head, tail in events:
        write(f"{head}{time.time()!r}{tail}\n")


def _read(state_dir: str) -> Proof | None:
    try:
        with open(proof_path(state_dir), "rb") as f:
            proof = marshal.load(f)
    except (OSError, EOFError, ValueError, TypeError):
        return None  # absent, or written by another Python
    return proof if isinstance(proof, dict) else None


def _holds(proof: Proof, root: str, state_dir: str, targets: list[str]) -> bool:
    try:
        return _settings_hold(proof, root, state_dir, targets) and _files_hold(proof, state_dir)
    except (KeyError, TypeError, ValueError, AttributeError):
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

    touched = _touched(proof)
    if touched is None:
        return False
    fresh = _rehashed(proof, touched)
    if fresh is None:
        return False
    project: dict[str, StatKey] = proof["project"]  # type: ignore[assignment]
    absent: list[str] = proof["absent"]  # type: ignore[assignment]
    folders: list[str] = proof["folders"]  # type: ignore[assignment]
    holds = (all(stat_key(path) == key for path, key in project.items())
             and not any(os.path.lexists(path) for path in absent)
             and discover_in(folders, state_dir) == proof["discovered"]
             and _expansions_hold(proof, os.path.dirname(state_dir)))
    if holds and fresh:  # the new stat keys of touched files: the next check is a stat again
        entries: dict[str, CacheEntry] = proof["entries"]  # type: ignore[assignment]
        entries.update(fresh)
        write_proof(state_dir, proof)
    return holds


def _touched(proof: Proof) -> list[str] | None:
    """The inputs and outputs whose stat key changed (their content is checked last, by
    hashing); None when one that was missing exists now."""
    observed: dict[str, str | None] = proof["observed"]  # type: ignore[assignment]
    entries: dict[str, CacheEntry] = proof["entries"]  # type: ignore[assignment]
    touched: list[str] = []
    for path, digest in observed.items():
        entry = entries.get(path)
        if entry is not None:
            if stat_key(path) != entry[:4]:
                touched.append(path)
        elif digest is None:
            if os.path.exists(path):
                return None
        else:
            touched.append(path)  # its hash was not settled: it is hashed again
    return touched


def _expansions_hold(proof: Proof, root: str) -> bool:
    """Each task's input patterns match what they matched. Plain paths (no glob) need no look
    of their own: each is among the observed paths, whose existence was just checked."""
    from watchrun.project.inputs import expand_inputs, has_magic

    observed: dict[str, str | None] = proof["observed"]  # type: ignore[assignment]
    expansions: list[tuple[tuple[str, ...], tuple[str, ...]]] = proof["inputs"]  # type: ignore[assignment]
    for patterns, matched in expansions:
        if not any(has_magic(p) for p in patterns) and all(
                os.path.join(root, p) in observed for p in patterns):
            continue
        if tuple(expand_inputs(patterns, root)) != matched:
            return False
    return True


def _rehashed(proof: Proof, touched: list[str]) -> dict[str, CacheEntry] | None:
    """The new cache entries of the touched files if they still have the content the build
    saw (after `touch`); None if one changed."""
    if not touched:
        return {}
    from watchrun.state.hashing import FileHasher  # blake3: only when something was touched

    observed: dict[str, str | None] = proof["observed"]  # type: ignore[assignment]
    entries: dict[str, CacheEntry] = proof["entries"]  # type: ignore[assignment]
    hasher = FileHasher(None, cache=entries)
    found = hasher.hash_many(touched)
    if any(found[path] != observed[path] for path in touched):
        return None
    return hasher.take_new()
