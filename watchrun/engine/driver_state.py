"""What the driver's parts share: the build's state, made by `engine.scheduler.Scheduler`
and read and changed by its parts (engine/dispatch.py, streaming.py, replanning.py,
endings.py), and the few records they pass around."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from watchrun.engine import events as ev
from watchrun.engine.followers import Followers
from watchrun.engine.plan import Plan, Running
from watchrun.engine.readiness import Keys, Readiness, Wake
from watchrun.engine.recorder import Recorder
from watchrun.engine.resolve import Resolution, Resolver
from watchrun.engine.retries import Attempts
from watchrun.engine.scopes import (
    Consumer,
    Key,
)
from watchrun.executors.base import (
    ExecEvent,
    Executor,
    Job,
    Mode,
    UnitKey,
)
from watchrun.project.codemap import ArgSpec
from watchrun.project.graph import Graph
from watchrun.project.loader import Project
from watchrun.project.model import Task
from watchrun.state.hashing import FileHasher
from watchrun.state.store import Store

NONE_PICKLE = pickle.dumps(None)
Thunk = Callable[[], bytes]  # an argument's pickled value, produced only if run() asks for it

# The classes of this module are written out rather than made with dataclasses: they are
# imported by every command, and a dataclass compiles the source of each method at import.


class BuildOptions(NamedTuple):
    force: bool = False
    dry_run: bool = False
    fail_fast: bool = False
    # queue the next unit of a chain behind the running one on its worker (engine/followers.py):
    # `watchrun build` only. In `dev` a save may make a queued unit stale before it starts,
    # and only units the plan has started can be cancelled
    follow: bool = False


class BuildSummary:
    __slots__ = ("blocked", "cancelled", "failed", "interrupted", "ran", "skipped")

    def __init__(self) -> None:
        self.ran = 0
        self.skipped = 0
        self.failed = 0
        self.cancelled = 0
        self.blocked: list[str] = []  # not run: an upstream failed
        self.interrupted = 0  # the exit code of the signal that stopped the build (130: Ctrl-C)

    @property
    def ok(self) -> bool:
        return not (self.failed or self.cancelled or self.blocked or self.interrupted)

    def __repr__(self) -> str:
        return (f"BuildSummary(ran={self.ran}, skipped={self.skipped}, failed={self.failed}, "
                f"cancelled={self.cancelled}, blocked={self.blocked}, "
                f"interrupted={self.interrupted})")


class Launched:
    """The driver's record of a unit submitted to the executor and not ended yet (its
    scheduling state, e.g. superseded or speculative, is the plan's `Running`)."""

    __slots__ = ("failure", "mode", "next_index", "node", "resolution", "started", "task")

    def __init__(self, resolution: Resolution, started: float, mode: Mode, task: Task,
                 next_index: int = 0) -> None:
        self.resolution = resolution
        self.started = started
        self.mode = mode
        self.task = task  # as it was launched: a task deleted or broken meanwhile still ends
        self.next_index = next_index  # GENERATE: the index of the next yield
        self.failure: str | None = None  # cancelled because its yield could not be stored
        self.node: str | None = None  # where it runs, once the executor says (Ray)


class Replay:
    """A clean generator's stored iterations, being replayed (Streaming._replay_more)."""

    __slots__ = ("busy", "chunk", "clean", "committed", "count", "next", "read", "signature")

    def __init__(self, signature: str, count: int) -> None:
        self.signature = signature
        self.count = count  # how many it made
        self.next = 0  # the index of the next one to replay
        self.busy = False  # being replayed (a pump from within its wake-ups leaves it be)
        self.read: list[str] = []  # read from the store, not replayed yet
        self.committed = 0  # `next` at the last commit the replay asked for
        self.chunk = 0  # iterations replayed in the last turn
        self.clean = False  # and all their units were clean


