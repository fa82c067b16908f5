"""Read-only commands: `status`, `graph` (`show` and `log`: show.py). Always allowed, even
while a build runs."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from watchrun.commands.common import (
    declared_outputs,
    error,
    guarded,
    print_project_errors,
    unknown_task_message,
    warn_unmatched_inputs,
    written_by_a_task,
)
from watchrun.engine.scopes import is_persistent
from watchrun.engine.status import TaskReport, TaskState, report
from watchrun.project.loader import Project
from watchrun.project.model import Kind
from watchrun.session import EXIT_OK, EXIT_PROJECT, Session, open_session
from watchrun.state.store import UnitStatus
from watchrun.ui.running import read_running

STATE_MARK = {
    TaskState.CLEAN: "clean",
    TaskState.DIRTY: "DIRTY",
    TaskState.FAILED: "FAILED",
    TaskState.CANCELLED: "cancelled",
    TaskState.NEVER_RUN: "never-run",
    TaskState.BROKEN: "BROKEN",
}


def status_command(root: Path, names: list[str], json_out: bool) -> int:
    def body() -> int:
        with open_session(root, "watchrun status", write=False) as session:
            project = session.project
            if project.errors:
                print_project_errors(project.errors, project.config.root, json_out)
            for name in names:
                if name not in project.tasks:
                    return error(unknown_task_message(name, project.tasks))
            reports = report(project, session.store, session.hasher, names or None)
            counts = {r.task: _iterations(session, r.task) for r in reports}
            failures = {r.task: _failure(session, r) for r in reports}
            if json_out:
                for r in reports:
                    row: dict[str, object] = {
                        "task": r.task, "state": r.state.value, "reasons": r.reasons,
                        "duration": r.duration, "error": failures[r.task],
                        "priority": r.priority}
                    count = counts[r.task]
                    if count is not None:
                        row["iterations"] = {"done": count[0], "total": count[1]}
                    print(json.dumps(row))
                return EXIT_PROJECT if project.errors else EXIT_OK
            if not names:
                _print_dev(session)
            warn_unmatched_inputs(project, [r.task for r in reports])
            width = max((len(r.task) for r in reports), default=4)
            for r in reports:
                print(_status_line(r, width, counts[r.task], failures[r.task]))
            if not names:
                _print_orphans(session)
            return EXIT_PROJECT if project.errors else EXIT_OK

    return guarded(json_out, body)


def _status_line(r: TaskReport, width: int, count: tuple[int, int] | None,
                 failure: str | None) -> str:
    line = f"{STATE_MARK[r.state]:>9}  {r.task:<{width}}"
    bits = []
    if count is not None:
        bits.append(f"done {count[0]}/{count[1]}")
    bits.extend(r.reasons)
    if failure:
        bits.append(failure)
    if r.priority:
        bits.append(f"priority {r.priority}")
    return line + ("  " + "; ".join(b for b in bits if b) if bits else "")


def _failure(session: Session, r: TaskReport) -> str | None:
    """The first line of what the task's first failed unit said (its exception), if the
    task is failed or cancelled."""
    if r.state not in (TaskState.FAILED, TaskState.CANCELLED):
        return None
    bad = (UnitStatus.FAILED, UnitStatus.CANCELLED)
    states = sorted((s for s in session.store.unit_states(r.task) if s.status in bad),
                    key=lambda s: s.iter)
    if not states:
        return _first_line(r.error)
    said = _first_line(states[0].error)
    if said and states[0].iter:  # which iteration failed (the first, if several did)
        return f"{r.task}{''.join(f'[{i}]' for i in states[0].iter)}: {said}"
    return said


def _first_line(error: str | None) -> str | None:
    """What a failure says, in one line: the exception's own line of a traceback (its last),
    else the message's first line."""
    if not error:
        return None
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    if not lines:
        return None
    return lines[-1] if lines[0].startswith("Traceback") else lines[0]


