"""`watchrun dev`: build, then watch and rerun exactly what changed.

One asyncio loop holds everything: the scheduler (long-lived, see `Scheduler.invalidate`), the
executor's pipes, the watcher and, when there is one, the Textual app. A batch of changed paths
becomes a set of *changed tasks*:
- code, params, kind, arguments or declared files differ (a per-task fingerprint, compared before
  and after reloading only the changed files), or the task became broken or healthy;
- a tracked input's content differs from what the task last resolved with (a `touch` changes
  nothing, so it cancels nothing).
"""

from __future__ import annotations

import asyncio
import fnmatch
import glob
import json
import os
import time
from pathlib import Path

from blake3 import blake3

from watchrun.config import Config, load_config, setting_line
from watchrun.engine import events as ev
from watchrun.engine.code_on_disk import breaks_the_plan, gone_tasks, with_broken_code
from watchrun.engine.dev_commands import DevCommands, rel_path
from watchrun.engine.dev_folders import ModuleFolders, folder_sources
from watchrun.engine.scheduler import BuildOptions, Scheduler
from watchrun.errors import ProjectError
from watchrun.executors.base import ExecEvent, Executor
from watchrun.paths import CONFIG_FILES
from watchrun.project.dev_reload import ReverseIndex, reload_code
from watchrun.project.loader import Project, ProjectLoader
from watchrun.state.hashing import FileHasher
from watchrun.state.store import Store
from watchrun.watch import change_batches, watch_roots

# settings that dev reads as it starts (the watcher's, the executor's, the store's)
RESTART_SETTINGS = ("state_dir", "grace", "debounce_ms", "ignore", "executor_kind",
                    "executor_address", "executor_connect_timeout", "preload",
                    "memory_budget")


def fingerprint(project: Project, name: str) -> str | None:
    """Everything about a task except its input contents that decides its signature."""
    task = project.tasks.get(name)
    closure = project.closures.get(name)
    if task is None or name in project.broken:
        return None
    body = [
        closure.digest if closure else "",
        {k: p.value for k, p in sorted(task.params.items())},
        task.kind.value,
        sorted(task.after.items()),
        list(task.inputs),
        list(task.outputs),
        task.abstract,
        sorted(project.graph.implicit.get(name, ())),
    ]
    return blake3(json.dumps(body, sort_keys=True, default=repr).encode()).hexdigest()


def _present(hashes: dict[str, str | None]) -> dict[str, str]:
    return {path: digest for path, digest in hashes.items() if digest is not None}


