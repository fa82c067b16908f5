"""`--json`: one event per line on stdout."""

from __future__ import annotations

import sys
from typing import TextIO

from watchrun.engine.events import Event


class JsonLines:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def __call__(self, event: Event) -> None:
        self.stream.write(event.to_json() + "\n")
        self.stream.flush()
