"""The child side of the local executor: `python -m watchrun.executors.worker CTL LIFE PARENT`
(local.py starts it as `python -c "from watchrun.executors.worker import main; main()" ...`,
which skips the module runner's imports: runpy, importlib.util and what they import).

A worker is a warm process that runs units one after another. For each job it builds the task's
inherited namespace (every module of the chain executed into one dict, the root ancestor first),
calls the entry point with exactly the job's arguments, sends yields back as they happen and ends
with one DONE, FAILED or CANCELLED frame. The task's stdout and stderr (and those of the
subprocesses it starts) go to the unit's log file.

CTL is the file descriptor of the control socket (frames, see protocol.py). LIFE is the read end
of a pipe whose write end only the parent holds: when it reads EOF the parent is gone, and the
worker ends its whole process group, the unit's subprocesses included.

Start-up time matters (a worker is spawned per slot and after every cancel), so this module
imports only what every job needs; the rest (traceback, logging, pathlib, inspect) is imported
when first used. No asyncio, no typing at run time.
"""

from __future__ import annotations

# The C module under `signal` (no type stubs): `signal` itself makes enums of every signal and
# handler at import, ~2 ms of a worker's start, and its getsignal() converts to them (~3 us).
import _signal  # type: ignore[import-not-found]
import _thread
import contextlib  # already loaded by `python -m` (runpy)
import errno
import os
import sys
import time

from watchrun.executors import bigpickle, reaper, taskmodules
from watchrun.executors import protocol as proto
from watchrun.executors.protocol import PICKLE_PROTOCOL, Msg, dumps, loads

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Iterator
    from pathlib import Path
    from types import CodeType
    from typing import Any

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# Delivered by the kernel when the parent dies; its handler kills the whole group. Not SIGKILL:
# that would kill this process at once and its children would survive (see _die_with_parent).
_PARENT_DEATH_SIGNAL = _signal.SIGHUP
# O_NOFOLLOW: a symlink planted as a log is replaced, never written through (see UnitLog.open)
_LOG_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
_PUSHED = proto.encode(Msg.PUSHED)
ACK_DELAY = 0.005  # seconds a PUSHED answer may wait to go with the next ones
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)  # Linux
_READ_CHUNK = 1 << 16
# A unit whose log has no name yet gets one after it has run this long (seconds), so that its
# output can be followed live.
LIVE_AFTER = 0.05
# A unit's STARTED goes with its first frame; one that has run this long (seconds) without
# sending anything sends it alone.
START_NOTICE = 0.02
TICK = 0.025  # seconds between two looks of the helper thread at the running unit
_STARTED = proto.encode(Msg.STARTED)


