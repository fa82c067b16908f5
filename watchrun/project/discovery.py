"""Finding the task files: every `*.py` below the task folders.

Free of heavy imports: the null-build proof (`watchrun.nullproof`) lists the folders again before
anything else is loaded, to see that no task file came or went.
"""

from __future__ import annotations

import os
from collections.abc import Iterable


def discover_in(folders: Iterable[str], skip: str) -> list[str]:
    """Sorted absolute paths of every `*.py` below `folders`; skips `__pycache__`, hidden
    entries and the folder `skip` (the state folder)."""
    found: set[str] = set()
    pending = list(folders)
    while pending:
        folder = pending.pop()
        try:
            entries = os.scandir(folder)
        except (FileNotFoundError, NotADirectoryError):
            continue
        with entries:
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue
                if name.endswith(".py"):
                    if entry.is_file():
                        found.add(entry.path)
                elif name != "__pycache__" and entry.is_dir(follow_symlinks=False) \
                        and entry.path != skip:
                    pending.append(entry.path)
    return sorted(found)
