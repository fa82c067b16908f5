"""What a `watchrun dev` runs now, for `watchrun status` in another terminal.

The dev process keeps a small file in the state folder up to date (at most every WRITE_EVERY
seconds, and when it goes idle): the units running, one per line. It is written to a temporary
file and renamed over the old one, never through a symlink. `status` reads it only while the
lock file names a live `watchrun dev`.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from watchrun.engine import events as ev
from watchrun.paths import DEV_RUNNING

FILE_NAME = DEV_RUNNING
WRITE_EVERY = 0.2  # seconds


def _unit(task: str, it: tuple[int, ...]) -> str:
    return task + "".join(f"[{i}]" for i in it)


class RunningNow:
    """A dev subscriber: keeps `state_dir/dev-running` listing the running units."""

    def __init__(self, state_dir: Path) -> None:
        self.path = os.path.join(os.fspath(state_dir), FILE_NAME)
        self.running: dict[str, None] = {}  # ordered: the oldest first
        self._written = 0.0
        self._dirty = False

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.UnitStarted):
            self.running[_unit(event.task, event.iter)] = None
        elif isinstance(event, (ev.UnitFinished, ev.UnitFailed, ev.UnitCancelled)):
            self.running.pop(_unit(event.task, event.iter), None)
        elif not isinstance(event, (ev.Idle, ev.BuildFinished)):
            return
        self._dirty = True
        now = time.monotonic()
        if isinstance(event, (ev.Idle, ev.BuildFinished)) or now - self._written >= WRITE_EVERY:
            self._write(now)

    def _write(self, now: float) -> None:
        self._dirty = False
        self._written = now
        temporary = f"{self.path}.{os.getpid()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
        with contextlib.suppress(OSError):  # a view for others: never worth failing dev
            fd = os.open(temporary, flags, 0o644)
            try:
                os.write(fd, "".join(f"{u}\n" for u in self.running).encode())
            finally:
                os.close(fd)
            os.replace(temporary, self.path)


def read_running(state_dir: Path) -> list[str]:
    path = os.path.join(os.fspath(state_dir), FILE_NAME)
    with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as handle:
        return [line for line in handle.read().splitlines() if line]
    return []
