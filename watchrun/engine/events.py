"""The events of SPEC section 8, and the bus UIs subscribe to.

Events are small value classes; `to_json()` gives the line format of `--json`. The engine never
imports a UI: it only publishes here.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from json.encoder import encode_basestring_ascii as _json_string  # as json.dumps
from typing import Any, ClassVar


class Event:
    """An event: `name` is its `--json` name, `field_names` the fields after `time`.

    Plain classes with slots, not dataclasses: a scope of 10,000 iterations publishes some
    40,000 of them (the per-unit cost; see CONTRIBUTING.md, "Hot paths").
    Events are values: equal when their class and fields are."""

    __slots__ = ("time",)
    name: ClassVar[str] = "event"
    field_names: ClassVar[tuple[str, ...]] = ()
    # fields written only when they are not None (what a line says stays as it was without)
    optional_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, time: float | None = None) -> None:
        self.time = _now() if time is None else time

    def fields(self) -> dict[str, Any]:
        found = {key: getattr(self, key) for key in self.field_names}
        for key in self.optional_names:
            value = getattr(self, key)
            if value is not None:
                found[key] = value
        return found

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.time == other.time \
            and self.fields() == other.fields()

    def __hash__(self) -> int:
        return hash((type(self), self.time, *(_hashable(v) for v in self.fields().values())))

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={value!r}" for key, value in self.fields().items())
        return f"{type(self).__name__}({fields}{', ' if fields else ''}time={self.time!r})"

    def to_json(self) -> str:
        return self._json(self.time)

    def _json(self, when: float) -> str:
        """json.dumps({"event": …, "time": …, **fields}, default=str), written out for the
        common field types: a scope of 10,000 iterations prints some 40,000 lines."""
        parts = [json_head(self.name), _json_value(when)]
        for key in self.field_names:  # field names are identifiers: nothing to escape
            parts.append(f', "{key}": {_json_value(getattr(self, key))}')
        for key in self.optional_names:
            value = getattr(self, key)
            if value is not None:
                parts.append(f', "{key}": {_json_value(value)}')
        parts.append("}")
        return "".join(parts)


_now = time.time


def _hashable(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


class _UnitEvent(Event):
    """An event of (task, iter) alone: the bulk of a scope's lines, written out directly."""

    __slots__ = ("iter", "task")
    field_names = ("task", "iter")

    def __init__(self, *, task: str, iter: tuple[int, ...], time: float | None = None) -> None:
        self.task = task
        self.iter = iter
        self.time = _now() if time is None else time

    def _json(self, when: float) -> str:
        # anything unusual (a time that is not a finite float, …) takes the general way
        if not _plain_unit(self.task, self.iter, when):
            return super()._json(when)
        return (f'{json_head(self.name)}{float.__repr__(when)}, '
                f'"task": {_json_string(self.task)}, '
                f'"iter": [{", ".join(map(int.__repr__, self.iter))}]}}')


def _plain_unit(task: object, iter: object, when: object) -> bool:
    """A unit event's common fields of the types its written-out line is made for: a task
    name, a tuple of ints, a finite float time (anything else takes the general way)."""
    return (type(when) is float and when - when == 0 and type(task) is str
            and type(iter) is tuple and all(type(i) is int for i in iter))


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


class BuildStarted(Event):
    __slots__ = ("tasks",)
    name = "build_started"
    field_names = ("tasks",)

    def __init__(self, *, tasks: list[str], time: float | None = None) -> None:
        self.tasks = tasks
        self.time = _now() if time is None else time


class UnitStarted(Event):
    """`node`: where the unit runs, when the executor knows it as the unit starts (optional;
    on Ray a task unit's node is known when it ends: see the terminal events)."""

    __slots__ = ("iter", "node", "reasons", "task")
    name = "unit_started"
    field_names = ("task", "iter", "reasons")
    optional_names = ("node",)

    def __init__(self, *, task: str, iter: tuple[int, ...], reasons: list[str],
                 node: str | None = None, time: float | None = None) -> None:
        self.task = task
        self.iter = iter
        self.reasons = reasons
        self.node = node
        self.time = _now() if time is None else time

    def _json(self, when: float) -> str:
        reasons = self.reasons
        if self.node is not None or not (_plain_unit(self.task, self.iter, when)
                                         and type(reasons) is list
                and all(type(r) is str for r in reasons)):
            return super()._json(when)
        return (f'{json_head(self.name)}{float.__repr__(when)}, '
                f'"task": {_json_string(self.task)}, '
                f'"iter": [{", ".join(map(int.__repr__, self.iter))}], '
                f'"reasons": [{", ".join(map(_json_string, reasons))}]}}')