def _iterations(session: Session, name: str) -> tuple[int, int] | None:
    """(done, total) for a task that runs once per iteration of a generator scope, or the
    number a generator yielded (done = total); None for a task that runs once."""
    project, store = session.project, session.store
    if name not in project.tasks:
        return None
    task = project.tasks[name]
    scope = project.graph.scope.get(name) or ()
    if task.kind is Kind.GENERATOR and not scope:
        state = store.unit_state(name)
        if state is None:
            return None
        count = len(store.iterations(name, state.signature))
        return count, count
    if not scope or is_persistent(project, name):
        return None
    states = list(store.unit_states(name))
    total: int | None = None
    if len(scope) == 1:  # the generator's last run says how many iterations there are now
        generator = store.unit_state(scope[0])
        if generator is not None:
            total = len(store.iterations(scope[0], generator.signature))
    if total is not None:  # iterations past it are from an earlier, longer run
        states = [s for s in states if s.iter and s.iter[0] < total]
    done = sum(1 for s in states if s.status in (UnitStatus.OK, UnitStatus.ACCEPTED))
    return done, max(total or 0, len(states))


def _print_dev(session: Session) -> None:
    """While a `watchrun dev` holds the project: that it runs, and what it runs now."""
    holder = session.store.lock_holder()
    if holder is None or not holder.command.startswith("watchrun dev") or not _alive(holder.pid):
        return
    print(f"watchrun dev is running: {holder.describe()}")
    running = read_running(session.config.state_dir)
    print(f"  running now: {', '.join(running)}" if running else "  running now: nothing")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def orphan_outputs(session: Session) -> list[tuple[str, str]]:
    """(task, output) of declared outputs still on disk whose task no longer exists, and
    that no task of the project declares now (a task renamed keeps its outputs)."""
    project = session.project
    found = set()
    declared: set[str] | None = None
    _, results = session.store.last_units()
    for record in results:
        if record.task in project.tasks:
            continue
        for output in record.outputs:
            path = os.path.normpath(os.path.join(project.config.root, output))
            if not os.path.lexists(path):
                continue
            if declared is None:
                declared = declared_outputs(project)
            if not written_by_a_task(path, declared):
                found.add((record.task, output))
    return sorted(found)


def _print_orphans(session: Session) -> None:
    orphans = orphan_outputs(session)
    if not orphans:
        return
    print("outputs left by tasks that no longer exist (watchrun clean --outputs removes them):")
    for task, output in orphans:
        print(f"  {output}  (task {task!r})")


def _edges(project: Project) -> list[tuple[str, str, str]]:
    edges = []
    for name in project.graph.order:
        for arg, up in sorted(project.graph.upstreams.get(name, {}).items()):
            edges.append((up, name, arg))
        for up in sorted(project.graph.implicit.get(name, set())):
            edges.append((up, name, "(files)"))
    return edges


def _label(project: Project, name: str) -> str:
    task = project.tasks[name]
    bits = [] if task.kind is Kind.TASK else [task.kind.value]
    if task.parent:
        bits.append(f"extends {task.parent}")
    if task.abstract:
        bits.append("abstract")
    scope = project.graph.scope.get(name) or ()
    if scope:
        persistent = is_persistent(project, name)
        bits.append(f"{'takes each iteration' if persistent else 'per iteration'} of "
                    f"{' > '.join(scope)}")
    if task.priority:
        bits.append(f"priority {task.priority}")
    return f"{name} ({', '.join(bits)})" if bits else name


def _files(project: Project, names: list[str]) -> list[tuple[str, str, str]]:
    """(task, "in" or "out", path or glob) of every declared input and output."""
    found = []
    for name in names:
        task = project.tasks[name]
        if task.abstract:
            continue
        found += [(name, "in", pattern) for pattern in task.inputs]
        found += [(name, "out", output) for output in task.outputs]
    return found


def _scopes(project: Project, names: list[str]) -> dict[tuple[str, ...], list[str]]:
    """Generator scope (outermost generator first) -> the tasks in it, in order."""
    scopes: dict[tuple[str, ...], list[str]] = {}
    for name in names:
        scope = project.graph.scope.get(name)
        if scope:
            scopes.setdefault(scope, []).append(name)
    return scopes


def graph_command(root: Path, fmt: str) -> int:
    def body() -> int:
        with open_session(root, "watchrun graph", write=False) as session:
            project = session.project
            if project.errors:
                print_project_errors(project.errors, project.config.root, False)
            print(render_graph(project, fmt))
            return EXIT_PROJECT if project.errors else EXIT_OK

    return guarded(False, body)


