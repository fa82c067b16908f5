"""Which units have every upstream value they need: the values known so far, each
generator's iteration keys, and which units (or consumers) a new value makes ready. Part of
the build plan (engine/plan.py): synchronous, free of processes, files and SQLite."""

from __future__ import annotations

from collections.abc import Callable

from watchrun.project.graph import Graph

Key = tuple[int, ...]
Wake = tuple[str, "Key | None"]  # a unit to resolve now, or (consumer, None): advance it


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
        self.keys: dict[str, list[Key]] = {}  # generator -> its iteration keys, in order
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
        for name in names:
            self.keys.pop(name, None)
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
            value = self.values.get((up, key[:depth]))
            if value is None:
                return None
            result[arg] = value
        for up in self.graph.implicit.get(name, ()):
            if up in self.needed and not self.complete(up):
                return None
        return result

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
        self.keys.setdefault(gen, []).append(key)
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
                if k[: len(key)] == key:
                    wake.append((down, k))

    def _downstreams(self, name: str) -> list[str]:
        downs = self._downs.get(name)
        if downs is None:
            downs = self._downs[name] = sorted(self.graph.downstreams.get(name, ()))
        return downs
