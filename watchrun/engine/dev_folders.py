"""`watchrun dev`: the module files a folder's own change stands for.

The watcher reports a folder moved in, out or renamed as one event for the folder: nothing for
the files it brings or takes. And a file written into a folder just created may come before the
watcher watches that folder, so only the folder is seen. Both would leave task files unplanned,
or a task whose file is gone still in the plan (its unit waiting for a reload that never comes).
So a folder's event counts as the changes of the module files in it: those found in it now (a
folder below a task folder), and those the project had in it (a folder gone).
"""

from __future__ import annotations

import os
from pathlib import Path

from watchrun.config import Config
from watchrun.project.discovery import discover_in
from watchrun.project.loader import Project


class ModuleFolders:
    """The folders that hold a project's module files, by project (computed once per project
    read: a batch may name thousands of paths, outputs a build wrote)."""

    def __init__(self) -> None:
        self._project: Project | None = None
        self._files: dict[str, set[Path]] = {}  # folder -> the module files below it

    def files_below(self, project: Project, folder: Path) -> set[Path]:
        if self._project is not project:
            self._project = project
            self._files = _files_by_folder(project)
        return self._files.get(os.fspath(folder), set())


def _files_by_folder(project: Project) -> dict[str, set[Path]]:
    root = project.config.root
    found: dict[str, set[Path]] = {}
    for path in project.module_files.values():
        for parent in path.parents:
            found.setdefault(os.fspath(parent), set()).add(path)
            if parent == root:
                break
    return found


def folder_sources(paths: set[Path], config: Config, project: Project,
                   known: ModuleFolders) -> set[Path]:
    """The module files the folders among `paths` stand for: the `*.py` files in a folder
    below a task folder (new, or moved in), and the project's module files in a folder that
    is gone (deleted, or moved away)."""
    tasks = tuple(os.fspath(folder) + os.sep for folder in config.tasks)
    skip = os.fspath(config.state_dir)
    sources: set[Path] = set()
    for path in paths:
        if path.suffix == ".py":
            continue  # a file: the caller has it
        text = os.fspath(path)
        if (text + os.sep).startswith(tasks) and path.is_dir():
            sources.update(Path(p) for p in discover_in([text], skip))
        elif not os.path.lexists(path):
            sources |= known.files_below(project, path)
    return sources
