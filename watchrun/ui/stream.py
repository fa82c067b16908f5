"""`build -v`: the tasks' output as it comes, each line labelled by its unit.

A worker writes a unit's stdout and stderr to the unit's log file (see executors/worker.py);
this follows those files while their units run, from a helper thread that looks every
POLL seconds, and reads each to its end when its unit ends (the log is complete then). A unit's
log is truncated or replaced when the unit starts, so what was there before (the last run's
output) is recognised by its inode and modification time and never shown.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import TextIO

from watchrun.engine import events as ev

POLL = 0.1  # seconds between two looks at the running units' logs


class _Followed:
    __slots__ = ("label", "offset", "partial", "path", "stale")

    def __init__(self, label: str, path: str) -> None:
        self.label = label
        self.path = path
        self.offset = 0
        self.partial = b""
        self.stale = _identity(path)  # the last run's log, if any: not this unit's output


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


class LiveOutput:
    """A subscriber that prints the running units' output, line by line, as `[unit] line`."""

    def __init__(self, log_dir: Path, stream: TextIO | None = None) -> None:
        self.log_dir = os.fspath(log_dir)
        self.stream = sys.stdout if stream is None else stream
        self._units: dict[str, _Followed] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.UnitStarted):
            label = event.task + "".join(f"[{i}]" for i in event.iter)
            suffix = "".join(f".{i}" for i in event.iter)
            path = os.path.join(self.log_dir, f"{event.task}{suffix}.log")
            with self._lock:
                self._units[label] = _Followed(label, path)
            self._start()
        elif isinstance(event, (ev.UnitFinished, ev.UnitFailed, ev.UnitCancelled)):
            label = event.task + "".join(f"[{i}]" for i in event.iter)
            with self._lock:
                followed = self._units.pop(label, None)
                if followed is not None:
                    self._read(followed, final=True)
        elif isinstance(event, ev.BuildFinished):
            self._stop.set()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._follow, name="watchrun-output",
                                            daemon=True)
            self._thread.start()

    def _follow(self) -> None:
        while not self._stop.wait(POLL):
            with self._lock:
                for followed in list(self._units.values()):
                    self._read(followed, final=False)

    def _read(self, followed: _Followed, final: bool) -> None:
        identity = _identity(followed.path)
        if identity is None or identity == followed.stale:
            return  # not written by this unit yet
        try:
            with open(followed.path, "rb") as handle:
                if os.fstat(handle.fileno()).st_size < followed.offset:
                    followed.offset = 0  # truncated again (a retry)
                handle.seek(followed.offset)
                data = handle.read()
        except OSError:
            return
        followed.offset += len(data)
        data = followed.partial + data
        lines = data.split(b"\n")
        followed.partial = lines.pop()
        if final and followed.partial:
            lines.append(followed.partial)
            followed.partial = b""
        if lines:
            text = "".join(f"[{followed.label}] {line.decode('utf-8', 'replace')}\n"
                           for line in lines)
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):
                pass
