"""Generator scopes: how keys, upstream values and pushes line up.

A *key* is a unit's iteration: `()` outside any scope, `(i,)` in a generator's scope, `(i, j)` in
a nested one. A generator's iterations are keys one longer than its own scope. A persistent
consumer (a collector, or an inner generator) runs once, as the unit `()`, and receives one push
per key of the scope it sits in, in key order.

Inner generators number their iterations `(i, j)`: `i` is the upstream iteration whose push
produced the value, `j` counts the values yielded during that push; values yielded by `finish()`
get `i = n`, the number of upstream iterations.
"""

from __future__ import annotations

from collections.abc import Iterable

from blake3 import blake3

from watchrun.project.loader import Project
from watchrun.project.model import Kind

Key = tuple[int, ...]


def contribution(project: Project, upstream: str) -> int:
    """How many leading key components an upstream's value is indexed by, seen from below."""
    task = project.tasks[upstream]
    depth = len(project.graph.scope.get(upstream, ()))
    if task.kind is Kind.COLLECTOR:
        return 0
    if task.kind is Kind.GENERATOR:
        return depth + 1
    return depth


def is_persistent(project: Project, name: str) -> bool:
    """Collectors and generators inside a scope run once and take pushes."""
    task = project.tasks[name]
    if task.kind is Kind.COLLECTOR:
        return True
    return task.kind is Kind.GENERATOR and bool(project.graph.scope.get(name))


def encode_iteration(key: Key, value: str) -> str:
    """Iterations are stored as 'i.j|hash' so a nested key survives the flat store index."""
    return ".".join(map(str, key)) + "|" + value


def decode_iteration(text: str) -> tuple[Key, str]:
    key_text, _, value = text.partition("|")
    return tuple(int(x) for x in key_text.split(".")) if key_text else (), value


class Consumer:
    """A collector or inner generator taking the pushes of one scope."""

    __slots__ = ("acked", "blocked", "deferred", "ended", "fixed", "generator", "in_scope",
                 "live", "name", "pushed", "sequence", "started", "yielded_in_push")

    def __init__(self, name: str, generator: str, in_scope: dict[str, str],
                 fixed: dict[str, str]) -> None:
        self.name = name
        self.generator = generator  # the innermost generator of its scope: whose keys it is pushed
        self.in_scope = in_scope  # arg -> upstream, indexed by the scope's keys
        self.fixed = fixed  # arg -> upstream, whole values
        self.live = False  # its job is running (pushes go straight to it)
        self.deferred = False  # waiting for the whole scope to decide clean or run
        self.pushed = 0  # how many keys were sent
        self.acked = 0  # how many pushes the worker confirmed
        self.yielded_in_push = 0  # inner generators: values yielded during the current push
        self.ended = False
        self.sequence = blake3()  # hash over the pushed values, in order
        self.blocked: str | None = None  # why it cannot complete (an upstream unit failed)
        self.started = 0.0

    def add_to_sequence(self, key: Key, values: dict[str, str]) -> None:
        self.sequence.update(".".join(map(str, key)).encode())
        for arg in sorted(values):
            self.sequence.update(f"\0{arg}={values[arg]}".encode())
        self.sequence.update(b"\n")


def finished_by_consumers(count: int, consumers: Iterable[Consumer]) -> int:
    """How many leading iterations of a scope (of `count` so far) every one of its consumers
    has finished: the pushes its worker confirmed. A consumer decided without running (ended,
    never live) needs none again, nor does one that cannot complete (blocked: a unit of its
    scope failed; it is pushed nothing more); one deferred or not started yet would push the
    whole scope from the start, so nothing is finished until it runs."""
    upto = count
    for c in consumers:
        if (c.ended and not c.live) or c.blocked:
            continue
        if not c.live:
            return 0
        upto = min(upto, c.acked)
    return upto
