"""Checks on the code of each task: what it must provide for its header to make sense.

A `run` for every task (its own or inherited), a generator function for a generator, a `gather`
for a collector, and no required `run` parameter that watchrun cannot pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from watchrun.errors import ProjectError
from watchrun.project.codemap import Definition, ModuleInfo
from watchrun.project.graph import Graph
from watchrun.project.model import Kind, Task

RESERVED = ("inputs", "outputs", "ctx", "start")  # what watchrun itself passes to run()


def _reserved() -> str:
    return ", ".join(RESERVED)


class CodeChecks:
    """Runs the checks over the healthy tasks of a graph; `failed` names the tasks that fail."""

    def __init__(self, tasks: dict[str, Task], graph: Graph, modules: Mapping[str, ModuleInfo],
                 task_modules: dict[str, str], module_files: dict[str, Path]) -> None:
        self.tasks = tasks
        self.graph = graph
        self.modules = modules
        self.task_modules = task_modules
        self.module_files = module_files
        self.errors: list[ProjectError] = []
        self.failed: set[str] = set()

    def run(self) -> list[ProjectError]:
        for name in sorted(self.tasks):  # header-level: also for tasks broken elsewhere
            if not self.tasks[name].abstract:
                self._check_names(self.tasks[name])
        for name in self.graph.order:
            task = self.tasks[name]
            if not task.abstract:
                self._check(task)
        return self.errors

    def fail(self, task: Task, file: Path, line: int, message: str) -> None:
        self.failed.add(task.name)
        self.errors.append(ProjectError(file, line, message))

    def winning(self, task: Task, entry: str) -> tuple[Definition, Path] | None:
        """The nearest definition of `entry` along the chain, and the file defining it."""
        for link in task.chain:
            dotted = self.task_modules[link]
            info = self.modules.get(dotted)
            if info is not None and entry in info.definitions:
                return info.definitions[entry], self.module_files[dotted]
        return None

    def _dynamic(self, task: Task) -> bool:
        # a module that builds its namespace at run time may define anything: do not guess
        return any(self.modules[self.task_modules[t]].dynamic for t in task.chain)

    def _check(self, task: Task) -> None:
        found = self.winning(task, "run")
        if found is None:
            if not self._dynamic(task):
                where = "its module or its parents" if task.parent else "its module"
                self.fail(task, task.path, task.line,
                          f"task {task.name!r} has no run() function (not in {where})")
            return
        run, file = found
        if task.kind is Kind.COLLECTOR and self.winning(task, "gather") is None \
                and not self._dynamic(task):
            self.fail(task, task.path, task.line,
                      f"collector {task.name!r} has no gather() function (it is called when the "
                      "generator is exhausted, and returns the collector's output)")
        if run.kind != "function":
            return  # bound by an import or an assignment: its signature is not known here
        if task.kind is Kind.GENERATOR and not run.is_generator:
            self.fail(task, file, run.line,
                      f"generator {task.name!r}: run() is not a generator function "
                      "(it never yields)")
        elif task.kind is Kind.TASK and run.is_generator and not task.abstract:
            self.fail(task, file, run.line,
                      f"task {task.name!r}: run() yields, so its output would be a generator "
                      "object; a task whose units come from its yields is a generator: add "
                      'kind = "generator" to its header')
        self._check_arguments(task, run, file)

    def _check_names(self, task: Task) -> None:
        """Reserved names are never shadowed: a param or an upstream argument named like one
        of them, or a param named like an upstream argument, would silently replace one of
        the two values."""
        after_origin = task.field_origins.get("after")
        after_file = after_origin.file if after_origin else task.path
        for arg in sorted(task.after):
            if arg in RESERVED:
                line = task.after_lines.get(arg, after_origin.line if after_origin else task.line)
                self.fail(task, after_file, line,
                          f"task {task.name!r}: the upstream argument {arg!r} is a reserved "
                          f"name ({_reserved()}); choose another with "
                          f'after = {{other = "{task.after[arg]}"}}')
        for pname, param in sorted(task.params.items()):
            origin = param.origin
            if pname in RESERVED:
                self.fail(task, origin.file, origin.line,
                          f"task {task.name!r}: param {pname!r} is a reserved name "
                          f"({_reserved()}); rename it")
            elif pname in task.after:
                self.fail(task, origin.file, origin.line,
                          f"task {task.name!r}: param {pname!r} has the name of the upstream "
                          f"argument for {task.after[pname]!r}; rename one of them")

    def _check_arguments(self, task: Task, run: Definition, file: Path) -> None:
        scoped = bool(self.graph.scope.get(task.name))
        pushed = task.kind is Kind.COLLECTOR or (task.kind is Kind.GENERATOR and scoped)
        provided = set(task.after) | set(task.params) | {"inputs", "outputs", "ctx"}
        if task.kind is Kind.GENERATOR and not scoped:
            provided.add("start")
        missing: list[str] = []
        for index, arg in enumerate(run.args):
            if arg.has_default or arg.kind not in ("positional", "keyword_only"):
                continue
            if pushed and index == 0 and arg.kind == "positional":
                continue  # the pushed value: run(value, …)
            if arg.name not in provided:
                missing.append(arg.name)
        if missing:
            offered = ", ".join(sorted(provided))
            names = ", ".join(repr(m) for m in missing)
            self.fail(task, file, run.line,
                      f"run() of {task.name!r} requires {names}, which nothing provides "
                      f"(it can receive: {offered}); {_missing_hint(missing, task)}")


def _missing_hint(missing: list[str], task: Task) -> str:
    """How to provide run()'s missing arguments: `start` only comes to a generator outside
    any scope; an upstream whose last name is no identifier (a file `my-task.py`) is named
    with a table."""
    if "start" in missing:
        return "'start' is given to a generator outside any scope only (the index to resume from)"
    awkward = {up.rpartition(".")[2]: up for up in task.after.values()
               if not up.rpartition(".")[2].isidentifier()}
    for arg in missing:
        for last, up in awkward.items():
            if last.replace("-", "_").replace(".", "_") == arg:
                return f'name it with a table: after = {{{arg} = "{up}"}}'
    return "add it to after or [params], or give it a default"