class UnitSkipped(_UnitEvent):
    __slots__ = ()
    name = "unit_skipped"


class UnitFinished(Event):
    """`node` (optional): the node it ran on, when the executor says (Ray: its node id)."""

    __slots__ = ("duration", "iter", "node", "task")
    name = "unit_finished"
    field_names = ("task", "iter", "duration")
    optional_names = ("node",)

    def __init__(self, *, task: str, iter: tuple[int, ...], duration: float,
                 node: str | None = None, time: float | None = None) -> None:
        self.task = task
        self.iter = iter
        self.duration = duration
        self.node = node
        self.time = _now() if time is None else time

    def _json(self, when: float) -> str:
        # one line per unit that ran: written out like _UnitEvent's
        duration = self.duration
        if self.node is not None or not (_plain_unit(self.task, self.iter, when)
                                         and type(duration) is float
                                         and duration - duration == 0):
            return super()._json(when)
        return (f'{json_head(self.name)}{float.__repr__(when)}, '
                f'"task": {_json_string(self.task)}, '
                f'"iter": [{", ".join(map(int.__repr__, self.iter))}], '
                f'"duration": {float.__repr__(duration)}}}')


class UnitFailed(Event):
    __slots__ = ("error", "iter", "node", "task")
    name = "unit_failed"
    field_names = ("task", "iter", "error")
    optional_names = ("node",)  # as unit_finished's

    def __init__(self, *, task: str, iter: tuple[int, ...], error: str,
                 node: str | None = None, time: float | None = None) -> None:
        self.task = task
        self.iter = iter
        self.error = error
        self.node = node
        self.time = _now() if time is None else time


class UnitRetry(Event):
    """A unit that failed runs again (its task's `retries`): `attempt` is the one starting
    (2 for the first retry), `cause` why the previous one ended. Its unit_started follows."""

    __slots__ = ("attempt", "cause", "iter", "task")
    name = "unit_retry"
    field_names = ("task", "iter", "attempt", "cause")

    def __init__(self, *, task: str, iter: tuple[int, ...], attempt: int, cause: str,
                 time: float | None = None) -> None:
        self.task = task
        self.iter = iter
        self.attempt = attempt
        self.cause = cause
        self.time = _now() if time is None else time


class UnitCancelled(Event):
    __slots__ = ("iter", "node", "signal", "task")
    name = "unit_cancelled"
    field_names = ("task", "iter", "signal")
    optional_names = ("node",)  # as unit_finished's

    def __init__(self, *, task: str, iter: tuple[int, ...], signal: str,
                 node: str | None = None, time: float | None = None) -> None:
        self.task = task
        self.iter = iter
        self.signal = signal
        self.node = node
        self.time = _now() if time is None else time


class Iteration(_UnitEvent):
    __slots__ = ()
    name = "iteration"


class Push(_UnitEvent):
    __slots__ = ()
    name = "push"


class Gather(_UnitEvent):
    __slots__ = ()
    name = "gather"


class BuildFinished(Event):
    __slots__ = ("cancelled", "failed", "ok", "ran", "skipped")
    name = "build_finished"
    field_names = ("ok", "ran", "skipped", "failed", "cancelled")

    def __init__(self, *, ok: bool, ran: int, skipped: int, failed: int, cancelled: int,
                 time: float | None = None) -> None:
        self.ok = ok
        self.ran = ran
        self.skipped = skipped
        self.failed = failed
        self.cancelled = cancelled
        self.time = _now() if time is None else time


class Change(Event):
    __slots__ = ("dirty", "paths")
    name = "change"
    field_names = ("paths", "dirty")

    def __init__(self, *, paths: list[str], dirty: list[str], time: float | None = None
                 ) -> None:
        self.paths = paths
        self.dirty = dirty
        self.time = _now() if time is None else time


class Idle(Event):
    __slots__ = ()
    name = "idle"


class Error(Event):
    __slots__ = ("file", "line", "message")
    name = "error"
    field_names = ("message", "file", "line")

    def __init__(self, *, message: str, file: str | None, line: int | None,
                 time: float | None = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.time = _now() if time is None else time


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
