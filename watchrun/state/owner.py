"""Whether a state folder was written by watchrun for this user: the owner stamp.

Everything watchrun unpickles comes from its state database (the project cache, stored outputs,
through the objects its results name). A state folder that came with a project — a tarball, a
repository, another user's copy — could hold a crafted pickle that runs code as soon as
`watchrun graph` or `status` reads it. So a database is trusted only when `state_dir/owner`
holds a MAC, under a key that only this user can read, of the database file's identity (its
inode and its folder's). The key lives outside every project, in
`$XDG_STATE_HOME/watchrun/key` (default `~/.local/state/watchrun/key`), and never leaves it.
The null-build proof, read before anything else, carries a MAC under the same key.

Why the file's identity: a copy (tar, cp, git) makes new inodes, so a stamp copied along with a
database never matches it, and nobody without the key can make one that does. The price: a
project copied by its own user rebuilds its state (with a message), as after a move to another
machine; a folder moved with `mv` on the same filesystem keeps it. Not the device number: on
some filesystems (btrfs) it is assigned at mount time and changes across reboots.

The MAC is keyed BLAKE2b (a MAC by design), and this module imports neither pathlib nor hmac:
the null-build check, which runs before anything else is imported, uses it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as statmod
from _blake2 import blake2b  # hashlib's, without importing OpenSSL on the null-build path
from _operator import _compare_digest  # hmac.compare_digest, without importing hmac

from watchrun.paths import OWNER_STAMP, USER_KEY

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

STAMP_FILE = OWNER_STAMP
STAMP_HEADER = b"watchrun-owner 2 "
KEY_BYTES = 32
MAC_BYTES = 32


class KeyUnavailable(Exception):
    """The per-user key can be neither read nor created; `str()` says where and why."""


def key_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                            "state")
    return os.path.join(base, "watchrun")


_cached: dict[str, bytes] = {}


def user_key() -> bytes:
    """This user's key, made on first use (readable by this user only)."""
    folder = key_dir()
    path = os.path.join(folder, USER_KEY)
    found = _cached.get(path)
    if found is not None:
        return found
    try:
        key = _read_key(path)
        if key is None:
            key = _create_key(folder, path)
    except OSError as exc:
        raise KeyUnavailable(f"cannot read or create watchrun's per-user key {path}: "
                             f"{exc.strerror or exc} (set XDG_STATE_HOME to a folder of "
                             "yours)") from exc
    _cached[path] = key
    return key


def _read_key(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            # a key others can read or plant authenticates nothing
            raise OSError(errno.EPERM, "the key file is not private to this user", path)
        data = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) != KEY_BYTES:
        raise OSError(errno.EINVAL, "the key file is damaged (delete it to make a new one)",
                      path)
    return data


def _create_key(folder: str, path: str) -> bytes:
    os.makedirs(folder, mode=0o700, exist_ok=True)
    temporary = os.path.join(folder, f".key-{os.getpid()}-{os.urandom(4).hex()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        os.write(fd, os.urandom(KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temporary, path)  # never replaces a key another process made meanwhile
    except FileExistsError:
        pass
    finally:
        os.unlink(temporary)
    key = _read_key(path)
    if key is None:
        raise OSError(errno.ENOENT, "the key file vanished", path)
    return key


def same_bytes(a: bytes, b: bytes) -> bool:
    """Compared in constant time (a MAC must not leak how much of it matched)."""
    return _compare_digest(a, b)


def mac(data: bytes, purpose: bytes) -> bytes:
    """The MAC of `data` under this user's key (KeyUnavailable without one); `purpose` keeps
    a MAC made for one use from being accepted for another."""
    return blake2b(purpose + b"\0" + data, key=user_key(), digest_size=MAC_BYTES).digest()


def _identity(db_path: str) -> bytes | None:
    """The inodes of the database file and of its folder."""
    try:
        st = os.lstat(db_path)
        folder = os.stat(os.path.dirname(db_path) or ".")
    except OSError:
        return None
    if not statmod.S_ISREG(st.st_mode):
        return None  # a symlink (or anything else) is never trusted
    return f"{folder.st_ino}:{st.st_ino}".encode()


def _stamp_bytes(identity: bytes) -> bytes:
    return STAMP_HEADER + mac(identity, b"watchrun state database").hex().encode() + b"\n"


def stamped(state_dir: str | Path, db_path: str | Path) -> bool:
    """Whether the database carries this user's stamp. KeyUnavailable: no key to check with."""
    identity = _identity(os.fspath(db_path))
    if identity is None:
        return False
    try:
        fd = os.open(os.path.join(state_dir, STAMP_FILE),
                     os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        data = os.read(fd, 256)
    finally:
        os.close(fd)
    return same_bytes(data, _stamp_bytes(identity))


def stamp(state_dir: str | Path, db_path: str | Path) -> None:
    """Write this user's stamp for the database (a new one, or an empty one adopted).
    OSError if it cannot be written."""
    identity = _identity(os.fspath(db_path))
    if identity is None:
        raise OSError(errno.ENOENT, "no database to stamp", os.fspath(db_path))
    write_file_atomically(os.path.join(state_dir, STAMP_FILE), _stamp_bytes(identity))


def write_file_atomically(path: str | Path, data: bytes) -> None:
    """Replace `path` with `data`: a new file (O_EXCL, O_NOFOLLOW: never through a planted
    symlink) renamed over it, as git writes its lock files."""
    path = os.fspath(path)
    folder, name = os.path.split(path)
    temporary = os.path.join(folder, f".{name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def remove_stamp(state_dir: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(state_dir, STAMP_FILE))