class DevEngine(DevCommands):
    """`watchrun dev`: the watcher, reloads and the changes they make; what a UI may ask of it
    (`engine.control.EngineControl`) is engine/dev_commands.py."""

    def __init__(self, project: Project, loader: ProjectLoader, store: Store,
                 hasher: FileHasher, executor: Executor, bus: ev.EventBus,
                 targets: list[str]) -> None:
        self.project = project
        self.config = project.config
        self.loader = loader
        self.store = store
        self.hasher = hasher
        self.executor = executor
        self.bus = bus
        self.targets = targets
        self.scheduler = Scheduler(project, store, hasher, executor, bus, BuildOptions())
        self.scheduler.all_tasks = not targets  # tasks added while watching are built too
        self.scheduler.code_read_ns = loader.read_ns or time.time_ns()
        self.fingerprints = {n: fingerprint(project, n) for n in project.tasks}
        self.stop = asyncio.Event()
        self.exit_code = 0
        self._busy = asyncio.Event()
        self._interrupted: set[str] = set()  # interrupted by the user: `rerun` continues them
        self._interrupted_forced: set[str] = set()  # of those, interrupted in a forced run
        self._errors_shown: list[ProjectError] = []
        self._index: ReverseIndex | None = None
        self._inputs: InputsIndex | None = None
        self._outputs: InputsIndex | None = None
        # tasks whose runs ended with their inputs changed under them, consecutively (see
        # _self_changed), and those reported as changing their own inputs
        self._disturbed: dict[str, int] = {}
        self._reported_self: set[str] = set()
        self._recomputed: set[str] | None = None  # tasks the last incremental reload touched
        # the changes seen while the project read breaks tasks of the plan's (see _defer)
        self._deferred: set[Path] | None = None
        self._folders = ModuleFolders()
        # (a project read, that project with the task files gone from it as they were, the
        # tasks waiting for them): see _keeping_gone
        self._kept: tuple[Project, Project, set[str]] | None = None
        self.watched = self._count_watched()

    def on_exec(self, event: ExecEvent) -> None:
        self.scheduler.on_exec(event)

    # -- the main loop -----------------------------------------------------------------------
    async def run(self) -> int:
        self._publish_errors()
        self.scheduler.hold_code(with_broken_code(self.project, self.project))
        self.scheduler.start(self._targets())
        self.loader.warm()  # so that the first save already takes the incremental path
        self._index = ReverseIndex(self.project)
        self._busy.set()
        tasks = [asyncio.create_task(self._watch()), asyncio.create_task(self._report_idle())]
        try:
            await self.stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.scheduler.interrupt()
            await self.executor.close()
            self.scheduler.flush()
        return self.exit_code

    def _targets(self) -> list[str]:
        if self.targets:
            return self.targets
        return [n for n in self.project.graph.order if not self.project.tasks[n].abstract]

    async def _report_idle(self) -> None:
        while True:
            await self._busy.wait()
            self._busy.clear()
            await self.scheduler.wait_idle()
            if not self._busy.is_set():
                self.watched = self._count_watched()
                self.scheduler.forced.clear()  # a rerun request is used up once it ran
                if self.scheduler.build_open:  # a change that replanned nothing opened none
                    self.scheduler.finish_build()
                self.bus.publish(ev.Idle())

    async def _watch(self) -> None:
        absolute = [p for t in self.project.tasks.values() for p in t.inputs if os.path.isabs(p)]
        roots = watch_roots(self.config, absolute)
        async for paths in change_batches(self.config, roots, self.stop):
            self.on_change(paths)

    # -- changes -----------------------------------------------------------------------------
    def on_change(self, paths: set[Path]) -> set[str]:
        """Reload what the paths touch, cancel what they made stale, schedule it again."""
        moved = self.store.folder_moved()
        if moved is not None:  # writing on would recreate the old path: stop, once
            self.bus.publish(ev.Error(message=moved, file=None, line=None))
            self.quit(2)
            return set()
        # a folder moved in, out or created stands for the module files in it (dev_folders)
        paths = paths | folder_sources(paths, self.config, self.project, self._folders)
        self.hasher.forget_recent(paths)  # a save in the tick of an earlier hash: hash again
        config_files = {self.config.root / name for name in CONFIG_FILES}
        sources = {p for p in paths if p.suffix == ".py"}
        read_ns = time.time_ns()
        if self._deferred is not None:
            paths = paths | self._deferred  # what waited for a valid project counts now
        shown = self._read(paths & config_files, sources)
        if shown is None:
            return set()
        # shown: what the UI shows, and the next reload starts from; project: what is planned
        planned = self._to_plan(shown)
        if planned is None:
            self._defer(shown, paths, sources | (paths & config_files), read_ns)
            return set()
        project, waiting = planned
        if self._deferred is not None:
            self._deferred = None
            self._recomputed = None  # every task is compared with the plan's again
        changed, noted = self._changed_tasks(project, paths)
        reloaded = shown is not self.project
        code_read = bool(sources or paths & config_files)
        if code_read:
            self.scheduler.code_read_ns = read_ns
        # what was read is known now: units of tasks with an error wait for a fix, those
        # waiting for files gone wait for them, also through changes of other files (held
        # once the changes below are planned: a unit let go must start with its new plan)
        held = with_broken_code(shown, self.scheduler.project) | waiting \
            if code_read or waiting else None
        if not (reloaded or noted):
            if held is not None:
                self.scheduler.hold_code(held)
            return set()  # e.g. an output nobody reads: not worth a line
        reset = project.graph.downstream_closure(c for c in changed if c in project.tasks)
        dirty = {t for t in reset | changed
                 if t in project.tasks and not project.tasks[t].abstract}
        # the paths that count: code and settings, and the data files that changed something
        # (not a folder a task created, nor an output its producer wrote as its reader read it)
        rels = sorted(noted | {rel_path(self.config.root, p) for p in paths
                               if p in sources or p in config_files})
        self.bus.publish(ev.Change(paths=rels, dirty=sorted(dirty)))
        self._busy.set()  # `idle` follows every change, once nothing runs or waits
        self.project = shown
        if reloaded:
            self._publish_errors()
        if changed:
            self.scheduler.invalidate(project, changed)
            self._busy.set()
        if held is not None:
            self.scheduler.hold_code(held)
        return reset

    def _read(self, settings: set[Path], sources: set[Path]) -> Project | None:
        """The project as the changed files make it now; None when the settings saved have
        an error (said with its file and line; the session goes on with the settings it
        has)."""
        if settings:
            config, errors = load_config(self.config.root)
            if errors:
                for error in errors:
                    file = rel_path(self.config.root, error.file) if error.file else None
                    self.bus.publish(ev.Error(message=error.message, file=file,
                                              line=error.line))
                return None
            self._apply_settings(config)
            self.loader = ProjectLoader(config, self.store, self.hasher)
            return self.loader.load()
        if sources:
            return self._reload(sources)
        return self.project

    def _apply_settings(self, config: Config) -> None:
        """Settings saved while watching: `jobs` applies at once, and the task folders with
        the project read. The others are read as dev starts: said, rather than ignored."""
        before, self.config = self.config, config
        if config.jobs != before.jobs:
            self.scheduler.set_jobs(config.jobs)
        later = [name for name in RESTART_SETTINGS
                 if getattr(config, name) != getattr(before, name)]
        if later:
            source = config.source or before.source
            self.bus.publish(ev.Error(
                message=f"{', '.join(later)} changed: applied when `watchrun dev` starts again",
                file=rel_path(config.root, source) if source else None,
                line=setting_line(config, later[0])))

    def _defer(self, project: Project, paths: set[Path], code: set[Path], read_ns: int
               ) -> None:
        """The project read breaks tasks the plan has (a parent or an upstream gone), and the
        files gone cannot be had as they were (_keeping_gone: settings saved meanwhile made a
        new loader): no decision is taken against it. The plan keeps its project, the broken
        tasks' units wait (those running go on), and the changes are applied together once
        the project read is valid again for them."""
        self._deferred = paths
        reloaded = project is not self.project
        self.project = project  # what the UI shows, and the next reload starts from
        if code:
            self.bus.publish(ev.Change(paths=sorted(rel_path(self.config.root, p)
                                                    for p in code), dirty=[]))
            self._busy.set()
        if reloaded:
            self._publish_errors()
        self.scheduler.code_read_ns = read_ns
        # a task whose file is gone cannot run either (its worker would not find its code)
        self.scheduler.hold_code(with_broken_code(project, self.scheduler.project)
                                 | gone_tasks(self.scheduler.project, project))

    def _to_plan(self, read: Project) -> tuple[Project, set[str]] | None:
        """(the project to plan with, the tasks that wait for files gone from the one read);
        None when no decision can be taken on the project read (see _defer)."""
        if not breaks_the_plan(self.scheduler.project, read):
            return read, set()
        keeping = self._keeping_gone(read)
        if keeping is not None:
            self._recomputed = None  # another project than the one read: compare every task
        return keeping

    def _keeping_gone(self, read: Project) -> tuple[Project, set[str]] | None:
        """(the project read, with the task files gone from it that tasks of the plan need
        taken as they were; the tasks that wait for those files to come back, or for the
        tasks needing them to be changed). The rest is planned with what is on disk. None
        when the files gone cannot be had as they were: then everything waits (_defer)."""
        if self._kept is not None and self._kept[0] is read:
            return self._kept[1], self._kept[2]
        planned = self.scheduler.project
        gone = gone_tasks(planned, read)
        kept = self.loader.load_keeping({planned.tasks[name].path for name in gone})
        if kept is None or breaks_the_plan(planned, kept):
            return None
        # those the absence breaks: downstream tasks, and children of a parent gone
        needing = gone | {name for name in read.broken - kept.broken if name in kept.tasks}
        waiting = kept.graph.downstream_closure(needing)
        self._kept = (read, kept, waiting)
        return kept, waiting

    def _reload(self, sources: set[Path]) -> Project:
        """Code-only edits take the incremental path (only the closures that reach the saved
        files are recomputed); anything structural reloads the project."""
        if self._index is None or self._index.project is not self.project:
            self._index = ReverseIndex(self.project)
        fast = reload_code(self.loader, self.project, self._index, sources)
        if fast is not None:
            project, self._recomputed = fast
            self._index.project = project
            return project
        self._recomputed = None
        return self.loader.reload(sources)

    def _changed_tasks(self, project: Project, paths: set[Path]) -> tuple[set[str], set[str]]:
        """(tasks whose signature may differ, the paths among inputs or outputs that differ
        from what their tasks last saw)."""
        changed: set[str] = set()
        if project is not self.project:
            # after an incremental reload only the recomputed closures can differ
            names = project.tasks if self._recomputed is None else self._recomputed
            new = {n: fingerprint(project, n) for n in names}
            # a task broken for a moment (an autosave in the middle of a word) changes
            # nothing: decisions are taken against its last valid state, and a fix that
            # restores it lets its running units finish
            for name in project.broken:
                if name in self.fingerprints and self.fingerprints[name] is not None:
                    new[name] = self.fingerprints[name]
            for name in set(new) | (set(self.fingerprints) if self._recomputed is None
                                    else set()):
                if new.get(name) != self.fingerprints.get(name):
                    changed.add(name)
            if self._recomputed is None:
                self.fingerprints = new
            else:
                self.fingerprints.update(new)
            self._recomputed = None
        rels = {rel_path(self.config.root, p) for p in paths}
        return changed, (self._inputs_changed(project, rels, changed)
                         | self._outputs_changed(project, rels, changed))

    def _inputs_changed(self, project: Project, rels: set[str], changed: set[str]
                        ) -> set[str]:
        """Add the tasks whose tracked inputs' contents differ from what they last read;
        the paths worth reporting: such inputs, and any other input that is nobody's output
        (a data file touched: seen, nothing to run). An upstream's output that its readers
        have read as it is now is its producer's own write, not news."""
        index = self._inputs_index(project)
        differ: set[str] = set()
        for name in sorted(index.readers(rels)):
            task = project.tasks[name]
            if name in changed or name in project.broken:
                continue
            before = self.scheduler.last_inputs.get(name)
            now = self.scheduler.resolver.hash_inputs(task)
            if before is None or now != before:
                differ.add(name)
                if not self._self_changed(name, now):
                    changed.add(name)
        outputs = self._index_of(project, "outputs")
        return {rel for rel in rels if (readers := index.readers({rel}))
                and (readers & differ or not outputs.readers({rel}))}

    def _outputs_changed(self, project: Project, rels: set[str], changed: set[str]
                         ) -> set[str]:
        """Add the producers whose declared outputs someone else deleted or modified; the
        paths that are such outputs."""
        index = self._index_of(project, "outputs")
        producers: set[str] = set()
        for name in sorted(index.readers(rels)):
            if name in changed or name in project.broken or self.scheduler.running_units(name):
                continue  # a running producer writes its own outputs
            last = self.scheduler.last_outputs.get(name)
            now = self.scheduler.resolver.hash_outputs(project.tasks[name])
            if last is not None and _present(now) != _present(last):
                changed.add(name)  # deleted or modified by someone else: its producer reruns
                producers.add(name)
        return {rel for rel in rels if index.readers({rel}) & producers} if producers else set()

    def _self_changed(self, name: str, now: dict[str, str | None]) -> bool:
        """Whether a change of the task's inputs is its own doing: its last run ended with
        its inputs changed under it, they are still as it left them, and the run before
        ended the same way. Reported once; not rerun until something else changes (a first
        such run is rerun: it may have been an edit made while it ran)."""
        left = self.scheduler.self_changing.get(name)
        if left is None or left != now:
            self._disturbed.pop(name, None)
            self._reported_self.discard(name)
            return False
        count = self._disturbed.get(name, 0) + 1
        self._disturbed[name] = count
        if count < 2:
            return False
        if name not in self._reported_self:
            self._reported_self.add(name)
            task = self.project.tasks.get(name)
            paths = sorted(p for p in now if now[p] != self.scheduler.last_inputs.get(
                name, {}).get(p))
            self.bus.publish(ev.Error(
                message=f"{name} changes its own inputs while it runs ({', '.join(paths)}): "
                        "not rerun until something else changes",
                file=rel_path(self.config.root, task.path) if task else None,
                line=task.line if task else None))
        return True

    def _inputs_index(self, project: Project) -> InputsIndex:
        return self._index_of(project, "inputs")

    def _index_of(self, project: Project, field: str) -> InputsIndex:
        """Which tasks declare a changed path among their inputs (or outputs)."""
        index = self._inputs if field == "inputs" else self._outputs
        if index is None or index.project is not project:
            index = InputsIndex(project, field)
            if field == "inputs":
                self._inputs = index
            else:
                self._outputs = index
        return index

    def _count_watched(self) -> int:
        """Files the project's tasks depend on: modules and the inputs they last matched."""
        inputs = {p for found in self.scheduler.last_inputs.values() for p in found}
        return len(self.project.module_files) + len(inputs)

    def _publish_errors(self) -> None:
        """Publish the errors that are new since the last reload (the UI's list of current
        errors comes from `view()`)."""
        for error in self.project.errors:
            if error in self._errors_shown:
                continue
            rel = rel_path(self.config.root, error.file) if error.file else None
            self.bus.publish(ev.Error(message=error.message, file=rel, line=error.line))
        self._errors_shown = list(self.project.errors)


class InputsIndex:
    """Which tasks read a changed path. Plain input paths are looked up in a dict (a build
    writes thousands of outputs, each an event, and each may be some task's input); only real
    globs are matched one by one."""

    def __init__(self, project: Project, field: str = "inputs") -> None:
        self.project = project
        self.literal: dict[str, set[str]] = {}
        self.globs: list[tuple[str, str]] = []
        for name, task in project.tasks.items():
            for pattern in (task.inputs if field == "inputs" else task.outputs):
                if glob.has_magic(pattern):
                    self.globs.append((pattern, name))
                else:
                    self.literal.setdefault(pattern.rstrip("/"), set()).add(name)

    def readers(self, rels: set[str]) -> set[str]:
        found: set[str] = set()
        for rel in rels:
            path = rel
            while path:  # the path itself, or a folder given as an input that holds it
                found |= self.literal.get(path, set())
                path = path.rpartition("/")[0]
            found.update(name for pattern, name in self.globs if _matches(rel, pattern))
        return found


def _matches(rel: str, pattern: str) -> bool:
    if fnmatch.fnmatch(rel, pattern):
        return True
    # a folder given as an input covers what is inside it
    return rel.startswith(pattern.rstrip("/") + "/")

