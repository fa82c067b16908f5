"""Task discovery, names, and inheritance: headers in, resolved `Task`s out.

`extends` forms a chain child -> parent -> … (single inheritance). Params merge per key along the
chain (nearest wins); kind, after, inputs, outputs, timeout, retries and resources come whole
from the nearest task that sets them; `abstract` is never inherited. Every resolved value keeps
its Origin (task, file, line).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchrun.config import Config, suggest
from watchrun.errors import ProjectError
from watchrun.project.discovery import discover_in
from watchrun.project.frozen_init import build
from watchrun.project.header import Header, memory_bytes
from watchrun.project.model import Kind, Origin, Param, Resources, Task

INHERITED_FIELDS = ("kind", "after", "inputs", "outputs", "priority", "timeout", "retries",
                    "resources")


# -- discovery and names ------------------------------------------------------------------------

def discover(config: Config) -> list[Path]:
    """Every `*.py` below the task folders, sorted; skips `__pycache__`, hidden entries and the
    state folder. Helper modules and `__init__.py` files are included: the header decides."""
    return [Path(p) for p in discover_files(config)]


def discover_files(config: Config) -> list[str]:
    """`discover` as sorted absolute path strings (the hot path of a null build: no Path work)."""
    return discover_in((os.fspath(folder) for folder in config.tasks), os.fspath(config.state_dir))


def tasks_dir_of(path: Path, config: Config) -> Path | None:
    """The first configured task folder that contains `path`."""
    text = os.fspath(path)
    for folder in config.tasks:
        if text.startswith(os.fspath(folder) + os.sep):
            return folder
    return None


def is_package_init(path: Path) -> bool:
    return path.name == "__init__.py"


def relative_parts(path: Path, base: Path) -> list[str]:
    """The parts of `path` below `base` (ValueError if it is not below). Plain string work in the
    common case: pathlib's relative_to costs more than the rest of a warm load of a name."""
    text, prefix = os.fspath(path), os.fspath(base) + os.sep
    if text.startswith(prefix) and prefix != os.sep + os.sep:
        return text[len(prefix):].split(os.sep)
    return list(path.relative_to(base).parts)


def _without_py(parts: list[str]) -> list[str]:
    if parts[-1].endswith(".py"):
        parts[-1] = parts[-1][:-3]
    return parts


def task_name(path: Path, tasks_dir: Path) -> str:
    """`tasks/models/train.py` below `tasks` -> "models.train". `__init__.py` is never a task."""
    if is_package_init(path):
        raise ValueError(f"{path} is a package's __init__.py, not a task")
    return ".".join(_without_py(relative_parts(path, tasks_dir)))


def module_name(path: Path, root: Path) -> str:
    """The dotted module name relative to the project root: "tasks.models.train"; a package's
    `__init__.py` is the package itself."""
    parts = _without_py(relative_parts(path, root))
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_name(path: Path, root: Path) -> str:
    """The package relative imports of the module resolve against: "tasks.models"."""
    name = module_name(path, root)
    return name if is_package_init(path) else name.rpartition(".")[0]


# -- inheritance --------------------------------------------------------------------------------

@dataclass
class TaskSource:
    """One task module as written: its name, file, header and dotted module name."""

    name: str
    path: Path
    header: Header
    module_name: str

    def origin(self, key: str) -> Origin:
        return build(Origin, task=self.name, file=self.path, line=self.header.line_of(key))


def resolve_tasks(sources: dict[str, TaskSource], root: Path
                  ) -> tuple[dict[str, Task], list[ProjectError]]:
    """Apply inheritance. Tasks whose chain is broken (missing parent, cycle, an inherited `after`
    that is invalid) are left out of the result; every problem is reported once."""
    chains, errors = _chains(sources)
    afters: dict[str, tuple[dict[str, str], dict[str, int]]] = {}
    for name in sorted(sources):
        if "after" in sources[name].header.data:
            after, problem = after_of(sources[name])
            if problem is None:
                afters[name] = after
            else:
                errors.append(problem)
    tasks: dict[str, Task] = {}
    for name in sorted(chains):
        chain = chains[name]
        if not _after_is_valid(chain, sources, afters):
            continue  # its `after` is invalid: reported at the task that sets it
        tasks[name] = _merge(chain, sources, afters)
    return tasks, errors


def _after_is_valid(chain: tuple[str, ...], sources: dict[str, TaskSource],
                    afters: dict[str, Any]) -> bool:
    """Whether the nearest task of the chain that sets `after` (if any) sets a valid one."""
    for task in chain:
        if "after" in sources[task].header.data:
            return task in afters
    return True


