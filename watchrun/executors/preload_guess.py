"""What a project's first build will want preloaded, guessed by the warm template itself while
watchrun imports its engine and loads the project (used when no earlier run left a hint, see
preload_hint.py).

The guess reads the settings' `preload` and the task files' module-level imports from outside
the project: a cheap look at what the code map will say. It only ever gives a head start: the
executor adopts the template only if every module guessed is wanted (or is the package of one
that is), else it starts a template without them (warm.TemplateLink). Runs in the template
process, which never imports the project's own modules: it parses the files, it does not run
them; a project too big to read quickly is guessed from its first files only.
"""

from __future__ import annotations

import ast
import os
import sys
import time
from pathlib import Path

_STDLIB = frozenset(sys.stdlib_module_names) | frozenset(sys.builtin_module_names)
TASK_MARK = "# /// task"
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
            if TASK_MARK.encode() not in source:
                continue  # a helper module: the code map preloads only what tasks import
            tree = ast.parse(source)
        except (OSError, SyntaxError, ValueError):
            continue
        found += _module_level_imports(tree)
    return [name for name in dict.fromkeys(found)
            if not _local_or_stdlib(name.partition(".")[0], root, folders)]


def _module_level_imports(tree: ast.Module) -> list[str]:
    names: list[str] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                top = alias.name.partition(".")[0]
                names += [alias.name] if alias.asname else [top, alias.name]
        elif isinstance(stmt, ast.ImportFrom) and stmt.level == 0 and stmt.module:
            names.append(stmt.module)
    return names


def _local_or_stdlib(top: str, root: Path, folders: tuple[Path, ...]) -> bool:
    if top in _STDLIB:
        return True
    return any((folder / f"{top}.py").exists() or (folder / top).is_dir()
               for folder in (root, *folders))

