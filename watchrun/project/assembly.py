"""Assembling a project from the analyses of its files: task sources -> tasks -> graph ->
checks -> code closures, every problem collected as a ProjectError on the way.

The loader (loader.py) reads and analyses files; this module only combines what they say.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from watchrun.config import Config
from watchrun.errors import ProjectError
from watchrun.project.checks import CodeChecks
from watchrun.project.codemap import (
    ENTRY_POINTS,
    ArgSpec,
    ChainLink,
    CodeClosure,
    CodeIndex,
    ModuleInfo,
)
from watchrun.project.frozen_init import build
from watchrun.project.graph import Graph, build_graph
from watchrun.project.header import Header
from watchrun.project.model import Task
from watchrun.project.overrides import Overrides, apply_overrides
from watchrun.project.snapshot import LazyModules
from watchrun.project.tasks import (
    TaskSource,
    is_package_init,
    relative_parts,
    resolve_tasks,
    task_name,
    tasks_dir_of,
)


@dataclass
class Project:
    config: Config
    tasks: dict[str, Task]  # every resolved task, abstract ones included
    graph: Graph
    modules: Mapping[str, ModuleInfo]  # task modules and the project-local modules they reach
    module_files: dict[str, Path]  # dotted module name -> absolute file
    closures: dict[str, CodeClosure]  # non-abstract, non-broken tasks
    errors: list[ProjectError]
    broken: set[str]  # task names with errors, and their downstream (some may not be in `tasks`)
    task_modules: dict[str, str] = field(default_factory=dict)  # task -> dotted module name
    # task -> entry point -> the parameters of its winning definition (None: not a function),
    # for the entry points its chain defines: what each job asks for, known without reading
    # the modules back from the project cache (a dev reload that changes them is a full one)
    entries: dict[str, dict[str, tuple[ArgSpec, ...] | None]] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.config.root


@dataclass(frozen=True)
class FileAnalysis:
    """Everything derived from one file's text alone: what the caches hold."""

    header: Header | None
    header_errors: tuple[tuple[int | None, str], ...]  # (line, message): the path is added back
    module: ModuleInfo
    problem: str | None = None  # the file could not be read or decoded
    problem_line: int | None = None  # where it could not be decoded
    # the pickle of `module` once one is made: the store's copy of the analysis holds it, and the
    # project cache takes it as it is instead of pickling every module again
    module_blob: bytes | None = field(default=None, repr=False, compare=False)


@dataclass
class ClosureMemo:
    """Closures of the last load, for `reload`: task -> (chain, the content key of every module
    the closure depends on, the closure), valid while the set of local modules is the same."""

    modules: frozenset[str] = frozenset()
    entries: dict[str, tuple[tuple[ChainLink, ...], dict[str, str | None], CodeClosure]] = \
        field(default_factory=dict)


class AnalysisSource(Protocol):
    """What an assembly asks of the loader: files beyond the discovered ones, versions of
    third-party modules, and the closures of its last load."""

    closure_memo: ClosureMemo

    def analysis_of(self, path: Path, dotted: str) -> FileAnalysis | None: ...

    def version_of(self, module: str) -> str: ...

    def module_key(self, dotted: str) -> str | None: ...


