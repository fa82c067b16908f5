"""`--json` lines: the written-out encoding of events is exactly what json.dumps gives."""

from __future__ import annotations

import io
import json
import typing
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from watchrun.engine import events as ev
from watchrun.ui.jsonl import JsonLines

texts = st.text(max_size=30)  # task names, messages, paths may hold any character
iters = st.lists(st.integers(min_value=0, max_value=10**9), max_size=3).map(tuple)
times = st.floats(min_value=0, max_value=4e9, allow_nan=False)
EVENT_CLASSES = [c for c in vars(ev).values()  # the public ones: what --json prints
                 if isinstance(c, type) and issubclass(c, ev.Event) and c is not ev.Event
                 and not c.__name__.startswith("_")]
FIELD_VALUES: dict[object, st.SearchStrategy[Any]] = {
    str: texts, tuple[int, ...]: iters, list[str]: st.lists(texts, max_size=3),
    float: st.floats(allow_nan=True, allow_infinity=True), bool: st.booleans(),
    int: st.integers(), str | None: st.none() | texts, int | None: st.none() | st.integers(),
}


@st.composite
def events(draw: st.DrawFn) -> ev.Event:
    cls = draw(st.sampled_from(EVENT_CLASSES))
    hints = typing.get_type_hints(cls.__init__)
    values = {name: draw(FIELD_VALUES[hints[name]]) for name in cls.field_names}
    return cls(**values, time=draw(times))


def as_json_dumps(event: ev.Event) -> str:
    body: dict[str, Any] = {"event": event.name, "time": event.time}
    for key, value in event.fields().items():
        body[key] = list(value) if isinstance(value, tuple) else value
    return json.dumps(body, default=str)


def test_every_event_class_is_covered() -> None:
    assert {ev.UnitSkipped, ev.Iteration, ev.BuildFinished, ev.Error} <= set(EVENT_CLASSES)


@given(events())
def test_events_encode_as_json_dumps(event: ev.Event) -> None:
    line = event.to_json()
    assert line == as_json_dumps(event)
    decoded = json.loads(line)
    assert decoded["event"] == event.name and decoded["time"] == event.time


@given(events(), times)
def test_kept_lines_give_the_same_line_back_with_another_time(event: ev.Event,
                                                              later: float) -> None:
    """What the null-build proof replays: each line in two halves around its time (until a
    unit starts: such a build is not a null build, and nothing is kept)."""
    out, kept = io.StringIO(), []
    lines = JsonLines(out, keep=kept)
    lines(event)
    if isinstance(event, ev.UnitStarted):
        assert kept == []
        return
    [(head, tail)] = kept
    assert head + repr(event.time) + tail + "\n" == out.getvalue()
    replayed = json.loads(head + repr(later) + tail)
    assert replayed == {**json.loads(out.getvalue()), "time": later}


def test_nothing_is_kept_once_a_unit_starts() -> None:
    out, kept = io.StringIO(), []
    lines = JsonLines(out, keep=kept)
    lines(ev.BuildStarted(tasks=["a"]))
    assert len(kept) == 1
    lines(ev.UnitStarted(task="a", iter=(), reasons=["never run"]))
    lines(ev.UnitFinished(task="a", iter=(), duration=0.1))
    assert kept == [] and out.getvalue().count("\n") == 3
