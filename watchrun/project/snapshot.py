"""The whole-project cache: a null build stats the files, compares, and unpickles one blob."""

from __future__ import annotations

import copyreg
import gc
import io
import os
import pickle
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import PosixPath, PurePath, WindowsPath
from typing import Any

from watchrun.config import Config
from watchrun.project.codemap import ANALYZER_VERSION, ModuleInfo
from watchrun.state.hashing import RACY_NS, hash_bytes
from watchrun.state.proof import site_mtimes
from watchrun.state.statkeys import StatKey, key_of
from watchrun.state.store import Store

PROJECT_CACHE_KEY = "project"
PROJECT_CACHE_VERSION = 5  # bump when Project (or anything pickled in it) changes shape


def quick_unpickle(blob: bytes) -> object:
    """Unpickle a cached object; None when it cannot be used (damaged, or from another version).

    The cyclic garbage collector is paused meanwhile: unpickling creates tens of thousands of
    objects, and the collections they would trigger (finding nothing) cost more than the work."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return pickle.loads(blob)
    except Exception:  # any damage in a cache only means: compute it again
        return None
    finally:
        if enabled:
            gc.enable()


class LazyModules(Mapping[str, ModuleInfo]):
    """Module maps by dotted name that a cached project unpickles one by one, on first use.

    A null build never looks at most of them (the closures already say what the code is), and
    unpickling a thousand of them up front would cost more than the rest of the load."""

    def __init__(self, modules: Mapping[str, ModuleInfo] | None = None,
                 pickled: dict[str, bytes] | None = None, *,
                 replace_with: Mapping[str, ModuleInfo] | None = None) -> None:
        if isinstance(modules, LazyModules):  # a copy that shares the unread pickles
            self._modules: dict[str, ModuleInfo] = dict(modules._modules)
            self._pickled: dict[str, bytes] = dict(modules._pickled)
        else:
            self._modules = dict(modules or {})
            self._pickled = dict(pickled or {})
        for name, info in (replace_with or {}).items():
            self._modules[name] = info
            self._pickled.pop(name, None)

    def __getitem__(self, name: str) -> ModuleInfo:
        found = self._modules.get(name)
        if found is None:
            found = pickle.loads(self._pickled[name])  # KeyError for an unknown name
            assert isinstance(found, ModuleInfo)
            self._modules[name] = found
        return found

    def __contains__(self, name: object) -> bool:
        return name in self._modules or name in self._pickled

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(set(self._modules) | set(self._pickled)))

    def __len__(self) -> int:
        return len(set(self._modules) | set(self._pickled))

    def __reduce__(self) -> tuple[type[LazyModules], tuple[None, dict[str, bytes]]]:
        pickled = dict(self._pickled)
        for name, info in self._modules.items():
            if name not in pickled:
                pickled[name] = pickle.dumps(info, pickle.HIGHEST_PROTOCOL)
        return (LazyModules, (None, pickled))


@dataclass
class ProjectFiles:
    """What a loaded project is known to be built from (for the null-build proof)."""

    discovered: list[str]  # the task folders' files, as listed
    stats: dict[str, StatKey]  # their stat keys and those of the local modules reached
    absent: list[str]  # paths where an import looked for a local module and found none


@dataclass
class _CacheKey:
    """What a cached project was built from, checked before the project itself is unpickled."""

    fingerprint: str  # settings, Python, installed packages, and the stat of every file read
    local_files: list[str]  # reached local modules outside the task folders
    absent: set[str]  # paths where an import looked for a local module and found none


class ProjectCache:
    """The resolved project of the last load, reused when nothing it was built from changed.

    A null build then neither hashes nor parses anything: it stats the files and compares. The
    fingerprint covers the settings that shape a project (root, task folders, state folder), the
    Python version, the installed packages (the mtimes of the site-packages folders change on
    every install or removal), and the stat key (size,
    mtime_ns, inode, ctime_ns) of every discovered file and reached local module; a new file where
    an import looked for a local module invalidates it too. Anything else (touching a file,
    a checkout) means a normal load, which still finds every file's analysis by content hash.

    As in the stat cache of `hashing`, a project is only stored when every file it was built from
    was last changed at least RACY_NS before the load began: a file rewritten within the same
    clock tick as it was read could otherwise keep its stat key with new content.
    """

    def __init__(self, store: Store | None, config: Config) -> None:
        self.store = store
        self.config = config
        # after a hit or a put: the files and stat keys the project is known to be built from
        self.proven: ProjectFiles | None = None

    def _fingerprint(self, files: Iterable[str]) -> tuple[str, int, dict[str, StatKey]] | None:
        """(fingerprint, newest change in ns, stat keys) of these files, or None if one is
        gone."""
        config = self.config  # only what shapes the project: not jobs, grace, the executor …
        parts = [repr((PROJECT_CACHE_VERSION, ANALYZER_VERSION, sys.version, config.root,
                       config.tasks, config.state_dir))]
        newest = 0
        stats: dict[str, StatKey] = {}
        for path in files:
            try:
                st = os.stat(path)
            except OSError:
                return None
            key = stats[path] = key_of(st)
            parts.append(f"{path}\0{key[0]}\0{key[1]}\0{key[2]}\0{key[3]}")
            newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
        parts.extend(f"{d}\0{m}" for d, m in site_mtimes())
        return hash_bytes("\n".join(parts).encode()), newest, stats

    def get(self, files: list[str]) -> object | None:
        """The cached project (the caller checks its type), or None when anything changed."""
        if self.store is None:
            return None
        blob = self.store.kv_get(PROJECT_CACHE_KEY)
        halves = quick_unpickle(blob) if blob else None
        if not isinstance(halves, tuple) or len(halves) != 2:
            return None
        key = quick_unpickle(halves[0])
        if not isinstance(key, _CacheKey) or any(os.path.exists(p) for p in key.absent):
            return None
        found = self._fingerprint([*files, *key.local_files])
        if found is None or found[0] != key.fingerprint:
            return None
        project = quick_unpickle(halves[1])
        if project is not None:
            self.proven = ProjectFiles(list(files), found[2], sorted(key.absent))
        return project

    def put(self, project: object, files: list[str], local_files: list[str], absent: set[str],
            started_ns: int) -> None:
        if self.store is None or self.store.readonly:
            return
        found = self._fingerprint([*files, *local_files])
        if found is None or found[1] >= started_ns - RACY_NS:
            return  # something changed too recently to trust its stat key: next time
        key = _CacheKey(found[0], local_files, absent)
        self.proven = ProjectFiles(list(files), found[2], sorted(absent))
        halves = (pickle.dumps(key, pickle.HIGHEST_PROTOCOL), dumps_project(project))
        self.store.kv_put(PROJECT_CACHE_KEY, pickle.dumps(halves, pickle.HIGHEST_PROTOCOL))


def _path_as_str(path: PurePath) -> tuple[Any, tuple[Any, ...]]:
    return type(path), (str(path),)


def _path_as_parts(path: Any) -> tuple[Any, tuple[Any, ...]]:
    return _parsed_path, (type(path), path._drv, path._root, path._parts)


def _parsed_path(cls: Any, drv: str, root: str, parts: list[str]) -> PurePath:
    path: PurePath = cls._from_parsed_parts(drv, root, parts)
    return path


# How a project's thousand paths are pickled. Before Python 3.12, building a Path parses its
# string (most of the cost of unpickling a cached project), but pathlib itself builds the paths
# it derives from already parsed parts: they are pickled as such. From 3.12 on, a Path parses
# lazily: its string is all it needs. (A cached project is only read by the Python that wrote
# it: the version is part of its fingerprint.)
_PARSED_PARTS = sys.version_info < (3, 12) and hasattr(PurePath, "_from_parsed_parts")
_path_reducer = _path_as_parts if _PARSED_PARTS else _path_as_str
# A dispatch table, not `reducer_override`: the pickler looks it up by type, in C, so only
# paths call back into Python.
_PATHS: dict[type, Any] = {**copyreg.dispatch_table, PosixPath: _path_reducer,
                           WindowsPath: _path_reducer}


def dumps_project(value: object) -> bytes:
    """Pickle a project (anything holding many paths)."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _PATHS
    pickler.dump(value)
    return buffer.getvalue()