def _end_group() -> None:
    os.killpg(os.getpgrp(), _signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# Interrupts. The parent cancels with SIGINT to the group. While the task's code runs, SIGINT
# must raise KeyboardInterrupt in it. While the worker writes a frame, it must not: a frame cut in
# half would corrupt the channel. So SIGINT raises only while `allowed`; otherwise it is kept
# pending and raised when task code is about to run again.
# ---------------------------------------------------------------------------------------------


class _Interrupts:
    allowed = False
    pending = False


def _on_sigint(signum: int, frame: object) -> None:
    if _Interrupts.allowed:
        raise KeyboardInterrupt
    _Interrupts.pending = True


def _interruptible(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call fn where a cancel may interrupt it (task code, pickling, waiting for input)."""
    _Interrupts.allowed = True
    try:
        if _Interrupts.pending:
            _Interrupts.pending = False
            raise KeyboardInterrupt
        return fn(*args, **kwargs)
    finally:
        _Interrupts.allowed = False


def _next_value(gen: Iterator[Any]) -> Any:
    """The generator's next value; a pending cancel is thrown into it at its `yield`."""
    _Interrupts.allowed = True
    try:
        if _Interrupts.pending and hasattr(gen, "throw"):
            _Interrupts.pending = False
            return gen.throw(KeyboardInterrupt())
        if _Interrupts.pending:
            _Interrupts.pending = False
            raise KeyboardInterrupt
        return next(gen)
    finally:
        _Interrupts.allowed = False


# ---------------------------------------------------------------------------------------------
# What a task sees.
# ---------------------------------------------------------------------------------------------


class Context:
    """The `ctx` argument: the unit's task name, project root, iteration index and a logger."""

    __slots__ = ("_log", "iter", "name", "root")

    def __init__(self, name: str, root: Path, iteration: tuple[int, ...]) -> None:
        self.name = name
        self.root = root
        self.iter = iteration
        self._log: logging.Logger | None = None

    @property
    def log(self) -> logging.Logger:
        """A logger writing to the unit's log (stderr)."""
        if self._log is None:
            self._log = _task_logger(self.name)
        return self._log

    def __repr__(self) -> str:
        return f"Context(name={self.name!r}, root={self.root!r}, iter={self.iter!r})"


def _task_logger(name: str) -> logging.Logger:
    import logging

    logger = logging.getLogger(f"watchrun.task.{name}")
    if not logger.handlers:
        handler = logging.StreamHandler()  # sys.stderr: fd 2 is the unit's log while it runs
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def _parameters(fn: Callable[..., Any]) -> tuple[str, ...]:
    """The names fn accepts as keywords (what decides whether it gets `ctx` or `start`)."""
    target = fn
    while hasattr(target, "__wrapped__"):
        target = target.__wrapped__
    code = getattr(target, "__code__", None)
    if code is not None:
        return tuple(code.co_varnames[: code.co_argcount + code.co_kwonlyargcount])
    import inspect

    return tuple(inspect.signature(fn).parameters)


def format_failure(exc: BaseException) -> str:
    """The full traceback, from the task's first frame on (the worker's own frames dropped)."""
    import traceback

    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class _Failure(Exception):
    """A failure the worker explains itself (no task traceback to show)."""


def _pickle(value: object, objects: str | None, what: str, *args: object
            ) -> bytes | bigpickle.StoredPickle:
    """The value pickled; `what` (a format string, filled from `args` only for the message of
    a failure, not for every value) names it. With an object folder, a big pickle is written
    into a file there: its (path, digest) instead of its bytes."""
    if objects is None:
        sink = None
        pickling: Callable[..., Any] = dumps
        call: tuple[object, ...] = (value, PICKLE_PROTOCOL)
    else:
        sink = bigpickle.PickleSink(objects)
        pickling = proto.Pickler(sink, PICKLE_PROTOCOL).dump
        call = (value,)
    try:
        data = _interruptible(pickling, *call)
        return data if sink is None else sink.finish()
    except KeyboardInterrupt:
        if sink is not None:
            sink.discard()
        raise
    except bigpickle.SinkError as exc:  # a full disk, not the value: said as the store says it
        if sink is not None:
            sink.discard()
        raise _Failure(str(exc)) from None
    except Exception as exc:
        if sink is not None:
            sink.discard()
        raise _Failure(f"{what.format(*args)} is not picklable: {_describe(exc)}") from None


# ---------------------------------------------------------------------------------------------
# Project-local modules. A warm worker keeps what tasks import in sys.modules; a helper under
# the project root that changed since must be imported afresh, or the unit runs stale code.
# ---------------------------------------------------------------------------------------------


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
    shows as a change the next time (the other order could hide it). Plain os calls: open()
    costs 3 times as much (a buffered reader, ioctl and lseek calls)."""
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


def _newest_module() -> tuple[str, object] | None:
    """The last entry of sys.modules: what record_new counts from."""
    name = next(reversed(sys.modules), None)
    return None if name is None else (name, sys.modules[name])


# ---------------------------------------------------------------------------------------------
# The unit's log. Creating a file costs 0.05-1 ms of kernel time (the inode allocation; on a
# filesystem where many files were deleted lately, more), several times a trivial unit's whole
# cost, and most units of a large generator scope print nothing. So a missing log is not created
# up front: the output goes to an unnamed file (O_TMPFILE) in the log's directory, which gets
# the log's name (linkat) when it holds something at the end of the unit, or, so that it can be
# followed live, once the unit has run for LIVE_AFTER seconds. An unnamed file a unit left
# empty serves the next one. An existing log is truncated (or appended to) and used as it is.
# ---------------------------------------------------------------------------------------------


class _Unnamed:
    """An unnamed file the output of a unit goes to, until it is given the log's name."""

    __slots__ = ("directory", "fd", "named", "path", "since")

    def __init__(self, fd: int, directory: str) -> None:
        self.fd = fd
        self.directory = directory
        self.path = ""  # the log it stands for: the running unit's, or the last one's
        self.since = 0.0  # time.perf_counter() when that unit started
        self.named = False


# errno values for "this filesystem (or kernel) has no unnamed files"
_NO_UNNAMED_FILES = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL}


class UnitLog:
    """Points fds 1 and 2 at a unit's log while it runs (see above)."""

    def __init__(self, stderr: int) -> None:
        self._stderr = stderr  # the worker's own, for what it has to say about logs
        self._spare: _Unnamed | None = None  # unnamed and empty: for the next unit
        self._current: _Unnamed | None = None  # the running unit writes to it
        self._lock = _thread.allocate_lock()  # the unit's end against tick() in the helper
        self._unnamed_files = _O_TMPFILE != 0  # False once the system said it has none
        self._proc_fds: int | None = None  # /proc/self/fd: to link an open file by its fd

    def open(self, path: str, fresh: bool, now: float) -> None:
        """Point fds 1 and 2 at the log (fresh: empty); `now`: time.perf_counter() at the
        unit's start. OSError: it cannot be written."""
        flags = _LOG_FLAGS | os.O_TRUNC if fresh else _LOG_FLAGS
        try:
            try:
                fd = os.open(path, flags)
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                os.unlink(path)  # a symlink in the log's place: the log starts anew
                raise FileNotFoundError(errno.ENOENT, "replaced a symlink", path) from None
        except FileNotFoundError:
            unnamed = self._unnamed(path) if self._unnamed_files else None
            if unnamed is None:
                fd = _create(path, flags)
            else:
                _point_std_at(unnamed.fd)
                unnamed.path = path
                unnamed.since = now
                self._current = unnamed  # from now on tick() may name it
                return
        _point_std_at(fd)
        os.close(fd)

    def tick(self, now: float) -> None:
        """From the helper thread: a unit that has run LIVE_AFTER seconds gets its log's name,
        output or not, so that it can be followed live."""
        if self._current is None:
            return
        with self._lock:
            unnamed = self._current
            if unnamed is not None and not unnamed.named and now - unnamed.since >= LIVE_AFTER:
                self._name(unnamed)

    def close(self) -> None:
        """After the unit, fds 1 and 2 restored: its unnamed log gets its name if the unit
        wrote to it; an empty one is kept for the next unit."""
        unnamed = self._current
        if unnamed is None:
            return
        with self._lock:
            self._current = None
            try:
                if unnamed.named:
                    os.close(unnamed.fd)
                elif os.fstat(unnamed.fd).st_size > 0:
                    self._name(unnamed)
                else:
                    self._spare = unnamed
            except OSError:  # the task closed our descriptor: start afresh next time
                pass

    def _unnamed(self, path: str) -> _Unnamed | None:
        """An unnamed file in the directory of the log `path`: the spare, or a new one."""
        spare = self._spare
        self._spare = None
        if spare is not None:
            written = os.fstat(spare.fd).st_size > 0
            # in the same directory (os.path.dirname's answer, without its cost per unit)
            here = path.startswith(spare.directory) and path.rfind("/") == len(spare.directory)
            if here and not written:
                return spare
            if written:  # a subprocess of the last unit wrote after the unit ended: its output
                self._name(spare)
            else:
                os.close(spare.fd)
        directory = os.path.dirname(path)
        try:
            if self._proc_fds is None:
                self._proc_fds = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
            flags = _O_TMPFILE | os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
            try:
                fd = os.open(directory, flags, 0o644)
            except FileNotFoundError:
                os.makedirs(directory, exist_ok=True)
                fd = os.open(directory, flags, 0o644)
        except OSError as exc:
            if self._proc_fds is not None and exc.errno not in _NO_UNNAMED_FILES:
                raise  # e.g. the directory is a file, or not writable: the unit fails
            self._unnamed_files = False  # create logs as they are needed from now on
            return None
        return _Unnamed(fd, directory)

    def _name(self, unnamed: _Unnamed) -> None:
        """Give the unnamed file its log's name. From then on it is the log: not reused."""
        unnamed.named = True
        source = str(unnamed.fd)
        try:
            try:
                os.link(source, unnamed.path, src_dir_fd=self._proc_fds)
            except FileExistsError:  # a log appeared meanwhile: replace it
                temporary = f"{unnamed.path}.{os.getpid()}.tmp"
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
                os.link(source, temporary, src_dir_fd=self._proc_fds)
                os.replace(temporary, unnamed.path)
        except OSError as exc:  # the output is lost, not the unit
            with contextlib.suppress(OSError):
                os.write(self._stderr, f"watchrun worker: {unnamed.path}: {exc}\n".encode())
        if unnamed is not self._current:
            os.close(unnamed.fd)


def _create(path: str, flags: int) -> int:
    try:
        return os.open(path, flags | os.O_CREAT, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return os.open(path, flags | os.O_CREAT, 0o644)


def _point_std_at(fd: int) -> None:
    os.dup2(fd, 1)
    os.dup2(fd, 2)


# ---------------------------------------------------------------------------------------------
# What is done while a unit runs, by a helper thread: name its log once it has run LIVE_AFTER,
# send its STARTED once it has run START_NOTICE without sending anything.
# ---------------------------------------------------------------------------------------------


class _Ticker:
    """A helper thread that calls `tick(now)` every TICK seconds while units run. After a
    second without units it parks until the next one, so an idle worker sleeps."""

    def __init__(self, tick: Callable[[float], None]) -> None:
        self._tick = tick
        self._busy = False  # a unit runs
        self._started = False  # the thread runs (it is started by the first unit)
        self._parked = False  # it waits on _unpark
        self._lock = _thread.allocate_lock()  # parking against the next unit's start
        self._unpark = _thread.allocate_lock()
        self._unpark.acquire()

    def unit_started(self) -> None:
        with self._lock:
            self._busy = True
            parked = self._parked
            self._parked = False
        if parked:
            self._unpark.release()
        elif not self._started:
            self._started = True
            _start_thread(self._run)

    def unit_ended(self) -> None:
        self._busy = False

    def _run(self) -> None:
        idle = 0
        while True:
            time.sleep(TICK)
            if self._busy:
                idle = 0
                self._tick(time.perf_counter())
                continue
            idle += 1
            if idle * TICK < 1.0:
                continue
            with self._lock:
                parked = self._parked = not self._busy
            if parked:
                self._unpark.acquire()  # released by unit_started
            idle = 0


# ---------------------------------------------------------------------------------------------
# A clean start for every unit (SPEC section 5): what a unit may change in its process and the
# next unit must not see. Taken when the worker is ready; put back after each unit, only where
# it differs (a comparison costs less than a system call).
# ---------------------------------------------------------------------------------------------


class Baseline:
    """The process state every unit starts from: environment, umask, recursion limit, signal
    handlers, sys.path, warning filters. (The working directory is set before each unit.)"""

    def __init__(self) -> None:
        self._environ: dict[Any, Any] = dict(_environ_data())
        self._umask = os.umask(0o022)
        os.umask(self._umask)
        self._recursion = sys.getrecursionlimit()
        self._path = list(sys.path)
        self._handlers = {
            sig: handler
            for sig in _signal.valid_signals()
            if (handler := _signal.getsignal(sig)) is not None
        }
        self._warnings = _warning_filters()

    def restore(self) -> None:
        data = _environ_data()
        if data != self._environ:
            self._restore_environ()
        os.umask(self._umask)
        if sys.getrecursionlimit() != self._recursion:
            sys.setrecursionlimit(self._recursion)
        if sys.path != self._path:
            sys.path[:] = self._path
        for sig, handler in self._handlers.items():
            if _signal.getsignal(sig) is not handler:
                with contextlib.suppress(OSError, ValueError):
                    _signal.signal(sig, handler)
        filters = _warning_filters()
        if filters is not None and filters != self._warnings:
            import warnings

            warnings.filters[:] = self._warnings or []  # type: ignore[index]
            warnings._filters_mutated()  # type: ignore[attr-defined]

    def _restore_environ(self) -> None:
        # through os.environ, so that the C environment (what subprocesses get) follows
        wanted = {os.fsdecode(k): os.fsdecode(v) for k, v in self._environ.items()}
        for name in [name for name in os.environ if name not in wanted]:
            del os.environ[name]
        for name, value in wanted.items():
            if os.environ.get(name) != value:
                os.environ[name] = value


def _environ_data() -> dict[Any, Any]:
    """os.environ's own dict (encoded keys and values): compared without decoding each one."""
    data: dict[Any, Any] = getattr(os.environ, "_data", None) or dict(os.environ)
    return data


def _warning_filters() -> list[Any] | None:
    warnings = sys.modules.get("warnings")
    return None if warnings is None else list(warnings.filters)


# ---------------------------------------------------------------------------------------------
# The worker.
# ---------------------------------------------------------------------------------------------


class Worker:
    def __init__(self, ctl_fd: int) -> None:
        self._fd = ctl_fd
        self._reader = proto.FrameReader(ctl_fd)
        self._codes: dict[str, tuple[FileSnapshot, CodeType]] = {}  # compiled task modules
        self._modules = LocalModules()
        # where fds 1 and 2 point between units, to restore them after each one
        self._saved_fds = (os.dup(1), os.dup(2))
        self._streams = (sys.stdout, sys.stderr)
        self._log = UnitLog(self._saved_fds[1])
        # Frames are written by this thread, and a unit's lone STARTED by the ticker's.
        self._write_lock = _thread.allocate_lock()
        self._unannounced = False  # the running unit's STARTED is not sent yet
        self._since = 0.0  # time.perf_counter() when the running unit started
        self._ticker = _Ticker(self._tick)
        self._acks = 0  # PUSHED answers not sent yet
        self._acks_since = 0.0  # time.monotonic() of the first of them
        self._push_started = 0.0  # time.monotonic() when the push being run arrived
        self._baseline = Baseline()

    def serve(self) -> None:
        self._send(Msg.READY, os.getpid())
        while True:
            try:
                kind, fields = self._reader.read()
            except EOFError:
                return
            if kind is Msg.JOB:
                self.run_job(proto.JobSpec(*fields))  # type: ignore[arg-type]
            # PUSH / END left over from a job that already ended are dropped

    def _send(self, kind: Msg, *fields: object) -> None:
        data = proto.encode(kind, *fields)
        if self._acks:  # in order
            data = self._acks * _PUSHED + data
            self._acks = 0
        self._write(data)

    def _write(self, data: bytes) -> None:
        allowed = _Interrupts.allowed
        _Interrupts.allowed = False
        try:
            self._put(data)
        finally:
            _Interrupts.allowed = allowed

    def _put(self, data: bytes) -> None:
        """Write frames, after the running unit's STARTED if it is not sent yet."""
        with self._write_lock:
            if self._unannounced:
                self._unannounced = False
                data = _STARTED + data
            if data:
                proto.write_all(self._fd, data)

    def _tick(self, now: float) -> None:
        """The ticker's work while a unit runs (in its thread: no _Interrupts here)."""
        self._log.tick(now)
        if self._unannounced and now - self._since >= START_NOTICE:
            self._put(b"")

    def run_job(self, spec: proto.JobSpec) -> None:
        started = time.perf_counter()
        # STARTED goes with the unit's first frame (DONE, for most units: one write and one
        # wake-up of the executor instead of two), or alone from the ticker if the unit runs
        # for a while without sending anything
        self._since = started
        self._unannounced = True
        self._ticker.unit_started()
        before = _newest_module()
        kind: Msg
        payload: object
        try:
            self._redirect(spec.log_path, spec.fresh_log, started)
        except OSError as exc:
            kind, payload = Msg.FAILED, f"cannot open the log {spec.log_path}: {_describe(exc)}"
        else:
            try:
                kind, payload = self._execute(spec)
            finally:
                self._restore()
                self._modules.record_new(before, spec.root)
                self._modules.forget()
        # nothing the unit started outlives it, even what left its process group (we are a
        # subreaper: orphans below us are ours to end)
        reaper.end_descendants()
        self._baseline.restore()
        self._ticker.unit_ended()
        self._send(kind, payload, time.perf_counter() - started)

    def _execute(self, spec: proto.JobSpec) -> tuple[Msg, object]:
        try:
            self._prepare(spec.root)
            namespace = self._namespace(spec)
            result = _MODES[spec.mode](self, spec, namespace)
            missing = taskmodules.missing_output(spec.label, spec.root, spec.chain)
            if missing is not None:
                if isinstance(result, tuple):  # its pickle's file will not be adopted
                    bigpickle.discard_file(result[0])
                raise _Failure(missing)
            return Msg.DONE, result
        except (_Failure, taskmodules.TaskModuleError) as failure:
            return Msg.FAILED, str(failure)
        except KeyboardInterrupt as exc:
            return Msg.CANCELLED, format_failure(exc)
        except BaseException as exc:  # SystemExit too: a task's sys.exit() fails the unit only
            return Msg.FAILED, format_failure(exc)

    # -- before and after a unit --------------------------------------------------------------

    def _prepare(self, root: str) -> None:
        if os.getcwd() != root:  # cheaper than a chdir, which resolves the path each time
            os.chdir(root)
        if not sys.path or sys.path[0] != root:
            if root in sys.path:
                sys.path.remove(root)
            sys.path.insert(0, root)
        self._modules.drop_stale()

    def _redirect(self, log_path: str, fresh: bool, now: float) -> None:
        _flush_std()
        self._log.open(log_path, fresh, now)

    def _restore(self) -> None:
        _flush_std()
        sys.stdout, sys.stderr = self._streams
        os.dup2(self._saved_fds[0], 1)
        os.dup2(self._saved_fds[1], 2)
        self._log.close()
        # a task may have installed its own handlers; the next unit starts from ours
        if _signal.getsignal(_signal.SIGINT) is not _on_sigint:
            _signal.signal(_signal.SIGINT, _on_sigint)
        if _signal.getsignal(_signal.SIGTERM) != _signal.SIG_DFL:
            _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)

    # -- the namespace --------------------------------------------------------------------------

    def _namespace(self, spec: proto.JobSpec) -> dict[str, Any]:
        namespace = taskmodules.namespace_for(spec.task, spec.root, spec.chain)
        for file, package in spec.chain:
            namespace["__file__"] = file
            namespace["__package__"] = package
            _interruptible(exec, self._code(file, spec.sources), namespace)
        return namespace

    def _code(self, file: str, shipped: dict[str, bytes] | None = None) -> CodeType:
        source = shipped.get(file) if shipped else None
        if source is not None:  # sent with the job (Ray): the file here may differ or not exist
            known = _SHIPPED_CODE.get(file)
            if known is None or known[0] != source:
                known = (source, compile(source, file, "exec", dont_inherit=True))
                _SHIPPED_CODE[file] = known
            return known[1]
        cached = self._codes.get(file)
        if cached is not None and not cached[0].changed():
            return cached[1]
        source, st = _read_file(file)
        snapshot = FileSnapshot(file, source, st)
        code = compile(source, file, "exec", dont_inherit=True)
        self._codes[file] = (snapshot, code)
        return code

    # -- the modes ------------------------------------------------------------------------------

    def _arguments(
        self, spec: proto.JobSpec, fn: Callable[..., Any], pickled: dict[str, bytes]
    ) -> dict[str, Any]:
        kwargs = {name: _interruptible(taskmodules.load_argument, name, data, loads)
                  for name, data in pickled.items()}
        if "outputs" not in kwargs and "outputs" in _parameters(fn):
            kwargs["outputs"] = taskmodules.declared_outputs(spec.root, spec.chain)
        if "ctx" not in kwargs and "ctx" in _parameters(fn):
            from pathlib import Path

            kwargs["ctx"] = Context(spec.ctx_name, Path(spec.ctx_root), spec.ctx_iter)
        return kwargs

    def _call(self, spec: proto.JobSpec, namespace: dict[str, Any]
              ) -> bytes | bigpickle.StoredPickle:
        run = _entry(spec, namespace, "run")
        value = _interruptible(run, **self._arguments(spec, run, spec.kwargs))
        return _pickle(value, spec.objects, "output of task {!r}", spec.label)

    def _generate(self, spec: proto.JobSpec, namespace: dict[str, Any]) -> None:
        run = _entry(spec, namespace, "run")
        kwargs = self._arguments(spec, run, spec.kwargs)
        start = spec.start or 0
        if "start" in _parameters(run):
            kwargs["start"] = start
        self._stream(spec, _interruptible(run, **kwargs), start)

    def _stream(self, spec: proto.JobSpec, gen: Any, first: int) -> int:
        """Send each value the generator yields as YIELDED the moment it is produced (None: a
        function without `yield` that yields nothing). Returns the next iteration index."""
        if gen is None:
            return first
        if not hasattr(gen, "__next__"):  # a list would be a silent surprise: say so
            raise _Failure(
                f"task {spec.label!r} must yield its values; it returned "
                f"a {type(gen).__name__} instead of a generator"
            )
        index = first
        while True:
            try:
                value = _next_value(gen)
            except StopIteration:
                return index
            what = "value yielded by task {!r} at iteration {}"
            self._send(Msg.YIELDED, _pickle(value, spec.objects, what, spec.label, index))
            index += 1

    def _collect(self, spec: proto.JobSpec, namespace: dict[str, Any]
                 ) -> bytes | bigpickle.StoredPickle:
        run = _entry(spec, namespace, "run")
        for _ in self._pushes(spec, run):
            pass
        gather = _entry(spec, namespace, "gather")
        value = _interruptible(gather, **self._arguments(spec, gather, spec.gather_kwargs))
        return _pickle(value, spec.objects, "output of task {!r} (gather)", spec.label)

    def _inner_generate(self, spec: proto.JobSpec, namespace: dict[str, Any]) -> None:
        run = _entry(spec, namespace, "run")
        index = 0
        for result in self._pushes(spec, run):
            index = self._stream(spec, result, index)
            self._ack()
        finish = namespace.get("finish")
        if callable(finish):
            kwargs = self._arguments(spec, finish, spec.gather_kwargs)
            self._stream(spec, _interruptible(finish, **kwargs), index)

    def _pushes(self, spec: proto.JobSpec, run: Callable[..., Any]) -> Iterator[Any]:
        """Call run() once per PUSH until END; yield what each call returned. COLLECT answers
        PUSHED here; INNER_GENERATE after streaming the call's yields."""
        fixed = self._arguments(spec, run, spec.kwargs)
        while True:
            kind, fields = _interruptible(self._reader.read)
            if kind is Msg.END:
                return
            if kind is not Msg.PUSH:
                continue
            pushed: dict[str, bytes] = fields[0]
            self._push_started = time.monotonic()
            kwargs = {**fixed, **{n: _interruptible(taskmodules.load_argument, n, d, loads)
                                  for n, d in pushed.items()}}
            result = _interruptible(run, **kwargs)
            yield result
            if spec.mode == proto.COLLECT:
                self._ack()

    def _ack(self) -> None:
        """Answer a push with PUSHED. While more pushes are already here and take little
        time, the answers wait (about ACK_DELAY at most) and go together, in one write: one
        wake-up of the executor instead of one per push."""
        now = time.monotonic()
        if not self._acks:
            self._acks_since = now
        self._acks += 1
        if (
            not self._reader.has_message()
            or now - self._acks_since >= ACK_DELAY
            or now - self._push_started >= ACK_DELAY  # slow pushes: the next one would be too
        ):
            acks = self._acks
            self._acks = 0
            self._write(acks * _PUSHED)


# file -> (source, code) of the task modules last shipped with a job (JobSpec.sources)
_SHIPPED_CODE: dict[str, tuple[bytes, CodeType]] = {}


def _entry(spec: proto.JobSpec, namespace: dict[str, Any], name: str) -> Callable[..., Any]:
    fn = namespace.get(name)
    if not callable(fn):
        where = spec.chain[-1][0] if spec.chain else "its module"
        raise _Failure(f"task {spec.task!r} defines no {name}() (in {where} or a parent)")
    return fn  # type: ignore[no-any-return]


_MODES: dict[str, Callable[[Worker, proto.JobSpec, dict[str, Any]], object]] = {
    proto.CALL: Worker._call,
    proto.GENERATE: Worker._generate,
    proto.COLLECT: Worker._collect,
    proto.INNER_GENERATE: Worker._inner_generate,
}


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # closed or broken by the task: nothing to save
            pass


def _start_thread(fn: Callable[..., object], *args: object) -> None:
    """Start a helper thread that receives no signals. A signal sent to the process goes to any
    thread that does not block it, and Python runs the handler in the main thread only when that
    thread runs Python code again: a SIGINT that a helper thread took would not interrupt the
    main thread waiting in a read (a collector waiting for input)."""
    asynchronous = _signal.valid_signals() - _FAULTS
    mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, asynchronous)  # inherited by the thread
    try:
        _thread.start_new_thread(fn, args)
    finally:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)


