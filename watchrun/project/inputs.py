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


def expand_inputs(patterns: Iterable[str], root: str) -> list[str]:
    """Every file or folder the patterns match now, sorted, as given: relative patterns give
    paths relative to `root`, absolute ones absolute paths. `__pycache__` is never an input."""
    found: set[str] = set()
    for pattern in patterns:
        if not has_magic(pattern):  # the common case: a plain path, one stat
            if os.path.exists(pattern if os.path.isabs(pattern) else
                              os.path.join(root, pattern)):
                found.add(pattern)
            continue
        import glob  # only for real globs: it costs more to import than a null build's checks

        if os.path.isabs(pattern):
            found.update(glob.glob(pattern, recursive=True))
        else:
            found.update(glob.glob(pattern, root_dir=root, recursive=True))
    return sorted(p for p in found if "__pycache__" not in p)
