"""W6: generator throughput. A generator yields n values (0..n-1), a per-item task doubles each,
a collector sums them (expected total n*(n-1)) and writes out/total.txt.

watchrun does this natively (kind = "generator" / per-iteration task / kind = "collector").
The peers' closest equivalents, each its own documented mechanism for work discovered at run time:

  doit       a task creator with @create_after(executed="gen") reads gen's output and yields one
             sub-task per value (a Python action returning {"value": x*2}); the collector takes
             all values with getargs. doit does not track a Python action's code, so the
             collector carries the usual uptodate=[config_changed(inspect.getsource(collect))].
  make       the generator is a rule that writes an included makefile (out/items.mk, the item
             list); make remakes it and restarts. One shell recipe per item, one for the sum.
  ninja      the generator rewrites build.ninja itself (generator = 1); ninja rebuilds its
             manifest first and restarts. One edge per item, one for the sum.
             (Both collectors read out/items/*.txt through a shell glob: 10,000 paths in one
             command string exceed Linux's 128 KiB limit on a single argument.)
  Snakemake  a checkpoint writes one file per value; an input function over
             checkpoints.gen.get() fans out to one job per item, then one collect job.
  pytask     @task(is_generator=True) over a DirectoryNode of gen's files defines one task per
             value; the generator declares the items' DirectoryNode as its product and the
             collector depends on it. (pytask 0.6 then runs the collector after the generator
             but not after all the generated tasks: the check on the total catches it.)

Figures, each from a clean state for the first: first run (with it/s = n / time), no-op rebuild
(no item may rerun), and after changing only the collector's code (no item may rerun, the
collector must). The collector edit changes a constant in its code (`+ 0 * k`), so the total is
unchanged and every tool that tracks code sees a change; a tool that does not (make) gets no
figure there, with the reason.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from measure import run_measured
from peers import Tool
from workloads.common import (
    Figure,
    Project,
    Run,
    build_argv,
    last_lines,
    rewritten,
    snapshot,
    tool_env,
    watchrun_events,
    write_files,
)

EDIT = re.compile(r"0 \* (\d+)")


def _watchrun(n: int) -> dict[str, str]:
    return {
        "tasks/gen.py": f"# /// task\n# kind = \"generator\"\n# [params]\n# n = {n}\n# ///\n\n\n"
                        "def run(n):\n    yield from range(n)\n",
        "tasks/item.py": "# /// task\n# after = [\"gen\"]\n# ///\n\n\n"
                         "def run(gen):\n    return gen * 2\n",
        "tasks/collect.py": "# /// task\n# kind = \"collector\"\n# after = [\"item\"]\n"
                            "# outputs = [\"out/total.txt\"]\n# ///\nfrom pathlib import Path\n\n"
                            "acc = []\n\n\ndef run(item):\n    acc.append(item)\n\n\n"
                            "def gather():\n    total = sum(acc) + 0 * 0\n"
                            "    Path(\"out/total.txt\").write_text(f\"{total}\\n\")\n"
                            "    return total\n",
    }


def _doit(n: int) -> dict[str, str]:
    return {"dodo.py": f'''import inspect
import json
from pathlib import Path

from doit import create_after
from doit.tools import config_changed

N = {n}


def gen():
    Path("out/gen.json").write_text(json.dumps(list(range(N))))


def task_gen():
    return {{"actions": [gen], "targets": ["out/gen.json"], "uptodate": [config_changed(str(N))]}}


def double(x):
    return {{"value": x * 2}}


@create_after(executed="gen")
def task_item():
    for x in json.loads(Path("out/gen.json").read_text()):
        yield {{"name": str(x), "actions": [(double, [x])], "file_dep": ["out/gen.json"]}}


def collect(values):
    total = sum(v["value"] for v in values.values()) + 0 * 0
    Path("out/total.txt").write_text(f"{{total}}\\n")


def task_collect():
    return {{"actions": [collect], "getargs": {{"values": ("item", None)}},
            "file_dep": ["out/gen.json"], "targets": ["out/total.txt"],
            "uptodate": [config_changed(inspect.getsource(collect))]}}
'''}


def _make(n: int) -> dict[str, str]:
    items = f'for (i = 0; i < {n}; i++) printf " out/items/%d.txt", i'
    return {"Makefile": f'''MAKEFLAGS += --no-builtin-rules
.SUFFIXES:
all: out/total.txt
.PHONY: all
include out/items.mk
out/items.mk:
\tawk 'BEGIN {{ printf "ITEMS :="; {items}; print "" }}' > $@
out/items/%.txt: out/items.mk
\techo $$(( $* * 2 )) > $@
out/total.txt: $(ITEMS)
\tcat out/items/*.txt | awk '{{ s += $$1 }} END {{ print s + 0 * 0 }}' > $@
'''}


def _ninja(n: int) -> dict[str, str]:
    edges = f'for (i = 0; i < {n}; i++) printf "build out/items/%d.txt: item\\n  x = %d\\n", i, i'
    inputs = f'for (i = 0; i < {n}; i++) printf " out/items/%d.txt", i'
    awk = (f'BEGIN {{ {edges}; printf "build out/total.txt: collect"; {inputs}; print ""; '
           'print "default out/total.txt" }')
    head = f'''rule gen
  command = {{ cat head.ninja; awk '{awk}'; }} > build.ninja
  generator = 1
rule item
  command = echo $$(( $x * 2 )) > $out
rule collect
  command = cat out/items/*.txt | awk '{{ s += $$1 }} END {{ print s + 0 * 0 }}' > $out
build build.ninja: gen head.ninja
'''
    return {"head.ninja": head, "build.ninja": head}


def _snakemake(n: int) -> dict[str, str]:
    return {"Snakefile": f'''N = {n}


rule all:
    input: "out/total.txt"


checkpoint gen:
    output: directory("out/gen")
    shell: "mkdir -p {{output}} && for i in $(seq 0 {n - 1}); do echo $i > {{output}}/$i.txt; done"


rule item:
    input: "out/gen/{{i}}.txt"
    output: "out/items/{{i}}.txt"
    shell: "echo $(( $(cat {{input}}) * 2 )) > {{output}}"


def all_items(wildcards):
    folder = checkpoints.gen.get().output[0]
    return expand("out/items/{{i}}.txt", i=glob_wildcards(folder + "/{{i}}.txt").i)


rule collect:
    input: all_items
    output: "out/total.txt"
    shell: "cat {{input}} | awk '{{{{ s += $1 }}}} END {{{{ print s + 0 * 0 }}}}' > {{output}}"
'''}


def _pytask(n: int) -> dict[str, str]:
    return {"task_gen.py": f'''from pathlib import Path
from typing import Annotated

from pytask import DirectoryNode, Product, task

ROOT = Path(__file__).parent
N = {n}


def task_gen(
    folder: Annotated[Path, DirectoryNode(root_dir=ROOT / "out" / "gen", pattern="*.txt"), Product],
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(N):
        (folder / f"{{i}}.txt").write_text(str(i))


@task(is_generator=True)
def task_items(
    paths: Annotated[list[Path], DirectoryNode(root_dir=ROOT / "out" / "gen", pattern="*.txt")],
    items: Annotated[Path, DirectoryNode(root_dir=ROOT / "out" / "items", pattern="*.txt"),
                     Product],
) -> None:
    for path in paths:

        @task(id=path.stem)
        def task_item(src: Path = path,
                      dst: Annotated[Path, Product] = ROOT / "out" / "items" / path.name) -> None:
            dst.write_text(str(int(src.read_text()) * 2))


def task_collect(
    paths: Annotated[list[Path], DirectoryNode(root_dir=ROOT / "out" / "items", pattern="*.txt")],
    total: Annotated[Path, Product] = ROOT / "out" / "total.txt",
) -> None:
    total.write_text(f"{{sum(int(p.read_text()) for p in paths) + 0 * 0}}\\n")
'''}


WRITERS = {"watchrun": _watchrun, "doit": _doit, "make": _make, "ninja": _ninja,
           "snakemake": _snakemake, "pytask": _pytask}
COLLECTOR_FILE = {"watchrun": "tasks/collect.py", "doit": "dodo.py", "make": "Makefile",
                  "ninja": "head.ninja", "snakemake": "Snakefile", "pytask": "task_gen.py"}


@dataclass
class GenProject:
    project: Project
    items: list[Path]  # per-item output files (file-based tools)
    n: int
    edits: int = 0

    @property
    def total(self) -> Path:
        return self.project.root / "out" / "total.txt"

    def reset(self) -> None:
        self.project.clean_state()
        for path in self.items:
            path.unlink(missing_ok=True)
        for rel in ("out/gen.json", "out/items.mk"):
            (self.project.root / rel).unlink(missing_ok=True)
        gen_dir = self.project.root / "out" / "gen"
        if gen_dir.exists():
            for path in gen_dir.iterdir():
                path.unlink()
            gen_dir.rmdir()
        if self.project.tool.name == "ninja":
            # Back to the manifest before generation, older than head.ninja so that ninja
            # regenerates it (as after a fresh checkout, where it would not exist).
            head = self.project.root / "head.ninja"
            manifest = self.project.root / "build.ninja"
            manifest.write_text(head.read_text())
            stamp = head.stat().st_mtime_ns - 3_600 * 10**9
            os.utime(manifest, ns=(stamp, stamp))

    def edit_collector(self) -> None:
        path = self.project.root / COLLECTOR_FILE[self.project.tool.name]
        text, count = EDIT.subn(f"0 * {self.edits + 1}", path.read_text(), count=1)
        assert count == 1, f"no collector constant to edit in {path}"
        path.write_text(text)
        self.edits += 1


def make_project(tool: Tool, root: Path, n: int) -> GenProject:
    write_files(root, WRITERS[tool.name](n))
    (root / "out" / "items").mkdir(parents=True, exist_ok=True)
    items = [] if tool.name in ("watchrun", "doit") else [
        root / "out" / "items" / f"{i}.txt" for i in range(n)]
    total = root / "out" / "total.txt"
    return GenProject(Project(tool, root, [total], {total: f"{n * (n - 1)}\n"}), items, n)


def items_run(gp: GenProject, stdout: str, before: dict[Path, tuple[int, int] | None]) -> int:
    """How many per-item tasks ran, seen in the tool's own terms."""
    name = gp.project.tool.name
    if name == "watchrun":
        return sum(1 for e in watchrun_events(stdout)
                   if e.get("event") == "unit_started" and e.get("task") == "item")
    if name == "doit":
        return sum(1 for line in stdout.splitlines() if line.startswith(".  item:"))
    return rewritten(before, snapshot(gp.items))


