"""The child side of the local executor: `python -m watchrun.executors.worker CTL LIFE PARENT`
(spawn.py starts it as `python -c "from watchrun.executors.worker import main; main()" ...`,
which skips the module runner's imports: runpy, importlib.util and what they import).

A worker is a warm process that runs units one after another. For each job it builds the task's
inherited namespace (every module of the chain executed into one dict, the root ancestor first),
calls the entry point with exactly the job's arguments (worker_modes.py), sends yields back as
they happen and ends with one DONE, FAILED or CANCELLED frame. The task's stdout and stderr (and
those of the subprocesses it starts) go to the unit's log file (unit_log.py).

CTL is the file descriptor of the control socket (frames, see protocol.py). LIFE is the read end
of a pipe whose write end only the parent holds: when it reads EOF the parent is gone, and the
worker ends its whole process group, the unit's subprocesses included (worker_guards.py).

A task's first unit waits for its worker to start, so the worker's modules import only what
every job needs; the rest (traceback, logging, pathlib, inspect) is imported when first used.
No asyncio, no typing at run time (tests/test_stats.py holds the list): hence `_signal`, the C
module under `signal`, which makes no enums, and `TYPE_CHECKING = False` instead of typing's.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]
import _thread
import contextlib
import os
import sys
import time

from watchrun.executors import protocol as proto
from watchrun.executors import reaper, taskmodules
from watchrun.executors.protocol import Msg
from watchrun.executors.unit_baseline import Baseline
from watchrun.executors.unit_log import UnitLog
from watchrun.executors.worker_channel import WorkerChannel
from watchrun.executors.worker_guards import (
    batch_scheduling,
    die_with_parent,
    start_thread,
)
from watchrun.executors.worker_interrupts import on_sigint
from watchrun.executors.worker_modes import (
    JobModes,
    UnitFailure,
    describe,
    format_failure,
)
from watchrun.executors.worker_modules import FileSnapshot as FileSnapshot
from watchrun.executors.worker_modules import LocalModules, TaskCode, newest_module
from watchrun.executors.worker_outputs import (
    OutputHash,
    declared_paths,
    hash_written_outputs,
    missing_output,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

# A unit's STARTED goes with its first frame; one that has run this long (seconds) without
# sending anything sends it alone.
START_NOTICE = 0.02
TICK = 0.025  # seconds between two looks of the helper thread at the running unit


class Worker:
    """The message loop: reads JOB frames and runs each unit, one after another."""

    def __init__(self, ctl_fd: int) -> None:
        self._channel = WorkerChannel(ctl_fd)
        self._modules = LocalModules()
        self._modes = JobModes(self._channel, TaskCode())
        # where fds 1 and 2 point between units, to restore them after each one
        self._saved_fds = (os.dup(1), os.dup(2))
        self._streams = (sys.stdout, sys.stderr)
        self._log = UnitLog(self._saved_fds[1])
        self._since = 0.0  # time.perf_counter() when the running unit started
        self._ticker = _Ticker(self._tick)
        self._baseline = Baseline()
        self._claims: tuple[OutputHash, ...] = ()  # the running unit's (worker_outputs.py)
        # the last job's label, whether it ended DONE, and its claims: what a job queued
        # behind it (its `follows`) is decided on
        self._last: tuple[str, bool, tuple[OutputHash, ...]] = ("", False, ())

    def serve(self) -> None:
        self._channel.send(Msg.READY, os.getpid())
        while True:
            try:
                kind, fields = self._channel.reader.read()
            except EOFError:
                return
            if kind is Msg.JOB:
                spec = proto.JobSpec(*fields)  # type: ignore[arg-type]
                if spec.follows is None or self._follows(spec.follows):
                    self.run_job(spec)
            # PUSH / END / CREDIT left over from a job that already ended are dropped

    def _follows(self, fields: tuple[object, ...]) -> bool:
        """A job queued behind the last one runs only if that one's outputs make it dirty
        (follow.py); the executor decides the same from the same DONE frame."""
        from watchrun.executors.follow import Follow, runs

        return runs(Follow(*fields), *self._last)  # type: ignore[arg-type]

    def _tick(self, now: float) -> None:
        """The ticker's work while a unit runs (in its thread: no interrupts here)."""
        self._log.tick(now)
        if self._channel.unannounced and now - self._since >= START_NOTICE:
            self._channel.put(b"")

    def run_job(self, spec: proto.JobSpec) -> None:
        started = time.perf_counter()
        # STARTED goes with the unit's first frame (DONE, for most units: one write and one
        # wake-up of the executor instead of two), or alone from the ticker if the unit runs
        # for a while without sending anything
        self._since = started
        self._channel.unannounced = True
        self._channel.limit_yields(spec.label, spec.credit)
        self._ticker.unit_started()
        before = newest_module()
        kind: Msg
        payload: object
        self._claims = ()
        try:
            self._redirect(spec.log_path, spec.fresh_log, started)
        except OSError as exc:
            kind, payload = Msg.FAILED, f"cannot open the log {spec.log_path}: {describe(exc)}"
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
        self._last = (spec.label, kind is Msg.DONE, self._claims)
        if kind is Msg.DONE:
            self._channel.send(kind, payload, time.perf_counter() - started, self._claims)
        else:
            self._channel.send(kind, payload, time.perf_counter() - started)

    def _hash_outputs(self, paths: tuple[str, ...]) -> tuple[OutputHash, ...]:
        """The DONE frame's claims about the outputs just written (worker_outputs.py). A
        failure to hash leaves the driver to do it; it never fails a unit that succeeded."""
        try:
            return hash_written_outputs(paths)
        except Exception:
            return ()

    def _execute(self, spec: proto.JobSpec) -> tuple[Msg, object]:
        try:
            self._prepare(spec.root)
            result = self._modes.run(spec)
            paths = declared_paths(spec.root, spec.chain, spec.outputs)
            missing = missing_output(spec.label, spec.root, spec.chain, paths,
                                     spec.outputs is not None)
            if missing is not None:
                if isinstance(result, tuple):  # its pickle's file will not be adopted
                    from watchrun.executors import bigpickle

                    bigpickle.discard_file(result[0])
                raise UnitFailure(missing)
            self._claims = self._hash_outputs(paths)
            return Msg.DONE, result
        except (UnitFailure, taskmodules.TaskModuleError) as failure:
            return Msg.FAILED, str(failure)
        except KeyboardInterrupt as exc:
            return Msg.CANCELLED, format_failure(exc)
        except BaseException as exc:  # SystemExit too: a task's sys.exit() fails the unit only
            return Msg.FAILED, format_failure(exc)

    def _prepare(self, root: str) -> None:
        if os.getcwd() != root:  # a chdir resolves the path again each time
            os.chdir(root)
        self._baseline.include_env(taskmodules.ROOT_ENV, root)
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
        if _signal.getsignal(_signal.SIGINT) is not on_sigint:
            _signal.signal(_signal.SIGINT, on_sigint)
        if _signal.getsignal(_signal.SIGTERM) != _signal.SIG_DFL:
            _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)


