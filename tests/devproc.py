"""Drive a real `watchrun dev --json` process: read its events as they come."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from tests.conftest import spawn_watchrun

Event = dict[str, Any]


class DevProcess:
    # every one started, so a fixture can stop them whatever the test did
    started: ClassVar[list[DevProcess]] = []

    def __init__(self, root: Path, *args: str) -> None:
        self.proc = spawn_watchrun(root, "dev", "--no-tui", "--json", *args)
        DevProcess.started.append(self)
        self.events: list[Event] = []
        self._queue: queue.Queue[Event | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.cursor = 0  # events before this index were already consumed by `wait`

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self._queue.put(json.loads(line))
        self._queue.put(None)

    def _drain(self, timeout: float) -> bool:
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return True
        if item is None:
            return False
        self.events.append(item)
        return True

    def wait(self, predicate: Callable[[Event], bool], timeout: float = 15.0,
             what: str = "event") -> Event:
        """The next event (after the cursor) that satisfies predicate; moves the cursor past."""
        deadline = time.monotonic() + timeout
        while True:
            for index in range(self.cursor, len(self.events)):
                if predicate(self.events[index]):
                    self.cursor = index + 1
                    return self.events[index]
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}; got {self.events}")
            if not self._drain(min(left, 0.1)):
                raise AssertionError(f"watchrun exited while waiting for {what}; "
                                     f"got {self.events}")

    def idle(self, timeout: float = 15.0) -> list[Event]:
        """Wait for the next idle; return the events since the cursor up to it."""
        start = self.cursor
        self.wait(lambda e: e["event"] == "idle", timeout, "idle")
        return self.events[start:self.cursor]

    def quiet(self, seconds: float) -> list[Event]:
        """Collect whatever arrives during `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._drain(0.05)
        new = self.events[self.cursor:]
        self.cursor = len(self.events)
        return new

    def stop(self, sig: signal.Signals = signal.SIGINT, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        elif self.proc.stdout is not None and self.proc.stdout.closed:
            return self.proc.returncode  # already stopped
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self._reader.join(timeout=5)
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()
        return self.proc.returncode

    def stderr(self) -> str:
        return self.proc.stderr.read() if self.proc.stderr and not self.proc.stderr.closed else ""


def started(events: list[Event]) -> list[str]:
    return sorted(e["task"] + "".join(f"[{i}]" for i in e["iter"])
                  for e in events if e["event"] == "unit_started")
