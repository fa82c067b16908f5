"""The null-build proof's file: its form, and writing, reading and discarding it.

The proof is the build plan's cache (see `engine/trace.py`, which writes it, and
`watchrun/nullproof.py`, which checks it). This module is what both need to agree on: the
identity a proof is valid for, the database it speaks of, the packing of its fields, and the
file itself, authenticated with this user's key. It lives with the state because it is a file
of the state folder that every writer discards as it takes the lock.

Thousands of paths, hashes and stat keys are packed into a few big objects (paths joined by NUL,
stat keys in one array of int64), so that reading the proof unmarshals a few objects instead of
tens of thousands of small ones.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import sys
from array import array

import watchrun
from watchrun.paths import CONFIG_FILES, DATABASE, PROOF
from watchrun.state.statkeys import StatKey, stat_key

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

FORMAT = 4
PURPOSE = b"watchrun null-build proof"
NO_KEY = (-1, -1, -1, -1)  # the stat key of a path whose hash was not settled (or a folder)

Proof = dict[str, object]


class ProvenClean:
    """What the proof still proves when only some of the files it observed changed (a data
    file edited, an output deleted): the build that follows need not look again at the tasks
    that touch none of them and wait for none that does (`engine/proven.py`). The project, the
    settings and the installed packages are as the proof saw them."""

    __slots__ = ("changed", "observed", "proof_key", "values")

    def __init__(self, proof: Proof, changed: set[str], proof_key: object) -> None:
        self.changed = changed  # absolute paths whose content is not what the proof saw
        # absolute path -> the hash the proof saw ("" for missing)
        self.observed = dict(zip(split(proof["observed"]),  # type: ignore[arg-type]
                                 split(proof["hashes"]), strict=True))  # type: ignore[arg-type]
        pair: tuple[str, str] = proof["values"]  # type: ignore[assignment]
        self.values = dict(zip(split(pair[0]), split(pair[1]), strict=True))
        # the proof file as it was checked: the build takes the writer lock later, and uses
        # this only if no other writer ran meanwhile (each one discards the proof)
        self.proof_key = proof_key


def proof_path(state_dir: str) -> str:
    return os.path.join(state_dir, PROOF)


def discard_proof(state_dir: str) -> None:
    """Called by every writer as it takes the lock: whatever it does may make the proof false."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(proof_path(state_dir))


def identity(root: str, targets: Iterable[str]) -> tuple[object, ...]:
    """What a proof answers for: this watchrun and Python, this project, these targets."""
    return (FORMAT, watchrun.__version__, sys.version, sys.executable, root, tuple(targets))


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


def settings_stats(root: str) -> dict[str, StatKey | None]:
    """Stat keys of the settings files the settings may be read from (None: absent), taken
    before they are read."""
    return {path: stat_key(path) for path in (os.path.join(root, n) for n in CONFIG_FILES)}


def database_identity(state_dir: str) -> tuple[object, ...] | None:
    """The database as the last writer left it: the stat keys of its file and WAL (a file
    truncated, replaced or written in place has another), and its header (SQLite's magic,
    page size and counters: a file overwritten in place is not a database of that shape).
    The WAL and the file do not change after the proof is written: the writer's connection is
    left open until the process ends (`database.release`)."""
    path = os.path.join(state_dir, DATABASE)
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


def join(texts: Iterable[str]) -> str:
    return "\0".join(texts)


def split(text: str) -> list[str]:
    return text.split("\0") if text else []


def pack_keys(keys: Iterable[StatKey]) -> bytes:
    packed = array("q")
    for key in keys:
        packed.extend(key)
    return packed.tobytes()


def unpack_keys(data: bytes) -> array[int]:
    keys = array("q")
    keys.frombytes(data)
    return keys


def write_proof(state_dir: str, proof: Proof) -> None:
    """Atomically (a crash must not leave half a proof), never through a symlink, naming the
    database as it is now: call it once the results the proof speaks of are committed. A proof
    that cannot be written (a full disk) is only a null build that will not be quick."""
    from watchrun.state.owner import KeyUnavailable, mac, write_file_atomically

    proof["db"] = database_identity(state_dir)
    if proof["db"] is None:
        return  # no database the proof could speak for
    data = marshal.dumps(proof)
    with contextlib.suppress(OSError, KeyUnavailable):
        write_file_atomically(proof_path(state_dir), mac(data, PURPOSE) + data)


def read_proof(state_dir: str) -> Proof | None:
    """The proof, if this user's watchrun wrote it (its MAC says so: marshal is not made to
    read hostile bytes, and a proof that came with the project must not answer for it)."""
    from watchrun.state.owner import MAC_BYTES, KeyUnavailable, mac, same_bytes

    try:
        fd = os.open(proof_path(state_dir), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            raw = f.read()
        if not same_bytes(raw[:MAC_BYTES], mac(raw[MAC_BYTES:], PURPOSE)):
            return None
        proof = marshal.loads(raw[MAC_BYTES:])
    except (OSError, EOFError, ValueError, TypeError, KeyUnavailable):
        return None  # absent, not ours, or written by another Python
    return proof if isinstance(proof, dict) else None
