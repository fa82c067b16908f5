"""Launching units: the jobs made of resolutions, the slots the plan fills, the
bounded read-ahead window, and what a unit carries into its run (arguments, limits)."""

from __future__ import annotations

import asyncio
import functools
import os
import pickle
import time
from collections.abc import Iterable
from pathlib import Path

from watchrun.engine import events as ev
from watchrun.engine.driver_state import (
    DriverState,
    Launched,
    Thunk,
)
from watchrun.engine.locations import chain_files, log_path
from watchrun.engine.plan import TaskRank, stages
from watchrun.engine.resolve import Resolution
from watchrun.executors.base import (
    Executor,
    Job,
    Mode,
    UnitKey,
    cpu_slots,
)
from watchrun.executors.job_wire import job_label
from watchrun.executors.limits import LocalLimits
from watchrun.project.codemap import ArgSpec
from watchrun.project.loader import Project
from watchrun.project.model import Kind, Resources, Task

_NO_RESOURCES = Resources()  # a task whose header asks nothing: the executor's defaults


def task_ranks(project: Project) -> dict[str, TaskRank]:
    """What the plan orders units by, for every task of the project."""
    graph = project.graph
    stage = stages({n: graph.upstreams_of(n) for n in graph.order}, graph.order)
    ranks = {}
    for name, task in project.tasks.items():
        scope = graph.scope.get(name, ())
        ranks[name] = TaskRank(task.priority, stage.get(name, 0),
                               task.kind is not Kind.TASK, scope[-1] if scope else "",
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


class Dispatch(DriverState):
    """The driver's part that hands ready units to the executor."""

    # -- dispatch ----------------------------------------------------------------------------
    def _offered(self, task: Task, exclude: set[str]) -> dict[str, Thunk]:
        """Argument name -> a thunk giving its pickled value (upstreams are read lazily)."""
        offered: dict[str, Thunk] = {}
        for pname, param in task.params.items():
            offered[pname] = functools.partial(_dumps, param.value)
        offered["inputs"] = lambda: _dumps(self.resolver.input_paths(task))
        return {k: v for k, v in offered.items() if k not in exclude}

    def _job(self, resolution: Resolution, mode: Mode, skip: set[str] | None = None) -> Job:
        return self._job_of(resolution.task, resolution.iter, resolution.upstream, mode, skip)

    def _job_of(self, name: str, key: tuple[int, ...], upstream: dict[str, str], mode: Mode,
                skip: set[str] | None = None) -> Job:
        task = self.project.tasks[name]
        offered = self._offered(task, skip or set())
        for arg, up in self.graph.upstreams.get(task.name, {}).items():
            if skip and arg in skip:
                continue
            # the values its signature was made of (a released one is no longer held)
            digest = upstream.get(arg) or self.values[(up, key[: self._depth(up)])]
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
            outputs=tuple(self.resolver.output_paths(task).values()),
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
        if self._replaying:
            self._replay_more()
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
            if free <= 0 and not self.plan.persistent_ready():
                return  # every slot and queue place is taken: nothing ready can start
            calls = self.plan.calls_slots()  # a unit asking for 2 cpus takes 2 slots
            slots = min(free, max(self._jobs_offered(free) - calls, 0))
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

    def _jobs_offered(self, free: int) -> int:
        """`jobs`: the executor's free slots when the build began, or more once an executor
        that places units itself (Ray, `jobs` not set) has connected and counts the
        cluster's CPUs: its free slots plus the units of ours it runs. (The local executor
        offers places in busy workers' queues beyond `jobs`: its count never grows here.)"""
        if self.plan.limits is None:
            offered = free + self.plan.busy_calls()
            if offered > self.jobs:
                self.jobs = offered
                self.plan.window = max(self.plan.window, 4 * offered)
        return self.jobs

    def _throttle(self) -> None:
        """The bounded read-ahead window: a generator whose scope has enough units waiting
        is held until they drain, so a scope of millions of items is read as fast as it is
        consumed. The local executor holds it at its next `yield` (its credit withheld,
        executors/yield_credit.py); another one stops it (SIGSTOP, like a pause), or cannot
        (Ray) and does not hold it."""
        hold, release = self.plan.throttled()
        for gen in hold:
            key = UnitKey(gen)
            if key in self.running and not self.executor.hold_yields(key, True) \
                    and not self.paused:
                self.executor.pause(key)
        for gen in release:
            key = UnitKey(gen)
            if key in self.running and not self.executor.hold_yields(key, False) \
                    and not self.paused:
                self.executor.resume(key)

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
        self._runs(job, resolution, mode, submit=True)

    def _runs(self, job: Job, resolution: Resolution, mode: Mode, submit: bool) -> None:
        """The unit runs: submitted now, or (a follower) already started by its worker."""
        task = self.project.tasks[resolution.task]
        self.plan.started(job.key, Launched(resolution, time.monotonic(), mode, task,
                                            job.start or 0))
        self._limits_at_launch(job)
        self._done.clear()
        if submit:
            self.executor.submit(job)
        # said once the job is on its way: the reasons read the unit's history, and nothing
        # the executor reports about the unit can come before this turn of the loop ends
        retry = self._attempts.retry_reason(job.key)
        reasons = [retry] if retry is not None else [r.format() for r in resolution.reasons]
        self.bus.publish(ev.UnitStarted(task=resolution.task, iter=resolution.iter,
                                        reasons=reasons))
        if mode is Mode.CALL and self._follow is not None and not resolution.iter:
            self._queue_follower(resolution.task)

    # -- followers: the next unit of a chain waits on the worker (build only) ---------------
    def _queue_follower(self, leader: str) -> None:
        """Queue behind the unit of `leader` (just started) the unit of a task that its end
        alone makes ready, if the plan picks one (Plan.follower): the worker goes on with
        it the moment the leader ends DONE, when its new outputs make it dirty
        (executors/follow.py), while the driver records the leader. The driver adopts it as
        it resolves it (`_adopt`)."""
        assert self._follow is not None
        if self.stopping:
            return
        candidates: dict[UnitKey, dict[str, str]] = {}
        for down in sorted(self.graph.downstreams.get(leader, ())):
            upstream = self.readiness.ready_after(down, leader)
            if upstream is not None and (down, ()) not in self.seen:
                candidates[UnitKey(down)] = upstream
        unit = self.plan.follower(UnitKey(leader), candidates)
        if unit is None or self.project.tasks[unit.task].resources != _NO_RESOURCES:
            return
        follows = self.resolver.follow(unit.task, leader, job_label(UnitKey(leader)),
                                       candidates[unit], forced=unit.task in self.forced)
        if follows is None:
            return
        job = self._job_of(unit.task, (), candidates[unit], Mode.CALL)
        job.fresh_log = True
        job.follows = follows
        if self._follow(job, UnitKey(leader)):
            self.followers.queued(UnitKey(leader), job)

    def _adopt(self, job: Job) -> None:
        """A follower its worker started as its leader ended: resolved now (its leader's
        value was all it waited for), and running from here on like any launched unit."""
        name = job.key.task
        upstream = self._upstream_values(name, ())
        if upstream is None:  # cannot be: it waited for its leader alone. Not ours to run
            self.executor.cancel(job.key)
            return
        self.seen.add((name, ()))
        resolution = self.resolver.resolve(name, upstream, forced=name in self.forced)
        self.last_inputs[name] = resolution.inputs
        self._runs(job, resolution, Mode.CALL, submit=False)

    # -- limits: memory, GPUs, timeout (the header's keys) ---------------------------------
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
