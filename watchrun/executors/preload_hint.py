"""What the last run's warm template preloaded, kept in the state folder so that the next
`watchrun build` can start its template importing them at once, beside its own start (the
engine's import and the project's loading take a fifth of a second, pandas half a second: one
after the other they cost a first build a third more than the import alone).

The hint is only a head start: the executor still works out what to preload from the project
and adopts the template only if it imports nothing else (warm.TemplateLink). It is a list of
module names, authenticated like the null-build proof (a state folder that came with a project
must not choose what watchrun imports), read before the engine is imported: standard library
only, and only the cheapest of it.
"""

from __future__ import annotations

import contextlib
import os
import sys

HINT_FILE = "preload.hint"
HINT_PURPOSE = b"watchrun preload hint"
DEFAULT_STATE_DIR = ".watchrun"  # the only state folder known before the settings are read
_HEADER = "watchrun preload hint 1"


def _encode(modules: list[str]) -> bytes:
    return "\n".join([_HEADER, sys.executable, *modules]).encode()


def read_hint(root: str) -> list[str] | None:
    """The modules the last run in this project preloaded (a list, maybe empty), or None: no
    hint, one written by another interpreter, or not by this user's watchrun."""
    from watchrun.state.owner import MAC_BYTES, KeyUnavailable, mac, same_bytes

    try:
        raw = _read_bytes(os.path.join(root, DEFAULT_STATE_DIR, HINT_FILE))
        if raw is None or not same_bytes(raw[:MAC_BYTES], mac(raw[MAC_BYTES:], HINT_PURPOSE)):
            return None
        lines = raw[MAC_BYTES:].decode().split("\n")
    except (OSError, UnicodeDecodeError, KeyUnavailable):
        return None
    if lines[:2] != [_HEADER, sys.executable]:
        return None
    return [line for line in lines[2:] if line]


_written: dict[str, bytes] = {}  # state folder -> what this process last wrote there


def remember(state_dir: str | os.PathLike[str], modules: list[str]) -> None:
    """Leave the hint for the next run (when it changed); a state folder that cannot be
    written (read-only, full) only costs the next build its head start."""
    from watchrun.state.owner import KeyUnavailable, mac, write_file_atomically

    folder = os.fspath(state_dir)
    data = _encode(modules)
    if _written.get(folder) == data:
        return
    path = os.path.join(folder, HINT_FILE)
    with contextlib.suppress(OSError, KeyUnavailable):
        wanted = mac(data, HINT_PURPOSE) + data
        if _read_bytes(path) != wanted:  # unchanged since the last run: not written again
            write_file_atomically(path, wanted)
        _written[folder] = data


def _read_bytes(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read(65536)