# signals the kernel sends to the thread that caused them: never to be blocked
_FAULTS = {
    _signal.SIGSEGV,
    _signal.SIGBUS,
    _signal.SIGFPE,
    _signal.SIGILL,
    _signal.SIGTRAP,
    _signal.SIGSYS,
    _signal.SIGABRT,
}


# ---------------------------------------------------------------------------------------------
# Dying with the parent.
# ---------------------------------------------------------------------------------------------


def _watch_parent(life_fd: int) -> None:
    """Block on the life pipe; EOF means the parent is gone: end the whole group."""
    try:
        while os.read(life_fd, 512):
            pass
    except OSError:  # a task closed our descriptor: this guard is lost, the signal remains
        return
    _end_group()


class _Parent:
    pid = 0


def _on_parent_death(signum: int, frame: object) -> None:
    # the kernel also sends it when the parent's *thread* that spawned us ends: check
    if os.getppid() != _Parent.pid:
        _end_group()


def _die_with_parent(parent_pid: int, life_fd: int) -> None:
    """Two guards: the life pipe (a thread, works while the GIL can be had) and the kernel's
    parent-death signal (Linux). The signal is a catchable one whose handler kills the group:
    with SIGKILL the worker would die at once, before its thread could end the task's
    subprocesses (the kernel sends it right after closing the parent's descriptors)."""
    _Parent.pid = parent_pid
    _start_thread(_watch_parent, life_fd)
    if sys.platform.startswith("linux"):
        _signal.signal(_PARENT_DEATH_SIGNAL, _on_parent_death)
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(_PARENT_DEATH_SIGNAL), 0, 0, 0)
        except (OSError, AttributeError):  # no libc to ask: the life pipe alone
            pass
    if os.getppid() != parent_pid:  # the parent died before we could ask to be told
        _end_group()


