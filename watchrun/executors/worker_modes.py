"""Running one job in a worker: its task's namespace, then its mode.

CALL calls run() once; GENERATE streams what run() yields; COLLECT calls run() once per push,
then gather(); INNER_GENERATE streams the yields of run() for each push, then those of finish().
Each entry point gets exactly the arguments it asks for, `ctx`, `outputs` and `start` included.
"""

from __future__ import annotations

import os
import time

from watchrun.executors import bigpickle, taskmodules
from watchrun.executors import protocol as proto
from watchrun.executors.protocol import PICKLE_PROTOCOL, Msg, dumps, loads
from watchrun.executors.worker_channel import WorkerChannel
from watchrun.executors.worker_interrupts import Interrupts, interruptible, next_value
from watchrun.executors.worker_modules import TaskCode

TYPE_CHECKING = False  # the worker starts without `typing` (see worker.py)
if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Iterator
    from pathlib import Path
    from typing import Any

# the worker's own frames, dropped from the top of a task's traceback
_OWN_FILES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "")


class UnitFailure(Exception):
    """A failure the worker explains itself (no task traceback to show)."""


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


class JobModes:
    """Runs a job's task in the mode the job says; talks to the executor through `channel`."""

    def __init__(self, channel: WorkerChannel, code: TaskCode) -> None:
        self._channel = channel
        self._code = code

    def run(self, spec: proto.JobSpec) -> bytes | bigpickle.StoredPickle | None:
        """The unit's result (CALL, COLLECT: the pickled output; the others: None)."""
        namespace = taskmodules.namespace_for(spec.task, spec.root, spec.chain)
        for file, package in spec.chain:
            namespace["__file__"] = file
            namespace["__package__"] = package
            interruptible(exec, self._code.get(file, spec.sources), namespace)
        if spec.mode == proto.CALL:
            return self._call(spec, namespace)
        if spec.mode == proto.GENERATE:
            self._generate(spec, namespace)
            return None
        if spec.mode == proto.COLLECT:
            return self._collect(spec, namespace)
        if spec.mode == proto.INNER_GENERATE:
            self._inner_generate(spec, namespace)
            return None
        raise UnitFailure(f"unknown mode {spec.mode!r} for task {spec.label!r}")

    def _arguments(
        self, spec: proto.JobSpec, fn: Callable[..., Any], pickled: dict[str, bytes]
    ) -> dict[str, Any]:
        kwargs = {name: interruptible(taskmodules.load_argument, name, data, loads)
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
        value = interruptible(run, **self._arguments(spec, run, spec.kwargs))
        return pickle_value(value, spec.objects, "output of task {!r}", spec.label)

    def _generate(self, spec: proto.JobSpec, namespace: dict[str, Any]) -> None:
        run = _entry(spec, namespace, "run")
        kwargs = self._arguments(spec, run, spec.kwargs)
        start = spec.start or 0
        if "start" in _parameters(run):
            kwargs["start"] = start
        self._stream(spec, interruptible(run, **kwargs), start)

    def _stream(self, spec: proto.JobSpec, gen: Any, first: int) -> int:
        """Send each value the generator yields as YIELDED the moment it is produced (None: a
        function without `yield` that yields nothing). Returns the next iteration index."""
        if gen is None:
            return first
        if not hasattr(gen, "__next__"):  # a list would be a silent surprise: say so
            raise UnitFailure(
                f"task {spec.label!r} must yield its values; it returned "
                f"a {type(gen).__name__} instead of a generator"
            )
        index = first
        while True:
            try:
                value = next_value(gen)
            except StopIteration:
                return index
            what = "value yielded by task {!r} at iteration {}"
            self._channel.send(
                Msg.YIELDED, pickle_value(value, spec.objects, what, spec.label, index)
            )
            index += 1
            self._wait_for_credit()

    def _wait_for_credit(self) -> None:
        """The bounded read-ahead: past its credit, the generator waits for the executor to
        read its yields. A cancel meanwhile is thrown into it at its `yield`, as any other."""
        try:
            interruptible(self._channel.yielded)
        except KeyboardInterrupt:
            Interrupts.pending = True

    def _collect(self, spec: proto.JobSpec, namespace: dict[str, Any]
                 ) -> bytes | bigpickle.StoredPickle:
        run = _entry(spec, namespace, "run")
        for _ in self._pushes(spec, run):
            pass
        gather = _entry(spec, namespace, "gather")
        value = interruptible(gather, **self._arguments(spec, gather, spec.gather_kwargs))
        return pickle_value(value, spec.objects, "output of task {!r} (gather)", spec.label)

    def _inner_generate(self, spec: proto.JobSpec, namespace: dict[str, Any]) -> None:
        run = _entry(spec, namespace, "run")
        index = 0
        for result in self._pushes(spec, run):
            index = self._stream(spec, result, index)
            self._channel.ack()
        finish = namespace.get("finish")
        if callable(finish):
            kwargs = self._arguments(spec, finish, spec.gather_kwargs)
            self._stream(spec, interruptible(finish, **kwargs), index)

    def _pushes(self, spec: proto.JobSpec, run: Callable[..., Any]) -> Iterator[Any]:
        """Call run() once per PUSH until END; yield what each call returned. COLLECT answers
        PUSHED here; INNER_GENERATE after streaming the call's yields."""
        fixed = self._arguments(spec, run, spec.kwargs)
        channel = self._channel
        while True:
            kind, fields = interruptible(channel.reader.read)
            if kind is Msg.END:
                return
            if kind is not Msg.PUSH:
                continue
            pushed: dict[str, bytes] = fields[0]
            channel.push_started = time.monotonic()
            kwargs = {**fixed, **{n: interruptible(taskmodules.load_argument, n, d, loads)
                                  for n, d in pushed.items()}}
            result = interruptible(run, **kwargs)
            yield result
            if spec.mode == proto.COLLECT:
                channel.ack()


def _entry(spec: proto.JobSpec, namespace: dict[str, Any], name: str) -> Callable[..., Any]:
    fn = namespace.get(name)
    if not callable(fn):
        where = spec.chain[-1][0] if spec.chain else "its module"
        raise UnitFailure(f"task {spec.task!r} defines no {name}() (in {where} or a parent)")
    return fn  # type: ignore[no-any-return]


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


def format_failure(exc: BaseException) -> str:
    """The full traceback, from the task's first frame on (the worker's own frames dropped)."""
    import traceback

    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_OWN_FILES):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def pickle_value(value: object, objects: str | None, what: str, *args: object
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
        data = interruptible(pickling, *call)
        return data if sink is None else sink.finish()
    except KeyboardInterrupt:
        if sink is not None:
            sink.discard()
        raise
    except bigpickle.SinkError as exc:  # a full disk, not the value: said as the store says it
        if sink is not None:
            sink.discard()
        raise UnitFailure(str(exc)) from None
    except Exception as exc:
        if sink is not None:
            sink.discard()
        raise UnitFailure(f"{what.format(*args)} is not picklable: {describe(exc)}") from None
