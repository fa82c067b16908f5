"""The events of SPEC section 8, and the bus UIs subscribe to.

Events are dataclasses; `to_json()` gives the line format of `--json`. The engine never imports a
UI: it only publishes here.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _json_string  # as json.dumps
from typing import Any, ClassVar


@dataclass(frozen=True)
class Event:
    name: ClassVar[str] = "event"
    time: float = field(default_factory=time.time, kw_only=True)

    def fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "time"}

    def to_json(self) -> str:
        return self._json(self.time)

    def _json(self, when: float) -> str:
        """json.dumps({"event": …, "time": …, **fields}, default=str), written out for the
        common field types: a scope of 10,000 iterations prints some 40,000 lines."""
        parts = [json_head(self.name), _json_value(when)]
        for key, value in self.__dict__.items():
            if key != "time":  # field names are identifiers: nothing to escape
                parts.append(f', "{key}": {_json_value(value)}')
        parts.append("}")
        return "".join(parts)


class _UnitEvent(Event):
    """An event of (task, iter) alone: the bulk of a scope's lines, written out directly."""

    task: str
    iter: tuple[int, ...]

    def _json(self, when: float) -> str:
        # anything unusual (a time that is not a finite float, …) takes the general way
        if type(when) is not float or when - when != 0 or type(self.task) is not str \
                or not all(type(i) is int for i in self.iter):
            return super()._json(when)
        return (f'{json_head(self.name)}{float.__repr__(when)}, '
                f'"task": {_json_string(self.task)}, '
                f'"iter": [{", ".join(map(int.__repr__, self.iter))}]}}')


def json_head(name: str) -> str:
    """How every `--json` line begins, up to its time (which is written next)."""
    return f'{{"event": "{name}", "time": '


_encode = json.JSONEncoder(default=str).encode  # json.dumps(…, default=str), made once
_INFINITIES = (-math.inf, math.inf)


def _json_value(value: object) -> str:
    if type(value) is str:
        return _json_string(value)
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is int:
        return int.__repr__(value)
    if type(value) is float and value == value and value not in _INFINITIES:
        return float.__repr__(value)
    if (type(value) is tuple or type(value) is list) and all(type(x) is int for x in value):
        return "[" + ", ".join(map(int.__repr__, value)) + "]"
    return _encode(list(value) if type(value) is tuple else value)


@dataclass(frozen=True)
class BuildStarted(Event):
    name: ClassVar[str] = "build_started"
    tasks: list[str]


@dataclass(frozen=True)
class UnitStarted(Event):
    name: ClassVar[str] = "unit_started"
    task: str
    iter: tuple[int, ...]
    reasons: list[str]


@dataclass(frozen=True)
class UnitSkipped(_UnitEvent):
    name: ClassVar[str] = "unit_skipped"
    task: str
    iter: tuple[int, ...]


@dataclass(frozen=True)
class UnitFinished(Event):
    name: ClassVar[str] = "unit_finished"
    task: str
    iter: tuple[int, ...]
    duration: float


@dataclass(frozen=True)
class UnitFailed(Event):
    name: ClassVar[str] = "unit_failed"
    task: str
    iter: tuple[int, ...]
    error: str


@dataclass(frozen=True)
class UnitCancelled(Event):
    name: ClassVar[str] = "unit_cancelled"
    task: str
    iter: tuple[int, ...]
    signal: str


@dataclass(frozen=True)
class Iteration(_UnitEvent):
    name: ClassVar[str] = "iteration"
    task: str
    iter: tuple[int, ...]


@dataclass(frozen=True)
class Push(_UnitEvent):
    name: ClassVar[str] = "push"
    task: str
    iter: tuple[int, ...]


@dataclass(frozen=True)
class Gather(_UnitEvent):
    name: ClassVar[str] = "gather"
    task: str
    iter: tuple[int, ...]


@dataclass(frozen=True)
class BuildFinished(Event):
    name: ClassVar[str] = "build_finished"
    ok: bool
    ran: int
    skipped: int
    failed: int
    cancelled: int


@dataclass(frozen=True)
class Change(Event):
    name: ClassVar[str] = "change"
    paths: list[str]
    dirty: list[str]


@dataclass(frozen=True)
class Idle(Event):
    name: ClassVar[str] = "idle"


@dataclass(frozen=True)
class Error(Event):
    name: ClassVar[str] = "error"
    message: str
    file: str | None
    line: int | None


Subscriber = Callable[[Event], None]


class EventBus:
    """Synchronous fan-out on the engine's loop. Subscribers must not block: a UI that needs to
    batch (the TUI) keeps its own inbox."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def publish(self, event: Event) -> None:
        for subscriber in self._subscribers:
            subscriber(event)


# events after which a reader may wait a while for the next: their lines are flushed at once
URGENT = (BuildFinished, Idle, Error)
