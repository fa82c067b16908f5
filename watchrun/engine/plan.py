"""The build plan: which ready unit runs next, what runs, and what a change does to it.

Synchronous and free of processes, files, SQLite and asyncio, so that every scheduling rule is
proven in microseconds over fakes (tests/test_plan.py). Two parts:
- `Readiness` (engine/readiness.py): the values known so far, each generator's iteration keys,
  and which units (or consumers) a new value makes ready;
- `Plan`: the ready units in the streaming order, the running units and their states (paused,
  superseded, speculative), the read-ahead window, and what a change does (`replan`,
  `decide`).
The driver (`engine.scheduler`) resolves units against the store, hands the plan the ones that
must run, asks it for work when the executor has room, tells it what the executor reported,
and has the recorder (`engine.recorder`) write down results. The plan answers with decisions;
it never calls back.

Order among ready units (SPEC section 3, "streaming order"):
1. a higher `priority` first;
2. an earlier iteration first (keys compare as tuples: `()` before `(0,)` before `(0, 3)` before
   `(1,)`), so each iteration flows through its scope while later ones are still produced;
3. a later stage first (the stage is the task's depth in the DAG), which is what makes the
   order depth first: the unit that brings an iteration closer to its collector wins;
4. the order in which the units became ready.

A generator is not read further ahead of its slowest consumer than `window` ready units of its
scope: `throttled()` names the generators to hold (the driver pauses their process) and the ones
to let go.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Mapping
from typing import Generic, NamedTuple, TypeVar

from watchrun.executors.base import UnitKey
from watchrun.project.graph import Graph

Payload = TypeVar("Payload")  # what a ready unit carries (the driver's resolution)
Live = TypeVar("Live")  # what a running unit carries (the driver's record of its job)


class TaskRank(NamedTuple):
    """What the plan needs to know of a task to order its units."""

    priority: int = 0  # the header's `priority`: higher runs first
    stage: int = 0  # longest path from a task without upstreams: later stages go first
    persistent: bool = False  # generators, collectors: a process of their own, outside `jobs`
    generator: str = ""  # the innermost generator of its scope, whose yields make its keys
    slots: int = 1  # `jobs` slots one unit takes (its `resources.cpus`, see cpu_slots)
    memory: int = 0  # bytes of the memory budget one unit takes (`resources.memory`)
    gpus: int = 0  # GPUs one unit holds (`resources.gpus`)


class Replan(NamedTuple):
    """What a change does to the running units and the tasks to plan again."""

    cancel: list[UnitKey]  # stale now: their signature changed, or their task is gone
    keep: list[UnitKey]  # downstream of a change: run on until the upstream's new value is known
    schedule: list[str]  # the tasks to resolve again, in the plan's order


class Running(Generic[Live]):
    """A unit handed to the executor and not ended yet."""

    __slots__ = ("finished", "paused", "payload", "speculative", "superseded", "unit")

    def __init__(self, unit: UnitKey, payload: Live) -> None:
        self.unit = unit
        self.payload = payload
        self.paused = False  # SIGSTOPped by the user
        # kept running while an upstream reruns: it counts only if that upstream's new value
        # is the one it started with (early cutoff), and is cancelled otherwise
        self.speculative = False
        self.superseded = False  # being cancelled because it is stale: its result is dropped
        self.finished: object = None  # a speculative unit's result, held until it is decided


_NO_RANK = TaskRank()


class _Entry(NamedTuple):
    order: tuple[int, tuple[int, ...], int, int]
    unit: UnitKey
    payload: object


class Plan(Generic[Payload, Live]):
    def __init__(self, ranks: Mapping[str, TaskRank] | Callable[[], Mapping[str, TaskRank]],
                 window: int = 8) -> None:
        # a callable is called when a unit first has to be ordered: a build with nothing to
        # run never works the ranks out
        self._ranks: dict[str, TaskRank] | None = None
        self._make_ranks = ranks if callable(ranks) else None
        if not callable(ranks):
            self._ranks = dict(ranks)
        self.window = max(window, 1)
        self.running: dict[UnitKey, Running[Live]] = {}
        self._ready: list[_Entry] = []
        self._ready_persistent: list[_Entry] = []  # they take no slot: never wait for one
        self._counter = itertools.count()
        self._backlog: dict[str, int] = {}  # innermost generator -> ready units of its scope
        self.wants = 0  # units wanted so far (a driver compares two counts)
        self._held: set[str] = set()  # generators the driver was told to hold
        # tasks whose code on disk is not what this plan decided on (dev: a file saved with an
        # error, or changed under a unit that then failed): none of their units starts until
        # the project is read again (`hold_tasks`)
        self.code_held: frozenset[str] = frozenset()
        # (memory budget in bytes, GPUs) of the machine running the units (the local
        # executor); None: the executor places units itself (Ray). A budget of 0: no limit.
        self.limits: tuple[int, int] | None = None

    # -- ready units ------------------------------------------------------------------------
    @property
    def ranks(self) -> dict[str, TaskRank]:
        if self._ranks is None:
            assert self._make_ranks is not None
            self._ranks = dict(self._make_ranks())
        return self._ranks

    def set_ranks(self, ranks: Mapping[str, TaskRank]) -> None:
        """A new project (dev): tasks may have come, gone or moved."""
        self._ranks = dict(ranks)
        entries = self._ready + self._ready_persistent
        self.clear()
        for entry in entries:
            if entry.unit.task in self.ranks:
                self.want(entry.unit, entry.payload)  # type: ignore[arg-type]

    def want(self, unit: UnitKey, payload: Payload) -> None:
        """The unit must run: it joins the ready units in the streaming order."""
        rank = self.ranks.get(unit.task, _NO_RANK)
        self.wants += 1
        order = (-rank.priority, unit.iter, -rank.stage, next(self._counter))
        heap = self._ready_persistent if rank.persistent else self._ready
        heapq.heappush(heap, _Entry(order, unit, payload))
        if rank.generator and unit.iter:
            self._backlog[rank.generator] = self._backlog.get(rank.generator, 0) + 1

    def persistent_ready(self) -> bool:
        """A generator or collector is ready: it starts whatever the free slots."""
        return bool(self._ready_persistent)

    def ready_count(self) -> int:
        return len(self._ready) + len(self._ready_persistent)

    def find_work(self, slots: int, queued: int = 0) -> list[Payload]:
        """Every ready persistent unit, then up to `slots` other ready units, best first. A
        unit whose stale predecessor is still being cancelled waits for it, and so do the
        units of a task the user paused (one of its running units is paused).

        `queued`: places in the queue of a busy worker, beyond the free slots. Only a unit
        outside any scope takes one: in a scope, the unit that a finishing worker's result
        makes ready (the next stage of its iteration) is the one that should start next, and
        a place taken now would commit an earlier stage of a later iteration before it."""
        found: list[Payload] = []
        waiting: list[_Entry] = []
        calls_found = 0
        chosen: list[UnitKey] = []  # task units found in this call (they start now)
        # the user paused them, or their code on disk is not the plan's: none of their
        # units starts
        held = self.paused_tasks() | self.code_held
        for heap, persistent in ((self._ready_persistent, True), (self._ready, False)):
            while heap and (persistent or slots > 0 or (queued > 0 and not heap[0].unit.iter)):
                if held and heap[0].unit.task in held:
                    waiting.append(heapq.heappop(heap))
                    continue
                if not persistent and not (self._fits(heap[0].unit, slots, calls_found)
                                           and self._within_limits(heap[0].unit, chosen)):
                    break  # the best unit waits for its slots: nothing overtakes it for ever
                entry = heapq.heappop(heap)
                if entry.unit in self.running:
                    waiting.append(entry)
                    continue
                self._left_ready(entry.unit)
                found.append(entry.payload)  # type: ignore[arg-type]
                if persistent:
                    pass
                elif slots > 0:
                    calls_found += 1
                    chosen.append(entry.unit)
                    slots = max(slots - self.ranks.get(entry.unit.task, _NO_RANK).slots, 0)
                else:
                    queued -= 1
            for entry in waiting:
                heapq.heappush(heap, entry)
            waiting.clear()
        return found

    def _fits(self, unit: UnitKey, slots: int, calls_found: int) -> bool:
        """A unit taking several slots (`resources.cpus`) starts once that many are free, or
        alone when it asks for more than there are: once no other task unit runs or starts."""
        need = self.ranks.get(unit.task, _NO_RANK).slots
        if need <= 1 or need <= slots:
            return True
        alone = not calls_found and not any(not self.ranks.get(u.task, _NO_RANK).persistent
                                      for u in self.running)
        return alone and slots > 0

    def _within_limits(self, unit: UnitKey, chosen: list[UnitKey]) -> bool:
        """A unit asking for memory or GPUs starts once the units running (and those just
        chosen) leave it its share. One asking for more than there is at all starts at
        once: the executor fails it, saying so, rather than it waiting for ever."""
        rank = self.ranks.get(unit.task, _NO_RANK)
        if self.limits is None or not (rank.memory or rank.gpus):
            return True
        budget, gpus = self.limits
        if rank.gpus > gpus or (budget and rank.memory > budget):
            return True
        used_memory = used_gpus = 0
        for other in itertools.chain(self.running, chosen):
            other_rank = self.ranks.get(other.task, _NO_RANK)
            used_memory += other_rank.memory
            used_gpus += other_rank.gpus
        return ((not budget or used_memory + rank.memory <= budget)
                and used_gpus + rank.gpus <= gpus)

    def calls_slots(self) -> int:
        """The slots the running task units take (each its `slots`)."""
        return sum(self.ranks.get(u.task, _NO_RANK).slots for u, r in self.running.items()
                   if not self.ranks.get(u.task, _NO_RANK).persistent and r.finished is None)

    def busy_calls(self) -> int:
        """Task units (not persistent ones) handed to the executor and not ended there."""
        return sum(1 for u, r in self.running.items()
                   if not self.ranks.get(u.task, _NO_RANK).persistent and r.finished is None)

    def drop(self, tasks: Iterable[str]) -> None:
        """Forget the ready units of these tasks (they are planned again, or gone)."""
        names = set(tasks)
        for heap in (self._ready, self._ready_persistent):
            if not any(e.unit.task in names for e in heap):
                continue
            kept = []
            for entry in heap:
                if entry.unit.task in names:
                    self._left_ready(entry.unit)
                else:
                    kept.append(entry)
            heapq.heapify(kept)
            heap[:] = kept

    def clear(self) -> None:
        self._ready.clear()
        self._ready_persistent.clear()
        self._backlog.clear()

    def _left_ready(self, unit: UnitKey) -> None:
        gen = self.ranks.get(unit.task, _NO_RANK).generator
        if gen and unit.iter:
            self._backlog[gen] = max(self._backlog.get(gen, 0) - 1, 0)

    def follower(self, leader: UnitKey, candidates: Iterable[UnitKey]) -> UnitKey | None:
        """The unit to queue behind `leader` on its worker (`watchrun build`, executors/
        follow.py): of `candidates` (units the leader's end alone makes ready), the first in
        the streaming order, if nothing ready now would come before it. It starts there the
        moment the leader ends, when it must run; so only a plain unit qualifies: a task
        unit outside any scope taking one slot and no memory or GPUs, behind a task unit
        outside any scope, neither held by the user nor by broken code."""
        ranks = self.ranks
        rank = ranks.get(leader.task)
        if rank is None or rank.persistent or leader.iter:
            return None
        held = self.paused_tasks() | self.code_held
        best: tuple[tuple[int, tuple[int, ...], int], UnitKey] | None = None
        for unit in candidates:
            rank = ranks.get(unit.task)
            if rank is None or rank.persistent or rank.generator or unit.iter \
                    or rank.slots != 1 or rank.memory or rank.gpus \
                    or unit.task in held or unit in self.running:
                continue
            order = (-rank.priority, unit.iter, -rank.stage)
            if best is None or order < best[0]:
                best = (order, unit)
        if best is None or (self._ready and self._ready[0].order[:3] <= best[0]):
            return None
        return best[1]

    # -- the bounded read-ahead window --------------------------------------------------------
    def throttled(self) -> tuple[list[str], list[str]]:
        """(generators to hold now, generators to let go now). A generator is held once its
        scope has `window` units waiting to run, and let go when that falls to half."""
        hold, release = [], []
        for gen, backlog in self._backlog.items():
            if gen not in self._held and backlog >= self.window:
                self._held.add(gen)
                hold.append(gen)
        for gen in sorted(self._held):
            if self._backlog.get(gen, 0) <= self.window // 2 or gen not in self.ranks:
                self._held.discard(gen)
                release.append(gen)
        return sorted(hold), release

    def held(self, gen: str) -> bool:
        return gen in self._held



    # -- running units --------------------------------------------------------------------------
    def started(self, unit: UnitKey, payload: Live) -> Running[Live]:
        run = Running(unit, payload)
        self.running[unit] = run
        return run

    def ended(self, unit: UnitKey) -> Running[Live] | None:
        """The executor says the unit ended (done, failed, cancelled or died)."""
        return self.running.pop(unit, None)

    def active(self, task: str) -> list[UnitKey]:
        """The task's running units that are not being cancelled."""
        return [u for u, r in self.running.items() if u.task == task and not r.superseded]

    def paused_tasks(self) -> set[str]:
        return {u.task for u, r in self.running.items() if r.paused and not r.superseded}

    def supersede(self, unit: UnitKey) -> bool:
        """Mark a running unit stale; True if the driver must cancel it now."""
        run = self.running.get(unit)
        if run is None or run.superseded:
            return False
        run.superseded = True
        run.speculative = False
        run.paused = False
        return True

    def more_to_do(self) -> bool:
        return bool(self._ready or self._ready_persistent or self.running)

    # -- changes --------------------------------------------------------------------------------
    def replan(self, changed: set[str], reset: set[str],
               file_upstreams: Mapping[str, Iterable[str]]) -> Replan:
        """A change: `changed` are the tasks whose own signature may differ (or which are
        gone), `reset` those and everything below them; `file_upstreams` maps a task to the
        upstreams it depends on through files (an output read as an input), not values.

        A running unit of a changed task is stale: cancelled. A running unit below one keeps
        running while its upstreams rerun, if it receives them as values and runs in a slot
        (not a persistent generator or collector, whose pushes would be redone anyway): its
        result counts if the values it started with come again (early cutoff); see `decide`.
        A reader of a rewritten file cannot be kept: the file changes under it."""
        cancel, keep = [], []
        for unit, run in self.running.items():
            if run.superseded or unit.task not in reset:
                continue
            rank = self.ranks.get(unit.task)
            if (unit.task in changed or rank is None or rank.persistent
                    or any(up in reset for up in file_upstreams.get(unit.task, ()))):
                run.superseded = True
                run.speculative = False
                run.paused = False
                cancel.append(unit)
            else:
                run.speculative = True
                keep.append(unit)
        self.drop(reset)
        schedule = sorted((t for t in reset if t in self.ranks),
                          key=lambda t: (self.ranks[t].stage, t))
        return Replan(sorted(cancel), sorted(keep), schedule)

    def undecidable(self) -> list[UnitKey]:
        """Speculative units that nothing can decide any more: nothing is ready and every
        other running unit is being cancelled (their upstream failed, or their iteration is
        gone). They are stale now: superseded, and the driver cancels them."""
        if self._ready or self._ready_persistent:
            return []
        if any(not r.speculative and not r.superseded for r in self.running.values()):
            return []
        stale = [u for u, r in self.running.items() if r.speculative]
        for unit in stale:
            self.supersede(unit)
        return sorted(stale)

    def decide(self, unit: UnitKey, started_with: Mapping[str, str],
               now: Mapping[str, str]) -> bool:
        """A speculative unit's upstream values are all known again: True if it counts (the
        same values: early cutoff), False if it was superseded (the driver cancels it, or
        drops its held result, and runs it again)."""
        run = self.running.get(unit)
        if run is None or not run.speculative:
            return not (run is not None and run.superseded)
        run.speculative = False
        if dict(started_with) == dict(now):
            return True
        run.superseded = True
        run.paused = False
        return False


def cutoff_waits(changed: Iterable[str], before: Graph, after: Graph,
                 plain: Callable[[str], bool]) -> set[str]:
    """The changed tasks whose downstream need not be touched until their new value is known
    (early cutoff before the fact, SPEC section 4): while such a task reruns, everything below
    it, running units, streaming generators and collectors included, goes on with the value it
    has; the same value again leaves all of it as it is, another one resets it then.

    A task qualifies when its value is one value (`plain`: a task outside any scope, with a
    value known now and needed by this build), nobody reads its files (a rerun rewrites them
    under their readers), and the change left every edge below it as it was (the same
    upstream arguments, scopes and file edges), so that what runs below still stands for
    the new project."""
    waits = set()
    for name in changed:
        if name not in after.order or not plain(name) or after.scope.get(name):
            continue
        if any(name in producers for producers in after.reads_files_of.values()):
            continue
        below = after.downstream_closure([name])
        if below != before.downstream_closure([name]):
            continue
        if all(before.upstreams.get(t) == after.upstreams.get(t)
               and before.scope.get(t) == after.scope.get(t)
               and before.reads_files_of.get(t) == after.reads_files_of.get(t)
               for t in below):
            waits.add(name)
    return waits


def stages(upstreams: Mapping[str, Iterable[str]], order: Iterable[str]) -> dict[str, int]:
    """Each task's stage: the length of the longest path from a task without upstreams
    (`order` is topological, so every upstream's stage is known before its downstream's)."""
    stage: dict[str, int] = {}
    for name in order:
        stage[name] = 1 + max((stage.get(up, 0) for up in upstreams.get(name, ())), default=-1)
    return stage
