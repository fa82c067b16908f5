"""W1-W3: N trivial tasks in 10 chains. One description, one project per tool.

Chain c has steps s0..s(L-1). Step 0 reads src/c<c>.txt; step i reads step i-1's output
out/c<c>/s<i-1>.txt; every step writes its input plus one "x" to out/c<c>/s<i>.txt. Each
dependency is a file dependency in every tool (make, ninja, doit file_dep, pytask path arguments,
Snakemake input, watchrun `inputs`), so every tool sees the same DAG and a change to src/c0.txt
dirties exactly chain 0. doit, pytask and watchrun run the step as a Python function; make, ninja
and Snakemake run it as one shell command. (Snakemake's `run:` block would be the Python
equivalent, but Snakemake 9 starts a whole `python -m snakemake` process for every such job,
about a second each: the shell command is its fastest form, so that is what it gets.)

  W1  null build (all clean), N = 100, 1,000, 10,000
  W2  full build from a clean state (outputs and the tool's database deleted), -j1 and -j2
  W3  rebuild after editing src/c0.txt: chain 0 (N/10 tasks) reruns
"""

from __future__ import annotations

from pathlib import Path

from peers import Tool
from workloads.common import Figure, Project, measure_rounds, warm_up, write_files

CHAINS = 10


def src(c: int) -> str:
    return f"src/c{c}.txt"


def out(c: int, i: int) -> str:
    return f"out/c{c}/s{i}.txt"


def dep(c: int, i: int) -> str:
    return src(c) if i == 0 else out(c, i - 1)


def _makefile(length: int) -> str:
    finals = " ".join(out(c, length - 1) for c in range(CHAINS))
    lines = ["MAKEFLAGS += --no-builtin-rules", ".SUFFIXES:", f"all: {finals}", ".PHONY: all"]
    for c in range(CHAINS):
        for i in range(length):
            lines += [f"{out(c, i)}: {dep(c, i)}", "\t{ cat $<; printf x; } > $@"]
    return "\n".join(lines) + "\n"


def _ninja(length: int) -> str:
    lines = ["rule step", "  command = { cat $in; printf x; } > $out", "  description = $out"]
    for c in range(CHAINS):
        for i in range(length):
            lines.append(f"build {out(c, i)}: step {dep(c, i)}")
    lines.append("default " + " ".join(out(c, length - 1) for c in range(CHAINS)))
    return "\n".join(lines) + "\n"


def _dodo(length: int) -> str:
    return f'''from pathlib import Path

CHAINS, LENGTH = {CHAINS}, {length}


def step(src, dst):
    Path(dst).write_text(Path(src).read_text() + "x")


def task_step():
    for c in range(CHAINS):
        for i in range(LENGTH):
            src = f"src/c{{c}}.txt" if i == 0 else f"out/c{{c}}/s{{i - 1}}.txt"
            dst = f"out/c{{c}}/s{{i}}.txt"
            yield {{"name": f"c{{c}}s{{i}}", "actions": [(step, [src, dst])],
                   "file_dep": [src], "targets": [dst]}}
'''


def _pytask(length: int) -> str:
    return f'''from pathlib import Path
from typing import Annotated

from pytask import Product, task

ROOT = Path(__file__).parent
CHAINS, LENGTH = {CHAINS}, {length}

for c in range(CHAINS):
    for i in range(LENGTH):
        source = ROOT / (f"src/c{{c}}.txt" if i == 0 else f"out/c{{c}}/s{{i - 1}}.txt")
        target = ROOT / f"out/c{{c}}/s{{i}}.txt"

        @task(id=f"c{{c}}s{{i}}")
        def task_step(src: Path = source, dst: Annotated[Path, Product] = target) -> None:
            dst.write_text(src.read_text() + "x")
'''


def _snakefile(length: int) -> str:
    return f'''CHAINS, LENGTH = {CHAINS}, {length}


def previous(wildcards):
    i = int(wildcards.i)
    return f"src/c{{wildcards.c}}.txt" if i == 0 else f"out/c{{wildcards.c}}/s{{i - 1}}.txt"


rule all:
    input: [f"out/c{{c}}/s{{LENGTH - 1}}.txt" for c in range(CHAINS)]


rule step:
    input: previous
    output: "out/c{{c}}/s{{i}}.txt"
    wildcard_constraints: c=r"\\d+", i=r"\\d+"
    shell: "{{{{ cat {{input}}; printf x; }}}} > {{output}}"
'''


