"""Whether a task's code on disk is still the code the plan decided on (`watchrun dev`).

A worker reads a task's files when its unit starts. Between a save and the reload the watcher
brings (tens of milliseconds), or while a saved file has an error (an editor's autosave in the
middle of a word), a unit would run code that is not the one its signature was made of. So in
`dev` the driver does not start the units of a task whose files have an error; a unit that fails
while its files changed since they were last read is not counted as failed, and one that
succeeds after starting when they had changed is not recorded (it may have run the new text):
both wait for the reload, which decides whether they run again (the same code: they do) or are
planned anew. A unit that started before the write read the planned code: its result counts.
"""

from __future__ import annotations

import os

from watchrun.engine.locations import chain_files
from watchrun.project.assembly import Project


def code_files(project: Project, name: str) -> set[str]:
    """The files a task's code comes from: its chain of modules and the project-local modules
    its closure reaches (absolute paths)."""
    task = project.tasks.get(name)
    if task is None:
        return set()
    files = {os.fspath(path) for path, _ in chain_files(project, task)}
    closure = project.closures.get(name)
    if closure is not None:
        root = project.config.root
        files |= {os.path.join(root, part.file) for part in closure.parts}
    return files


def with_broken_code(project: Project, valid: Project) -> set[str]:
    """The tasks of `valid` (the plan's project) whose code files have an error in `project`
    (the one just read): their units must not start. A task broken only because an upstream
    is (its downstream) is not held: its own code is the plan's."""
    bad = {os.path.abspath(error.file) for error in project.errors if error.file is not None}
    if not bad:
        return set()
    return {name for name in project.broken if code_files(valid, name) & bad}


def gone_tasks(planned: Project, read: Project) -> set[str]:
    """The tasks of the plan's project missing from the project read (not merely broken)."""
    return set(planned.tasks.keys() - read.tasks.keys() - read.broken)


def breaks_the_plan(planned: Project, read: Project) -> bool:
    """A task of the plan is gone from the project read, and others it had are broken by
    that (a parent or an upstream whose file is empty or moved away, maybe for a moment):
    the project read is no valid successor of the plan's. Dev plans with the files gone as
    they were, and those others wait for them (`DevEngine._keeping_gone`). A task broken
    by an error in its own files is held on its own (`with_broken_code`), a task deleted or
    renamed that nothing needs is simply dropped."""
    return bool(gone_tasks(planned, read)) and bool(read.broken & planned.tasks.keys())


def written_since(project: Project, name: str, read_ns: int, until_ns: int | None = None
                  ) -> bool:
    """Whether one of the task's code files was written at or after `read_ns` (time.time_ns()
    when the project was last read), and not after `until_ns` if given, or is gone. Written
    is its mtime or its ctime, the later: a file moved away and back (`mv` keeps the mtime)
    was gone meanwhile, and a unit may have failed for that."""
    for path in code_files(project, name):
        try:
            st = os.stat(path)
        except OSError:
            return True
        written = max(st.st_mtime_ns, st.st_ctime_ns)
        if written >= read_ns and (until_ns is None or written <= until_ns):
            return True
    return False
