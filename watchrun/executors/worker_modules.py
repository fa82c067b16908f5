"""Module bookkeeping in a warm worker: the compiled task modules, and the project-local modules
tasks import. A warm worker keeps what tasks import in sys.modules; a helper under the project
root that changed since must be imported afresh, or the unit runs stale code."""

from __future__ import annotations

import contextlib
import os
import sys
import time

from watchrun.executors import taskmodules

TYPE_CHECKING = False  # the worker starts without `typing` (see worker.py)
if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import CodeType

_READ_CHUNK = 1 << 16


# A file modified this recently may change again without its (mtime, size) changing: mtimes
# come from a coarse clock (a few ms; whole seconds on some filesystems). Until then the file's
# bytes are kept and compared too (git calls such entries "racily clean").
_RACY_NS = 3_000_000_000


class FileSnapshot:
    """A file as last seen: its stat, and its bytes while the stat alone cannot be trusted."""

    __slots__ = ("content", "mtime_ns", "path", "size")

    def __init__(
        self, path: str, content: bytes | None = None, st: os.stat_result | None = None
    ) -> None:
        """`content` and `st`: what was read and the stat taken before (see _read_file)."""
        if st is None:
            st = os.stat(path)
        self.path = path
        self.mtime_ns = st.st_mtime_ns
        self.size = st.st_size
        racy = time.time_ns() - st.st_mtime_ns < _RACY_NS
        self.content = (content if content is not None else _read(path)) if racy else None

    def changed(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        if st.st_mtime_ns != self.mtime_ns or st.st_size != self.size:
            return True
        if self.content is None:
            return False
        if _read(self.path) != self.content:
            return True
        if time.time_ns() - self.mtime_ns >= _RACY_NS:
            self.content = None  # old enough now: the stat will tell
        return False


def _read(path: str) -> bytes:
    return _read_file(path)[0]


def _read_file(path: str) -> tuple[bytes, os.stat_result]:
    """A file's bytes, and its stat taken before they were read: a change made meanwhile then
    shows as a change the next time (the other order could hide it). Plain os calls: no
    buffered reader is needed for one read."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        data = os.read(fd, st.st_size + 1)
        if len(data) != st.st_size:  # it changed meanwhile (or a short read): up to its end
            chunks = [data]
            while chunk := os.read(fd, _READ_CHUNK):
                chunks.append(chunk)
            data = b"".join(chunks)
    finally:
        os.close(fd)
    return data, st


class LocalModules:
    """The modules imported from under a project root, with a snapshot of their files."""

    def __init__(self) -> None:
        self.files: dict[str, FileSnapshot] = {}  # module name -> its file
        # namespace packages (folders without __init__.py): no file to watch, but they hold
        # their submodules as attributes, so they are forgotten with them
        self.packages: set[str] = set()
        # an environment inside the project (root/.venv) is not project code
        prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
        self._foreign = tuple(os.path.join(p, "") for p in prefixes)
        self._root = ("", "")  # the last root, and the prefix of the paths under it

    def drop_stale(self) -> None:
        """If any tracked file changed, forget every tracked module: one that did not change
        may hold names taken from one that did (`from lib.a import f`)."""
        changed = [snap.path for snap in self.files.values() if snap.changed()]
        if not changed:
            return
        import importlib
        import importlib.util

        for name in (*self.files, *self.packages):
            sys.modules.pop(name, None)
        for file in changed:
            # a .pyc is trusted by (mtime in whole seconds, size): an edit within the same second
            # that keeps the size would load the old code
            with contextlib.suppress(OSError, ValueError, NotImplementedError):
                os.unlink(importlib.util.cache_from_source(file))
        self.files.clear()
        self.packages.clear()
        importlib.invalidate_caches()

    def forget(self) -> None:
        """Take the tracked modules out of sys.modules (their snapshots stay, for drop_stale):
        the next unit imports them afresh, so no module state of the project carries over
        from one unit to the next (SPEC section 5)."""
        for name in (*self.files, *self.packages):
            sys.modules.pop(name, None)

    def record_new(self, marker: tuple[str, object] | None, root: str) -> None:
        """Track the modules imported since `marker` (the newest entry of sys.modules then).
        Dicts keep insertion order, so new modules are the keys after it."""
        if self._root[0] != root:
            self._root = (root, os.path.join(root, ""))
        under = self._root[1]
        for name in _keys_after(marker):
            if name.startswith(taskmodules.PREFIX):
                continue  # a task's own module: taskmodules builds it afresh (namespace_for)
            module = sys.modules.get(name)
            file = getattr(module, "__file__", None)
            if file is None:
                paths = getattr(module, "__path__", None) or ()
                if any(self._local(path, under) for path in paths):
                    self.packages.add(name)
            elif self._local(file, under):
                with contextlib.suppress(OSError):
                    self.files[name] = FileSnapshot(file)

    def _local(self, path: object, under: str) -> bool:
        return (
            isinstance(path, str) and path.startswith(under) and not path.startswith(self._foreign)
        )


def _keys_after(marker: tuple[str, object] | None) -> Iterator[str]:
    for name in reversed(sys.modules):
        # by identity too: a module forgotten and imported again comes back as a new object
        if marker is not None and name == marker[0] and sys.modules[name] is marker[1]:
            return
        yield name


def newest_module() -> tuple[str, object] | None:
    """The last entry of sys.modules that the next unit leaves in place: what record_new
    counts from. Not a task's own module: the next unit of another task drops it
    (taskmodules.namespace_for), and with the marker gone record_new would look at every
    module the worker has, at every unit."""
    for name in reversed(sys.modules):
        if not name.startswith(taskmodules.PREFIX):
            return name, sys.modules[name]
    return None


class TaskCode:
    """The task modules' files, compiled, and compiled again only when they change."""

    def __init__(self) -> None:
        self._codes: dict[str, tuple[FileSnapshot, CodeType]] = {}
        # file -> (source, code) of the task modules last shipped with a job (JobSpec.sources)
        self._shipped: dict[str, tuple[bytes, CodeType]] = {}

    def get(self, file: str, shipped: dict[str, bytes] | None = None) -> CodeType:
        source = shipped.get(file) if shipped else None
        if source is not None:  # sent with the job (Ray): the file here may differ or not exist
            known = self._shipped.get(file)
            if known is None or known[0] != source:
                known = (source, compile(source, file, "exec", dont_inherit=True))
                self._shipped[file] = known
            return known[1]
        cached = self._codes.get(file)
        if cached is not None and not cached[0].changed():
            return cached[1]
        source, st = _read_file(file)
        snapshot = FileSnapshot(file, source, st)
        code = cached_compile(source, file)
        self._codes[file] = (snapshot, code)
        return code


# a hash-based .pyc whose source hash is checked at load (PEP 552): valid for these bytes only,
# whatever the file's mtime says
_CHECKED_HASH_PYC = (0b11).to_bytes(4, "little")


def cached_compile(source: bytes, file: str) -> CodeType:
    """A task module's code, from Python's own bytecode cache (the `__pycache__` .pyc that
    importing it would use, in its hash-checked form) when that holds these bytes; else
    compiled, and written there unless writing bytecode is off (PYTHONDONTWRITEBYTECODE,
    -B). A build of 1,000 tasks compiles 1,000 modules; the next one, after `rm -rf
    .watchrun` or in a fresh worker, reads them back (BENCHMARKS.md, seventh session)."""
    from importlib.util import MAGIC_NUMBER, cache_from_source, source_hash

    try:
        pyc = cache_from_source(file)
    except (NotImplementedError, ValueError):  # no cache tag, or an unusable path
        return compile(source, file, "exec", dont_inherit=True)
    header = MAGIC_NUMBER + _CHECKED_HASH_PYC + source_hash(source)
    try:
        with open(pyc, "rb") as handle:
            data = handle.read()
        if data[:16] == header:
            import marshal

            code = marshal.loads(memoryview(data)[16:])
            if code.co_filename == file:
                return code  # type: ignore[no-any-return]
    except (OSError, EOFError, ValueError, TypeError, AttributeError):
        pass  # none yet, unreadable or damaged: compiled below
    code = compile(source, file, "exec", dont_inherit=True)
    if not sys.dont_write_bytecode:
        _write_pyc(pyc, header, code)
    return code


def _write_pyc(pyc: str, header: bytes, code: CodeType) -> None:
    """Atomically (another worker may read it meanwhile); a folder that cannot be written
    only means no cache."""
    import marshal

    temp = f"{pyc}.{os.getpid()}.tmp"
    with contextlib.suppress(OSError):
        os.makedirs(os.path.dirname(pyc), exist_ok=True)
        with open(temp, "wb") as handle:
            handle.write(header + marshal.dumps(code))
        os.replace(temp, pyc)
    with contextlib.suppress(OSError):
        os.unlink(temp)