def _watchrun_task(c: int, i: int) -> str:
    return f'''# /// task
# inputs = ["{dep(c, i)}"]
# outputs = ["{out(c, i)}"]
# ///
from pathlib import Path


def run():
    Path("{out(c, i)}").write_text(Path("{dep(c, i)}").read_text() + "x")
'''


def project_files(tool: str, length: int) -> dict[str, str]:
    if tool == "watchrun":
        return {f"tasks/c{c}/s{i}.py": _watchrun_task(c, i)
                for c in range(CHAINS) for i in range(length)}
    writers = {"make": ("Makefile", _makefile), "ninja": ("build.ninja", _ninja),
               "doit": ("dodo.py", _dodo), "pytask": ("task_chains.py", _pytask),
               "snakemake": ("Snakefile", _snakefile)}
    name, writer = writers[tool]
    return {name: writer(length)}


def source_text(c: int, edit: int | None = None) -> str:
    return f"chain {c}\n" if edit is None else f"chain {c}, edit {edit}\n"


def make_project(tool: Tool, root: Path, tasks: int) -> Project:
    length = tasks // CHAINS
    write_files(root, project_files(tool.name, length))
    write_files(root, {src(c): source_text(c) for c in range(CHAINS)})
    for c in range(CHAINS):
        (root / f"out/c{c}").mkdir(parents=True, exist_ok=True)
    outputs = [root / out(c, i) for c in range(CHAINS) for i in range(length)]
    final = {root / out(c, length - 1): source_text(c) + "x" * length for c in range(CHAINS)}
    return Project(tool, root, outputs, final)


def make_projects(tools: dict[str, Tool], workdir: Path, tasks: int) -> dict[str, Project]:
    return {name: make_project(tool, workdir / f"chains-{tasks}" / name, tasks)
            for name, tool in tools.items()}


def w1_null_build(projects: dict[str, Project], tasks: int, rounds: int, timeout: float
                  ) -> Figure:
    figure = Figure("W1", f"null build, {tasks} tasks", {"tasks": tasks, "jobs": 1},
                    key=f"W1-null-{tasks}")
    for project in projects.values():
        project.clean_state()
    warm_up(figure, projects, [(2, tasks), (1, 0)], timeout)
    return measure_rounds(figure, projects, rounds, 1, lambda p, r: 0, timeout)


def w2_full_build(projects: dict[str, Project], tasks: int, jobs: int, rounds: int,
                  timeout: float) -> Figure:
    figure = Figure("W2", f"full build, {tasks} tasks, -j{jobs}", {"tasks": tasks, "jobs": jobs},
                    key=f"W2-full-{tasks}-j{jobs}")

    def from_scratch(project: Project, rnd: int) -> int:
        project.clean_state()
        return tasks

    warm_up(figure, projects, [(jobs, tasks)], timeout, prepare=from_scratch)
    return measure_rounds(figure, projects, rounds, jobs, from_scratch, timeout)


def w3_one_chain(projects: dict[str, Project], tasks: int, rounds: int, timeout: float
                 ) -> Figure:
    length = tasks // CHAINS
    figure = Figure("W3", f"rebuild after one edit ({length} of {tasks} tasks)",
                    {"tasks": tasks, "dirty": length, "jobs": 1}, key=f"W3-{tasks}")

    def edit_chain0(project: Project, rnd: int) -> int:
        text = source_text(0, rnd + 1000)
        (project.root / src(0)).write_text(text)
        project.final[project.root / out(0, length - 1)] = text + "x" * length
        return length

    for project in projects.values():  # the edits below assume a built project
        project.clean_state()
        (project.root / src(0)).write_text(source_text(0))
        project.final[project.root / out(0, length - 1)] = source_text(0) + "x" * length
    warm_up(figure, projects, [(2, tasks)], timeout)
    warm_up(figure, projects, [(1, length)], timeout, prepare=edit_chain0)
    return measure_rounds(figure, projects, rounds, 1, edit_chain0, timeout)
