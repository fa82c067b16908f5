"""`--json`: one event per line on stdout."""

from __future__ import annotations

import sys
from typing import TextIO

from watchrun.engine.events import URGENT, Event, UnitStarted, json_head
from watchrun.ui.batched_output import LoopFlush


class JsonLines:
    """`keep`: a list to which each line is added in two halves, before and after its time
    (what the null-build proof replays), until a unit starts."""

    def __init__(self, stream: TextIO | None = None,
                 keep: list[tuple[str, str]] | None = None) -> None:
        self.stream = stream or sys.stdout
        self._flush = LoopFlush(self.stream)
        self._keep = keep

    def __call__(self, event: Event) -> None:
        line = event.to_json()
        self.stream.write(line + "\n")
        if self._keep is not None:
            if isinstance(event, UnitStarted):  # not a null build: there will be no replay
                self._keep.clear()
                self._keep = None
            else:
                head = json_head(event.name)
                self._keep.append((head, line[len(head) + len(repr(event.time)):]))
        self._flush.written(now=isinstance(event, URGENT))