class ProjectBuild:
    """The resolution of one load, from the analyses of the discovered files."""

    def __init__(self, config: Config, files: dict[Path, FileAnalysis],
                 names: dict[Path, str], loader: AnalysisSource) -> None:
        self.config = config
        self.root = config.root
        self.files = files
        self.names = names
        self.loader = loader
        self.errors: list[ProjectError] = []
        self.seed_broken: set[str] = set()  # tasks broken before the graph is built
        self.modules: dict[str, ModuleInfo] = {}
        self.module_blobs: dict[str, bytes] = {}  # their pickles, where the analysis has one
        self.module_files: dict[str, Path] = {}
        self.local_paths: list[Path] = []  # reached modules outside the discovered files
        self.absent: set[str] = set()  # probed paths that did not exist (a later file there
        # would change what is local)
        self.by_name = {dotted: path for path, dotted in names.items() if path in files}
        self.imports: dict[str, set[str]] = {}  # module -> the local modules it imports
        self.candidates: dict[str, list[tuple[str, Path]]] = {}

    def run(self) -> Project:
        sources = self._sources()
        tasks, errors = resolve_tasks(sources, self.root)
        self.errors += errors
        self.seed_broken |= set(sources) - set(tasks)
        task_modules = {name: source.module_name for name, source in sources.items()}
        self._reach_local_modules(task_modules)
        for name, task in tasks.items():
            if any(link in self.seed_broken for link in task.chain):
                self.seed_broken.add(name)
        graph, errors = build_graph(tasks, self.root, self.seed_broken)
        self.errors += errors
        checks = CodeChecks(tasks, graph, self.modules, task_modules, self.module_files)
        self.errors += checks.run()
        mark_broken(graph, checks.failed)
        closures = self._closures(tasks, graph, task_modules)
        errors_sorted = sorted(set(self.errors), key=_error_order)
        modules = LazyModules(self.modules, self.module_blobs)
        entries = {name: entry_points(task, task_modules, self.modules)
                   for name, task in tasks.items()}
        return Project(self.config, tasks, graph, modules, self.module_files,
                       closures, errors_sorted, set(graph.broken), task_modules, entries)

    def _sources(self) -> dict[str, TaskSource]:
        sources: dict[str, TaskSource] = {}
        for path, analysis in self.files.items():
            if analysis.problem is not None:
                self.errors.append(ProjectError(path, analysis.problem_line, analysis.problem))
            for line, message in analysis.header_errors:
                self.errors.append(ProjectError(path, line, message))
            if analysis.header is None:
                continue
            if is_package_init(path):
                self.errors.append(ProjectError(
                    path, analysis.header.line,
                    "a package's __init__.py cannot be a task; move the header and run() into "
                    "a module of their own"))
                continue
            folder = tasks_dir_of(path, self.config)
            assert folder is not None  # discovered below a task folder
            name = task_name(path, folder)
            if name in sources:
                self.errors.append(ProjectError(
                    path, analysis.header.line,
                    f"task {name!r} is defined twice: here and in {sources[name].path}"))
                self.seed_broken.add(name)
                continue
            sources[name] = TaskSource(name, path, analysis.header, self.names[path])
            if analysis.header_errors:
                self.seed_broken.add(name)
        return sources

    # -- project-local modules ----------------------------------------------------------------

    def _reach_local_modules(self, task_modules: dict[str, str]) -> None:
        """Add the task modules and every project-local module they import, transitively; report
        syntax errors in any of them, and mark the tasks that reach one as broken."""
        todo: list[str] = []
        for dotted in sorted(set(task_modules.values())):
            path = self.by_name[dotted]
            self._add_module(dotted, path, self.files[path])
            todo.append(dotted)
        while todo:
            importer = todo.pop()
            edges = self.imports.setdefault(importer, set())
            for imported in imported_modules(self.modules[importer]):
                for local, path in self._local_candidates(imported):
                    edges.add(local)
                    if local in self.modules:
                        continue
                    analysis = self.files.get(path) or self.loader.analysis_of(path, local)
                    if analysis is None:
                        continue
                    if path not in self.files:
                        self.local_paths.append(path)
                    self._add_module(local, path, analysis)
                    todo.append(local)
        self._taint_tasks(task_modules)

    def _add_module(self, dotted: str, path: Path, analysis: FileAnalysis) -> None:
        info = self.modules[dotted] = analysis.module
        self.module_files[dotted] = path
        if analysis.module_blob is not None:
            self.module_blobs[dotted] = analysis.module_blob
        if analysis.problem is not None:
            self.errors.append(ProjectError(path, analysis.problem_line, analysis.problem))
        elif info.syntax_error is not None:
            line, message = info.syntax_error
            self.errors.append(ProjectError(path, line, f"syntax error: {message}"))

    def _local_candidates(self, dotted: str) -> list[tuple[str, Path]]:
        """The project-local modules an import of `dotted` executes: each package along the way
        (`a/__init__.py`, `a/b/__init__.py`) and the module itself, when they exist below the
        root. A folder without `__init__.py` is a namespace package: no file of its own."""
        known = self.candidates.get(dotted)
        if known is not None:
            return known
        found: list[tuple[str, Path]] = []
        parts = dotted.split(".")
        folder = self.root
        for depth, part in enumerate(parts, start=1):
            name = ".".join(parts[:depth])
            path = self.by_name.get(name) or self._probe(folder / part / "__init__.py") \
                or self._probe(folder / f"{part}.py")
            folder = folder / part
            if path is None:
                if not self._probe_dir(folder):
                    break  # neither a module nor a package here: not project-local
                continue
            found.append((name, path))
            if not is_package_init(path):
                break  # a plain module has no submodules
        self.candidates[dotted] = found
        return found

    def _probe(self, path: Path) -> Path | None:
        if os.path.isfile(path):
            return path
        self.absent.add(os.fspath(path))
        return None

    def _probe_dir(self, path: Path) -> bool:
        if os.path.isdir(path):
            return True
        self.absent.add(os.fspath(path))
        return False

    def _taint_tasks(self, task_modules: dict[str, str]) -> None:
        """Tasks whose modules (or the local modules they import) have a syntax error."""
        importers: dict[str, set[str]] = {}
        for importer, imported in self.imports.items():
            for local in imported:
                importers.setdefault(local, set()).add(importer)
        tainted = {m for m, info in self.modules.items() if info.syntax_error is not None}
        todo = list(tainted)
        while todo:
            for importer in importers.get(todo.pop(), ()):
                if importer not in tainted:
                    tainted.add(importer)
                    todo.append(importer)
        for name, dotted in task_modules.items():
            if dotted in tainted:
                self.seed_broken.add(name)

    # -- closures -----------------------------------------------------------------------------

    def _closures(self, tasks: dict[str, Task], graph: Graph, task_modules: dict[str, str]
                  ) -> dict[str, CodeClosure]:
        """The code closure of every healthy task. A closure computed by an earlier load of this
        loader is reused when the same local modules exist and none it depends on changed."""
        wanted = [n for n in graph.order if not tasks[n].abstract]
        files = {name: relative(path, self.root) for name, path in self.module_files.items()}
        index = CodeIndex(self.modules, files, self.loader.version_of)
        memo = self.loader.closure_memo
        if memo.modules != frozenset(self.modules):  # what is local changed: start afresh
            memo.modules, memo.entries = frozenset(self.modules), {}
        closures: dict[str, CodeClosure] = {}
        link_of: dict[str, ChainLink] = {}  # one link per task: a chain shares its ancestors'
        module_key = self.loader.module_key
        for name in wanted:
            links = tuple([link_of.get(t) or _link(t, task_modules[t], files, link_of)
                           for t in reversed(tasks[name].chain)])
            known = memo.entries.get(name)
            if known is not None and known[0] == links and all(
                    module_key(m) == key for m, key in known[1].items()):
                closures[name] = known[2]
                continue
            closure, reached = index.task_result(links)
            closures[name] = closure
            used = {link.module_name for link in links}.union(reached)
            memo.entries[name] = (links, {m: module_key(m) for m in used}, closure)
        return closures


