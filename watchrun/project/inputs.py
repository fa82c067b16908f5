"""Expanding a task's `inputs` patterns into the paths they match now.

Shared by the resolver and the null-build proof (`watchrun.nullproof`), so that both see the same
files; kept free of heavy imports because the proof is checked before anything else is loaded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

MAGIC = "*?["  # what makes a pattern a glob (as glob.has_magic decides)


def has_magic(pattern: str) -> bool:
    return any(char in pattern for char in MAGIC)


EXCLUDE = "!"  # a pattern that starts with it names a path (or folder) to leave out


def with_exclusions(patterns: tuple[str, ...], outputs: tuple[str, ...]) -> tuple[str, ...]:
    """A task's input patterns with its own outputs left out: an input glob such as
    `data/*.csv` never matches the task's output `data/summary.csv` (SPEC section 2). The
    exclusions are patterns too, so that the null-build proof, which expands the patterns
    again, finds what the build found."""
    if not outputs or not any(has_magic(p) for p in patterns):
        return patterns
    return (*patterns, *(EXCLUDE + out for out in outputs))


def expand_inputs(patterns: Iterable[str], root: str) -> list[str]:
    """Every file or folder the patterns match now, sorted, as given: relative patterns give
    paths relative to `root`, absolute ones absolute paths. `__pycache__` is never an input,
    nor a path named by a pattern `!path` (or below it)."""
    found: set[str] = set()
    excluded: list[str] = []
    for pattern in patterns:
        if pattern.startswith(EXCLUDE):
            excluded.append(_absolute(pattern[len(EXCLUDE):], root))
            continue
        if not has_magic(pattern):  # the common case: a plain path, one stat
            if os.path.exists(pattern if os.path.isabs(pattern) else
                              os.path.join(root, pattern)):
                found.add(pattern)
            continue
        import glob  # only for real globs: not on the null-build path

        if os.path.isabs(pattern):
            found.update(glob.glob(pattern, recursive=True))
        else:
            found.update(glob.glob(pattern, root_dir=root, recursive=True))
    if excluded:
        found = {p for p in found if not _below_any(_absolute(p, root), excluded)}
    return sorted(p for p in found if "__pycache__" not in p)


def _absolute(path: str, root: str) -> str:
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(root, path))


def _below_any(path: str, folders: list[str]) -> bool:
    return any(path == f or path.startswith(f + os.sep) for f in folders)
