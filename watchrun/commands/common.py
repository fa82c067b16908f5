"""What every command does around its work: report project errors, map failures to exit codes."""

from __future__ import annotations

import errno
import os
import sqlite3
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from watchrun.engine.events import Error
from watchrun.errors import ProjectError
from watchrun.project.loader import Project
from watchrun.session import EXIT_PROJECT, ProjectErrorsFound, UsageError
from watchrun.state.hashing import UnreadablePath
from watchrun.state.store import ObjectMissing, StateFull, StoreError


def print_project_errors(errors: Iterable[ProjectError], root: Path, json_out: bool) -> None:
    errors = sorted(errors, key=lambda e: (str(e.file), e.line or 0, e.message))
    for error in errors:
        if json_out:
            rel = error.location(root).rsplit(":", 1)[0] if error.file else None
            print(Error(message=error.message, file=rel, line=error.line).to_json())
        else:
            print(error.format(root), file=sys.stderr)
    if not json_out:
        print(f"watchrun: {len(errors)} project error(s); nothing was run", file=sys.stderr)


def error(message: str) -> int:
    print(f"watchrun: error: {message}", file=sys.stderr)
    return EXIT_PROJECT


def unknown_task_message(name: str, known: Iterable[str]) -> str:
    import difflib  # only on this error path

    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"no task named '{name}'{hint}"


def target_problem(project: Project, targets: Iterable[str]) -> str | None:
    """What is wrong with the tasks named on the command line: one that does not exist, or
    an abstract one (nothing runs it; its concrete heirs run)."""
    for name in targets:
        task = project.tasks.get(name)
        if task is None:
            return unknown_task_message(name, project.tasks)
        if task.abstract:
            heirs = sorted(n for n, t in project.tasks.items()
                           if not t.abstract and name in t.chain)
            then = f": build the tasks that extend it ({', '.join(heirs)})" if heirs else \
                " and no task extends it"
            return f"'{name}' is abstract (a parent for other tasks): it never runs itself{then}"
    return None


# What the disk may answer to any write: the state's problem (exit 2), never a traceback.
DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES,
                         errno.EPERM})


def safe_streams() -> None:
    """Text that is not UTF-8 (file names from os.listdir hold lone surrogates) is printed
    with backslash escapes instead of raising UnicodeEncodeError halfway through a line."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def guarded(json_out: bool, body: Callable[[], int]) -> int:
    """Run a command body, turning expected failures into messages and exit codes."""
    safe_streams()
    try:
        return body()
    except ProjectErrorsFound as err:
        print_project_errors(err.errors, err.root, json_out)
        return EXIT_PROJECT
    except StateFull as err:
        return error(f"{err}; the results of this run that were not saved run again next "
                     "time (free some space)")
    except UnreadablePath as err:
        return error(err.message())
    except ObjectMissing as err:
        return error(f"{err}; the next build runs the task that made it again")
    except (UsageError, StoreError) as err:
        return error(str(err))
    except sqlite3.DatabaseError as err:
        return error(f"the state database is damaged ({err}); the next build moves it aside "
                     "and starts a new one")
    except OSError as err:
        if err.errno not in DISK_ERRORS:
            raise
        where = f" ({err.filename})" if err.filename else ""
        return error(f"{err.strerror or err}{where}")


def unmatched_inputs(project: Project, names: Iterable[str]) -> list[tuple[str, str, str]]:
    """(task, pattern, where it is declared) of each input glob that matches no file now, and
    of each input path that is not there and that no task writes (a typo in a file name)."""
    from watchrun.project.inputs import expand_inputs, has_magic

    found = []
    root = str(project.config.root)
    made = declared_outputs(project)
    for name in sorted(names):
        task = project.tasks.get(name)
        if task is None or task.abstract:
            continue
        for pattern in task.inputs:
            if has_magic(pattern):
                missing = not expand_inputs([pattern], root)
            else:
                path = os.path.normpath(os.path.join(root, pattern))
                missing = not os.path.lexists(path) and not written_by_a_task(path, made)
            if missing:
                origin = task.field_origins.get("inputs")
                where = origin.format(project.config.root).split(" (")[0] if origin else ""
                found.append((name, pattern, where))
    return found


def declared_outputs(project: Project) -> set[str]:
    """Every output a task of the project declares, as a normalized absolute path."""
    root = str(project.config.root)
    return {os.path.normpath(os.path.join(root, out))
            for task in project.tasks.values() for out in task.outputs}


def written_by_a_task(path: str, outputs: set[str]) -> bool:
    """Whether a task declares `path`, or a folder above it, as an output: looked up folder by
    folder, so that a project of thousands of missing inputs (a build from scratch) is not
    checked against every output for each."""
    while path not in outputs:
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
    return True


def warn_unmatched_inputs(project: Project, names: Iterable[str]) -> None:
    """A glob that matches nothing is worth a word (as Snakemake's missing input), not a
    failure: the files may be made later, or on purpose not be there."""
    from watchrun.project.inputs import has_magic

    for name, pattern, where in unmatched_inputs(project, names):
        place = f"{where}: " if where else ""
        found = "matches no file" if has_magic(pattern) else "does not exist"
        print(f"watchrun: {place}warning: input {pattern!r} of task {name!r} {found}",
              file=sys.stderr)
