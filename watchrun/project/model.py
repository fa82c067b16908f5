"""The user's project as data: tasks after inheritance, with where every value comes from."""

from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple


class Kind(enum.Enum):
    TASK = "task"
    GENERATOR = "generator"
    COLLECTOR = "collector"


COMMAND_LINE = "--set"  # the `file` of an Origin set on the command line


@dataclass(frozen=True)
class Origin:
    """Where a value is set: the task whose header sets it, that file and line."""

    task: str
    file: Path
    line: int

    def format(self, root: Path | None = None) -> str:
        if self.line == 0 and self.file.name == COMMAND_LINE:
            return "set on the command line"
        path = self.file
        if root is not None:
            with contextlib.suppress(ValueError):
                path = self.file.relative_to(root)
        return f"{path}:{self.line} ({self.task})"


@dataclass(frozen=True)
class Resources:
    """What one unit of a task needs (`resources` in its header): CPUs (counted against `jobs`
    locally, a Ray request on Ray), GPUs, memory in bytes (None: not said)."""

    cpus: float = 1.0
    gpus: int = 0
    memory: int | None = None


class Param(NamedTuple):
    value: Any
    origin: Origin


@dataclass
class Task:
    """A task after inheritance. `chain` is the task itself first, then its parent, and so on."""

    name: str
    path: Path  # absolute path of the module
    line: int  # line of the `# /// task` opener
    kind: Kind
    after: dict[str, str]  # argument name -> upstream task name
    inputs: tuple[str, ...]  # globs, relative to the root or absolute
    outputs: tuple[str, ...]  # files or folders, relative to the root or absolute
    abstract: bool
    params: dict[str, Param]
    chain: tuple[str, ...]
    # where kind / after / inputs / outputs were taken from (key absent: the default)
    field_origins: dict[str, Origin] = field(default_factory=dict)
    # line of each `after` entry, to point errors at the right place
    after_lines: dict[str, int] = field(default_factory=dict)
    priority: int = 0  # among ready units, a higher priority runs first (inherited like kind)
    # how a unit runs, not what it computes: none of these is part of the signature
    timeout: float | None = None  # seconds; None: no limit
    retries: int = 0  # reruns of a failed unit
    resources: Resources = field(default_factory=Resources)

    @property
    def parent(self) -> str | None:
        return self.chain[1] if len(self.chain) > 1 else None
