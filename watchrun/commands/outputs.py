"""`clean --outputs`: deleting declared outputs, safely.

Only paths inside the project root are deleted, and never through a symlink: a symlinked
folder on the way to an output (or the root's own parent chain below it) stops the deletion of
that output, and an output that is itself a symlink loses the link, never its target. Folders
are removed with `shutil.rmtree`, which does not follow the symlinks inside them.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path

from watchrun.session import Session


def declared_outputs(session: Session, names: list[str]) -> list[str]:
    """The declared outputs of these tasks (all: every task's, and those recorded for tasks
    that no longer exist), as written."""
    project = session.project
    chosen = names or sorted(project.tasks)
    found: dict[str, None] = {}
    for name in chosen:
        if project.tasks[name].abstract:
            continue  # a template's outputs are its children's, which are cleaned as theirs
        for output in project.tasks[name].outputs:
            found[output] = None
    if not names:
        _, results = session.store.last_units()
        for record in results:
            if record.task not in project.tasks:
                for output in record.outputs:
                    found[output] = None
    return list(found)


def remove_outputs(root: Path, outputs: list[str]) -> int:
    """Delete each output that is safe to delete; say what was removed and what was not."""
    removed = 0
    top = os.path.realpath(root)
    for output in outputs:
        problem = _remove(top, output)
        if problem is None:
            removed += 1
            print(f"watchrun: removed {output}")
        elif problem:
            print(f"watchrun: warning: not removing {output}: {problem}", file=sys.stderr)
    print(f"watchrun: removed {removed} declared output(s)")
    return removed


def _remove(top: str, output: str) -> str | None:
    """None when removed; "" when there was nothing to remove; else why it was not."""
    full = os.path.normpath(output if os.path.isabs(output) else os.path.join(top, output))
    if not full.startswith(top + os.sep):
        return "it is outside the project root"
    parts = os.path.relpath(full, top).split(os.sep)
    current = top
    for part in parts[:-1]:  # every folder on the way must be a real folder
        current = os.path.join(current, part)
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return ""
        if stat.S_ISLNK(mode):
            return f"{os.path.relpath(current, top)} is a symlink"
        if not stat.S_ISDIR(mode):
            return ""
    try:
        mode = os.lstat(full).st_mode
    except FileNotFoundError:
        return ""
    try:
        if stat.S_ISDIR(mode):
            shutil.rmtree(full)
        else:
            os.unlink(full)  # a symlink itself, not what it points to
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