def build(gp: GenProject, expected_items: int, collector_must_run: bool, timeout: float) -> Run:
    project = gp.project
    before = snapshot(gp.items)
    total_before = snapshot([gp.total])
    sample = run_measured(build_argv(project.tool, 1), project.root, tool_env(project.tool),
                          timeout)
    executed = items_run(gp, sample.stdout, before)
    collector_ran = rewritten(total_before, snapshot([gp.total])) == 1
    problem = ""
    if sample.timed_out:
        problem = f"timed out after {sample.seconds:.0f} s"
    elif sample.exit_code != 0:
        problem = f"exit code {sample.exit_code}: {last_lines(sample.stderr or sample.stdout)}"
    elif executed != expected_items:
        problem = f"{executed} items ran, expected {expected_items}"
    elif collector_must_run and not collector_ran:
        problem = "the collector did not rerun"
    elif not gp.total.exists() or gp.total.read_text() != f"{gp.n * (gp.n - 1)}\n":
        problem = "wrong or missing total"
    return Run(sample, executed, problem)


def _measure_tool(gp: GenProject, figures: tuple[Figure, Figure, Figure], rounds: int,
                  timeout: float) -> None:
    """Rounds of (first run, no-op, collector edit) for one tool; round 0 is the warm-up."""
    first, noop, collector = figures
    name, count = gp.project.tool.name, gp.n
    for rnd in range(rounds + 1):  # round 0 is the warm-up
        gp.reset()
        steps = [(first, count, True, False), (noop, 0, False, False),
                 (collector, 0, True, True)]
        for fig, expected, must_collect, edit in steps:
            if edit:
                gp.edit_collector()
            run = build(gp, expected, must_collect, timeout)
            print(f"    {'warm-up ' if rnd == 0 else ''}W6 {fig.name} {name}: "
                  f"{run.sample.seconds:.3f} s, {run.executed} items {run.problem}",
                  flush=True)
            if rnd > 0:
                fig.runs.setdefault(name, []).append(run)
            elif run.problem:  # kept apart, so that rounds stay aligned across tools
                fig.failed.setdefault(name, f"warm-up: {run.problem}")
            if run.problem:
                break
        first_failed = name in first.failed or any(r.problem for r in first.runs.get(name, []))
        if first_failed or run.sample.timed_out:
            break  # no first run, or out of time: the other rounds would say no more


