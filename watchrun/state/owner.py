"""Whether a state database was written by watchrun for this user: the owner stamp.

Everything watchrun unpickles comes from its state database (the project cache, stored outputs,
through the objects its results name). A state folder that came with a project — a tarball, a
repository, another user's copy — could hold a crafted pickle that runs code as soon as
`watchrun graph` or `status` reads it. So a database is trusted only when `state_dir/owner`
holds an HMAC, under a key that only this user can read, of the database file's identity
(its inode and its folder's). The key lives outside every project, in `$XDG_STATE_HOME/watchrun/key`
(default `~/.local/state/watchrun/key`), and never leaves it.

Why the file's identity: a copy (tar, cp, git) makes new inodes, so a stamp copied along with a
database never matches it, and nobody without the key can make one that does. The price: a
project copied by its own user rebuilds its state (with a message), as after a move to another
machine; a folder moved with `mv` on the same filesystem keeps it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import os
import stat as statmod
from pathlib import Path

STAMP_FILE = "owner"
STAMP_HEADER = b"watchrun-owner 1 "
KEY_BYTES = 32


class KeyUnavailable(Exception):
    """The per-user key can be neither read nor created; `str()` says where and why."""


def key_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                            "state")
    return Path(base) / "watchrun"


_cached: dict[str, bytes] = {}


def user_key() -> bytes:
    """This user's key, made on first use (readable by this user only)."""
    folder = key_dir()
    path = folder / "key"
    found = _cached.get(str(path))
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
    _cached[str(path)] = key
    return key


def _read_key(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            # a key others can read or plant authenticates nothing
            raise OSError(errno.EPERM, "the key file is not private to this user", str(path))
        data = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) != KEY_BYTES:
        raise OSError(errno.EINVAL, "the key file is damaged (delete it to make a new one)",
                      str(path))
    return data


def _create_key(folder: Path, path: Path) -> bytes:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = folder / f".key-{os.getpid()}-{os.urandom(4).hex()}"
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
        raise OSError(errno.ENOENT, "the key file vanished", str(path))
    return key


def _identity(db_path: Path) -> bytes | None:
    """The inodes of the database file and of its folder. Not the device number: on some
    filesystems (btrfs) it is assigned at mount time and changes across reboots."""
    try:
        st = os.lstat(db_path)
        folder = os.stat(db_path.parent)
    except OSError:
        return None
    if not statmod.S_ISREG(st.st_mode):
        return None  # a symlink (or anything else) is never trusted
    return f"{folder.st_ino}:{st.st_ino}".encode()


def _mac(key: bytes, identity: bytes) -> bytes:
    return hmac.new(key, b"watchrun state database " + identity, hashlib.sha256).hexdigest(
        ).encode()


def stamped(state_dir: Path, db_path: Path) -> bool:
    """Whether the database carries this user's stamp. KeyUnavailable: no key to check with."""
    identity = _identity(db_path)
    if identity is None:
        return False
    try:
        fd = os.open(state_dir / STAMP_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        data = os.read(fd, 256)
    finally:
        os.close(fd)
    expected = STAMP_HEADER + _mac(user_key(), identity) + b"\n"
    return hmac.compare_digest(data, expected)


def stamp(state_dir: Path, db_path: Path) -> None:
    """Write this user's stamp for the database (a new one, or an empty one adopted).
    OSError if it cannot be written."""
    identity = _identity(db_path)
    if identity is None:
        raise OSError(errno.ENOENT, "no database to stamp", str(db_path))
    data = STAMP_HEADER + _mac(user_key(), identity) + b"\n"
    write_file_atomically(state_dir / STAMP_FILE, data)


def write_file_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: a new file (O_EXCL, O_NOFOLLOW: never through a planted
    symlink) renamed over it, as git writes its lock files."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
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


def remove_stamp(state_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(state_dir / STAMP_FILE)
