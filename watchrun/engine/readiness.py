"""Which units have every upstream value they need: the values known so far, each
generator's iteration keys, and which units (or consumers) a new value makes ready. Part of
the build plan (engine/plan.py): synchronous, free of processes, files and SQLite."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import overload

from watchrun.project.graph import Graph

Key = tuple[int, ...]
Wake = tuple[str, "Key | None"]  # a unit to resolve now, or (consumer, None): advance it


class DenseKeys(Sequence[Key]):
    """The keys of a generator outside any scope: always (0,), (1,), (2,)... in order, so a
    count stands for them all (a scope of 1,000,000 items holds no list of a million keys)."""

    __slots__ = ("size",)

    def __init__(self) -> None:
        self.size = 0

    def __len__(self) -> int:
        return self.size

    @overload
    def __getitem__(self, index: int) -> Key: ...
    @overload
    def __getitem__(self, index: slice) -> list[Key]: ...
    def __getitem__(self, index: int | slice) -> Key | list[Key]:
        if isinstance(index, slice):
            return [(i,) for i in range(*index.indices(self.size))]
        if index < 0:
            index += self.size
        if not 0 <= index < self.size:
            raise IndexError(index)
        return (index,)

    def __iter__(self) -> Iterator[Key]:
        return ((i,) for i in range(self.size))

    def append(self, key: Key) -> None:
        assert key == (self.size,), key
        self.size += 1


Keys = DenseKeys | list[Key]


def _after(key: Key) -> Key:
    """The first key a generator can make after `key`: (i, j) -> (i, j + 1). Every key it
    made before compares less (its keys come in order), every key it makes later does not."""
    return (*key[:-1], key[-1] + 1)


def _index(keys: Keys, boundary: Key) -> int:
    """How many of the keys compare less than `boundary` (the keys come in order)."""
    if not boundary:
        return 0
    if isinstance(keys, DenseKeys):
        return min(boundary[0], len(keys))
    return bisect_left(keys, boundary)


class Readiness:
    """Which units have every upstream value they need.

    It holds the values known so far (a unit's output hash, or an iteration's value hash, by
    `(task, key)`), each generator's iteration keys in order, and which generators are done.
    A value becoming known is the one thing that makes units ready: `value_known` answers with
    the units to resolve now (a unit per key of its scope that the value completes) and the
    consumers (collectors, inner generators) to advance. The driver resolves them against the
    store; clean ones come back here as values, dirty ones go to the `Plan`."""

    def __init__(self, graph: Graph, contribution: Callable[[str], int],
                 is_consumer: Callable[[str], bool]) -> None:
        self.graph = graph
        self.contribution = contribution  # how many key components an upstream's value has
        self.is_consumer = is_consumer
        self.needed: set[str] = set()  # the tasks this build (or session) runs
        self.values: dict[tuple[str, Key], str] = {}
        self.keys: dict[str, Keys] = {}  # generator -> its iteration keys, in order
        # Released iterations (see `release`): task -> a key; the values of its units at the
        # keys before it are no longer held here. They are committed, and `read_back` fetches
        # one from the store when a replay or a replan still asks for it.
        self.released: dict[str, Key] = {}
        self.read_back: Callable[[str, Key], str | None] = lambda name, key: None
        self._read_back: set[tuple[str, Key]] = set()  # values fetched again, held for now
        # units of a scope that failed for good, by generator and iteration: their iteration
        # is settled without their value (and without their downstream's), see `releasable`
        self._failed: dict[str, dict[Key, set[str]]] = {}
        # inner generators whose keys did not come in order (`_after` assumes they do): their
        # scopes are never released
        self._unordered: set[str] = set()
        self.gen_done: set[str] = set()  # generators whose keys are all known
        self.finished: dict[str, int] = {}  # task -> units with a value
        self._downs: dict[str, list[str]] = {}
        self._depths: dict[str, int] = {}

    def new_graph(self, graph: Graph) -> None:
        self.graph = graph
        self._downs.clear()
        self._depths.clear()

    def forget(self, names: set[str]) -> None:
        """Everything about these tasks' units (they are planned again, or gone)."""
        for item in [k for k in self.values if k[0] in names]:
            del self.values[item]
        self._read_back = {k for k in self._read_back if k[0] not in names}
        for failed in self._failed.values():
            for tasks in failed.values():
                tasks -= names
        for name in names:
            self._failed.pop(name, None)
            self.keys.pop(name, None)
            self.released.pop(name, None)  # its new values are held until released again
            self._unordered.discard(name)
            self.gen_done.discard(name)
            self.finished.pop(name, None)

    def depth(self, upstream: str) -> int:
        depth = self._depths.get(upstream)
        if depth is None:
            depth = self._depths[upstream] = self.contribution(upstream)
        return depth

    def upstream_values(self, name: str, key: Key, in_scope: bool = True
                        ) -> dict[str, str] | None:
        """arg -> value hash for the unit (name, key), or None while one is unknown.
        in_scope=False: only the whole-value (fixed) upstreams of a consumer."""
        result = {}
        for arg, up in self.graph.upstreams.get(name, {}).items():
            depth = self.depth(up)
            if depth and not in_scope:
                continue
            value = self.value(up, key[:depth])
            if value is None:
                return None
            result[arg] = value
        for up in self.graph.implicit.get(name, ()):
            if up in self.needed and not self.complete(up):
                return None
        return result

    def ready_after(self, name: str, producer: str) -> dict[str, str] | None:
        """For a task outside any scope that reads files `producer` writes (a file edge, not
        a value): its upstream values if `producer` is all it still waits for; else None."""
        graph = self.graph
        if name not in self.needed or graph.scope.get(name) \
                or producer not in graph.implicit.get(name, ()):
            return None
        values = {}
        for arg, up in graph.upstreams.get(name, {}).items():
            value = self.values.get((up, ()))
            if value is None or self.depth(up):
                return None
            values[arg] = value
        for up in graph.implicit[name]:
            if up != producer and up in self.needed and not self.complete(up):
                return None
        return values

    def value(self, name: str, key: Key) -> str | None:
        """The value of the unit (name, key), or of a generator's iteration; a released one
        is read back from the store (and held until the next release)."""
        value = self.values.get((name, key))
        if value is None and key and key < self.released.get(name, ()):
            value = self.read_back(name, key)
            if value is not None:
                self.values[(name, key)] = value
                self._read_back.add((name, key))
        return value

    def keys_of(self, gen: str) -> Keys:
        """The generator's keys, made empty if none yet: a count for a generator outside
        any scope (its keys are dense), a list for an inner one."""
        keys = self.keys.get(gen)
        if keys is None:
            keys = self.keys[gen] = DenseKeys() if not self.graph.scope.get(gen) else []
        return keys

    def is_released(self, name: str, key: Key) -> bool:
        """The unit finished, its results are committed and its bookkeeping is dropped."""
        return bool(key) and key < self.released.get(name, ())

    def unit_failed(self, gen: str, name: str, key: Key) -> None:
        """A unit of `gen`'s scope failed for good (no retry left): it will have no value in
        this run, nor will its downstream at that iteration."""
        if key:
            self._failed.setdefault(gen, {}).setdefault(key, set()).add(name)

    def releasable_scope(self, gen: str) -> bool:
        """Whether the iterations of `gen`'s scope can be released (`release`): a generator
        outside any scope, or an inner generator of one, whose keys came in order. (Deeper
        down, the keys `finish()` makes need not come after the others.)"""
        return gen in self.keys and len(self.graph.scope.get(gen, ())) <= 1 \
            and gen not in self._unordered

    def releasable(self, gen: str, upto: int, tasks: Sequence[str], own: bool = True) -> int:
        """How far the iterations of `gen`'s scope can be released, up to `upto` (every
        consumer of the scope has finished the iterations before it): while every unit of
        `tasks` (the scope's per-iteration tasks) at the key has its value, or had it
        released before, or will never have one (it failed, or a unit it waits for at that
        iteration did). Without `own`, the generator's own values are not released (they
        are all there)."""
        released = self.released
        names = (gen, *tasks) if own else tuple(tasks)
        keys = self.keys_of(gen)
        if not names:
            return 0
        upto = min(upto, len(keys))
        i = min(_index(keys, released.get(name, ())) for name in names)
        values = self.values
        failed = self._failed.get(gen, {})
        while i < upto:
            key = keys[i]
            waiting = [name for name in names
                       if not key < released.get(name, ()) and (name, key) not in values]
            if waiting and not (key in failed and self._never_valued(waiting, failed[key])):
                break
            i += 1
        return i

    def _never_valued(self, names: list[str], failed: set[str]) -> bool:
        """Whether none of these units can get a value at an iteration where `failed` did
        not: each failed, or waits (through the scope) for one that did."""
        return all(name in failed or self.graph.upstream_closure([name]) & failed
                   for name in names)

    def release(self, gen: str, upto: int, tasks: Sequence[str], own: bool = True
                ) -> list[tuple[str, Key, str]]:
        """Drop the values of the first `upto` iterations of `gen`'s scope: those of `tasks`
        and, with `own`, the generator's own (see `releasable`). Returns what was dropped,
        for the driver's own bookkeeping (a unit settled without a value comes with the
        value ""). The keys stay; the values are read back when asked for."""
        dropped: list[tuple[str, Key, str]] = []
        keys = self.keys_of(gen)
        upto = min(upto, len(keys))
        if not upto:
            return dropped
        boundary = _after(keys[upto - 1])
        values = self.values
        failed = self._failed.get(gen, {})
        for name in (gen, *tasks) if own else tasks:
            start = _index(keys, self.released.get(name, ()))
            for i in range(start, upto):
                key = keys[i]
                value = values.pop((name, key), None)
                if value is not None:
                    dropped.append((name, key, value))
                elif key in failed:
                    dropped.append((name, key, ""))
            if upto > start:
                self.released[name] = boundary
        for key in [key for key in failed if key < boundary]:
            del failed[key]
        for item in [k for k in self._read_back if k[1] < self.released.get(k[0], ())]:
            self._read_back.discard(item)
            values.pop(item, None)
        return dropped

    def held_iterations(self, gen: str) -> int:
        """The iterations of a generator's scope whose values are held in memory."""
        keys = self.keys.get(gen)
        return 0 if keys is None else len(keys) - _index(keys, self.released.get(gen, ()))

    def complete(self, name: str) -> bool:
        """Every unit of the task has a value (all its scope's iterations, once known)."""
        scope = self.graph.scope.get(name, ())
        if not scope or self.is_consumer(name):
            return self.finished.get(name, 0) > 0
        gen = scope[-1]
        return gen in self.gen_done and self.finished.get(name, 0) >= len(self.keys.get(gen, []))

    def value_known(self, name: str, key: Key, value: str, counts: bool = True) -> list[Wake]:
        """A unit's output (or, counts=False, a generator's iteration value) is known."""
        self.values[(name, key)] = value
        if counts:
            self.finished[name] = self.finished.get(name, 0) + 1
        wake: list[Wake] = []
        for down in self._downstreams(name):
            if down not in self.needed:
                continue
            if down in self.graph.implicit and name in self.graph.implicit[down]:
                if self.complete(name):
                    wake.append((down, ()))  # its input files are all written
                if name not in self.graph.upstreams.get(down, {}).values():
                    continue
            self._reach(down, key, wake)
        return wake

    def iteration(self, gen: str, key: Key, value: str) -> list[Wake]:
        keys = self.keys_of(gen)
        if isinstance(keys, DenseKeys) and key != (len(keys),):
            keys = self.keys[gen] = list(keys)  # not dense after all: keep them one by one
        if keys and not keys[-1] < key:
            self._unordered.add(gen)
        keys.append(key)
        return self.value_known(gen, key, value, counts=False)

    def generator_done(self, name: str) -> list[Wake]:
        """Every iteration of the generator is known."""
        self.gen_done.add(name)
        self.finished[name] = self.finished.get(name, 0) + 1
        wake: list[Wake] = []
        for down in self._downstreams(name):
            if down in self.needed:
                if self.is_consumer(down):
                    wake.append((down, None))
                elif down in self.graph.implicit and name in self.graph.implicit[down]:
                    wake.append((down, ()))
        # a task of its scope whose last unit finished before the generator did is complete
        # only now: the readers of its files can start
        for task, scope in self.graph.scope.items():
            if not scope or scope[-1] != name or self.is_consumer(task) \
                    or not self.complete(task):
                continue
            for down in self._downstreams(task):
                if down in self.needed and task in self.graph.implicit.get(down, ()):
                    wake.append((down, ()))
        return wake

    def reach(self, down: str, key: Key) -> list[Wake]:
        """The units of `down` that a value at `key` may complete (or its consumer)."""
        wake: list[Wake] = []
        self._reach(down, key, wake)
        return wake

    def _reach(self, down: str, key: Key, wake: list[Wake]) -> None:
        """The units of `down` that a value at `key` may complete."""
        if self.is_consumer(down):
            wake.append((down, None))
            return
        scope = self.graph.scope.get(down, ())
        if len(key) == len(scope):
            wake.append((down, key))
        elif len(key) < len(scope):  # a value outside the scope: every key so far
            for k in self.keys.get(scope[-1], []):
                if k[: len(key)] == key and not self.is_released(down, k):
                    wake.append((down, k))

    def _downstreams(self, name: str) -> list[str]:
        downs = self._downs.get(name)
        if downs is None:
            downs = self._downs[name] = sorted(self.graph.downstreams.get(name, ()))
        return downs
