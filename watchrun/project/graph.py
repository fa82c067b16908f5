"""The DAG of tasks: explicit `after` edges, implicit output -> input edges, generator scopes.

A broken part of the graph never hides the healthy part: every problem is reported, the tasks
involved (and everything downstream of them) go into `Graph.broken`, and `order` holds the rest.
Abstract tasks are not nodes: they never run.
"""

from __future__ import annotations

import heapq
import itertools
import os
import posixpath
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path, PurePath

from watchrun.config import suggest
from watchrun.errors import ProjectError
from watchrun.project.model import Kind, Task

_Step = Callable[[str], Iterable[str]]  # a task's neighbours along one direction of the edges


@dataclass
class Graph:
    tasks: dict[str, Task]  # every task, abstract ones included (for inheritance views)
    upstreams: dict[str, dict[str, str]] = field(default_factory=dict)  # after: arg -> upstream
    implicit: dict[str, set[str]] = field(default_factory=dict)  # task -> producers it waits for
    # task -> every producer whose declared outputs its inputs match, an `after` edge or not:
    # who a producer's rerun rewrites files under (implicit leaves out the `after` ones)
    reads_files_of: dict[str, set[str]] = field(default_factory=dict)
    downstreams: dict[str, set[str]] = field(default_factory=dict)  # both kinds of edge
    order: list[str] = field(default_factory=list)  # healthy non-abstract tasks, upstream first
    scope: dict[str, tuple[str, ...]] = field(default_factory=dict)  # generators, outermost first
    broken: set[str] = field(default_factory=set)  # tasks with errors and their downstream

    def upstreams_of(self, name: str) -> set[str]:
        """Every task `name` waits for, through either kind of edge."""
        return set(self.upstreams.get(name, {}).values()) | self.implicit.get(name, set())

    def upstream_closure(self, names: Iterable[str]) -> set[str]:
        """These tasks and every task needed to build them."""
        return _closure(names, self.upstreams_of)

    def downstream_closure(self, names: Iterable[str]) -> set[str]:
        """These tasks and every task that depends on them."""
        return _closure(names, lambda n: self.downstreams.get(n, set()))


def _closure(names: Iterable[str], step: _Step) -> set[str]:
    seen = set(names)
    todo = list(seen)
    while todo:
        for other in step(todo.pop()):
            if other not in seen:
                seen.add(other)
                todo.append(other)
    return seen


def build_graph(tasks: dict[str, Task], root: Path, broken: Iterable[str] = ()
                ) -> tuple[Graph, list[ProjectError]]:
    """Build the DAG. `broken` names tasks already known to be broken (e.g. an invalid header):
    a reference to one is not reported as missing, and taints its downstream."""
    builder = _Builder(tasks, root, set(broken))
    return builder.build()


