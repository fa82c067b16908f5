"""The events of SPEC section 8, and the bus UIs subscribe to.

Events are dataclasses; `to_json()` gives the line format of `--json`. The engine never imports a
UI: it only publishes here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Event:
    name: ClassVar[str] = "event"
    time: float = field(default_factory=time.time, kw_only=True)

    def fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "time"}

    def to_json(self) -> str:
        return self._json(self.time)

    def json_around_time(self) -> tuple[str, str]:
        """The line of `to_json` in two halves, to print again later with another time
        between them (the null-build proof replays a build's events this way)."""
        head, _, tail = self._json(0).partition(TIME_MARK)
        return head + '"time": ', tail

    def _json(self, when: float) -> str:
        body: dict[str, Any] = {"event": self.name, "time": when}
        for key, value in self.fields().items():
            body[key] = list(value) if isinstance(value, tuple) else value
        return json.dumps(body, default=str)


TIME_MARK = '"time": 0'  # "event" comes first, and no event name contains this


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
class UnitSkipped(Event):
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
class Iteration(Event):
    name: ClassVar[str] = "iteration"
    task: str
    iter: tuple[int, ...]


@dataclass(frozen=True)
class Push(Event):
    name: ClassVar[str] = "push"
    task: str
    iter: tuple[int, ...]


@dataclass(frozen=True)
class Gather(Event):
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
