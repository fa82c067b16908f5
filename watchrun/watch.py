"""watchfiles -> debounced batches of changed paths.

Ignored: the state folder, .git, __pycache__, editors' temporary and swap files (watchfiles'
DefaultFilter covers most), and the project's `ignore` patterns. Editors that save by rename
(vim, JetBrains) produce delete+add events for the same path: a batch is a set of paths, so they
collapse into one change.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

from watchfiles import Change, DefaultFilter, awatch

from watchrun.config import Config

EDITOR_TEMP = ("*.swp", "*.swx", "*.swo", "*~", ".#*", "#*#", "4913", "*.tmp", "*.kate-swp",
               "*___jb_tmp___", "*___jb_old___", ".goutputstream-*")
# `sed -i` writes its result to sedXXXXXX in the same folder, then renames it over the file
_SED_TEMP = re.compile(r"sed[A-Za-z0-9]{6}")


class ProjectFilter(DefaultFilter):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.root = config.root
        self.state_dir = str(config.state_dir)
        self.patterns = tuple(config.ignore)

    def __call__(self, change: Change, path: str) -> bool:
        if not super().__call__(change, path):
            return False
        if path == self.state_dir or path.startswith(self.state_dir + os.sep):
            return False
        name = os.path.basename(path)
        if any(fnmatch.fnmatch(name, pattern) for pattern in EDITOR_TEMP) \
                or _SED_TEMP.fullmatch(name):
            return False
        if self.patterns:
            rel = os.path.relpath(path, self.root)
            if any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in self.patterns):
                return False
        return True


def watch_roots(config: Config, absolute_inputs: list[str]) -> list[Path]:
    """The project root, plus the fixed part of every absolute input glob outside it."""
    roots = [config.root]
    for pattern in absolute_inputs:
        fixed = Path(pattern)
        while any(ch in str(fixed) for ch in "*?[") and fixed != fixed.parent:
            fixed = fixed.parent
        while not fixed.exists() and fixed != fixed.parent:
            fixed = fixed.parent
        if not any(fixed == r or r in fixed.parents for r in roots):
            roots.append(fixed)
    return roots


async def change_batches(config: Config, roots: list[Path], stop: asyncio.Event
                         ) -> AsyncIterator[set[Path]]:
    """Yield sets of changed paths. `debounce_ms` is the quiet time that ends a burst
    (watchfiles' `step`); a burst is cut after 20x that at the latest."""
    quiet = max(config.debounce_ms, 1)
    async for changes in awatch(
        *roots,
        watch_filter=ProjectFilter(config),
        step=quiet,
        debounce=max(quiet * 20, 200),
        stop_event=stop,
        recursive=True,
        ignore_permission_denied=True,
    ):
        yield {Path(path) for _, path in changes}
