"""Which tasks the last build's proof still covers when some of the files it observed changed
(`nullproof.ProvenClean`): a build after one data file was edited need not look again at the
hundreds of tasks that neither read nor write it, nor wait for a task that does.

A task is covered when it is a plain task outside any scope, the proof holds its value, none
of the paths it reads or writes changed and all of them were observed by the proof, and every
task it waits for is covered too. Its unit is then clean for the same reason it was clean when
the proof was written: its code, params, inputs, outputs and upstream values are those of
that build (the project, the settings and the installed packages were checked unchanged).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from watchrun.project.assembly import Project
from watchrun.project.model import Kind, Task
from watchrun.state.proof import ProvenClean


def covered_tasks(project: Project, order: Iterable[str], proven: ProvenClean,
                  paths_of: Callable[[Task], list[str] | None],
                  hashes_of: Callable[[list[str]], dict[str, str | None]]) -> list[str]:
    """The tasks of `order` (upstream first) that the proof covers, in that order.
    `paths_of`: the absolute paths a task reads and writes now (None: not known without
    resolving it); `hashes_of`: their hashes now (the hasher's: a stat each, for files the
    proof check just looked at), which must be those the proof saw."""
    graph = project.graph
    seen = proven.observed
    changed = proven.changed
    covered: list[str] = []
    done: set[str] = set()
    for name in order:
        task = project.tasks[name]
        if task.kind is not Kind.TASK or graph.scope.get(name) or name not in proven.values:
            continue
        if not graph.upstreams_of(name) <= done:
            continue
        paths = paths_of(task)
        if paths is None or any(p in changed or p not in seen for p in paths):
            continue
        try:
            now = hashes_of(paths)
        except OSError:
            continue
        if any((now[p] or "") != seen[p] for p in paths):
            continue  # changed since the proof was checked
        covered.append(name)
        done.add(name)
    return covered
