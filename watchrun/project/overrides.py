"""`--set TASK.PARAM=VALUE`: a param's value for one run, given on the command line.

The value is read as a TOML value (`3`, `0.5`, `true`, `"text"`, `[1, 2]`), else taken as a plain
string. An override replaces the param after inheritance, so it changes the unit's signature
like an edit of the header would, and reasons say where it comes from ("set on the command
line").
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from watchrun.config import suggest
from watchrun.project.model import COMMAND_LINE, Origin, Param, Task
from watchrun.toml import parse_toml

Overrides = dict[str, dict[str, Any]]  # task -> param -> value


class OverrideError(Exception):
    """A malformed or unknown `--set`: the message says which."""


def parse_overrides(given: list[str]) -> Overrides:
    found: Overrides = {}
    for text in given:
        target, eq, raw = text.partition("=")
        task, dot, param = target.strip().rpartition(".")
        if not eq or not dot or not task or not param:
            raise OverrideError(f"--set {text!r}: expected TASK.PARAM=VALUE")
        found.setdefault(task, {})[param] = _value(raw.strip())
    return found


def _value(raw: str) -> Any:
    document, _ = parse_toml(f"value = {raw}")
    return document["value"] if document is not None else raw


def check_overrides(overrides: Overrides, tasks: dict[str, Task]) -> None:
    """Every override names a task and one of its params."""
    for name, params in overrides.items():
        task = tasks.get(name)
        if task is None:
            raise OverrideError(f"--set {name}.…: no task named {name!r}{suggest(name, tasks)}")
        for param in params:
            if param not in task.params:
                known = ", ".join(sorted(task.params)) or "none"
                raise OverrideError(
                    f"--set {name}.{param}: task {name!r} has no param {param!r}"
                    f"{suggest(param, task.params)} (its params: {known})")


def apply_overrides(tasks: dict[str, Task], overrides: Overrides) -> dict[str, Task]:
    """The tasks with the overridden params (new Task objects: a cached project is shared)."""
    if not overrides:
        return tasks
    changed = dict(tasks)
    for name, params in overrides.items():
        task = tasks.get(name)
        if task is None:
            continue
        merged = dict(task.params)
        for param, value in params.items():
            if param in merged:
                merged[param] = Param(value, Origin(name, Path(COMMAND_LINE), 0))
        changed[name] = replace(task, params=merged)
    return changed