def w6_generators(tools: dict[str, Tool], workdir: Path, n: int, rounds: int, timeout: float,
                  caps: dict[str, int]) -> list[Figure]:
    first = Figure("W6", f"generator: first run, {n} iterations", {"iterations": n},
                   key="W6-first")
    first.unit = "s (it/s)"
    noop = Figure("W6", "generator: no-op rebuild", {"iterations": n}, key="W6-noop")
    collector = Figure("W6", "generator: after changing only the collector", {"iterations": n},
                       key="W6-collector")
    for name, tool in tools.items():
        if name not in WRITERS:
            continue
        count = min(n, caps.get(name, n))
        gp = make_project(tool, workdir / "generators" / name, count)
        for fig in (first, noop, collector):
            if count != n:
                fig.notes[name] = f"{count} iterations (capped: {n} would not fit the budget)"
                fig.incomparable.add(name)
        _measure_tool(gp, (first, noop, collector), rounds, timeout)
        for fig in (first, noop, collector):
            if not fig.valid(name):
                runs = fig.runs.get(name, [])
                fig.failed.setdefault(
                    name, runs[-1].problem if runs else "an earlier step failed")
        good = first.valid(name)
        if good:
            rate = count / sorted(r.sample.seconds for r in good)[len(good) // 2]
            first.notes[name] = (first.notes.get(name, "") + f" {rate:,.0f} it/s").strip()
    return [first, noop, collector]


def w6_scope_rss(tool: Tool, workdir: Path, n: int, timeout: float) -> Figure:
    """watchrun alone: peak RSS (largest process of its tree) of one first build of an n-item
    scope."""
    figure = Figure("W6", f"generator scope of {n:,} items: peak RSS", {"iterations": n},
                    key="W6-scope-rss")
    gp = make_project(tool, workdir / "generators-scope" / tool.name, n)
    gp.reset()
    run = build(gp, n, True, timeout)
    print(f"    W6 scope {n}: {run.sample.seconds:.1f} s, {run.sample.peak_rss_mb:.0f} MB "
          f"{run.problem}", flush=True)
    figure.runs[tool.name] = [run]
    if run.problem:
        figure.failed[tool.name] = run.problem
    return figure
