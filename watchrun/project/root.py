"""Where the project is: the folder given with `-C`, else the nearest folder, from the current one
up, that looks like a watchrun project (as git finds its repository).

A folder is a project when it holds a `watchrun.toml`, a `pyproject.toml` with a
`[tool.watchrun]` table, the default `tasks/` folder, or a state folder `.watchrun/` that an
earlier run left. Plain os calls only: a null build asks this before anything else is imported.
"""

from __future__ import annotations

import os

from watchrun.paths import CONFIG_FILE, PYPROJECT_FILE, STATE_DIR, TASKS_DIR

MARKER_FOLDERS = (TASKS_DIR, STATE_DIR)
NOT_FOUND = ("no watchrun project here or in any parent folder (a project has a watchrun.toml, "
             "a [tool.watchrun] table in pyproject.toml, or a tasks/ folder); "
             "use -C DIR to name one")


def is_project(folder: str) -> bool:
    if os.path.isfile(os.path.join(folder, CONFIG_FILE)):
        return True
    if any(os.path.isdir(os.path.join(folder, name)) for name in MARKER_FOLDERS):
        return True
    pyproject = os.path.join(folder, PYPROJECT_FILE)
    if os.path.isfile(pyproject):
        try:
            with open(pyproject, encoding="utf-8", errors="replace") as handle:
                return "[tool.watchrun" in handle.read()
        except OSError:
            return False
    return False


def find_root(start: str) -> str | None:
    """The nearest project folder at or above `start` (absolute), or None."""
    folder = os.path.abspath(start)
    while True:
        if is_project(folder):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def not_a_project(folder: str) -> str:
    return (f"{folder} is not a watchrun project (no watchrun.toml, no [tool.watchrun] table "
            "in pyproject.toml, no tasks/ folder)")


def locate(given: str | None) -> tuple[str | None, str]:
    """(the project root, "") for `-C given` (None: search from the current folder up), or
    (None, why there is none)."""
    if given is None:
        found = find_root(os.getcwd())
        return (found, "") if found is not None else (None, NOT_FOUND)
    if not os.path.isdir(given):
        what = "is a file, not a folder" if os.path.exists(given) else "does not exist"
        return None, f"the project folder {given} {what} (see -C)"
    if not is_project(given):
        return None, not_a_project(given)
    return given, ""
