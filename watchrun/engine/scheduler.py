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
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from watchrun.engine import events as ev
from watchrun.engine.dispatch import Dispatch, task_ranks
from watchrun.engine.driver_state import (
    NONE_PICKLE,
    BuildOptions,
    BuildSummary,
    DriverState,
    Launched,
    Replay,
    drop_pickle_file,
)
from watchrun.engine.endings import Endings
from watchrun.engine.followers import Followers
from watchrun.engine.plan import Plan
from watchrun.engine.proven import covered_tasks
from watchrun.engine.readiness import Readiness, Wake
from watchrun.engine.reasons import Reason, ReasonKind
from watchrun.engine.recorder import Recorder
from watchrun.engine.replanning import Replanning
from watchrun.engine.resolve import Resolution, Resolver, TaskPaths
from watchrun.engine.retries import Attempts
from watchrun.engine.scopes import (
    Consumer,
    Key,
    contribution,
    is_persistent,
)
from watchrun.engine.streaming import Streaming
from watchrun.executors.base import (
    EventKind,
    ExecEvent,
    Executor,
    Mode,
    UnitKey,
)
from watchrun.executors.worker_outputs import OutputHash
from watchrun.project.codemap import ArgSpec
from watchrun.project.loader import Project
from watchrun.project.model import Kind, Task
from watchrun.state.hashing import FileHasher
from watchrun.state.proof import ProvenClean
from watchrun.state.store import ObjectWriteError, Store, UnitStatus

# seconds of resolving units found at the start of a build (or after a change) between two
# looks at the executor, while something runs: see _drain
CHECK_SLICE = 0.0001


__all__ = ["BuildOptions", "BuildSummary", "Scheduler"]

_ENDS = frozenset({EventKind.DONE, EventKind.FAILED, EventKind.CANCELLED, EventKind.DIED})