def render_graph(project: Project, fmt: str) -> str:
    names = [n for n in project.graph.order] + sorted(
        n for n in project.tasks if n not in project.graph.order)
    if fmt == "mermaid":
        return "\n".join(_mermaid(project, names))
    if fmt == "dot":
        return "\n".join(_dot(project, names))
    return "\n".join(_text(project, names))


def _text(project: Project, names: list[str]) -> list[str]:
    lines: list[str] = []
    edges = _edges(project)
    files = _files(project, names)
    for n in names:
        ups = [f"{up}" + (f" as {arg}" if arg != up.rsplit('.', 1)[-1] else "")
               for up, down, arg in edges if down == n]
        lines.append(_label(project, n) + (f"  <- {', '.join(ups)}" if ups else ""))
        inputs = [path for task, way, path in files if task == n and way == "in"]
        outputs = [path for task, way, path in files if task == n and way == "out"]
        if inputs:
            lines.append(f"    inputs: {', '.join(inputs)}")
        if outputs:
            lines.append(f"    outputs: {', '.join(outputs)}")
    for scope, members in _scopes(project, names).items():
        lines.append(f"scope of {' > '.join(scope)}: {', '.join(members)}")
    return lines


def _file_lines(project: Project, names: list[str], ident: dict[str, str],
                node: Callable[[str, str], str], edge: Callable[[str, str, str], str]
                ) -> list[str]:
    """The declared files of a drawing, each drawn once (`node(id, path)`), and their edges
    (`edge(from, to, label)`): an input points at the task that reads it, a task at its
    output. Mermaid and DOT differ only in the syntax of the two."""
    lines: list[str] = []
    file_ids: dict[str, str] = {}
    for task, way, path in _files(project, names):
        if path not in file_ids:
            file_ids[path] = f"f{len(file_ids)}"
            lines.append(node(file_ids[path], path))
        if way == "in":
            lines.append(edge(file_ids[path], ident[task], "input"))
        else:
            lines.append(edge(ident[task], file_ids[path], "output"))
    return lines


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def _mermaid(project: Project, names: list[str]) -> list[str]:
    ident = {n: f"t{i}" for i, n in enumerate(names)}
    lines = ["graph TD"]
    scopes = _scopes(project, names)
    scoped = {n for members in scopes.values() for n in members}
    lines += [f'    {ident[n]}["{_mermaid_text(_label(project, n))}"]'
              for n in names if n not in scoped]
    for i, (scope, members) in enumerate(scopes.items()):
        lines.append(f'    subgraph s{i}["scope of {_mermaid_text(" > ".join(scope))}"]')
        lines += [f'        {ident[n]}["{_mermaid_text(_label(project, n))}"]'
                  for n in members]
        lines.append("    end")
    lines += [f"    {ident[a]} -->|{arg}| {ident[b]}" for a, b, arg in _edges(project)]
    lines += [f"    {ident[n]} -.->|extends| {ident[project.tasks[n].parent or n]}"
              for n in names if project.tasks[n].parent in ident]
    lines += _file_lines(project, names, ident,
                         lambda node, path: f'    {node}[/"{_mermaid_text(path)}"/]',
                         lambda a, b, label: f"    {a} -.->|{label}| {b}")
    return lines


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _dot(project: Project, names: list[str]) -> list[str]:
    ident = {n: f"t{i}" for i, n in enumerate(names)}
    lines = ["digraph watchrun {"]
    lines += [f'    {ident[n]} [label="{_dot_text(_label(project, n))}"];' for n in names]
    for i, (scope, members) in enumerate(_scopes(project, names).items()):
        lines.append(f"    subgraph cluster_{i} {{")
        lines.append(f'        label="scope of {_dot_text(" > ".join(scope))}";')
        lines += [f"        {ident[n]};" for n in members]
        lines.append("    }")
    lines += [f'    {ident[a]} -> {ident[b]} [label="{_dot_text(arg)}"];'
              for a, b, arg in _edges(project)]
    lines += [f'    {ident[n]} -> {ident[project.tasks[n].parent or n]} '
              f'[style=dashed, label="extends"];'
              for n in names if project.tasks[n].parent in ident]
    lines += _file_lines(project, names, ident,
                         lambda node, path: f'    {node} [shape=note, label="{_dot_text(path)}"];',
                         lambda a, b, label: f'    {a} -> {b} [style=dotted, label="{label}"];')
    lines.append("}")
    return lines
