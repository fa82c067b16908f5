"""The interface between the scheduler and whatever runs units (local processes, Ray).

The scheduler owns an asyncio loop; an executor reports back by calling `sink(event)` on that
loop. Values cross the boundary as pickled bytes: the scheduler never unpickles task outputs, it
only hashes and stores them.
"""

from __future__ import annotations

import enum
import logging
import math
import signal
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, Protocol

from watchrun.executors.follow import Follow
from watchrun.executors.protocol import PICKLE_PROTOCOL as PICKLE_PROTOCOL  # re-exported
from watchrun.executors.worker_outputs import OutputHash
from watchrun.project.model import Resources

# PICKLE_PROTOCOL: every executor pickles outputs and yields with it, so a value gives the same
# bytes (the same hash, for early cutoff) whichever executor produced it.


class Mode(enum.Enum):
    CALL = "call"  # run(**kwargs) once; its return value is the output
    GENERATE = "generate"  # run(**kwargs) is a generator: each yield streams back
    COLLECT = "collect"  # persistent: run(value, **kwargs) per push; gather(**kwargs) at the end
    INNER_GENERATE = "inner_generate"  # persistent: run(value, **kwargs) per push may yield;
    # finish(**kwargs) at the end may yield more


class UnitKey(NamedTuple):
    """A unit of work: a task, or a task at one iteration (a tuple: hashing and comparing it,
    which the scheduler and the executors do for every unit, run in C)."""

    task: str
    iter: tuple[int, ...] = ()

    def format(self) -> str:
        return self.task + "".join(f"[{i}]" for i in self.iter)


class Job:
    """One unit for an executor to run. A plain class with slots, not a dataclass: the
    dataclasses module stays off the start-up path of `watchrun build`."""

    __slots__ = ("chain", "ctx", "follows", "fresh_log", "gather_kwargs", "key", "kwargs",
                 "log_path", "mode", "outputs", "resources", "retries", "root", "start",
                 "timeout")

    def __init__(
        self,
        key: UnitKey,
        mode: Mode,
        root: Path,
        # (module file, package for relative imports): root ancestor first, the task itself
        # last; executed in this order into one namespace
        chain: list[tuple[Path, str]],
        # argument name -> pickled value, exactly what run() asks for; COLLECT /
        # INNER_GENERATE: the arguments that stay the same for every push
        kwargs: dict[str, bytes],
        log_path: str,
        start: int | None = None,  # GENERATE: resume index, passed as `start` if run() takes it
        # COLLECT / INNER_GENERATE: arguments for gather() / finish(), by the names they ask for
        gather_kwargs: dict[str, bytes] | None = None,
        ctx: dict[str, object] | None = None,  # name, root, iter: for the `ctx` argument
        # True: the log starts empty (created or truncated by the worker) instead of being
        # appended to. The workers do it, in parallel and off the scheduler's loop, rather
        # than the scheduler before submit (see unit_log.py).
        fresh_log: bool = False,
        # the task's header keys: seconds before the unit is cancelled and failed (None: no
        # limit), reruns of a failed unit (the driver decides them), and what one unit needs
        # (None: the header asks nothing, the executor's defaults apply)
        timeout: float | None = None,
        retries: int = 0,
        resources: Resources | None = None,
        # the task's declared outputs, absolute: what the worker checks the unit wrote and
        # hashes for the driver (worker_outputs.py). None: the worker reads them from the
        # task's header itself
        outputs: tuple[str, ...] | None = None,
        # a CALL job queued behind `follows.leader` on its worker, run only if what that one
        # wrote makes it dirty (follow.py; submitted with an executor's `follow`)
        follows: Follow | None = None,
    ) -> None:
        self.key = key
        self.mode = mode
        self.root = root
        self.chain = chain
        self.kwargs = kwargs
        self.log_path = log_path
        self.start = start
        self.gather_kwargs: dict[str, bytes] = {} if gather_kwargs is None else gather_kwargs
        self.ctx: dict[str, object] = {} if ctx is None else ctx
        self.fresh_log = fresh_log
        self.timeout = timeout
        self.retries = retries
        self.resources = resources
        self.outputs = outputs
        self.follows = follows

    def __repr__(self) -> str:
        return f"Job({self.key.format()}, {self.mode.value})"


def cpu_slots(cpus: float | None) -> int:
    """The `jobs` slots a CALL unit asking for `cpus` takes on this machine: whole CPUs,
    rounded up (a slot is a worker process; half of one cannot be lent to another unit), at
    least one (every unit runs in a worker)."""
    return 1 if cpus is None else max(1, math.ceil(cpus))


