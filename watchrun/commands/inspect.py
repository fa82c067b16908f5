"""Read-only commands: `status`, `graph`, `show`. Always allowed, even while a build runs."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path
from typing import Any

from watchrun.app import EXIT_OK, EXIT_PROJECT, open_session
from watchrun.commands.common import error, guarded, print_project_errors, unknown_task_message
from watchrun.engine.status import TaskState, report
from watchrun.project.loader import Project
from watchrun.project.model import Kind

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
            if json_out:
                for r in reports:
                    print(json.dumps({"task": r.task, "state": r.state.value,
                                      "reasons": r.reasons, "duration": r.duration,
                                      "priority": r.priority}))
                return EXIT_OK
            width = max((len(r.task) for r in reports), default=4)
            for r in reports:
                line = f"{STATE_MARK[r.state]:>9}  {r.task:<{width}}"
                if r.reasons:
                    line += "  " + "; ".join(r.reasons)
                if r.priority:
                    line += f"  (priority {r.priority})"
                print(line)
            return EXIT_PROJECT if project.errors else EXIT_OK

    return guarded(json_out, body)


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
    if task.priority:
        bits.append(f"priority {task.priority}")
    return f"{name} ({', '.join(bits)})" if bits else name


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
    ident = {n: f"t{i}" for i, n in enumerate(names)}
    lines: list[str] = []
    if fmt == "mermaid":
        lines.append("graph TD")
        lines += [f'    {ident[n]}["{_label(project, n)}"]' for n in names]
        lines += [f"    {ident[a]} -->|{arg}| {ident[b]}" for a, b, arg in _edges(project)]
        lines += [f"    {ident[n]} -.->|extends| {ident[project.tasks[n].parent or n]}"
                  for n in names if project.tasks[n].parent in ident]
    elif fmt == "dot":
        lines.append("digraph watchrun {")
        lines += [f'    {ident[n]} [label="{_label(project, n)}"];' for n in names]
        lines += [f'    {ident[a]} -> {ident[b]} [label="{arg}"];' for a, b, arg in
                  _edges(project)]
        lines += [f'    {ident[n]} -> {ident[project.tasks[n].parent or n]} '
                  f'[style=dashed, label="extends"];'
                  for n in names if project.tasks[n].parent in ident]
        lines.append("}")
    else:
        for n in names:
            ups = [f"{up}" + (f" as {arg}" if arg != up.rsplit('.', 1)[-1] else "")
                   for up, down, arg in _edges(project) if down == n]
            lines.append(_label(project, n) + (f"  <- {', '.join(ups)}" if ups else ""))
    return "\n".join(lines)


def show_command(root: Path, name: str, it: tuple[int, ...], json_out: bool) -> int:
    def body() -> int:
        with open_session(root, "watchrun show", write=False) as session:
            project = session.project
            if name not in project.tasks:
                return error(unknown_task_message(name, project.tasks))
            state = session.store.unit_state(name, it)
            if state is None or state.output is None:
                where = "".join(f"[{i}]" for i in it)
                return error(f"'{name}{where}' has no stored output yet; run "
                             f"`watchrun build {name}`")
            if str(project.config.root) not in sys.path:
                sys.path.insert(0, str(project.config.root))
            value = _load(session.store.get_object(state.output))
            if json_out:
                print(json.dumps(value, default=repr, indent=2))
            else:
                print(value if isinstance(value, str) else repr(value))
            return EXIT_OK

    return guarded(json_out, body)


def _load(data: bytes) -> Any:
    try:
        return pickle.loads(data)
    except Exception as err:  # a class that no longer imports: say so, don't crash
        return f"<stored output cannot be loaded here: {type(err).__name__}: {err}>"