class _Ticker:
    """A helper thread that calls `tick(now)` every TICK seconds while units run: it names a
    unit's log once it has run unit_log.LIVE_AFTER, and sends its STARTED once it has run
    START_NOTICE without sending anything. After a second without units it parks until the
    next one, so an idle worker sleeps."""

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
            start_thread(self._run)

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


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # closed or broken by the task: nothing to save
            pass


def main(argv: list[str] | None = None) -> None:
    if argv is None:  # `python -c "...; main()"`: argv[0] is "-c"
        argv = sys.argv
    ctl_fd, life_fd, parent_pid = (int(arg) for arg in argv[1:4])
    _serve(ctl_fd, life_fd, parent_pid)


def main_forked(ctl_fd: int, life_fd: int, stderr_fd: int, parent_pid: int) -> None:
    """A worker forked from the warm template (template.py), with its own descriptors: the
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
    _signal.signal(_signal.SIGINT, on_sigint)
    # the task's subprocesses must not hold our channel or keep the parent's pipe open
    os.set_inheritable(ctl_fd, False)
    os.set_inheritable(life_fd, False)
    die_with_parent(parent_pid, life_fd)
    # orphans below us (a daemon's double fork, a child of a setsid() process whose parent
    # exited) come to us instead of init, so that the unit's end can end them
    reaper.become_subreaper()
    batch_scheduling()
    for stream in (sys.stdout, sys.stderr):
        # prints reach the log when they happen, in order with the subprocesses' output
        stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    Worker(ctl_fd).serve()


if __name__ == "__main__":
    main(sys.argv)
