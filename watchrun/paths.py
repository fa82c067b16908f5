"""Every file name watchrun gives or looks for, under a project and under its state folder.

One place, so that the null-build proof (which knows the state folder before the settings are
read), the store, the consoles and the TUI never disagree about where a thing is. Imports
nothing: the console script reads it before anything else.
"""

from __future__ import annotations

import os

# -- under the project root -------------------------------------------------------------------
CONFIG_FILE = "watchrun.toml"
PYPROJECT_FILE = "pyproject.toml"  # its [tool.watchrun] table, when there is no CONFIG_FILE
CONFIG_FILES = (CONFIG_FILE, PYPROJECT_FILE)  # in the order the settings are looked for
TASKS_DIR = "tasks"  # the default task folder
STATE_DIR = ".watchrun"  # the default state folder

# -- under the state folder -------------------------------------------------------------------
DATABASE = "state.db"  # SQLite, with its -wal and -shm beside it
DAMAGED_MARKER = "state.db.damaged"  # left when SQLite reports damage while in use
OBJECTS_DIR = "objects"  # big outputs, each a file named by its blake3
OBJECT_TEMP_PREFIX = ".tmp-"  # an object being written, in OBJECTS_DIR, renamed when durable
LOGS_DIR = "logs"  # one log per unit: TASK[.ITER…].log
LOCK = "lock"  # the single-writer lock, holding its holder's description
OWNER_STAMP = "owner"  # says this user's watchrun wrote the database
PROOF = "clean.proof"  # the null-build proof
DEV_RUNNING = "dev-running"  # the units a running `dev` has in flight

# -- outside the project ----------------------------------------------------------------------
USER_KEY = "key"  # the per-user key, in the user's state folder (owner.key_dir)


def in_state(state_dir: str | os.PathLike[str], name: str) -> str:
    """The path of one of the names above inside a state folder."""
    return os.path.join(os.fspath(state_dir), name)


def log_file(state_dir: str | os.PathLike[str], task: str, iter: tuple[int, ...] = ()) -> str:
    """The log of a unit: a string, made in one join, because it is made for every unit."""
    suffix = "".join(f".{i}" for i in iter)
    return f"{os.fspath(state_dir)}{os.sep}{LOGS_DIR}{os.sep}{task}{suffix}.log"
