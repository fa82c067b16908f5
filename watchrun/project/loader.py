"""Loading a project: files -> headers and code maps -> tasks -> graph -> code closures.

Two caches make loading cheap:
- what depends only on a file's text (its header, its code map) is cached by content hash, in
  memory and in the store: after a change, only the changed files are parsed;
- the whole resolved project is cached with the stat keys of every file it was built from: a null
  build stats the files, compares, and unpickles it (see `ProjectCache`).

A broken task never prevents loading the healthy ones: every problem becomes a ProjectError, the
tasks concerned (and their downstream) go into `Project.broken`, the rest is usable.
Assembling the project from the analyses is assembly.py's.
"""

from __future__ import annotations

import gc
import os
import pickle
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from watchrun.config import Config, setting_line
from watchrun.errors import ProjectError
from watchrun.project import codemap
from watchrun.project.assembly import (
    ClosureMemo,
    FileAnalysis,
    Project,
    ProjectBuild,
    imported_modules,
    relative,
    with_overrides,
)
from watchrun.project.codemap import ANALYZER_VERSION, ModuleInfo
from watchrun.project.frozen_init import build
from watchrun.project.header import parse_header
from watchrun.project.overrides import Overrides
from watchrun.project.parallel_map import MIN_PER_PROCESS, fork_map
from watchrun.project.snapshot import ProjectCache, ProjectFiles, quick_unpickle
from watchrun.project.tasks import discover_files, module_name, tasks_dir_of
from watchrun.state.hashing import FileHasher, hash_bytes
from watchrun.state.store import Store

__all__ = ["FileAnalysis", "Project", "ProjectLoader", "analyse_text", "imported_modules",
           "module_name_of", "with_overrides"]

ANALYSIS_FORMAT = 4  # bump when FileAnalysis or Header change shape: invalidates cached analyses


def analyse_text(text: str, path: Path, dotted: str) -> FileAnalysis:
    header, errors = parse_header(text, path)
    # a package's __init__ resolves `from .x import f` inside the package itself
    module = codemap.analyze_module(text, dotted, is_package=path.name == "__init__.py")
    return build(FileAnalysis, header=header, module=module,
                 header_errors=tuple([(e.line, e.message) for e in errors]))


_READ_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)


def _read(path: Path) -> bytes:
    """A file's bytes with plain os calls: Path.read_bytes builds a buffered file object first,
    for every file of a first load."""
    fd = os.open(path, _READ_FLAGS)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _decode(data: bytes) -> str | None:
    """Source bytes to text the way Python would (BOM, coding cookie, universal newlines);
    None if it cannot."""
    if _plain_utf8(data):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass  # the full decoder says what Python would make of it
    import importlib.util  # only for the unusual file

    try:
        return importlib.util.decode_source(data)
    except (UnicodeDecodeError, SyntaxError, LookupError):
        return None


def _plain_utf8(data: bytes) -> bool:
    """Whether Python reads these bytes as plain UTF-8 text: no BOM, no carriage return (to be
    translated), no coding cookie (it can only be in the first two lines). Then a strict UTF-8
    decode gives what `decode_source` would, and is the common case."""
    if data.startswith(b"\xef\xbb\xbf") or b"\r" in data:
        return False
    first = data.find(b"\n")
    second = data.find(b"\n", first + 1) if first != -1 else -1
    return b"coding" not in (data if second == -1 else data[:second])


