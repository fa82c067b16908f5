"""What a project's first build will want preloaded, guessed by the warm template itself while
watchrun imports its engine and loads the project (used when no earlier run left a hint, see
preload_hint.py).

The guess reads the settings' `preload` and the task files' module-level imports from outside
the project: a cheap look at what the code map will say. It only ever gives a head start: the
executor adopts the template only if every module guessed is wanted (or is the package of one
that is), else it starts a template without them (warm.TemplateLink). Runs in the template
process, which never imports the project's own modules: it reads the files, it does not run
them; a project too big to read quickly is guessed from its first files only.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

_STDLIB = frozenset(sys.stdlib_module_names) | frozenset(sys.builtin_module_names)
TASK_MARK = b"# /// task"
# module-level import statements: they start a line (the code map reads the same at the top
# level; a line inside a string that looks like one only makes the guess wider, which the
# executor then refuses)
_IMPORT = re.compile(rb"^import[ \t]+([\w. \t,]+?)[ \t]*(?:[#;\r\n]|$)"
                     rb"|^from[ \t]+(\w[\w.]*)[ \t]+import\b", re.MULTILINE)
SCAN_BUDGET = 0.1  # seconds of reading and parsing: past it, the executor's own list is near


def guess(root: str) -> list[str]:
    """Module names to preload for the project at `root` (never raises: a guess)."""
    try:
        return _guess(Path(root))
    except Exception:
        return []


def _guess(root: Path) -> list[str]:
    from watchrun.config import load_config

    config, errors = load_config(root)
    setting = config.preload
    if errors or setting is False:
        return []
    entries = ["auto"] if isinstance(setting, (str, bool)) else list(setting)
    excluded = {entry[1:] for entry in entries if entry.startswith("!")}
    chosen = [entry for entry in entries if entry != "auto" and not entry.startswith("!")]
    if "auto" in entries:
        chosen += _imported(config.root, config.tasks, os.fspath(config.state_dir))
    return [module for module in dict.fromkeys(chosen)
            if module not in excluded and module.partition(".")[0] not in excluded]


def _imported(root: Path, folders: tuple[Path, ...], state_dir: str) -> list[str]:
    """The modules the task files import at module level (as the code map names them: `import
    a.b` is a and a.b, `from a.b import c` is a.b) that are neither the standard library's nor
    the project's."""
    from watchrun.project.discovery import discover_in

    deadline = time.perf_counter() + SCAN_BUDGET
    found: list[str] = []
    for path in discover_in([os.fspath(folder) for folder in folders], state_dir):
        if time.perf_counter() > deadline:
            break
        try:
            with open(path, "rb") as f:
                source = f.read()
        except OSError:
            continue
        if TASK_MARK in source:  # else a helper module: the code map preloads what tasks import
            found += _module_level_imports(source)
    return [name for name in dict.fromkeys(found)
            if not _local_or_stdlib(name.partition(".")[0], root, folders)]


def _module_level_imports(source: bytes) -> list[str]:
    names: list[str] = []
    for match in _IMPORT.finditer(source):
        if match[2] is not None:
            names.append(match[2].decode())
            continue
        for item in match[1].decode().split(","):
            words = item.split()
            if len(words) == 3 and words[1] == "as":
                names.append(words[0])
            elif len(words) == 1:
                names += dict.fromkeys([words[0].partition(".")[0], words[0]])
    return names


def _local_or_stdlib(top: str, root: Path, folders: tuple[Path, ...]) -> bool:
    if top in _STDLIB:
        return True
    return any((folder / f"{top}.py").exists() or (folder / top).is_dir()
               for folder in (root, *folders))

