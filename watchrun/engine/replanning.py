"""A live session's changes applied to the running build: what a change resets, what
keeps running until an upstream's new value is known, and the user's commands on a task."""

from __future__ import annotations

from collections import deque

from watchrun.engine import events as ev
from watchrun.engine.dispatch import task_ranks
from watchrun.engine.driver_state import (
    BuildSummary,
    DriverState,
    drop_pickle_file,
)
from watchrun.engine.plan import cutoff_waits
from watchrun.executors.base import (
    ExecEvent,
    UnitKey,
)
from watchrun.project.loader import Project
from watchrun.project.model import Kind


class Replanning(DriverState):
    """The driver's part that `dev` drives (see engine/dev.py)."""

    # -- dev mode: changes and the user's commands --------------------------------------------
    def invalidate(self, project: Project, changed: set[str], forced: set[str] | None = None
                   ) -> set[str]:
        """A new project after a change. `changed`: tasks whose code, params, kind, arguments
        or inputs may differ. Their units and everything downstream are cancelled if running,
        dropped if queued, and resolved again (early cutoff and the store make the unchanged
        ones skip). Other running units keep running. Returns the tasks reset."""
        same_graph = project.graph is self.graph
        before = self.graph
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
        waits = cutoff_waits(changed, before, self.graph, self._has_plain_value)
        reset = self.graph.downstream_closure([c for c in changed
                                               if c in project.tasks and c not in waits])
        reset |= {t for t in changed if t not in project.tasks} | waits
        held = {name: self.values[(name, ())] for name in waits}
        self._reset_tasks(changed, reset)
        for name, value in held.items():  # what the tasks below it run with, meanwhile
            self._cutoff.setdefault(name, value)
            self.readiness.values[(name, ())] = value
            self.readiness.finished[name] = 1
        self.summary = BuildSummary()
        self._done.clear()
        order = [n for n in self.graph.order if n in self.needed and n in reset]
        if order:
            self.bus.publish(ev.BuildStarted(tasks=order))
            self.build_open = True
        self._check_tasks(order)
        self._pump()
        return reset

    def _has_plain_value(self, name: str) -> bool:
        """One value, known now, that this build needs (see plan.cutoff_waits)."""
        return (name in self.needed and (name, ()) in self.values
                and self.project.tasks[name].kind is Kind.TASK)

    def _new_value_of_waited(self, name: str, value: str | None) -> None:
        """A task whose downstream waited for its new value (see invalidate) has one, or
        none (it failed or was cancelled: value None). The same as before: nothing below it
        changes. Another: everything below is reset now, as a change to it would have been."""
        before = self._cutoff.pop(name)
        if value == before:
            return
        below = self.graph.downstream_closure([name]) - {name}
        self.readiness.values.pop((name, ()), None)
        self.readiness.finished.pop(name, None)
        if value is not None:
            self.readiness.values[(name, ())] = value
            self.readiness.finished[name] = 1
        self._reset_tasks(set(self.graph.downstreams.get(name, ())), below)
        self._check_tasks([n for n in self.graph.order if n in self.needed and n in below])

    def _reset_tasks(self, changed: set[str], names: set[str]) -> None:
        """Forget everything about these tasks' units (one pass over the unit tables, however
        many tasks). The plan says which running units to cancel and which keep running until
        their upstream's new value is known."""
        if not names:
            return
        replan = self.plan.replan(changed, names, self.graph.reads_files_of)
        for key in replan.cancel:
            self.executor.cancel(key)
        self._checks = deque(c for c in self._checks if c[0] not in names)
        self.readiness.forget(names)
        for name in names & self._cutoff.keys():
            del self._cutoff[name]  # reset, or waited for again (invalidate puts it back)
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
            drop_pickle_file(getattr(state.finished, "data", None))
            self.plan.ended(unit)
            self.bus.publish(ev.UnitCancelled(task=unit.task, iter=unit.iter, signal="none"))
        else:
            self.executor.cancel(unit)