class EventKind(enum.Enum):
    STARTED = "started"  # the unit began running (pid, pgid)
    YIELDED = "yielded"  # data = pickled value (GENERATE, INNER_GENERATE)
    PUSHED = "pushed"  # a pushed value was consumed by run() (COLLECT / INNER_GENERATE)
    DONE = "done"  # data = pickled output (CALL, COLLECT: gather's value; generators: None)
    FAILED = "failed"  # error = formatted traceback ("Traceback …\nValueError: …")
    CANCELLED = "cancelled"  # signal = name of the last signal sent ("SIGINT", "SIGKILL" …)
    DIED = "died"  # the worker process died: error = cause ("killed by SIGKILL", "exit code 3")


class ExecEvent:
    """What an executor reports about a unit (see EventKind for what each field means)."""

    __slots__ = ("data", "duration", "error", "follower", "key", "kind", "node",
                 "output_claims", "pid", "refused", "signal")

    def __init__(self, key: UnitKey, kind: EventKind, data: bytes | None = None,
                 error: str | None = None, signal: str | None = None, duration: float = 0.0,
                 pid: int | None = None, refused: bool = False,
                 output_claims: tuple[OutputHash, ...] = (), node: str | None = None,
                 follower: UnitKey | None = None) -> None:
        self.key = key
        self.kind = kind
        self.data = data
        self.error = error
        self.signal = signal
        self.duration = duration
        self.pid = pid
        # FAILED without running: it asks for more than exists (GPUs, memory), so running it
        # again cannot help (`retries` do not apply)
        self.refused = refused
        # DONE: the worker's hashes of the declared outputs it just wrote, trusted by the
        # driver only while each file's stat key is the one claimed (worker_outputs.py)
        self.output_claims = output_claims
        # where the unit runs or ran, when the executor knows (Ray: the node's id); the
        # scheduler passes it on with the unit's terminal event
        self.node = node
        # DONE: the unit queued behind this one (a Job's `follows`) that its worker started
        # on it; any other end, or a follower that need not run: None, and it never starts
        self.follower = follower

    def __repr__(self) -> str:
        return f"ExecEvent({self.key.format()}, {self.kind.value}, pid={self.pid})"


Sink = Callable[[ExecEvent], None]


def hand_to_sink(sink: Sink, event: ExecEvent) -> None:
    """Hand an event to the sink. A failure there is the caller's bug: it is logged, and must
    not stop what delivers the events (a worker's channel, a Ray unit's driver)."""
    try:
        sink(event)
    except Exception:
        logging.getLogger("watchrun.executor").exception("the event sink failed on %s", event)


class Executor(Protocol):
    """Runs jobs. `jobs` CALL units at a time; persistent modes (GENERATE, COLLECT,
    INNER_GENERATE) get a process of their own outside that limit, because they mostly wait on
    their upstream and counting them could deadlock the pool (e.g. jobs = 1)."""

    async def start(self) -> None: ...

    def free_slots(self) -> int:
        """How many CALL jobs could be submitted now without waiting."""
        ...

    def submit(self, job: Job) -> None:
        """Start a job. CALL jobs must only be submitted when free_slots() > 0."""
        ...

    def push(self, key: UnitKey, kwargs: dict[str, bytes]) -> None:
        """COLLECT / INNER_GENERATE: call run() once more with these per-iteration arguments
        (argument name -> pickled value) merged over the job's fixed kwargs. In order; the
        worker answers each push with PUSHED (after any YIELDED it produced)."""
        ...

    def end_input(self, key: UnitKey) -> None:
        """COLLECT / INNER_GENERATE: no more pushes; call gather()/finish() and finish."""
        ...

    def cancel(self, key: UnitKey) -> None:
        """SIGINT, then SIGTERM after `grace`, then SIGKILL, to the unit's process group.
        Ends with one CANCELLED event (or DONE/FAILED if the unit finished first)."""
        ...

    def pause(self, key: UnitKey) -> bool:
        """SIGSTOP the unit's process group. False if not possible (e.g. remote)."""
        ...

    def resume(self, key: UnitKey) -> bool: ...

    def set_jobs(self, jobs: int) -> None:
        """`jobs` saved in the settings while `dev` watches: CALL units at a time from now on
        (those running go on)."""
        ...

    def hold_yields(self, key: UnitKey, held: bool) -> bool:
        """The plan's read-ahead hold of a generator (held) or its end (not held), kept by
        the executor's own means. False if it has none: the driver pauses it instead."""
        ...

    def running(self) -> list[UnitKey]: ...

    async def close(self) -> None:
        """Cancel what runs, end every process group, reap every process."""
        ...


def death_cause(returncode: int | None, unknown: str = "could not be started") -> str:
    """Why a process ended, for the user: "exit code 3", "killed by SIGKILL"."""
    if returncode is None:
        return unknown
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"
