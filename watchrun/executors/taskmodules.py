"""Task modules importable by their name, `watchrun.task.<task>`, in every process.

A worker executes a task's chain of files into one namespace named `watchrun.task.<task>`, so
the classes and functions a task defines say they live in that module. Pickle stores them by
reference (module and name), and reads them back by importing the module: for that to work in
the worker itself, in the processes a task starts (fork, spawn, forkserver, `concurrent.futures`),
in downstream units, collectors and `watchrun show`, the module has to exist under that name.

- In the worker, the unit's namespace *is* the dict of a module registered in `sys.modules`
  (`namespace_for`), so a value pickles there like any module's.
- Anywhere else, the package `watchrun.task` installs an import finder (`TaskFinder`) that builds
  `watchrun.task.<task>` again from the task's files, the way the worker does: the chain of
  `extends`, root ancestor first, into one module. The project's root comes from the environment
  variable `WATCHRUN_PROJECT_ROOT`, which the worker sets for the unit (children inherit it
  whichever way they start), else from the current folder and its parents.

Kept light: the worker imports this module; what the finder needs (the header parser, the
settings) is imported only when a module has to be built.
"""

from __future__ import annotations

import builtins
import os
import sys
from types import ModuleType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec
    from pathlib import Path
    from typing import Any

PACKAGE = "watchrun.task"
PREFIX = PACKAGE + "."
ROOT_ENV = "WATCHRUN_PROJECT_ROOT"
_MAX_CHAIN = 100  # an `extends` cycle is a project error; here it must only not loop

# module name -> (file, mtime_ns, size) of each file it was built from: a module whose files
# changed is built again when next imported (a warm worker outlives many edits in `dev`)
_BUILT: dict[str, tuple[tuple[str, int, int], ...]] = {}
# file -> (file, mtime_ns, size) when last looked at: what a unit's chain was when it started
_SEEN: dict[str, tuple[str, int, int]] = {}
# file -> ((mtime_ns, size), its declared outputs or None when its header sets none)
_OUTPUTS: dict[str, tuple[tuple[int, int], tuple[str, ...] | None, int]] = {}


class TaskModuleError(Exception):
    """A task module, or a value referring to one, cannot be loaded: the message says why."""


# -- in the worker ------------------------------------------------------------------------------

def namespace_for(task: str, root: str, chain: list[tuple[str, str]]) -> dict[str, Any]:
    """The namespace a unit of `task` executes its chain of files into: the dict of the module
    `watchrun.task.<task>`, registered in `sys.modules` before any of its code runs (so a
    dataclass, `typing.get_type_hints` and pickle find it while it is being defined)."""
    if os.environ.get(ROOT_ENV) != root:
        os.environ[ROOT_ENV] = root
    if _FINDER not in sys.meta_path:
        install()
    name = PREFIX + task
    _forget_others(name)
    module = sys.modules.get(name)
    known = _BUILT.get(name)
    if isinstance(module, ModuleType) and known is not None:
        # the same object, emptied: the worker counts the modules a unit imports from the
        # newest entry of sys.modules, which this often is
        module.__dict__.clear()
        module.__dict__["__name__"] = name
    else:
        module = ModuleType(name)
        sys.modules[name] = module
    namespace = module.__dict__
    namespace.update(__builtins__=builtins, __doc__=None, __spec__=None, __loader__=None,
                     __path__=[])
    _BUILT[name] = _stamps([file for file, _ in chain])
    return namespace


def _stamps(files: list[str]) -> tuple[tuple[str, int, int], ...]:
    stamps = []
    for file in files:
        try:
            st = os.stat(file)
        except OSError:
            stamp = (file, -1, -1)
        else:
            stamp = (file, st.st_mtime_ns, st.st_size)
        _SEEN[file] = stamp
        stamps.append(stamp)
    return tuple(stamps)