class _Builder:
    def __init__(self, tasks: dict[str, Task], root: Path, broken: set[str]) -> None:
        self.graph = Graph(tasks)
        self.root = root
        self.known_broken = broken
        self.nodes = sorted(n for n, t in tasks.items() if not t.abstract)
        self.errors: list[ProjectError] = []
        self.errored: set[str] = {n for n in broken if n in tasks}
        # every node's upstreams through either kind of edge, once the edges are known
        self.ups: dict[str, set[str]] = {}

    def upstreams_of(self, name: str) -> set[str]:
        return self.ups[name]

    def fail(self, task: str, file: Path, line: int, message: str) -> None:
        self.errored.add(task)
        self.errors.append(ProjectError(file, line, message))

    def build(self) -> tuple[Graph, list[ProjectError]]:
        graph = self.graph
        for name in self.nodes:
            graph.upstreams[name] = self._explicit(graph.tasks[name])
        for task in graph.tasks.values():
            if task.abstract:  # not a node, but a typo in a template is still worth a word
                self._explicit(task)
        self._outputs_contract()
        graph.implicit = implicit_edges([graph.tasks[n] for n in self.nodes], self.root)
        graph.reads_files_of = {name: set(ups) for name, ups in graph.implicit.items() if ups}
        for name in self.nodes:
            explicit = set(graph.upstreams[name].values())
            implicit = graph.implicit[name]
            implicit -= explicit
            ups = self.ups[name] = explicit | implicit
            for up in ups:
                graph.downstreams.setdefault(up, set()).add(name)
        order = self._topological()
        if len(order) < len(self.nodes):  # only a cycle (or what waits on one) is left out
            self._find_cycles()
        graph.broken = graph.downstream_closure(self.errored)
        self._scopes(order)
        graph.broken = graph.downstream_closure(self.errored) | self.known_broken
        graph.order = [n for n in order if n not in graph.broken]
        # an inherited mistake is reported once, at the line that makes it
        errors = sorted(set(self.errors), key=lambda e: (str(e.file), e.line or 0, e.message))
        return graph, errors

    def _explicit(self, task: Task) -> dict[str, str]:
        """The valid `after` edges of a task; a missing or abstract upstream is an error."""
        edges: dict[str, str] = {}
        if not task.after:
            return edges
        origin = task.field_origins.get("after")
        file = origin.file if origin else task.path
        for arg, upstream in task.after.items():
            line = task.after_lines.get(arg, origin.line if origin else task.line)
            target = self.graph.tasks.get(upstream)
            if target is None:
                if upstream in self.known_broken:
                    self.errored.add(task.name)  # the cause is reported at the upstream
                    continue
                choices = [n for n, t in self.graph.tasks.items() if not t.abstract]
                self.fail(task.name, file, line,
                          f"after {upstream!r}: no such task{suggest(upstream, choices)}")
            elif target.abstract:
                self.fail(task.name, file, line,
                          f"after {upstream!r}: {upstream!r} is abstract and never runs")
            else:
                edges[arg] = upstream
        return edges

    # -- the outputs contract -------------------------------------------------------------------

    def _outputs_contract(self) -> None:
        """A file or folder is declared as an output by one task only (also as a part of a
        folder another task declares), and never named among the same task's inputs (a glob
        that matches it skips it instead: see `inputs`)."""
        declared: dict[str, Task] = {}
        for name in self.nodes:
            task = self.graph.tasks[name]
            for out in task.outputs:
                key = normalise(out, self.root)
                first = declared.setdefault(key, task)
                if first is not task:
                    self._declared_twice(out, first, task)
            self._output_as_input(task)
        for key, task in declared.items():
            folder = posixpath.dirname(key)
            while folder and folder != posixpath.dirname(folder):
                outer = declared.get(folder)
                if outer is not None and outer is not task:
                    self._declared_inside(key, task, folder, outer)
                    break
                folder = posixpath.dirname(folder)

    def _where(self, task: Task, key: str) -> tuple[Path, int]:
        origin = task.field_origins.get(key)
        return (origin.file, origin.line) if origin else (task.path, task.line)

    def _location(self, task: Task, key: str) -> str:
        file, line = self._where(task, key)
        return ProjectError(file, line, "").location(self.root)

    def _declared_twice(self, out: str, first: Task, second: Task) -> None:
        file, line = self._where(second, "outputs")
        self.errored.add(first.name)
        self.fail(second.name, file, line,
                  f"output {out!r} is declared by two tasks: {first.name!r} "
                  f"({self._location(first, 'outputs')}) and {second.name!r} "
                  f"({self._location(second, 'outputs')}); a file or folder may be declared "
                  "by one task only")

    def _declared_inside(self, out: str, task: Task, folder: str, outer: Task) -> None:
        file, line = self._where(task, "outputs")
        self.errored.add(outer.name)
        self.fail(task.name, file, line,
                  f"output {out!r} of {task.name!r} is inside the folder {folder!r} that "
                  f"{outer.name!r} declares "
                  f"({self._location(outer, 'outputs')}): each would see the other's writes as "
                  "changes; declare the folder or the files in it, not both")

    def _output_as_input(self, task: Task) -> None:
        outputs = [normalise(out, self.root) for out in task.outputs]
        for pattern in task.inputs:
            if _has_magic(pattern):
                continue  # a glob skips the task's own outputs
            path = normalise(pattern, self.root)
            for out in outputs:
                if path == out or out.startswith(path + "/") or path.startswith(out + "/"):
                    file, line = self._where(task, "inputs")
                    what = "is also" if path == out else "overlaps"
                    self.fail(task.name, file, line,
                              f"task {task.name!r}: input {pattern!r} {what} its own output "
                              f"{out!r} (declared at {self._location(task, 'outputs')}); a "
                              "task's output cannot be its input: it would feed itself on "
                              "every run")
                    return

    # -- cycles ---------------------------------------------------------------------------------

    def _find_cycles(self) -> None:
        for component in strongly_connected(self.nodes, self.upstreams_of):
            if len(component) == 1:
                only = next(iter(component))
                if only not in self.ups[only]:
                    continue
            self._report_cycle(component)

    def _report_cycle(self, component: set[str]) -> None:
        start = min(component)
        path = _path_back(start, component, self.upstreams_of)
        hops = list(itertools.pairwise(path))
        implicit = [f"{a} -> {b}: {a}'s inputs match {b}'s outputs" for a, b in hops
                    if b not in self.graph.upstreams[a].values()]
        note = f" ({'; '.join(implicit)})" if implicit else ""
        task = self.graph.tasks[start]
        file, line = self._edge_location(task, path[1])
        self.fail(start, file, line, f"after forms a cycle: {' -> '.join(path)}{note}")
        self.errored.update(component)

    def _edge_location(self, task: Task, upstream: str) -> tuple[Path, int]:
        """Where the edge task -> upstream is declared: its `after` entry, else its `inputs`."""
        for arg, name in self.graph.upstreams[task.name].items():
            if name == upstream:
                origin = task.field_origins["after"]
                return origin.file, task.after_lines.get(arg, origin.line)
        inputs = task.field_origins.get("inputs")
        return (inputs.file, inputs.line) if inputs else (task.path, task.line)

    def _topological(self) -> list[str]:
        """Kahn's algorithm, ties broken by name; tasks in or behind a cycle are left out."""
        ups = self.ups
        waiting = {n: len(ups[n]) for n in self.nodes}
        ready = [n for n, count in waiting.items() if count == 0]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            name = heapq.heappop(ready)
            order.append(name)
            for down in self.graph.downstreams.get(name, ()):
                waiting[down] -= 1
                if waiting[down] == 0:
                    heapq.heappush(ready, down)
        return order

    # -- scopes ---------------------------------------------------------------------------------

    def _scopes(self, order: list[str]) -> None:
        """scope(T) is the longest contribution of its explicit upstreams, where
        contribution(U) = () for a collector, scope(U) + (U,) for a generator, else scope(U);
        every other contribution must be a prefix of it. Implicit edges bring no scope."""
        graph = self.graph
        for name in order:
            if name in graph.broken:
                continue
            task = graph.tasks[name]
            brought = {arg: self._contribution(up) for arg, up in graph.upstreams[name].items()}
            scope = max(brought.values(), key=len, default=())
            for arg, contribution in brought.items():
                if scope[: len(contribution)] != contribution:
                    self._two_generators(task, arg, scope[-1], contribution[-1])
                    break
            else:
                graph.scope[name] = scope
                if task.kind is Kind.COLLECTOR and not scope:
                    self._lonely_collector(task)
            if name in self.errored:
                graph.broken |= graph.downstream_closure([name])

    def _contribution(self, upstream: str) -> tuple[str, ...]:
        task = self.graph.tasks[upstream]
        if task.kind is Kind.COLLECTOR:
            return ()
        own = self.graph.scope.get(upstream, ())
        return (*own, upstream) if task.kind is Kind.GENERATOR else own

    def _two_generators(self, task: Task, arg: str, first: str, second: str) -> None:
        origin = task.field_origins["after"]
        one, two = sorted((first, second))
        self.fail(task.name, origin.file, task.after_lines.get(arg, origin.line),
                  f"task {task.name!r} follows two generators, {one!r} and {two!r} "
                  "(a task may be in one generator scope only)")

    def _lonely_collector(self, task: Task) -> None:
        origin = task.field_origins.get("kind")
        # point at the task's own file: that is where the missing `after` belongs
        file, line = (origin.file, origin.line) if origin and origin.file == task.path \
            else (task.path, task.line)
        self.fail(task.name, file, line,
                  f"collector {task.name!r} is not downstream of any generator")