def _link(task: str, module: str, files: dict[str, str], link_of: dict[str, ChainLink]
          ) -> ChainLink:
    link = link_of[task] = build(ChainLink, task=task, module_name=module, file=files[module])
    return link


def relative(path: Path, root: Path) -> str:
    try:
        return "/".join(relative_parts(path, root))
    except ValueError:
        return path.as_posix()


def _error_order(error: ProjectError) -> tuple[str, int, str]:
    return (os.fspath(error.file) if error.file else "", error.line or 0, error.message)


def entry_points(task: Task, task_modules: Mapping[str, str],
                 modules: Mapping[str, ModuleInfo]) -> dict[str, tuple[ArgSpec, ...] | None]:
    """The parameters of each entry point the task's chain defines, the nearest definition
    winning (None: that name is bound to something other than a function)."""
    found: dict[str, tuple[ArgSpec, ...] | None] = {}
    for name in task.chain:
        info = modules.get(task_modules.get(name, ""))
        if info is None:
            continue
        for entry in ENTRY_POINTS:
            definition = info.definitions.get(entry)
            if definition is not None and entry not in found:
                found[entry] = definition.args if definition.kind == "function" else None
    return found


def imported_modules(info: ModuleInfo) -> list[str]:
    """Dotted names of every module a module's top-level imports may execute. For `from a
    import b`, `a.b` is listed too: `b` may be a submodule."""
    found: list[str] = []
    for definition in info.definitions.values():
        if definition.kind != "import" or definition.import_module is None:
            continue
        found.append(definition.import_module)
        found.extend(definition.also_imports)
        if definition.import_attr is not None:
            found.append(f"{definition.import_module}.{definition.import_attr}")
    return found


def with_overrides(project: Project, overrides: Overrides) -> Project:
    """The project with params set on the command line (`--set`)."""
    tasks = apply_overrides(project.tasks, overrides)
    return replace(project, tasks=tasks, graph=replace(project.graph, tasks=tasks))


def mark_broken(graph: Graph, names: Iterable[str]) -> None:
    """Add tasks (and their downstream) to the broken part of the graph."""
    names = set(names)
    if names:
        graph.broken |= graph.downstream_closure(names)
        graph.order = [n for n in graph.order if n not in graph.broken]
