"""The driver: resolves units, dispatches what the plan decides, feeds consumers, cancels.

It owns one asyncio loop's worth of state and no locks: the executor reports through one
channel, `on_exec`, called on the same loop. Every unit is `(task, key)` (see `engine.scopes`
for keys). The decisions are the plan's (`engine.plan`: which units are ready, in what order,
what a change cancels or keeps); results, states and commits are the recorder's
(`engine.recorder`). A value becoming known (`Readiness.value_known`) is the one thing that
makes more units ready, whether it came from a finished unit, a skipped one, a generator's
yield or a replay from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import pickle
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from watchrun.engine import events as ev
from watchrun.engine.locations import chain_files, log_path
from watchrun.engine.plan import Plan, Readiness, TaskRank, Wake, stages
from watchrun.engine.recorder import Recorder
from watchrun.engine.resolve import Resolution, Resolver
from watchrun.engine.retries import Attempts, Ending, Retry
from watchrun.engine.scopes import (
    Consumer,
    Key,
    contribution,
    decode_iteration,
    is_persistent,
)
from watchrun.executors.base import (
    EventKind,
    ExecEvent,
    Executor,
    Job,
    Mode,
    UnitKey,
    cpu_slots,
)
from watchrun.executors.limits import LocalLimits
from watchrun.project.codemap import ArgSpec
from watchrun.project.loader import Project
from watchrun.project.model import Kind, Resources, Task
from watchrun.state.hashing import FileHasher
from watchrun.state.store import ObjectWriteError, Store, UnitStatus

# seconds of resolving units found at the start of a build (or after a change) between two
# looks at the executor, while something runs: see _drain
CHECK_SLICE = 0.0001
NONE_PICKLE = pickle.dumps(None)
FRESH_ONE = 1 << 16  # values this big are read back from the store when wanted
FRESH_BYTES = 32 << 20  # the recent values kept in memory, in all
_NO_RESOURCES = Resources()  # a task whose header asks nothing: the executor's defaults
FRESH_COUNT = 1 << 16  # and how many: a generator runs thousands of values ahead of its items
Thunk = Callable[[], bytes]  # an argument's pickled value, produced only if run() asks for it


# The classes of this module are written out rather than made with dataclasses: making a
# dataclass costs every command milliseconds at start (it compiles the source of each method).


class BuildOptions(NamedTuple):
    force: bool = False
    dry_run: bool = False
    fail_fast: bool = False


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


def task_ranks(project: Project) -> dict[str, TaskRank]:
    """What the plan orders units by, for every task of the project."""
    graph = project.graph
    stage = stages({n: graph.upstreams_of(n) for n in graph.order}, graph.order)
    ranks = {}
    for name, task in project.tasks.items():
        scope = graph.scope.get(name, ())
        ranks[name] = TaskRank(task.priority, stage.get(name, 0),
                               task.kind is not Kind.TASK, scope[0] if scope else "",
                               cpu_slots(task.resources.cpus), task.resources.memory or 0,
                               task.resources.gpus)
    return ranks


def entry_args(project: Project, task: Task, entry: str = "run") -> tuple[ArgSpec, ...] | None:
    """The parameters of the winning `entry` function of a task (nearest in its chain), as the
    loader found them (see Project.entries)."""
    return project.entries.get(task.name, {}).get(entry)


def wanted_names(args: tuple[ArgSpec, ...] | None, offered: Iterable[str]) -> list[str]:
    """The offered names that a function with these parameters asks for."""
    if args is None:
        return []
    if any(a.kind == "var_keyword" for a in args):
        return list(offered)
    asked = {a.name for a in args if a.kind in ("positional", "keyword_only")}
    return [name for name in offered if name in asked]


def _dumps(value: object) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


class Scheduler:
    def __init__(self, project: Project, store: Store, hasher: FileHasher, executor: Executor,
                 bus: ev.EventBus, options: BuildOptions) -> None:
        self.project = project
        self.graph = project.graph
        self.store = store
        self.hasher = hasher
        self.executor = executor
        self.bus = bus
        self.options = options
        self.resolver = Resolver(project, store, hasher)
        self.recorder = Recorder(store, hasher, self.resolver, options.dry_run)
        self.summary = BuildSummary()
        self.live: set[str] = set()  # generators that really run in this build
        self.consumers: dict[str, Consumer] = {}
        # which units have their upstream values: the values, keys and scopes known so far
        self.readiness = Readiness(project.graph,
                                   lambda up: contribution(self.project, up),
                                   self.consumers.__contains__)
        self.values = self.readiness.values  # (task, key) -> output / value hash
        self.keys = self.readiness.keys  # generator -> its iteration keys, in order
        self.gen_done = self.readiness.gen_done
        self.seen: set[tuple[str, Key]] = set()  # units resolved (so never twice)
        # a generator's scope is read ahead of its slowest consumer by a few units per job
        self.jobs = executor.free_slots()  # nothing is submitted yet: every slot is free
        window = max(8, 4 * self.jobs)
        self.plan: Plan[Resolution, Launched] = Plan(lambda: task_ranks(self.project), window)
        self._plan_limits(executor)
        self.ranked = any(t.priority for t in project.tasks.values())
        self.running = self.plan.running
        self.all_tasks = False  # dev without targets: every task, also those added later
        # (task, key) whose value differs from what the unit last had: a deferred consumer
        # starts streaming at the first one (see _advance)
        self.new_values: set[tuple[str, Key]] = set()
        self.self_changing: dict[str, dict[str, str | None]] = {}  # see _record_done
        # task -> its declared outputs' hashes as its last unit left them (dev: an output
        # changed by anyone else reruns its producer)
        self.last_outputs: dict[str, dict[str, str | None]] = {}
        self.forced: set[str] = set()
        self.stopping = False
        self.paused = False  # dev: scheduling stopped by the user
        self.targets: list[str] = []
        self.last_inputs: dict[str, dict[str, str | None]] = {}  # dev: inputs last resolved with
        self._done = asyncio.Event()
        # units to resolve (see _drain): those a result made checkable, first; then those the
        # start of the build (or a change) did; the queue of the unit being resolved, if any
        self._urgent: deque[tuple[str, Key]] = deque()
        self._checks: deque[tuple[str, Key]] = deque()
        self._current: deque[tuple[str, Key]] | None = None
        self._background = False  # _check_tasks is queueing
        self._resume: asyncio.Handle | None = None  # the rest of _checks, on a later turn
        # recent small values by digest (oldest first), so that the units and pushes that
        # want them soon do not read them back from the store (see FRESH_BYTES, FRESH_COUNT)
        self._fresh: dict[str, bytes] = {}
        self._fresh_bytes = 0
        self._log_dir_ready = False
        self._attempts = Attempts()  # `retries`: each failing unit's attempts (retries.py)
        self._timed_out: dict[UnitKey, Launched] = {}  # cancelled for running past `timeout`
        self._task_info: dict[str, tuple[tuple[ArgSpec, ...] | None, list[tuple[Path, str]],
                                         Path]] = {}

    # -- entry point -------------------------------------------------------------------------
    async def build(self, targets: list[str]) -> BuildSummary:
        self.start(targets)
        await self.wait_idle()
        return self.finish_build()

    def start(self, targets: list[str]) -> None:
        self.targets = list(targets)
        self.needed = self._needed(targets)
        if self.options.force:
            self.forced = set(targets)
        order = [n for n in self.graph.order if n in self.needed]
        self.summary = BuildSummary()
        self.bus.publish(ev.BuildStarted(tasks=order))
        self._check_tasks(order)

    async def wait_idle(self) -> None:
        """Until nothing runs or waits. `_done` may be set for a moment in the middle of
        handling an event (something finished, and what it unblocks is not launched yet);
        a set Event wakes its waiter even if cleared again, so the state is checked here."""
        self._pump()
        while True:
            await self._done.wait()
            if self._settled():
                return
            self._done.clear()

    def _settled(self) -> bool:
        """Nothing runs, nothing is ready (or the build stops), no check is queued: the
        plan's own answer that there is no more to do."""
        if self.stopping:
            return not self.running and not self._pending()
        return not self.plan.more_to_do() and not self._pending()

    def finish_build(self) -> BuildSummary:
        self.flush()
        s = self.summary
        self.bus.publish(ev.BuildFinished(ok=s.ok, ran=s.ran, skipped=s.skipped,
                                          failed=s.failed, cancelled=s.cancelled))
        return s

    def _needed(self, targets: list[str]) -> set[str]:
        known = [t for t in targets if t in self.project.tasks]
        needed = self.graph.upstream_closure(known)
        return {n for n in needed if n in self.project.tasks and not self.project.tasks[n].abstract
                and n not in self.project.broken}

    def _check_tasks(self, order: list[str]) -> None:
        for name in order:
            if is_persistent(self.project, name) and name not in self.consumers:
                self._new_consumer(name)
        self._background = True  # queued, and resolved below in slices
        try:
            for name in order:
                if not self.graph.scope.get(name) or is_persistent(self.project, name):
                    self._check(name, ())
                else:  # a per-iteration task: every key its scope already has
                    self._wake(self.readiness.reach(name, ()))
        finally:
            self._background = False
        if self._resume is None:
            self._drain()

    def interrupt(self, code: int = 130) -> None:
        """Ctrl-C (or SIGTERM, SIGHUP): stop scheduling and cancel every running unit."""
        self.summary.interrupted = code
        self._stop()

    # -- dev mode: changes and the user's commands --------------------------------------------
    def invalidate(self, project: Project, changed: set[str], forced: set[str] | None = None
                   ) -> set[str]:
        """A new project after a change. `changed`: tasks whose code, params, kind, arguments
        or inputs may differ. Their units and everything downstream are cancelled if running,
        dropped if queued, and resolved again (early cutoff and the store make the unchanged
        ones skip). Other running units keep running. Returns the tasks reset."""
        same_graph = project.graph is self.graph
        self.project = project
        self.graph = project.graph
        self.resolver.project = project
        self._task_info.clear()
        if not same_graph:  # a code-only change keeps the tasks and the edges
            self.readiness.new_graph(project.graph)
            if self.all_tasks:  # tasks added while watching are built too
                self.targets = [n for n in self.graph.order
                                if not project.tasks[n].abstract]
            self.needed = self._needed(self.targets)
            self.plan.set_ranks(task_ranks(project))
            self.ranked = any(t.priority for t in project.tasks.values())
        if forced:
            self.forced |= forced
        running = {u.task for u in self.running}
        changed = {t for t in changed
                   if t in project.tasks or t in self.consumers or t in running}
        for name in changed:
            self.resolver.forget_static(name)
        reset = self.graph.downstream_closure([c for c in changed if c in project.tasks])
        reset |= {t for t in changed if t not in project.tasks}
        self._reset_tasks(changed, reset)
        self.summary = BuildSummary()
        self._done.clear()
        order = [n for n in self.graph.order if n in self.needed and n in reset]
        if order:
            self.bus.publish(ev.BuildStarted(tasks=order))
        self._check_tasks(order)
        self._pump()
        return reset

    def _reset_tasks(self, changed: set[str], names: set[str]) -> None:
        """Forget everything about these tasks' units (one pass over the unit tables, however
        many tasks). The plan says which running units to cancel and which keep running until
        their upstream's new value is known."""
        if not names:
            return
        replan = self.plan.replan(changed, names, self.graph.implicit)
        for key in replan.cancel:
            self.executor.cancel(key)
        self._checks = deque(c for c in self._checks if c[0] not in names)
        self.readiness.forget(names)
        self.seen = {e for e in self.seen if e[0] not in names}
        self.new_values = {e for e in self.new_values if e[0] not in names}
        for name in names:
            self.live.discard(name)
            self.consumers.pop(name, None)
            self.resolver.forget_static(name)

    def running_units(self, name: str) -> list[UnitKey]:
        return self.plan.active(name)

    def interrupt_task(self, name: str) -> None:
        for key in self.running_units(name):
            self.executor.cancel(key)
        self.plan.drop({name})

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        if not paused:
            self._pump()

    # -- values and readiness ----------------------------------------------------------------
    @property
    def needed(self) -> set[str]:
        return self.readiness.needed

    @needed.setter
    def needed(self, names: set[str]) -> None:
        self.readiness.needed = names

    def _upstream_values(self, name: str, key: Key, in_scope: bool = True
                         ) -> dict[str, str] | None:
        return self.readiness.upstream_values(name, key, in_scope)

    def _depth(self, upstream: str) -> int:
        return self.readiness.depth(upstream)

    def _set_value(self, name: str, key: Key, value: str) -> None:
        self._wake(self.readiness.value_known(name, key, value))

    def _wake(self, units: list[Wake]) -> None:
        """Resolve the units a value made ready; advance the consumers it feeds."""
        for name, key in units:
            if key is None:
                self._advance(self.consumers[name])
            else:
                self._check(name, key)

    def _check(self, name: str, key: Key) -> None:
        """Queue a unit to be resolved. A clean unit sets its value, which checks its
        downstream, and so on: done as a loop over a queue, not as recursion, so a chain of
        10,000 clean tasks does not exhaust Python's stack."""
        if self._current is not None:  # found while resolving a unit: in that unit's queue
            self._current.append((name, key))
            return
        if self._background:
            self._checks.append((name, key))  # _check_tasks drains them all
            return
        self._urgent.append((name, key))
        self._drain()

    def _drain(self) -> None:
        """Resolve the queued units. The ones a result made checkable go first. The others
        (thousands of clean units at the start of a build, say) are resolved in slices while
        something runs, with a look at the executor in between: a unit that finishes meanwhile
        has its downstream started at once, so a dirty chain runs beside the skipping of the
        clean ones rather than after it."""
        if self._resume is not None:  # a result came first: this drain goes on with the rest
            self._resume.cancel()
            self._resume = None
        deadline = time.perf_counter() + CHECK_SLICE
        try:
            while True:
                if self._urgent:
                    queue = self._urgent
                elif self._checks and (self.stopping or not self.running or self.ranked
                                       or time.perf_counter() < deadline):
                    # what results made ready starts first; with priorities declared, only
                    # once every unit is known, so that the most important one starts first
                    if self.plan.ready_count() and not self.ranked:
                        self._pump()
                    queue = self._checks
                else:
                    break
                self._current = queue
                self._check_now(*queue.popleft())
        finally:
            self._current = None
        if self._checks:  # paused for the executor: only with a unit running, so in a loop
            self._resume = asyncio.get_running_loop().call_soon(self._drain)
        self._pump()

    def _pending(self) -> bool:
        return bool(self._urgent or self._checks or self._current is not None)

    def _check_now(self, name: str, key: Key) -> None:
        if self.stopping or (name, key) in self.seen:
            return
        if name in self.consumers:
            self._advance(self.consumers[name])
            return
        upstream = self._upstream_values(name, key)
        if upstream is None:
            return
        self.seen.add((name, key))
        if self._speculation_holds(UnitKey(name, key), upstream):
            return
        task = self.project.tasks[name]
        resolution = self.resolver.resolve(name, upstream, key, forced=name in self.forced)
        self.last_inputs[name] = resolution.inputs
        if task.kind is Kind.GENERATOR:
            self._start_generator(resolution)
        elif resolution.clean and resolution.result is not None:
            self._skip(name, key, resolution)
            self._set_value(name, key, resolution.result.output)
        elif self.options.dry_run:
            self._would_run(resolution)
        else:
            self.plan.want(UnitKey(name, key), resolution)

    def _speculation_holds(self, unit: UnitKey, upstream: dict[str, str]) -> bool:
        """A unit kept running while its upstream reran: its upstream values are known again.
        The same as it started with (early cutoff): its work counts, and a result it already
        delivered is taken now. Otherwise it is stale: cancelled, or its result dropped."""
        state = self.running.get(unit)
        if state is None or not state.speculative:
            return False
        launched = state.payload
        if self.plan.decide(unit, launched.resolution.upstream, upstream):
            if unit.task in self.forced:  # a forced rerun must really run
                self.plan.supersede(unit)
            else:
                held = state.finished
                if isinstance(held, ExecEvent):
                    state.finished = None
                    self.on_exec(held)
                return True
        self._drop_speculative(unit)
        return False

    def _drop_speculative(self, unit: UnitKey) -> None:
        """A speculative unit turned out stale: cancel it, or drop the result it holds."""
        state = self.running.get(unit)
        if state is None:
            return
        if state.finished is not None:  # it ended already: nothing to cancel
            _drop_pickle_file(getattr(state.finished, "data", None))
            self.plan.ended(unit)
            self.bus.publish(ev.UnitCancelled(task=unit.task, iter=unit.iter, signal="none"))
        else:
            self.executor.cancel(unit)

    def _skip(self, name: str, key: Key, resolution: Resolution | None = None) -> None:
        self.summary.skipped += 1
        self.bus.publish(ev.UnitSkipped(task=name, iter=key))
        if resolution is not None and resolution.result is not None:
            self.recorder.found_clean(resolution, resolution.result)
            if self.project.tasks[name].outputs:
                self.last_outputs[name] = dict(resolution.result.outputs)

    def _would_run(self, resolution: Resolution) -> None:
        self.summary.ran += 1
        self.bus.publish(ev.UnitStarted(task=resolution.task, iter=resolution.iter,
                                        reasons=[r.format() for r in resolution.reasons]))

    # -- generators --------------------------------------------------------------------------
    def _start_generator(self, resolution: Resolution) -> None:
        name = resolution.task
        self.keys.setdefault(name, [])
        complete = self.store.generator_complete(name, resolution.signature)
        if complete is not None and resolution.clean:
            self._skip(name, (), resolution)
            self._replay(name, resolution.signature)
            self._generator_done(name)
            return
        if self.options.dry_run:
            self._would_run(resolution)
            return
        self.live.add(name)
        self.plan.want(UnitKey(name, resolution.iter), resolution)
        self._consumers_of_scope(name)  # they can start streaming now

    def _replay(self, name: str, signature: str, upto: int | None = None) -> int:
        stored = self.store.iterations(name, signature)
        if upto is not None:
            stored = stored[:upto]
        for text in stored:
            key, value = decode_iteration(text)
            self._new_iteration(name, key, value)
        return len(stored)

    def _new_iteration(self, name: str, key: Key, value: str) -> None:
        self.bus.publish(ev.Iteration(task=name, iter=key))
        self._wake(self.readiness.iteration(name, key, value))

    def _generator_done(self, name: str) -> None:
        self._wake(self.readiness.generator_done(name))
        self._consumers_of_scope(name)

    def _consumers_of_scope(self, gen: str) -> None:
        for consumer in self.consumers.values():
            if consumer.generator == gen:
                self._advance(consumer)

    # -- consumers (collectors, inner generators) --------------------------------------------
    def _new_consumer(self, name: str) -> None:
        scope = self.graph.scope.get(name, ())
        in_scope: dict[str, str] = {}
        fixed: dict[str, str] = {}
        for arg, up in self.graph.upstreams.get(name, {}).items():
            (in_scope if contribution(self.project, up) else fixed)[arg] = up
        self.consumers[name] = Consumer(name, scope[-1], in_scope, fixed)

    def _scope_values(self, c: Consumer, key: Key) -> dict[str, str] | None:
        values = {}
        for arg, up in c.in_scope.items():
            value = self.values.get((up, key[: self._depth(up)]))
            if value is None:
                return None
            values[arg] = value
        return values

    def _advance(self, c: Consumer) -> None:
        if self.stopping or c.blocked or c.ended:
            return
        fixed = self._upstream_values(c.name, (), in_scope=False)
        if fixed is None:
            return
        if not c.live and not c.deferred:
            if c.generator in self.live and not self.options.dry_run:
                self._start_consumer(c, fixed, None)  # stream pushes as values arrive
            elif c.generator in self.gen_done:
                c.deferred = True  # replayed: decide clean or run once the scope is known
            else:
                return  # the generator has not started yet
        keys = self.keys.get(c.generator, [])
        self._push_known(c, fixed, keys)
        if c.generator not in self.gen_done or c.pushed < len(keys):
            return
        if c.deferred:
            self._decide_deferred(c, fixed)
        elif c.live:
            c.ended = True
            self.executor.end_input(UnitKey(c.name))
        self._pump()

    def _push_known(self, c: Consumer, fixed: dict[str, str], keys: list[Key]) -> None:
        """Take the scope's values in key order, as far as they are known."""
        while c.pushed < len(keys):
            key = keys[c.pushed]
            values = self._scope_values(c, key)
            if values is None:
                break
            if c.deferred and not self.options.dry_run and self._new_in_scope(c, key):
                self._go_live(c, fixed, keys)
            c.add_to_sequence(key, values)
            if c.live:
                self._push(c, values)
            c.pushed += 1

    def _new_in_scope(self, c: Consumer, key: Key) -> bool:
        """A value this consumer is pushed at `key` differs from the one it had last time."""
        return any((up, key[: self._depth(up)]) in self.new_values
                   for up in c.in_scope.values())

    def _go_live(self, c: Consumer, fixed: dict[str, str], keys: list[Key]) -> None:
        """A deferred consumer (its scope replayed from the store) whose scope has a new
        value must run: it starts now and takes the values so far, rather than waiting for
        the whole scope, so the rest of the scope streams through it (and on below it)."""
        c.deferred = False
        self._start_consumer(c, fixed, None)
        for key in keys[: c.pushed]:
            values = self._scope_values(c, key)
            assert values is not None
            self._push(c, values)

    def _decide_deferred(self, c: Consumer, fixed: dict[str, str]) -> None:
        c.deferred = False
        resolution = self.resolver.resolve(c.name, fixed, (), c.sequence.hexdigest(),
                                           forced=c.name in self.forced)
        task = self.project.tasks[c.name]
        if task.kind is Kind.GENERATOR:
            complete = self.store.generator_complete(c.name, resolution.signature)
            if complete is not None and resolution.clean:
                c.ended = True
                self.keys.setdefault(c.name, [])
                self._skip(c.name, (), resolution)
                self._replay(c.name, resolution.signature)
                self._generator_done(c.name)
                return
        elif resolution.clean and resolution.result is not None:
            c.ended = True
            self._skip(c.name, (), resolution)
            self._set_value(c.name, (), resolution.result.output)
            return
        if self.options.dry_run:
            c.ended = True
            self._would_run(resolution)
            return
        # run it, pushing every stored value again (its upstream units are not rerun)
        self._start_consumer(c, fixed, resolution)
        for key in self.keys.get(c.generator, []):
            values = self._scope_values(c, key)
            assert values is not None
            self._push(c, values)
        c.ended = True
        self.executor.end_input(UnitKey(c.name))

    def _start_consumer(self, c: Consumer, fixed: dict[str, str],
                        resolution: Resolution | None) -> None:
        if resolution is None:  # live: the signature is known only at the end
            resolution = self.resolver.resolve(c.name, fixed, (), "live",
                                               forced=c.name in self.forced)
        c.live = True
        c.started = time.monotonic()
        task = self.project.tasks[c.name]
        mode = Mode.COLLECT if task.kind is Kind.COLLECTOR else Mode.INNER_GENERATE
        job = self._job(resolution, mode, skip=set(c.in_scope))
        end = "gather" if mode is Mode.COLLECT else "finish"
        offered = self._offered(task, exclude=set(c.in_scope))
        for arg in wanted_names(entry_args(self.project, task, end), offered):
            job.gather_kwargs[arg] = offered[arg]()
        self._launch(job, resolution, mode)
        if task.kind is Kind.GENERATOR:  # an inner generator: its own consumers may stream
            self.keys.setdefault(c.name, [])
            self.live.add(c.name)
            self._consumers_of_scope(c.name)

    def _push(self, c: Consumer, values: dict[str, str]) -> None:
        args = self._info(self.project.tasks[c.name])[0]
        kwargs = {arg: self._object(h) for arg, h in values.items()
                  if arg in wanted_names(args, [arg])}
        self.executor.push(UnitKey(c.name), kwargs)

    def _object(self, digest: str) -> bytes:
        data = self._fresh.get(digest)
        return data if data is not None else self.store.get_object(digest)

    def _remember(self, digest: str, data: bytes) -> None:
        if len(data) >= FRESH_ONE or digest in self._fresh:
            return
        self._fresh[digest] = data
        self._fresh_bytes += len(data)
        while self._fresh_bytes > FRESH_BYTES or len(self._fresh) > FRESH_COUNT:
            oldest = next(iter(self._fresh))
            self._fresh_bytes -= len(self._fresh.pop(oldest))

    # -- dispatch ----------------------------------------------------------------------------
    def _offered(self, task: Task, exclude: set[str]) -> dict[str, Thunk]:
        """Argument name -> a thunk giving its pickled value (upstreams are read lazily)."""
        offered: dict[str, Thunk] = {}
        for pname, param in task.params.items():
            offered[pname] = functools.partial(_dumps, param.value)
        offered["inputs"] = lambda: _dumps(self.resolver.input_paths(task))
        return {k: v for k, v in offered.items() if k not in exclude}

    def _job(self, resolution: Resolution, mode: Mode, skip: set[str] | None = None) -> Job:
        task = self.project.tasks[resolution.task]
        key = resolution.iter
        offered = self._offered(task, skip or set())
        for arg, up in self.graph.upstreams.get(task.name, {}).items():
            if skip and arg in skip:
                continue
            digest = self.values[(up, key[: self._depth(up)])]
            offered[arg] = functools.partial(self._object, digest)
        args, chain, root = self._info(task)
        kwargs = {n: offered[n]() for n in wanted_names(args, offered)}
        return Job(
            key=UnitKey(task.name, key),
            mode=mode,
            root=root,
            chain=chain,
            kwargs=kwargs,
            log_path=log_path(self.project.config, task.name, key),
            ctx={"name": task.name, "root": str(root), "iter": key},
            timeout=task.timeout,
            retries=task.retries,
            resources=None if task.resources == _NO_RESOURCES else task.resources,
        )

    def _info(self, task: Task) -> tuple[tuple[ArgSpec, ...] | None, list[tuple[Path, str]],
                                         Path]:
        """What every job of a task shares: run()'s parameters, the chain of module files,
        the root (computed once per task; a new project in dev mode resets it)."""
        info = self._task_info.get(task.name)
        if info is None:
            info = (entry_args(self.project, task), chain_files(self.project, task),
                    self.project.config.root)
            self._task_info[task.name] = info
        return info

    def _pump(self) -> None:
        if not self.stopping and not self.paused and self.plan.ready_count():
            self._launch_ready()
        self._throttle()
        if not self._pending():
            for unit in self.plan.undecidable():
                self._drop_speculative(unit)
        # idle only once every queued check has been resolved: a consumer decided late in a
        # drain may still launch
        if self._settled():
            self._done.set()

    def _launch_ready(self) -> None:
        while not self.stopping and not self.paused:
            free = self.executor.free_slots()
            calls = self.plan.calls_slots()  # a unit asking for 2 cpus takes 2 slots
            slots = min(free, max(self.jobs - calls, 0))
            found = self.plan.find_work(slots, free - slots)
            if not found:
                return
            for resolution in found:
                persistent = self.project.tasks[resolution.task].kind is Kind.GENERATOR
                mode = Mode.GENERATE if persistent else Mode.CALL
                job = self._job(resolution, mode)
                if persistent:
                    job.start = self._resume_point(resolution)
                self._launch(job, resolution, mode)

    def _throttle(self) -> None:
        """The bounded read-ahead window: a generator whose scope has enough units waiting
        is stopped (SIGSTOP, like a pause) until they drain, so a scope of millions of items
        is read as fast as it is consumed. An executor that cannot pause (Ray) is not held."""
        hold, release = self.plan.throttled()
        for gen in hold:
            if UnitKey(gen) in self.running and not self.paused:
                self.executor.pause(UnitKey(gen))
        for gen in release:
            if UnitKey(gen) in self.running and not self.paused:
                self.executor.resume(UnitKey(gen))

    def _resume_point(self, resolution: Resolution) -> int | None:
        """Nearest clean iteration: a generator whose run() takes `start` resumes after the
        iterations already stored for its signature; those are replayed from the store."""
        task = self.project.tasks[resolution.task]
        args = entry_args(self.project, task) or ()
        if self.options.force or not any(a.name == "start" for a in args):
            return None
        return self._replay(task.name, resolution.signature)

    def _launch(self, job: Job, resolution: Resolution, mode: Mode) -> None:
        if not self._log_dir_ready:
            os.makedirs(os.path.dirname(job.log_path), exist_ok=True)
            self._log_dir_ready = True
        job.fresh_log = True  # the worker truncates it: file creation stays off this loop
        task = self.project.tasks[resolution.task]
        self.plan.started(job.key, Launched(resolution, time.monotonic(), mode, task,
                                            job.start or 0))
        self._limits_at_launch(job)
        self._done.clear()
        self.executor.submit(job)
        # said once the job is on its way: the reasons read the unit's history, and nothing
        # the executor reports about the unit can come before this turn of the loop ends
        self.bus.publish(ev.UnitStarted(task=resolution.task, iter=resolution.iter,
                                        reasons=[r.format() for r in resolution.reasons]))

    # -- results -----------------------------------------------------------------------------
    def on_exec(self, event: ExecEvent) -> None:
        """The one channel through which the executor reports."""
        state = self.running.get(event.key)
        if state is not None and event.node is not None:
            state.payload.node = event.node  # for its terminal event
        if state is None or event.kind is EventKind.STARTED:
            _drop_pickle_file(event.data)
            return
        run = state.payload
        if state.superseded:  # a change made it stale: say it was cancelled, keep nothing
            _drop_pickle_file(event.data)
            if event.kind not in (EventKind.YIELDED, EventKind.PUSHED):
                self.plan.ended(event.key)
                # also when it ended on its own before the cancel reached it (a remote node
                # hears of a cancel late): its unit_started must not stay open
                sent = ((event.signal or "SIGINT") if event.kind is EventKind.CANCELLED
                        else "none")
                self.bus.publish(ev.UnitCancelled(task=event.key.task, iter=event.key.iter,
                                                  signal=sent, node=run.node))
                self._pump()
            return
        if state.speculative and event.kind in (EventKind.DONE, EventKind.FAILED,
                                                EventKind.DIED):
            state.finished = event  # counts only if its upstream's new value is the same
            self._pump()
            return
        if event.kind is EventKind.YIELDED:
            self._yielded(event.key.task, run, event.data or NONE_PICKLE)
        elif event.kind is EventKind.PUSHED:
            self._pushed(event.key.task)
        else:
            self.plan.ended(event.key)
            duration = event.duration or (time.monotonic() - run.started)
            if event.kind is EventKind.DONE:
                if not event.key.iter and run.mode is Mode.CALL and self.plan.ready_count():
                    # outside scopes the freed slot takes the next ready unit before this
                    # result is looked at, so the worker does not wait meanwhile; in a scope
                    # the result goes first: the unit it makes ready (the next stage of this
                    # iteration) is the one to start next (depth first)
                    self._pump()
                self._done_unit(run, event.data or NONE_PICKLE, duration)
            elif event.kind is EventKind.CANCELLED and run.failure is not None:
                self._failed_or_retried(run, event, run.failure, duration)
            elif event.kind is EventKind.CANCELLED:
                self._cancelled(run, event, duration)
            else:
                self._failed_or_retried(run, event, event.error or "failed", duration)
        self.recorder.soon()
        self._pump()

    def _yielded(self, name: str, run: Launched, data: bytes | tuple[str, str]) -> None:
        try:
            value = self._put_pickle(data)
        except ObjectWriteError as exc:  # the generator fails with the message, once stopped
            if run.failure is None:
                run.failure = str(exc)
                self.executor.cancel(UnitKey(name))
            return
        if isinstance(data, bytes):
            self._remember(value, data)
        if run.mode is Mode.GENERATE:
            key: Key = (run.next_index,)
            run.next_index += 1
            self.recorder.iteration(name, run.resolution.signature, key[0], key, value)
        else:
            c = self.consumers[name]
            outer = self.keys.get(c.generator, [])
            prefix = outer[c.acked] if c.acked < len(outer) and c.acked < c.pushed else (
                len(outer),)
            key = (*prefix, c.yielded_in_push)
            c.yielded_in_push += 1
        self._new_iteration(name, key, value)

    def _pushed(self, name: str) -> None:
        c = self.consumers[name]
        keys = self.keys.get(c.generator, [])
        if c.acked < len(keys):
            self.bus.publish(ev.Push(task=name, iter=keys[c.acked]))
        c.acked += 1
        c.yielded_in_push = 0

    def _put_pickle(self, data: bytes | tuple[str, str]) -> str:
        """Store a unit's pickle: its bytes, or (path, digest) of the file its worker pickled
        it into, in the store's object folder (a big one: never held in memory here)."""
        if isinstance(data, bytes):
            return self.store.put_object(data)
        path, digest = data
        return self.store.adopt_object(Path(path), digest)

    def _done_unit(self, run: Launched, data: bytes | tuple[str, str], duration: float
                   ) -> None:
        resolution = run.resolution
        name, key = resolution.task, resolution.iter
        if name in self.consumers:
            resolution = self._final_consumer_resolution(self.consumers[name], resolution)
        task = run.task
        try:
            output = self._put_pickle(data)
        except ObjectWriteError as exc:  # e.g. "no space left on device writing its output"
            self._failed(run, str(exc), duration)
            return
        if isinstance(data, bytes):  # its downstream units and pushes will want it soon
            self._remember(output, data)
        # before any downstream unit looks at them: they are this unit's products
        produced = self.resolver.hash_outputs(task, produced=True)
        outputs = {k: v for k, v in produced.items() if v is not None}
        if task.outputs:
            self.last_outputs[name] = produced
        self.summary.ran += 1
        self.bus.publish(ev.UnitFinished(task=name, iter=key, duration=duration, node=run.node))
        if task.kind is Kind.COLLECTOR:
            self.bus.publish(ev.Gather(task=name, iter=key))
        if task.kind is Kind.GENERATOR:
            clean = self._record_done(task, resolution, output, outputs, duration)
            self._generator_finished(name, run, resolution, clean)
            self._generator_done(name)
        else:
            # the units waiting for this value start first: what is checked and written down
            # below is for later builds, and a chain of short tasks waits for each step's start
            if key:
                last = self.resolver.last_state(name, key)
                if last is None or last.output != output:
                    self.new_values.add((name, key))
            self._set_value(name, key, output)
            self._record_done(task, resolution, output, outputs, duration)

    def _record_done(self, task: Task, resolution: Resolution, output: str,
                     outputs: dict[str, str], duration: float) -> bool:
        """Record a unit that ran; whether it is clean (race-safe completion)."""
        left = self.recorder.ran(task, resolution, output, outputs, duration)
        if left is None:
            self.self_changing.pop(task.name, None)
            return True
        self.self_changing[task.name] = left  # dev tells a task that rewrites its own inputs
        return False

    def _final_consumer_resolution(self, c: Consumer, resolution: Resolution) -> Resolution:
        fixed = self._upstream_values(c.name, (), in_scope=False) or {}
        return self.resolver.resolve(c.name, fixed, (), c.sequence.hexdigest())

    def _generator_finished(self, name: str, run: Launched, resolution: Resolution,
                            clean: bool) -> None:
        if not clean:
            return
        if run.mode is Mode.INNER_GENERATE:  # its signature is known only now
            for index, key in enumerate(self.keys.get(name, [])):
                self.recorder.iteration(name, resolution.signature, index, key,
                                        self.values[(name, key)])
        self.recorder.generator_complete(name, resolution.signature,
                                         len(self.keys.get(name, [])))

    def _cancelled(self, run: Launched, event: ExecEvent, duration: float) -> None:
        self.recorder.state(run.resolution, UnitStatus.CANCELLED, None, duration, None)
        consumer = self.consumers.get(event.key.task)
        if consumer is not None and consumer.blocked:  # cancelled by us: its scope broke
            self.summary.blocked.append(event.key.task)
            return
        self.summary.cancelled += 1
        self.bus.publish(ev.UnitCancelled(task=event.key.task, iter=event.key.iter,
                                          signal=event.signal or "SIGINT", node=run.node))
        self._block_consumers(event.key.task, f"{event.key.format()} was cancelled")

    # -- timeout and retries (the header's keys; the rule is engine/retries.py) -------------
    def _plan_limits(self, executor: Executor) -> None:
        """An executor that runs units on this machine (LocalLimits) has a memory budget
        and GPUs: the plan starts a unit once its share is free. Ray places units itself."""
        limits = getattr(executor, "limits", None)
        if isinstance(limits, LocalLimits):
            self.plan.limits = limits.totals()

    def _limits_at_launch(self, job: Job) -> None:
        """A retry appends to its log (the earlier attempts stay readable); a unit with a
        `timeout` is cancelled once it has run that long, whichever executor runs it."""
        if self._attempts.launched(job.key):
            job.fresh_log = False
        self._timed_out.pop(job.key, None)
        if job.timeout is not None:
            run = self.running[job.key].payload
            asyncio.get_running_loop().call_later(job.timeout, self._time_out, job.key, run,
                                                  job.timeout)

    def _time_out(self, key: UnitKey, run: Launched, seconds: float) -> None:
        state = self.running.get(key)
        if (state is None or state.payload is not run or state.superseded
                or state.finished is not None or run.failure is not None):
            return  # it ended, or is ending for another reason
        run.failure = f"timed out after {seconds:g} s"
        self._timed_out[key] = run
        self.executor.cancel(key)  # its CANCELLED then fails it with run.failure

    def _failed_or_retried(self, run: Launched, event: ExecEvent, error: str,
                           duration: float) -> None:
        """A unit ended without a value: run it again if its task's `retries` allow (task
        units only: a generator's or collector's values have streamed on already)."""
        key = event.key
        timed_out = self._timed_out.pop(key, None) is run
        if run.mode is Mode.CALL:
            ending = (Ending.TIMED_OUT if timed_out else Ending.REFUSED if event.refused else
                      Ending.DIED if event.kind is EventKind.DIED else Ending.FAILED)
            retry = self._attempts.after_failure(key, run.task.retries, ending, error,
                                                 self.stopping)
            if retry is not None:
                self._retry(key, run, retry)
                return
            history = self._attempts.history(key, run.task.retries, error)
            self._attempts.forget(key)
            if history is not None:
                error = f"{error.rstrip()}\n{history}"
        self._failed(run, error, duration)

    def _retry(self, key: UnitKey, run: Launched, retry: Retry) -> None:
        path = log_path(self.project.config, key.task, key.iter)
        try:
            with open(path, "a", encoding="utf-8") as log_file:
                log_file.write(f"\n--- watchrun: {retry.log_line()} ---\n")
        except OSError:
            pass  # the event still says it; the next attempt's worker reports a log it cannot open
        self.bus.publish(ev.UnitRetry(task=key.task, iter=key.iter, attempt=retry.attempt,
                                      cause=retry.cause))
        self.plan.want(key, run.resolution)

    def _failed(self, run: Launched, error: str, duration: float) -> None:
        resolution = run.resolution
        self.recorder.state(resolution, UnitStatus.FAILED, None, duration, error)
        self.summary.failed += 1
        self.bus.publish(ev.UnitFailed(task=resolution.task, iter=resolution.iter,
                                       error=error, node=run.node))
        unit = UnitKey(resolution.task, resolution.iter).format()
        self._block_consumers(resolution.task, f"{unit} failed")
        for down in sorted(self.graph.downstream_closure([resolution.task]) - {resolution.task}):
            if down in self.needed and down not in self.summary.blocked:
                self.summary.blocked.append(down)
        if self.options.fail_fast:
            self._stop()

    def _block_consumers(self, name: str, why: str) -> None:
        """A unit that will never have a value: the consumers of its scope cannot complete."""
        for down in self.graph.downstream_closure([name]):
            c = self.consumers.get(down)
            if c is None or c.blocked:
                continue
            c.blocked = why
            if UnitKey(down) in self.running:
                self.executor.cancel(UnitKey(down))

    # -- stopping and committing -------------------------------------------------------------
    def _stop(self) -> None:
        self.stopping = True
        self.plan.clear()
        for key in list(self.running):
            self.executor.cancel(key)
        self._pump()

    def flush(self) -> None:
        message = self.recorder.flush()
        if message is not None:
            self.bus.publish(ev.Error(message=message, file=None, line=None))


def _drop_pickle_file(data: object) -> None:
    """A big pickle a worker wrote into the object folder for a result that is not kept."""
    if isinstance(data, tuple):
        with contextlib.suppress(OSError):
            os.unlink(data[0])