class DriverState:
    """The driver's state (see Scheduler.__init__ for what each part means), and the methods
    one part of the driver calls on another (for the type checker only: each is defined by
    the part that owns it)."""

    project: Project
    graph: Graph
    store: Store
    hasher: FileHasher
    executor: Executor
    bus: ev.EventBus
    options: BuildOptions
    resolver: Resolver
    recorder: Recorder
    summary: BuildSummary
    live: set[str]
    consumers: dict[str, Consumer]
    readiness: Readiness
    values: dict[tuple[str, Key], str]
    keys: dict[str, Keys]
    _gen_signatures: dict[str, str]
    _replaying: dict[str, Replay]
    gen_done: set[str]
    seen: set[tuple[str, Key]]
    jobs: int
    plan: Plan[Resolution, Launched]
    ranked: bool
    running: dict[UnitKey, Running[Launched]]
    all_tasks: bool
    new_values: set[tuple[str, Key]]
    self_changing: dict[str, dict[str, str | None]]
    last_outputs: dict[str, dict[str, str | None]]
    forced: set[str]
    build_open: bool
    stopping: bool
    paused: bool
    targets: list[str]
    _cutoff: dict[str, str]
    last_inputs: dict[str, dict[str, str | None]]
    code_read_ns: int | None
    _done: asyncio.Event
    _urgent: deque[tuple[str, Key]]
    _checks: deque[tuple[str, Key]]
    _current: deque[tuple[str, Key]] | None
    _background: bool
    _resume: asyncio.Handle | None
    _fresh: dict[str, bytes]
    _fresh_bytes: int
    _log_dir_ready: bool
    _attempts: Attempts
    _timed_out: dict[UnitKey, Launched]
    _task_info: dict[str, tuple[tuple[ArgSpec, ...] | None, list[tuple[Path, str]], Path]]
    followers: Followers
    _follow: Callable[[Job, UnitKey], bool] | None  # the executor's `follow`, if used

    @property
    def needed(self) -> set[str]:
        return self.readiness.needed

    @needed.setter
    def needed(self, names: set[str]) -> None:
        self.readiness.needed = names

    if TYPE_CHECKING:
        def _object(self, digest: str) -> bytes: ...
        def _time_out(self, key: UnitKey, run: Launched, seconds: float) -> None: ...
        def _settled(self) -> bool: ...
        def _needed(self, targets: list[str]) -> set[str]: ...
        def _check_tasks(self, order: list[str]) -> None: ...
        def _new_value_of_waited(self, name: str, value: str | None) -> None: ...
        def _upstream_values(self, name: str, key: Key, in_scope: bool = True
                             ) -> dict[str, str] | None: ...
        def _depth(self, upstream: str) -> int: ...
        def _set_value(self, name: str, key: Key, value: str) -> None: ...
        def _wake(self, units: list[Wake]) -> None: ...
        def _pending(self) -> bool: ...
        def _speculation_holds(self, unit: UnitKey, upstream: dict[str, str]) -> bool: ...
        def _drop_speculative(self, unit: UnitKey) -> None: ...
        def _skip(self, name: str, key: Key, resolution: Resolution | None = None) -> None: ...
        def _would_run(self, resolution: Resolution) -> None: ...
        def _start_generator(self, resolution: Resolution) -> None: ...
        def _replay(self, name: str, signature: str, upto: int | None = None) -> int: ...
        def _replay_more(self) -> None: ...
        def _drain(self) -> None: ...
        def flush(self) -> None: ...
        def _generator_done(self, name: str) -> None: ...
        def _release_committed(self) -> None: ...
        def _read_back_value(self, name: str, key: Key) -> str | None: ...
        def _new_consumer(self, name: str) -> None: ...
        def _advance(self, c: Consumer) -> None: ...
        def _remember(self, digest: str, data: bytes) -> None: ...
        def _offered(self, task: Task, exclude: set[str]) -> dict[str, Thunk]: ...
        def _job(self, resolution: Resolution, mode: Mode, skip: set[str] | None = None) -> Job: ...
        def _info(self, task: Task) -> tuple[tuple[ArgSpec, ...] | None, list[tuple[Path, str]],
                                             Path]: ...
        def _pump(self) -> None: ...
        def _launch(self, job: Job, resolution: Resolution, mode: Mode) -> None: ...
        def on_exec(self, event: ExecEvent) -> None: ...
        def _yielded(self, name: str, run: Launched, data: bytes | tuple[str, str]) -> None: ...
        def _pushed(self, name: str) -> None: ...
        def _put_pickle(self, data: bytes | tuple[str, str]) -> str: ...
        def _final_consumer_resolution(self, c: Consumer, resolution: Resolution) -> Resolution: ...
        def _generator_finished(self, name: str, run: Launched, resolution: Resolution,
                                clean: bool) -> None: ...
        def _cancelled(self, run: Launched, event: ExecEvent, duration: float) -> None: ...
        def _plan_limits(self, executor: Executor) -> None: ...
        def _failed_or_retried(self, run: Launched, event: ExecEvent, error: str,
                               duration: float) -> None: ...
        def _failed(self, run: Launched, error: str, duration: float) -> None: ...
        def _waits_for_reload(self, run: Launched, key: UnitKey,
                              done_after: float | None = None) -> bool: ...


def drop_pickle_file(data: object) -> None:
    """A big pickle a worker wrote into the object folder for a result that is not kept."""
    if isinstance(data, tuple):
        with contextlib.suppress(OSError):
            os.unlink(data[0])