def _batch_scheduling() -> None:
    """Ask Linux to treat this process (and the task's subprocesses) as batch work: same CPU
    share, but waking up does not preempt the running process. Without it, every frame the
    parent sends switches the CPU to the worker at once, and the parent, which feeds all the
    workers, waits behind one of them (on 2 cores: half the throughput)."""
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is not None:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, policy, os.sched_param(0))


def main(argv: list[str] | None = None) -> None:
    if argv is None:  # `python -c "...; main()"`: argv[0] is "-c"
        argv = sys.argv
    ctl_fd, life_fd, parent_pid = (int(arg) for arg in argv[1:4])
    _serve(ctl_fd, life_fd, parent_pid)


def main_forked(ctl_fd: int, life_fd: int, stderr_fd: int, parent_pid: int) -> None:
    """A worker forked from the warm template (template.py), with its own descendants: the
    control socket, the life pipe from watchrun and its stderr pipe. Returns when the channel
    closes; the caller then ends the process with os._exit (the template's atexit handlers and
    buffers are not ours to run)."""
    os.dup2(stderr_fd, 2)
    os.close(stderr_fd)
    _reseed()
    try:
        _serve(ctl_fd, life_fd, parent_pid)
    finally:
        _flush_std()


def _reseed() -> None:
    """A fork copies the state of every random generator: numpy's global one (the stdlib's
    `random` reseeds itself after a fork) would give every worker the same numbers."""
    numpy_random = sys.modules.get("numpy.random")
    seed = getattr(numpy_random, "seed", None)
    if callable(seed):
        with contextlib.suppress(Exception):
            seed()


def _serve(ctl_fd: int, life_fd: int, parent_pid: int) -> None:
    # A signal mask survives exec: spawned by a thread that blocks SIGINT (a UI's thread, a
    # test runner's), we would never see the cancel. Start from an empty mask.
    _signal.pthread_sigmask(_signal.SIG_SETMASK, ())
    _signal.signal(_signal.SIGINT, _on_sigint)
    # the task's subprocesses must not hold our channel or keep the parent's pipe open
    os.set_inheritable(ctl_fd, False)
    os.set_inheritable(life_fd, False)
    _die_with_parent(parent_pid, life_fd)
    # orphans below us (a daemon's double fork, a child of a setsid() process whose parent
    # exited) come to us instead of init, so that the unit's end can end them
    reaper.become_subreaper()
    _batch_scheduling()
    for stream in (sys.stdout, sys.stderr):
        # prints reach the log when they happen, in order with the subprocesses' output
        stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    Worker(ctl_fd).serve()


if __name__ == "__main__":
    main(sys.argv)