def _forget_others(keep: str) -> None:
    """Drop the task modules built for other tasks (a value a unit unpickled imported them).
    One whose files changed since must not serve again, and knowing which did would mean
    looking at every file this worker ever built, a cost that grows with every unit it runs;
    a dropped module is built again when a value needs it."""
    for name in [name for name in _BUILT if name != keep]:
        del _BUILT[name]
        sys.modules.pop(name, None)


def declared_outputs(root: str, chain: list[tuple[str, str]]) -> list[Path]:
    """What `run(outputs)` receives: the task's declared outputs as paths, as declared (like
    `inputs`, a relative one is relative to the project root, the task's working folder)."""
    from pathlib import Path

    found = _declared(chain)
    return [Path(path) for path in (found[0] if found else ())]


def declared_output_names(chain: list[tuple[str, str]]) -> tuple[str, ...]:
    """The task's declared outputs as written in its header (a relative one is relative to the
    project root); no pathlib, for the worker's hot path (worker_outputs.py)."""
    found = _declared(chain)
    return found[0] if found else ()


def missing_output(label: str, root: str, chain: list[tuple[str, str]]) -> str | None:
    """Why a unit that returned normally still fails: a declared output it did not write."""
    found = _declared(chain)
    if not found:
        return None
    outputs, file, line = found
    for path in outputs:
        full = path if os.path.isabs(path) else os.path.join(root, path)
        if not os.path.lexists(full):
            where = os.path.relpath(file, root) if file.startswith(root + os.sep) else file
            return (f"task {label!r} finished without writing its declared output {path!r} "
                    f"(outputs at {where}:{line})")
    return None


def _declared(chain: list[tuple[str, str]]) -> tuple[tuple[str, ...], str, int] | None:
    """(outputs, file, line) of the nearest header in the chain that sets `outputs`."""
    for file, _ in reversed(chain):
        seen = _SEEN.get(file)  # stat'ed as the unit started (namespace_for)
        if seen is None:
            seen = _stamps([file])[0]
        if seen[1] < 0:
            continue
        stamp = (seen[1], seen[2])
        known = _OUTPUTS.get(file)
        if known is None or known[0] != stamp:
            outputs, line = _outputs_in(file)
            known = _OUTPUTS[file] = (stamp, outputs, line)
        if known[1] is not None:
            return known[1], file, known[2]
    return None


