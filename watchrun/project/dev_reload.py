"""The fast path of `dev`: a save that changes code, not structure.

Most saves edit a function body. Then the tasks, their headers, the graph and the set of
project-local modules are all unchanged, and only the closures that reach the saved file can
differ. This module re-analyses the saved files and recomputes exactly those closures, through a
reverse index from file to tasks, so a one-file edit does work in proportion to what the file
reaches, not to the project. Anything that may change structure — a header, the imports, the
parameters of an entry point, a syntax error appearing or going away, a file added or
removed — is left to the full (cached) reload.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from watchrun.project.codemap import ENTRY_POINTS, ChainLink, CodeIndex, ModuleInfo
from watchrun.project.loader import FileAnalysis, Project, ProjectLoader, imported_modules
from watchrun.project.snapshot import LazyModules


class ReverseIndex:
    """Relative file -> the tasks whose closure (or chain) includes code from it."""

    def __init__(self, project: Project) -> None:
        self.project = project
        root = project.config.root
        self.rel_of = {dotted: _rel(path, root) for dotted, path in project.module_files.items()}
        self.dotted_of = {path: dotted for dotted, path in project.module_files.items()}
        self.tasks_of: dict[str, set[str]] = {}
        for name, closure in project.closures.items():
            files = {part.file for part in closure.parts}
            files.update(self.rel_of[project.task_modules[t]] for t in project.tasks[name].chain)
            for file in files:
                self.tasks_of.setdefault(file, set()).add(name)


def reload_code(loader: ProjectLoader, project: Project, index: ReverseIndex,
                changed: Iterable[Path]) -> tuple[Project, set[str]] | None:
    """(the new project, the tasks whose closure was recomputed), or None when the change may
    be structural and a full reload must decide."""
    updates: dict[str, ModuleInfo] = {}
    for path in changed:
        dotted = index.dotted_of.get(path)
        if dotted is None or not os.path.isfile(path):
            return None  # a new, removed or unknown file
        before = loader.memory_of(dotted)
        after = loader.analysis_of(path, dotted)
        if before is None or after is None or not _same_structure(before, after):
            return None
        updates[dotted] = after.module
    if not updates:
        return project, set()
    modules = LazyModules(project.modules, replace_with=updates)
    affected: set[str] = set()
    for dotted in updates:
        affected |= index.tasks_of.get(index.rel_of[dotted], set())
    code = CodeIndex(modules, index.rel_of, loader.version_of)
    closures = dict(project.closures)
    for name in affected:
        links = tuple(ChainLink(t, project.task_modules[t],
                                index.rel_of[project.task_modules[t]])
                      for t in reversed(project.tasks[name].chain))
        closures[name] = code.task_closure(links)
        for part in closures[name].parts:  # it may now reach more of the local modules
            index.tasks_of.setdefault(part.file, set()).add(name)
    return replace(project, modules=modules, closures=closures), affected


def _same_structure(before: FileAnalysis, after: FileAnalysis) -> bool:
    old, new = before.module, after.module
    if before.header != after.header or before.header_errors != after.header_errors:
        return False
    if before.problem or after.problem or old.syntax_error or new.syntax_error:
        return False
    if sorted(imported_modules(old)) != sorted(imported_modules(new)):
        return False
    for entry in ENTRY_POINTS:  # what run() asks for is checked at load time
        a, b = old.definitions.get(entry), new.definitions.get(entry)
        if (a is None) != (b is None) or (a is not None and b is not None and (
                a.kind != b.kind or a.args != b.args or a.is_generator != b.is_generator)):
            return False
    return set(old.definitions) == set(new.definitions) or old.dynamic == new.dynamic


def _rel(path: Path, root: Path) -> str:
    text, prefix = os.fspath(path), os.fspath(root) + os.sep
    rel = text[len(prefix):] if text.startswith(prefix) else text  # strings: 10,000 of them
    return rel.replace(os.sep, "/")