class ProjectLoader:
    """Loads a project, keeping per-file analyses so that `reload` only parses what changed."""

    def __init__(self, config: Config, store: Store | None = None,
                 hasher: FileHasher | None = None,
                 version_of: Callable[[str], str] | None = None,
                 overrides: Overrides | None = None) -> None:
        self.config = config
        self.overrides = overrides or {}  # `--set`: applied to every load
        self.store = store
        self.hasher = hasher
        self._version_of = version_of
        # the latest analysis of each module: dotted name -> (cache key, analysis)
        self._memory: dict[str, tuple[str, FileAnalysis]] = {}
        # the analysis each module had before its latest change or removal (see load_keeping)
        self._before: dict[str, tuple[str, FileAnalysis]] = {}
        self.closure_memo = ClosureMemo()
        self.parsed = 0  # files read and analysed by this loader (a null build parses none)
        self.cached = False  # whether the last load came whole from the project cache
        self.proven: ProjectFiles | None = None  # what the last load is known to be built from
        self.read_ns = 0  # time.time_ns() when the last load began reading the files
        self.project: Project | None = None

    # -- public -------------------------------------------------------------------------------

    def load(self) -> Project:
        # A load builds tens of thousands of objects that live on (analyses, tasks, closures)
        # and makes no garbage cycles worth hunting: the collections they would trigger find
        # nothing.
        collecting = gc.isenabled()
        gc.disable()
        self.read_ns = time.time_ns()
        try:
            project = self._load()
        finally:
            if collecting:
                gc.enable()
        missing = self._missing_folders()
        if missing:  # checked on every load (cheap), so it is never stale in a cached project
            project = replace(project, errors=missing + project.errors)
        if self.overrides:
            project = with_overrides(project, self.overrides)
        self.project = project
        return project

    def _missing_folders(self) -> list[ProjectError]:
        config = self.config
        missing = [folder for folder in config.tasks if not os.path.isdir(folder)]
        if not missing:
            return []
        line = setting_line(config, "tasks")  # None: the default folder, not set anywhere
        return [ProjectError(config.source, line,
                             f"the tasks folder {relative(folder, config.root)!r} does not exist")
                for folder in missing]

    def reload(self, changed: Iterable[Path] = ()) -> Project:
        """Load again after a change. Files whose content is unchanged reuse their analysis:
        the hasher's stat cache notices what changed, so `changed` is only used to forget the
        analyses of files that are gone."""
        for path in changed:
            if not os.path.exists(path):
                dotted = module_name_of(path, self.config)
                gone = self._memory.pop(dotted, None)
                if gone is not None:
                    self._before[dotted] = gone
        return self.load()

    def load_keeping(self, paths: Iterable[Path]) -> Project | None:
        """The project as the files on disk make it, except these module files, taken as
        they were before their latest change or removal (`dev`: the tasks that depend on a
        file gone for a moment wait for it, the rest is planned with what is on disk). None
        when this loader never read one of them. Neither cached nor kept as `self.project`:
        it is no load of what is on disk."""
        kept: dict[Path, FileAnalysis] = {}
        for path in paths:
            before = self._before.get(module_name_of(path, self.config))
            if before is None:
                return None
            kept[path] = before[1]
        found = [Path(p) for p in discover_files(self.config)]
        names = {p: module_name_of(p, self.config) for p in [*found, *kept]}
        files = self._analyse_all(found, names, self._hash(found))
        files.update(kept)
        # a memo of its own: the loader's memo keys closures by the modules' current content
        project = ProjectBuild(self.config, files, names, _OwnMemo(self)).run()
        return with_overrides(project, self.overrides) if self.overrides else project

    # -- the pipeline -------------------------------------------------------------------------

    def _load(self) -> Project:
        config = self.config
        started_ns = time.time_ns()
        found = discover_files(config)
        cache = ProjectCache(self.store, config)
        cached = cache.get(found)
        self.cached = isinstance(cached, Project)
        self.proven = cache.proven
        if isinstance(cached, Project):
            return replace(cached, config=config)  # e.g. other jobs: the project is the same
        paths = [Path(p) for p in found]
        hashes = self._hash(paths)
        names = {p: module_name_of(p, config) for p in paths}
        files = self._analyse_all(paths, names, hashes)
        build = ProjectBuild(config, files, names, self)
        project = build.run()
        cache.put(project, found, [os.fspath(p) for p in build.local_paths], build.absent,
                  started_ns)
        self.proven = cache.proven
        return project

    def _hash(self, paths: list[Path]) -> dict[Path, str | None]:
        """Content hashes by the stat cache; None where the file has to be read to know."""
        if self.hasher is None or not paths:
            return {p: None for p in paths}
        try:
            return self.hasher.hash_many(paths)
        except OSError:  # e.g. one unreadable file: hash the others one by one
            return {p: self._hash_one(p) for p in paths}

    def _hash_one(self, path: Path) -> str | None:
        assert self.hasher is not None
        try:
            return self.hasher.hash_path(path)
        except OSError:
            return None  # reading it will say why

    def _cache_key(self, dotted: str, digest: str) -> str:
        # the module name is part of what analyze_module sees (relative imports resolve against it)
        return f"{ANALYZER_VERSION}.{ANALYSIS_FORMAT}:{dotted}:{digest}"

    def analysis_of(self, path: Path, dotted: str) -> FileAnalysis | None:
        """The analysis of one more file (a local module reached by an import)."""
        return self._analysis(path, dotted, self._hash([path]))

    def _analysis(self, path: Path, dotted: str, hashes: dict[Path, str | None]
                  ) -> FileAnalysis | None:
        found = self._cached_or_source(path, dotted, hashes.get(path))
        if not isinstance(found, tuple):
            return found
        key, data = found
        text = _decode(data)
        analysis = analyse_text(text, path, dotted) if text is not None else _undecodable(dotted,
                                                                                    data)
        return self._remember(dotted, key, analysis)

    def _cached_or_source(self, path: Path, dotted: str, digest: str | None
                          ) -> FileAnalysis | tuple[str, bytes] | None:
        """A file's analysis from the caches, or (its cache key, its bytes) when it has to be
        parsed; None when it is gone, an unreadable file's analysis when it cannot be read."""
        if digest is not None:
            found = self._cached(dotted, self._cache_key(dotted, digest))
            if found is not None:
                return found
        try:
            data = _read(path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None  # removed since it was listed
        except OSError as err:
            return _unreadable(dotted, f"cannot read the file: {err.strerror or err}")
        if digest is not None:  # looked up above
            return self._cache_key(dotted, digest), data
        key = self._cache_key(dotted, hash_bytes(data))
        return self._cached(dotted, key) or (key, data)

    def _remember(self, dotted: str, key: str, analysis: FileAnalysis,
                  blob: bytes | None = None) -> FileAnalysis:
        """Keep a new analysis in memory and in the store (`blob`: its pickle, if made); the
        analysis kept (with its module's pickle, once stored)."""
        self.parsed += 1
        if self.store is not None and not self.store.readonly:
            if blob is None:
                analysis, blob = _pickled(analysis)
            self.store.analysis_put(key, blob)
        self._keep(dotted, key, analysis)
        return analysis

    def _keep(self, dotted: str, key: str, analysis: FileAnalysis) -> None:
        """Make this the module's latest analysis; the one it replaces is kept as before."""
        last = self._memory.get(dotted)
        if last is not None and last[0] != key:
            self._before[dotted] = last
        self._memory[dotted] = (key, analysis)

    def _analyse_all(self, paths: list[Path], names: dict[Path, str],
                     hashes: dict[Path, str | None]) -> dict[Path, FileAnalysis]:
        """The analysis of every file that still exists, in the order of `paths`: from the
        caches, else parsed, on every CPU when there are many (`fork_map`). Each file is read
        and decoded once."""
        found: dict[Path, FileAnalysis] = {}
        todo: list[tuple[Path, str, str]] = []  # (path, cache key, text) of the files to parse
        for path in paths:
            dotted = names[path]
            cached = self._cached_or_source(path, dotted, hashes.get(path))
            if cached is None or isinstance(cached, FileAnalysis):
                if cached is not None:
                    found[path] = cached
                continue
            key, data = cached
            text = _decode(data)
            if text is None:
                found[path] = self._remember(dotted, key, _undecodable(dotted, data))
            else:
                todo.append((path, key, text))
        items = [(text, path, names[path]) for path, _, text in todo]
        # fewer files than two processes' worth: parse them here, without fork_map's checks
        parsed = fork_map(_analyse_item, items) if len(items) >= 2 * MIN_PER_PROCESS \
            else [_analyse_item(item) for item in items]
        for (path, key, _), result in zip(todo, parsed, strict=True):
            found[path] = self._remember(names[path], key, result.analysis, result.blob)
        return {path: found[path] for path in paths if path in found}

    def _cached(self, dotted: str, key: str) -> FileAnalysis | None:
        remembered = self._memory.get(dotted)
        if remembered is not None and remembered[0] == key:
            return remembered[1]
        if self.store is None:
            return None
        blob = self.store.analysis_get(key)
        found = _from_blob(blob) if blob is not None else None
        if found is not None:
            self._keep(dotted, key, found)
        return found

    def warm(self) -> None:
        """Read every module's analysis (from the store's cache: nothing is parsed) so that the
        first edit in `dev` can take the incremental path even after a cached load."""
        if self.project is None:
            return
        files = self.project.module_files
        hashes = self._hash(list(files.values()))
        for dotted, path in files.items():
            if dotted not in self._memory:
                self._analysis(path, dotted, hashes)

    def memory_of(self, dotted: str) -> FileAnalysis | None:
        """The analysis this loader last used for a module, if it read one (not after a load
        that came whole from the project cache: then the file's old text is unknown here)."""
        remembered = self._memory.get(dotted)
        return remembered[1] if remembered is not None else None

    def module_key(self, dotted: str) -> str | None:
        """The cache key (content) of a module's latest analysis."""
        remembered = self._memory.get(dotted)
        return remembered[0] if remembered is not None else None

    def version_of(self, module: str) -> str:
        if self._version_of is None:
            from watchrun.project.externals import version_of

            self._version_of = version_of
        return self._version_of(module)


class _OwnMemo:
    """A loader as an assembly sees it, with a closure memo of its own (`load_keeping`)."""

    def __init__(self, loader: ProjectLoader) -> None:
        self.closure_memo = ClosureMemo()
        self.analysis_of = loader.analysis_of
        self.version_of = loader.version_of
        self.module_key = loader.module_key


class _Parsed:
    """An analysis made by `fork_map`. A forked child sends it as the pickle the store keeps
    (`blob`), so that the parent, which unpickles it anyway, does not pickle it again."""

    __slots__ = ("analysis", "blob")

    def __init__(self, analysis: FileAnalysis, blob: bytes | None = None) -> None:
        self.analysis = analysis
        self.blob = blob

    def __reduce__(self) -> tuple[Callable[[bytes], _Parsed], tuple[bytes]]:
        return _parsed_from_blob, (_pickled(self.analysis)[1],)


def _parsed_from_blob(blob: bytes) -> _Parsed:
    analysis = _from_blob(blob)
    assert analysis is not None
    return _Parsed(analysis, blob)


def _analyse_item(item: tuple[str, Path, str]) -> _Parsed:
    return _Parsed(analyse_text(*item))


def _undecodable(dotted: str, data: bytes) -> FileAnalysis:
    """A file Python cannot decode, said at the line of its first byte that is not UTF-8 (a
    file in another declared encoding that fails is said as a whole)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        return _unreadable(dotted, "cannot decode the file as Python source (UTF-8): byte "
                           f"{data[err.start]:#04x} is not UTF-8", line)
    return _unreadable(dotted, "cannot decode the file as Python source")


def _unreadable(dotted: str, message: str, line: int | None = None) -> FileAnalysis:
    # a module that cannot be read is as broken as one with a syntax error, for its importers
    module = ModuleInfo(dotted, {}, "", frozenset(), False, (line or 1, message))
    return FileAnalysis(None, (), module, problem=message, problem_line=line)


def _pickled(analysis: FileAnalysis) -> tuple[FileAnalysis, bytes]:
    """The analysis with its module's pickle, and the analysis as the store keeps it: a tuple
    that holds the module's pickle as bytes (see `FileAnalysis.module_blob`)."""
    module_blob = analysis.module_blob
    if module_blob is None:
        module_blob = pickle.dumps(analysis.module, pickle.HIGHEST_PROTOCOL)
        analysis = build(FileAnalysis, header=analysis.header, module=analysis.module,
                         header_errors=analysis.header_errors, problem=analysis.problem,
                         problem_line=analysis.problem_line,
                         module_blob=module_blob)  # once per module: see frozen_init.py
    stored = (analysis.header, analysis.header_errors, module_blob, analysis.problem,
              analysis.problem_line)
    return analysis, pickle.dumps(stored, pickle.HIGHEST_PROTOCOL)


def _from_blob(blob: bytes) -> FileAnalysis | None:
    """An analysis from the store; None when the blob cannot be used."""
    value = quick_unpickle(blob)
    if not isinstance(value, tuple) or len(value) != 5 or not isinstance(value[2], bytes):
        return None  # also the shorter tuples of older versions: analysed again
    header, header_errors, module_blob, problem, problem_line = value
    module = quick_unpickle(module_blob)
    if not isinstance(module, ModuleInfo):
        return None
    return build(FileAnalysis, header=header, header_errors=header_errors, module=module,
                 problem=problem, problem_line=problem_line, module_blob=module_blob)


def module_name_of(path: Path, config: Config) -> str:
    try:
        return module_name(path, config.root)
    except ValueError:  # a task folder outside the root: name it from the folder's parent
        folder = tasks_dir_of(path, config)
        return module_name(path, folder.parent if folder else path.parent)