def _outputs_in(file: str) -> tuple[tuple[str, ...] | None, int]:
    try:
        with open(file, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None, 0
    if "outputs" not in text:  # most tasks: no header parsing at all
        return None, 0
    header = _header_of(text, file)
    if header is None or "outputs" not in header.data:
        return None, 0
    value = header.data["outputs"]
    paths = (value,) if isinstance(value, str) else tuple(str(v) for v in value)
    return paths, header.line_of("outputs")


def _header_of(text: str, file: str) -> Any:
    from pathlib import Path

    from watchrun.project.header import parse_header

    return parse_header(text, Path(file))[0]


def load_argument(arg: str, data: bytes, loads: Any) -> Any:
    """An upstream value unpickled; a value that refers to a class or function its task no
    longer defines fails with a message that names them, not a bare AttributeError."""
    try:
        return loads(data)
    except (AttributeError, ImportError, TaskModuleError) as exc:
        raise TaskModuleError(_unloadable(f"the upstream value passed as {arg!r}", exc)) from None


def _unloadable(what: str, exc: BaseException) -> str:
    import re

    text = str(exc)
    module = getattr(exc, "name", None) if isinstance(exc, ImportError) else None
    missing = None
    # "Can't get attribute 'Result' on <module 'watchrun.task.make' from …>"
    found = re.search(r"get attribute '([^']+)' on <module '([^']+)'", text)
    if found:
        missing, module = found.group(1), found.group(2)
    if module and module.startswith(PREFIX):
        task = module[len(PREFIX):]
        if missing:
            return (f"{what} cannot be loaded: it refers to {missing!r}, which task {task!r} "
                    f"no longer defines (rerun it: watchrun build --force {task})")
        return f"{what} cannot be loaded: {text}"
    return f"{what} cannot be loaded: {type(exc).__name__}: {text}"


def describe_unloadable(exc: BaseException) -> str:
    """For `show`: why a stored output cannot be read back."""
    return _unloadable("the stored output", exc)


# -- everywhere: the import finder --------------------------------------------------------------

def install(root: str | None = None) -> None:
    """Make `watchrun.task.<task>` importable in this process (and, through the environment,
    in the processes it starts). `root`: the project's, when not the worker's own."""
    if root is not None and os.environ.get(ROOT_ENV) != root:
        os.environ[ROOT_ENV] = root
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


class TaskFinder:
    """Finds `watchrun.task.<task>` (a meta path finder: the import system asks it first)."""

    @staticmethod
    def find_spec(fullname: str, path: object = None, target: object = None
                  ) -> ModuleSpec | None:
        if not fullname.startswith(PREFIX):
            return None
        from importlib.machinery import ModuleSpec

        # every task module is also a package: `models.train` lives below `models`
        return ModuleSpec(fullname, _loader(), is_package=True)

    @staticmethod
    def invalidate_caches() -> None:
        pass


_FINDER = TaskFinder()


def _loader() -> Any:
    """A TaskLoader that is an importlib Loader (its module is imported only when needed)."""
    from importlib.abc import Loader

    class _TaskLoader(TaskLoader, Loader):
        pass

    return _TaskLoader()


class TaskLoader:
    """Builds a task module from its files, as the worker does for a unit."""

    @staticmethod
    def create_module(spec: ModuleSpec) -> ModuleType | None:
        return None

    @staticmethod
    def exec_module(module: ModuleType) -> None:
        name = module.__name__
        task = name[len(PREFIX):]
        root = project_root()
        if root is None:
            raise TaskModuleError(
                f"cannot import {name}: no watchrun project here (set {ROOT_ENV})")
        chain, below = task_chain(root, task)
        if not chain:
            if below:  # `models` when only `models.train` is a task: a plain package
                return
            raise ModuleNotFoundError(f"no task named {task!r} in the project at {root}",
                                      name=name)
        namespace = module.__dict__
        namespace["__builtins__"] = builtins
        for file, package in chain:
            namespace["__file__"] = file
            namespace["__package__"] = package
            with open(file, "rb") as handle:
                code = compile(handle.read(), file, "exec", dont_inherit=True)
            exec(code, namespace)
        _BUILT[name] = _stamps([file for file, _ in chain])


def project_root() -> str | None:
    given = os.environ.get(ROOT_ENV)
    if given and os.path.isdir(given):
        return given
    from watchrun.project.root import find_root

    found = find_root(os.getcwd())
    return os.fspath(found) if found is not None else None


def task_chain(root: str, task: str) -> tuple[list[tuple[str, str]], bool]:
    """(file, package) of each module of the task's chain, root ancestor first; and whether
    some task is named below `task` (`task.sub`)."""
    from pathlib import Path

    from watchrun.config import load_config

    config, _ = load_config(Path(root))
    chain: list[tuple[str, str]] = []
    name: str | None = task
    while name is not None and len(chain) < _MAX_CHAIN:
        found = _task_file(config.tasks, name)
        if found is None:
            break
        path, folder = found
        with open(path, encoding="utf-8", errors="replace") as handle:
            header = _header_of(handle.read(), os.fspath(path))
        if header is None:
            break
        chain.append((os.fspath(path), _package(path, Path(root), folder)))
        parent = header.data.get("extends")
        name = parent if isinstance(parent, str) else None
    below = not chain and any(
        (folder / task.replace(".", os.sep)).is_dir() for folder in config.tasks)
    return list(reversed(chain)), below


def _task_file(folders: tuple[Path, ...], task: str) -> tuple[Path, Path] | None:
    for folder in folders:
        path = folder.joinpath(*task.split(".")).with_suffix(".py")
        if path.is_file():
            return path, folder
    return None


def _package(path: Path, root: Path, folder: Path) -> str:
    from watchrun.project.tasks import package_name

    try:
        return package_name(path, root)
    except ValueError:  # a task folder outside the root: named from the folder's parent
        return package_name(path, folder.parent)
