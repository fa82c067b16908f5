"""What a UI may ask of a running `dev` engine (`engine.control.EngineControl`): its view of the
project, a task's reasons and log, pause, resume, interrupt, rerun, force, quit."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from watchrun.config import Config
from watchrun.engine.control import ErrorView, ParamView, ProjectView, TaskView
from watchrun.engine.locations import log_path
from watchrun.engine.scheduler import Scheduler
from watchrun.executors.base import Executor, UnitKey
from watchrun.project.loader import Project
from watchrun.state.hashing import FileHasher
from watchrun.state.store import Store


def rel_path(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


class DevCommands:
    """The commands of engine/dev.py's DevEngine, over the state it keeps."""

    project: Project
    config: Config
    store: Store
    hasher: FileHasher
    executor: Executor
    scheduler: Scheduler
    watched: int
    stop: asyncio.Event
    exit_code: int
    _busy: asyncio.Event
    _interrupted: set[str]  # interrupted by the user: `rerun` continues them
    _interrupted_forced: set[str]  # of those, the ones interrupted in a forced run

    def view(self) -> ProjectView:
        project = self.project
        graph = project.graph
        names = list(graph.order) + sorted(n for n in project.broken if n in project.tasks)
        tasks = []
        for name in names:
            task = project.tasks[name]
            ups = tuple(sorted(graph.upstreams_of(name)))
            downs = tuple(sorted(graph.downstreams.get(name, ())))
            params = tuple(ParamView(k, repr(p.value), p.origin.format(project.config.root))
                           for k, p in sorted(task.params.items()))
            tasks.append(TaskView(name, task.kind.value, task.chain, ups, downs, params,
                                  graph.scope.get(name, ()),
                                  rel_path(project.config.root, task.path), task.abstract,
                                  task.priority))
        errors = [ErrorView(rel_path(project.config.root, e.file) if e.file else None, e.line,
                            e.message) for e in project.errors]
        return ProjectView(tasks, errors, self.watched)

    def reasons(self, task: str) -> list[str]:
        from watchrun.engine.status import report

        if task not in self.project.tasks or task in self.project.broken:
            return []
        return [r for rep in report(self.project, self.store, self.hasher, [task])
                for r in rep.reasons]

    def log_path(self, task: str) -> str | None:
        running = self.scheduler.running_units(task)
        key = running[0].iter if running else ()
        path = log_path(self.config, task, key)
        return path if os.path.exists(path) else None

    def pause(self, task: str) -> str | None:
        units = self.scheduler.running_units(task)
        if not units:
            return f"{task} is not running"
        if not all(self.executor.pause(k) for k in units):
            return "this executor cannot pause a running unit (remote); scheduling only"
        for key in units:
            self.scheduler.plan.running[key].paused = True
        return None

    def resume(self, task: str) -> str | None:
        for key in self.scheduler.running_units(task):
            self.executor.resume(key)
            self.scheduler.plan.running[key].paused = False
        # the plan held its ready units while it was paused: they may start now
        self.scheduler.set_paused(self.scheduler.paused)
        return None

    def interrupt(self, task: str) -> None:
        if self.scheduler.running_units(task):
            self._interrupted.add(task)
            if task in self.scheduler.forced:  # continuing it is forcing it again
                self._interrupted_forced.add(task)
        self.scheduler.interrupt_task(task)

    def rerun(self, task: str) -> None:
        if task in self._interrupted:  # continue: the units it finished stay done
            self.continue_task(task)
            return
        self.force(task)

    def continue_task(self, task: str) -> None:
        """Run the task's units that are not done (interrupted, failed, dirty); clean ones stay
        skipped. Never forced, but for a forced run that was interrupted: that one is forced
        again (its units are clean under their signatures: nothing else would run)."""
        if task in self._interrupted_forced:
            self.force(task)
            return
        self._interrupted.discard(task)
        if task in self.project.tasks:
            self.scheduler.invalidate(self.project, {task})
            self._busy.set()

    def force(self, task: str) -> None:
        self._interrupted.discard(task)
        self._interrupted_forced.discard(task)
        if task in self.project.tasks:
            self.scheduler.invalidate(self.project, {task}, forced={task})
            self._busy.set()

    def paused_tasks(self) -> set[str]:
        return self.scheduler.plan.paused_tasks()

    def pause_all(self) -> None:
        self.scheduler.set_paused(True)
        for key in self._all_running():
            self.executor.pause(key)

    def resume_all(self) -> None:
        for key in self._all_running():
            self.executor.resume(key)
        self.scheduler.set_paused(False)

    def _all_running(self) -> list[UnitKey]:
        return [k for k, r in self.scheduler.running.items() if not r.superseded]

    def quit(self, code: int | None = None) -> None:
        """Stop: cancel what runs, end every process. `code` (e.g. 130 for Ctrl-C) replaces
        the exit code; None keeps it."""
        if code is not None:
            self.exit_code = code
        self.stop.set()