def _path_back(start: str, component: set[str], step: _Step) -> list[str]:
    """The shortest walk start -> … -> start inside a strongly connected component."""
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        current = queue.popleft()
        for nxt in sorted(step(current)):
            if nxt == start:
                walk = [current]
                while walk[-1] != start:
                    walk.append(previous[walk[-1]])
                return [*reversed(walk), start]
            if nxt in component and nxt not in previous:
                previous[nxt] = current
                queue.append(nxt)
    return [start, start]


def strongly_connected(nodes: list[str], step: _Step) -> list[set[str]]:
    """Tarjan's algorithm, iterative (a long chain of tasks must not hit the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(step(root)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(step(nxt))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                components.append(component)
    return components


# -- implicit edges -----------------------------------------------------------------------------

def normalise(path: str, root: Path) -> str:
    """A declared path or glob as root-relative posix (absolute only when outside the root)."""
    if os.path.isabs(path):
        try:
            path = PurePath(path).relative_to(root).as_posix()
        except ValueError:
            path = PurePath(path).as_posix()
    return posixpath.normpath(path.replace(os.sep, "/"))


def _has_magic(part: str) -> bool:
    return "*" in part or "?" in part or "[" in part


def matches(path: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """Does the path match the glob, segment by segment (`*` stays in one segment, `**` spans
    any number of them)?"""
    if not pattern:
        return not path
    if pattern[0] == "**":
        return matches(path, pattern[1:]) or (bool(path) and matches(path[1:], pattern))
    return bool(path) and fnmatchcase(path[0], pattern[0]) and matches(path[1:], pattern[1:])


def may_contain(folder: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """Could a path strictly below `folder` match the glob?"""
    if not folder:
        return bool(pattern)
    if not pattern:
        return False
    if pattern[0] == "**":
        return may_contain(folder, pattern[1:]) or may_contain(folder[1:], pattern)
    return fnmatchcase(folder[0], pattern[0]) and may_contain(folder[1:], pattern[1:])


def output_feeds_input(output: str, pattern: str) -> bool:
    """The implicit-edge rule, on root-relative posix strings. A task that declares `output`
    runs before a task whose inputs include the glob `pattern` when
      - the output itself matches the glob (outputs = ["data/a.csv"], inputs = ["data/*.csv"]), or
      - the glob lies inside the output folder (outputs = ["out/frames"],
        inputs = ["out/frames/*.png"]), or
      - some path below the output folder could match the glob (outputs = ["out"],
        inputs = ["out/**/*.png"]).
    Globs match segment by segment: `*`, `?` and `[…]` within one path segment, `**` across
    any number of them. The edge only orders the two tasks; no value is passed."""
    if pattern.startswith(output + "/"):
        return True
    out_parts = tuple(output.split("/"))
    pat_parts = tuple(pattern.split("/"))
    return matches(out_parts, pat_parts) or may_contain(out_parts, pat_parts)


class _OutputTree:
    """Declared outputs as a tree of path segments, so that finding the producers an input
    glob reaches costs the length of the glob, not the number of outputs (the same relation
    as `output_feeds_input`, which tests check it against)."""

    __slots__ = ("children", "producers")

    def __init__(self) -> None:
        self.children: dict[str, _OutputTree] = {}
        self.producers: list[str] = []

    def add(self, output: str, producer: str) -> None:
        node = self
        for part in output.split("/"):
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = _OutputTree()
            node = child
        node.producers.append(producer)

    def reached_by(self, pattern: str) -> set[str]:
        found: set[str] = set()
        parts = pattern.split("/")
        if not any(map(_has_magic, parts)):  # a plain path (`**` has magic too): no search
            self._descend(parts, found)
            return found
        seen: set[tuple[int, int]] = set()
        self._walk(tuple(parts), 0, found, seen)
        return found

    def _descend(self, parts: list[str], found: set[str]) -> None:
        """`_walk` for a pattern without wildcards: one path down the tree."""
        node = self
        for part in parts:
            found.update(node.producers)
            child = node.children.get(part)
            if child is None:
                return
            node = child
        found.update(node.producers)

    def _walk(self, parts: tuple[str, ...], i: int, found: set[str],
              seen: set[tuple[int, int]]) -> None:
        if (id(self), i) in seen:
            return
        seen.add((id(self), i))
        # an output ending here either matches the whole glob (i == len) or is a folder
        # inside which the rest of the glob may match
        found.update(self.producers)
        if i == len(parts):
            return
        part = parts[i]
        if part == "**":
            self._walk(parts, i + 1, found, seen)
            for child in self.children.values():
                child._walk(parts, i, found, seen)
        elif _has_magic(part):
            for name, child in self.children.items():
                if fnmatchcase(name, part):
                    child._walk(parts, i + 1, found, seen)
        elif part in self.children:
            self.children[part]._walk(parts, i + 1, found, seen)


def implicit_edges(tasks: list[Task], root: Path) -> dict[str, set[str]]:
    """task -> the tasks whose declared outputs its input globs reach (no self-edges)."""
    tree = _OutputTree()
    for task in tasks:
        for output in task.outputs:
            tree.add(normalise(output, root), task.name)
    edges: dict[str, set[str]] = {task.name: set() for task in tasks}
    if not tree.children:
        return edges
    for task in tasks:
        for pattern in task.inputs:
            edges[task.name] |= tree.reached_by(normalise(pattern, root)) - {task.name}
    return edges