def _chains(sources: dict[str, TaskSource]) -> tuple[dict[str, tuple[str, ...]],
                                                     list[ProjectError]]:
    """The extends chain of every task (itself first), for the tasks whose chain is whole."""
    chains: dict[str, tuple[str, ...]] = {}
    failed: set[str] = set()
    errors: list[ProjectError] = []
    for name in sorted(sources):
        walk = [name]
        current = name
        while current not in chains and current not in failed:
            parent = sources[current].header.data.get("extends")
            if parent is None:
                chains[current] = (current,)
            elif parent not in sources:
                errors.append(ProjectError(
                    sources[current].path, sources[current].header.line_of("extends"),
                    f"extends {parent!r}: no such task{suggest(parent, sources.keys())}"))
                failed.add(current)
            elif parent in walk:
                errors.append(_cycle_error(walk[walk.index(parent):], sources))
                failed.update(walk[walk.index(parent):])
            else:
                walk.append(parent)
                current = parent
        # settle the walk back to front: each task's chain is itself + its parent's chain
        for index in range(len(walk) - 1, -1, -1):
            task = walk[index]
            if task in chains or task in failed:
                continue
            parent_chain = chains.get(walk[index + 1]) if index + 1 < len(walk) else None
            if parent_chain is None:
                failed.add(task)
            else:
                chains[task] = (task, *parent_chain)
    return chains, errors


def _cycle_error(cycle: list[str], sources: dict[str, TaskSource]) -> ProjectError:
    start = cycle.index(min(cycle))  # print it from its smallest name, so it reads the same always
    ordered = cycle[start:] + cycle[:start]
    first = sources[ordered[0]]
    chain = " -> ".join([*ordered, ordered[0]])
    return ProjectError(first.path, first.header.line_of("extends"),
                        f"extends forms a cycle: {chain}")


def after_of(source: TaskSource) -> tuple[tuple[dict[str, str], dict[str, int]],
                                          ProjectError | None]:
    """(argument -> upstream, argument -> line) of a header's `after`, or the problem with it.
    With a list (or one name) the argument is the upstream's last name component."""
    value: Any = source.header.data["after"]
    if isinstance(value, str):
        value = [value]
    header = source.header
    if isinstance(value, dict):
        return (dict(value), {arg: header.line_of(f"after.{arg}") for arg in value}), None
    after: dict[str, str] = {}
    lines: dict[str, int] = {}
    item_lines = header.item_lines.get("after", ())
    for index, upstream in enumerate(value):
        arg = upstream.rpartition(".")[2]
        line = item_lines[index] if index < len(item_lines) else header.line_of("after")
        if arg in after:
            return ({}, {}), ProjectError(source.path, line, _duplicate_arg(after[arg], upstream))
        after[arg] = upstream
        lines[arg] = line
    return (after, lines), None


def _duplicate_arg(first: str, second: str) -> str:
    if first == second:
        return f"after lists {first!r} twice"
    arg = first.rpartition(".")[2]
    return (f"after: {first!r} and {second!r} both give the argument name {arg!r}; choose names "
            f'with a table: after = {{a = "{first}", b = "{second}"}}')


def _as_tuple(value: Any) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _merge(chain: tuple[str, ...], sources: dict[str, TaskSource],
           afters: dict[str, tuple[dict[str, str], dict[str, int]]]) -> Task:
    own = sources[chain[0]]
    linked = [sources[name] for name in chain]
    params: dict[str, Param] = {}
    for source in reversed(linked):  # root ancestor first, so that nearer definitions replace
        for key, value in source.header.data.get("params", {}).items():
            params[key] = Param(value, source.origin(f"params.{key}"))
    values: dict[str, Any] = {}
    field_origins: dict[str, Origin] = {}
    for field_name in INHERITED_FIELDS:
        for setter in linked:  # the nearest task that sets it
            if field_name in setter.header.data:
                values[field_name] = setter.header.data[field_name]
                field_origins[field_name] = setter.origin(field_name)
                break
    after: dict[str, str] = {}
    after_lines: dict[str, int] = {}
    if "after" in field_origins:
        after, after_lines = afters[field_origins["after"].task]
    return Task(
        name=own.name,
        path=own.path,
        line=own.header.line,
        kind=Kind(values.get("kind", "task")),
        after=dict(after),
        inputs=_as_tuple(values.get("inputs", ())),
        outputs=_as_tuple(values.get("outputs", ())),
        abstract=own.header.data.get("abstract", False),
        params=params,
        chain=chain,
        field_origins=field_origins,
        after_lines=dict(after_lines),
        priority=values.get("priority", 0),
        timeout=values.get("timeout"),
        retries=values.get("retries", 0),
        resources=resources_of(values.get("resources", {})),
    )


def resources_of(table: dict[str, Any]) -> Resources:
    """A header's `resources` table (validated) as Resources."""
    memory = table.get("memory")
    return Resources(cpus=table.get("cpus", 1.0), gpus=table.get("gpus", 0),
                     memory=None if memory is None else memory_bytes(memory))