class Scheduler(Dispatch, Streaming, Replanning, Endings, DriverState):
    """The driver. Its parts, by concern: resolving and results (here), launching
    (engine/dispatch.py), generators and consumers (engine/streaming.py), a live session's
    changes (engine/replanning.py), units ending without a value (engine/endings.py)."""

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
        # released iterations (streaming.py, _release_committed) are read back from the
        # store; a generator outside any scope -> the signature its iterations are stored by
        self._gen_signatures: dict[str, str] = {}
        self._replaying: dict[str, Replay] = {}  # clean generators being replayed, by name
        self.readiness.read_back = self._read_back_value
        self.recorder.committed = self._release_committed
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
        self.build_open = False  # a build_started not yet ended by its build_finished
        self.would_run: set[str] = set()  # --dry-run: the tasks found dirty
        self.stopping = False
        self.paused = False  # dev: scheduling stopped by the user
        self.targets: list[str] = []
        # dev: changed tasks whose downstream goes on with their value before the change
        # until their new value is known (see invalidate), and that value
        self._cutoff: dict[str, str] = {}
        self.last_inputs: dict[str, dict[str, str | None]] = {}  # dev: inputs last resolved with
        # dev: time.time_ns() when the project's files were last read (engine/code_on_disk.py);
        # None in a build, where a unit's end (failed or done) is always its own code's
        self.code_read_ns: int | None = None
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
        self.followers = Followers()
        # what the last build's proof still proves (build only, its first check: see
        # engine/proven.py)
        self.proven: ProvenClean | None = None
        # the tasks it covers, not yet said clean: their values and paths
        self._covered: dict[str, tuple[str, TaskPaths]] = {}
        self._covered_hashes: dict[str, str] = {}  # path -> hash, as the proof saw them
        # an executor that can queue a unit behind another on its worker (the local one)
        self._follow = getattr(executor, "follow", None) if options.follow else None

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
        self.build_open = True
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
        if self.options.dry_run:
            self._would_run_below()
        s = self.summary
        self.build_open = False
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
            if self.proven is not None:
                self._note_covered(order, self.proven)
                self.proven = None
            for name in order:
                if not self.graph.scope.get(name) or is_persistent(self.project, name):
                    self._check(name, ())
                else:  # a per-iteration task: every key its scope already has
                    self._wake(self.readiness.reach(name, ()))
        finally:
            self._background = False
        if self._resume is None:
            self._drain()

    def _note_covered(self, order: list[str], proven: ProvenClean) -> None:
        """The tasks the last build's proof still covers are clean with the value it holds:
        each is said so without being resolved, when its turn to be checked comes (so that
        the units that do run are not kept waiting for hundreds of such skips)."""
        if self.forced or self.options.dry_run:
            return

        listed: dict[str, TaskPaths] = {}  # what each task reads and writes, looked up once

        def paths_of(task: Task) -> list[str] | None:
            found = self.resolver.paths_of(task)
            if found is None:
                return None
            listed[task.name] = found
            return found[1] + found[2]

        covered = covered_tasks(self.project, order, proven, paths_of, self.hasher.hash_files)
        if not covered:
            return
        self._covered = {name: (proven.values[name], listed[name]) for name in covered}
        self._covered_hashes = proven.observed
        rest = tuple(name for name in order if name not in self._covered)
        if len(rest) <= len(covered):  # asking for them by name pays when they are few
            self.resolver.only = rest

    def _skip_covered(self, name: str, value: str, paths: TaskPaths) -> None:
        self.seen.add((name, ()))
        self.resolver.adopt_observed(self.project.tasks[name], paths, self._covered_hashes)
        self.summary.skipped += 1
        self.bus.publish(ev.UnitSkipped(task=name, iter=()))
        self._set_value(name, (), value)

    # -- values and readiness ----------------------------------------------------------------
    def _upstream_values(self, name: str, key: Key, in_scope: bool = True
                         ) -> dict[str, str] | None:
        return self.readiness.upstream_values(name, key, in_scope)

    def _depth(self, upstream: str) -> int:
        return self.readiness.depth(upstream)

    def _set_value(self, name: str, key: Key, value: str) -> None:
        if name in self._cutoff and not key:
            self._new_value_of_waited(name, value)
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
        return bool(self._urgent or self._checks or self._current is not None
                    or (self._replaying and not self.stopping))

    def _check_now(self, name: str, key: Key) -> None:
        if self.followers:
            job = self.followers.take_started(UnitKey(name, key))
            if job is not None:  # it runs already (also when the build is stopping)
                self._adopt(job)
                return
        if self.stopping or (name, key) in self.seen or self.readiness.is_released(name, key):
            return
        if name in self.consumers:
            self._advance(self.consumers[name])
            return
        if self._covered and not key and name in self._covered:
            self._skip_covered(name, *self._covered.pop(name))
            return
        upstream = self._upstream_values(name, key)
        if upstream is None or self._awaits_new_value(name, key):
            return
        stale = self.running.get(UnitKey(name, key))
        if stale is not None and stale.superseded:
            return  # decided once its stale run has ended (_superseded_reported), in order
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

    def _awaits_new_value(self, name: str, key: Key) -> bool:
        """dev: an upstream reruns after a change, and its value from before the change only
        stands in for the units it kept running (see invalidate). No unit starts or is
        decided on it: its new value wakes the unit again (the same value or another)."""
        if not self._cutoff:
            return False
        upstreams = self.graph.upstreams.get(name, {}).values()
        return any(up in self._cutoff for up in upstreams if not self._depth(up))

    def _skip(self, name: str, key: Key, resolution: Resolution | None = None) -> None:
        self.summary.skipped += 1
        self.bus.publish(ev.UnitSkipped(task=name, iter=key))
        if resolution is not None and resolution.result is not None:
            self.recorder.found_clean(resolution, resolution.result)
            if self.project.tasks[name].outputs:
                self.last_outputs[name] = dict(resolution.result.outputs)

    def _would_run(self, resolution: Resolution) -> None:
        self.summary.ran += 1
        self.would_run.add(resolution.task)
        self.bus.publish(ev.UnitStarted(task=resolution.task, iter=resolution.iter,
                                        reasons=[r.format() for r in resolution.reasons]))
        if resolution.iter:
            self._would_run_in_scope_below(resolution.task, resolution.iter)

    def _would_run_in_scope_below(self, name: str, key: Key) -> None:
        """--dry-run: the units of the same iteration below a unit that would run are never
        resolved (they wait for its new value), yet they would run too. Their scope's keys
        are known, so each is said, as a unit, with the upstream it waits for: a task of
        the scope with some units clean (a rebuild interrupted, some iterations failed) is
        not taken for clean, and is counted as the build would run it."""
        found = [(name, key)]
        while found:
            up, key = found.pop()
            scope = self.graph.scope.get(up)
            for down in sorted(self.graph.downstreams.get(up, ())):
                if not self._waits_in_scope(down, up, scope) or (down, key) in self.seen:
                    continue
                self.seen.add((down, key))  # decided: never resolved after this
                reasons = [Reason(ReasonKind.UPSTREAM_DIRTY, up).format()]
                if down in self.forced:
                    reasons.insert(0, Reason(ReasonKind.FORCED).format())
                self.summary.ran += 1
                self.would_run.add(down)
                self.bus.publish(ev.UnitStarted(task=down, iter=key, reasons=reasons))
                found.append((down, key))

    def _waits_in_scope(self, down: str, up: str, scope: tuple[str, ...] | None) -> bool:
        """`down` has a unit per iteration of `up`'s scope, taking `up`'s value of the same
        iteration (not a consumer of the scope, nor a reader of `up`'s files only)."""
        return (down in self.needed and down not in self.consumers
                and self.graph.scope.get(down) == scope
                and up in self.graph.upstreams.get(down, {}).values())

    def _would_run_below(self) -> None:
        """--dry-run: a task below one that would run is never resolved (its upstream values
        are known only once that one has run), yet it would run too: said once, with the
        upstreams it waits for (its units, in a scope, are not known before)."""
        reached = {name for name, _ in self.seen} | self.would_run | {
            name for name, c in self.consumers.items() if c.ended}
        below: set[str] = set()
        for name in self.graph.order:
            if name not in self.needed or name in reached or self.project.tasks[name].abstract:
                continue
            ups = [u for u in self.graph.order
                   if u in self.graph.upstreams_of(name) and (u in below or u in self.would_run)]
            reasons = [Reason(ReasonKind.UPSTREAM_DIRTY, u).format() for u in ups] or [
                Reason(ReasonKind.UPSTREAM_DIRTY).format()]
            if name in self.forced:
                reasons.insert(0, Reason(ReasonKind.FORCED).format())
            below.add(name)
            self.summary.ran += 1
            self.bus.publish(ev.UnitStarted(task=name, iter=(), reasons=reasons))

    def set_jobs(self, jobs: int) -> None:
        """dev: `jobs` saved in the settings (see Executor.set_jobs)."""
        self.executor.set_jobs(jobs)
        self.jobs = jobs
        self.plan.window = max(8, 4 * jobs)
        self._pump()

    def hold_code(self, tasks: set[str]) -> None:
        """dev, after each read of the project: the units of these tasks (their code on disk
        has an error) do not start; the others held before may start now."""
        self.plan.code_held = frozenset(tasks)
        self._pump()

    # -- results -----------------------------------------------------------------------------
    def on_exec(self, event: ExecEvent) -> None:
        """The one channel through which the executor reports."""
        state = self.running.get(event.key)
        if state is not None and event.node is not None:
            state.payload.node = event.node  # for its terminal event
        if state is None or event.kind is EventKind.STARTED:
            self._unit_started_or_unknown(event)
            return
        run = state.payload
        if self.followers and event.kind in _ENDS:
            self.followers.leader_ended(event.key, event.follower)
        if state.superseded:
            self._superseded_reported(event, run)
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
            self._ended(run, event)
        self.recorder.soon()
        self._pump()

    def _ended(self, run: Launched, event: ExecEvent) -> None:
        """The unit's terminal event (done, failed, cancelled or died)."""
        self.plan.ended(event.key)
        duration = event.duration or (time.monotonic() - run.started)
        if event.kind is EventKind.DONE and self._waits_for_reload(run, event.key,
                                                                   done_after=duration):
            drop_pickle_file(event.data)  # not the plan's code: nothing of it is kept
        elif event.kind is EventKind.DONE:
            if not event.key.iter and run.mode is Mode.CALL and self.plan.ready_count():
                # outside scopes the freed slot takes the next ready unit before this
                # result is looked at, so the worker does not wait meanwhile; in a scope
                # the result goes first: the unit it makes ready (the next stage of this
                # iteration) is the one to start next (depth first)
                self._pump()
            self._done_unit(run, event.data or NONE_PICKLE, duration, event.output_claims)
        elif event.kind is EventKind.CANCELLED and run.failure is not None:
            self._failed_or_retried(run, event, run.failure, duration)
        elif event.kind is EventKind.CANCELLED:
            self._cancelled(run, event, duration)
        else:
            self._failed_or_retried(run, event, event.error or "failed", duration)

    def _superseded_reported(self, event: ExecEvent, run: Launched) -> None:
        """A change made the unit stale: it is said to be cancelled, and nothing it reports
        is kept. A consumer of the new project waits for it to end (see _advance)."""
        drop_pickle_file(event.data)
        if event.kind in (EventKind.YIELDED, EventKind.PUSHED):
            return
        self.plan.ended(event.key)
        # also when it ended on its own before the cancel reached it (a remote node hears of a
        # cancel late): its unit_started must not stay open
        sent = (event.signal or "SIGINT") if event.kind is EventKind.CANCELLED else "none"
        if not event.key.iter and event.key.task in self.project.tasks:
            # its next run's reasons say so ("last run cancelled"), not "never run" or the
            # reasons of a run before it (in a scope, the states keep the values last made)
            duration = event.duration or (time.monotonic() - run.started)
            self.recorder.state(run.resolution, UnitStatus.CANCELLED, None, duration, None)
        self.bus.publish(ev.UnitCancelled(task=event.key.task, iter=event.key.iter, signal=sent,
                                          node=run.node))
        successor = self.consumers.get(event.key.task)
        if successor is not None and not event.key.iter:
            self._advance(successor)
        elif event.key.task in self.needed:
            self._check(event.key.task, event.key.iter)  # its successor waited for this end
        self._pump()

    def _unit_started_or_unknown(self, event: ExecEvent) -> None:
        drop_pickle_file(event.data)
        if event.kind is EventKind.STARTED and self.plan.limits is None \
                and self.plan.ready_count():
            self._pump()  # connected: an executor that places units may offer more now

    def _put_pickle(self, data: bytes | tuple[str, str]) -> str:
        """Store a unit's pickle: its bytes, or (path, digest) of the file its worker pickled
        it into, in the store's object folder (a big one: never held in memory here)."""
        if isinstance(data, bytes):
            return self.store.put_object(data)
        path, digest = data
        return self.store.adopt_object(Path(path), digest)

    def _done_unit(self, run: Launched, data: bytes | tuple[str, str], duration: float,
                   claims: Sequence[OutputHash] = ()) -> None:
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
        # before any downstream unit looks at them: they are this unit's products (hashed
        # by its worker as it wrote them, where they are still as it left them)
        produced = self.resolver.hash_outputs(task, produced=True, claims=claims)
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

    def flush(self) -> None:
        message = self.recorder.flush()
        if message is not None:
            self.bus.publish(ev.Error(message=message, file=None, line=None))
