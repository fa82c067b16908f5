"""What every builder workload shares: projects on disk, calling a tool, checking its work, and
turning rounds of samples into figures.

A figure is measured in rounds: in each round every tool runs once (the order rotates from round
to round), so a peer's ratio to watchrun is computed from two runs made side by side, under the
same machine conditions. Before each timed run the tool's outputs are snapshotted (mtime and
ctime); afterwards the outputs that were rewritten are counted. That count is the work the tool
did, seen on disk rather than taken from its own report, and a sample whose count differs from
the expected one is rejected, so no figure comes from a tool that did nothing.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from measure import Sample, run_measured, summary
from peers import CACHE, Tool

Stamp = tuple[int, int]


@dataclass
class Project:
    """One tool's copy of a workload, on disk."""

    tool: Tool
    root: Path
    outputs: list[Path]  # every file a task writes; rewriting one = one task executed
    final: dict[Path, str] = field(default_factory=dict)  # files whose content is checked

    def clean_state(self) -> None:
        """Back to 'never built': delete the outputs and the tool's own database."""
        for path in self.outputs:
            path.unlink(missing_ok=True)
        for rel in self.tool.state_paths:
            target = self.root / rel
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)


def write_files(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def snapshot(paths: Iterable[Path]) -> dict[Path, Stamp | None]:
    stamps: dict[Path, Stamp | None] = {}
    for path in paths:
        try:
            st = path.stat()
        except FileNotFoundError:
            stamps[path] = None
            continue
        stamps[path] = (st.st_mtime_ns, st.st_ctime_ns)
    return stamps


def rewritten(before: dict[Path, Stamp | None], after: dict[Path, Stamp | None]) -> int:
    return sum(1 for path, stamp in after.items() if stamp is not None and stamp != before[path])


def build_argv(tool: Tool, jobs: int, targets: list[str] | None = None) -> list[str]:
    """The command that builds a project in the current directory with `jobs` at once."""
    exe = str(tool.executable)
    extra = targets or []
    if tool.name == "watchrun":
        return [exe, "-m", "watchrun", "-C", ".", "build", "-j", str(jobs), "--json", *extra]
    if tool.name in ("make", "ninja"):
        return [exe, "-j", str(jobs), *extra]
    if tool.name in ("doit", "pytask"):
        return [exe, *(["-n", str(jobs)] if jobs > 1 else []), *extra]
    if tool.name == "snakemake":
        return [exe, "--cores", str(jobs), *extra]
    raise ValueError(f"{tool.name} is not a builder")


def tool_env(tool: Tool) -> dict[str, str]:
    """The environment a tool runs in: the harness's, with each Python tool's modules compiled
    once and kept (in the bench cache), as an installed package has them. A harness started
    with PYTHONDONTWRITEBYTECODE would otherwise charge watchrun, run from the source tree, the
    compiling of every module it imports, in every process and every run, while a peer
    installed by pip loads its .pyc files."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(CACHE / "pycache" / tool.name)
    env.update(tool.env)
    if tool.name == "watchrun" and "PYTHONPATH" in tool.env and os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = tool.env["PYTHONPATH"] + os.pathsep + os.environ["PYTHONPATH"]
    return env


def watchrun_events(stdout: str) -> list[dict[str, Any]]:
    events = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


@dataclass
class Run:
    """One measured build: the sample, how much work it did, and whether that was right."""

    sample: Sample
    executed: int
    problem: str  # "" when the run is valid

    def to_json(self) -> dict[str, Any]:
        return {**self.sample.brief(), "executed": self.executed, "problem": self.problem}


def build_once(project: Project, jobs: int, expected: int | None, timeout: float,
               targets: list[str] | None = None) -> Run:
    """Build once, measured; check the exit code, the work done and the final contents."""
    before = snapshot(project.outputs)
    sample = run_measured(build_argv(project.tool, jobs, targets), project.root,
                          tool_env(project.tool), timeout)
    executed = rewritten(before, snapshot(project.outputs))
    return Run(sample, executed, check(project, sample, executed, expected))


def last_lines(text: str, count: int = 2) -> str:
    """The last non-empty lines of an error output (a traceback ends with the exception)."""
    lines = [ln.strip(" │╰╯─") for ln in text.splitlines()]
    kept = [ln for ln in lines if ln.strip() and set(ln.strip()) - set("^~")]
    return " / ".join(kept[-count:])[-300:]


def check(project: Project, sample: Sample, executed: int, expected: int | None) -> str:
    if sample.timed_out:
        return f"timed out after {sample.seconds:.0f} s"
    if sample.exit_code != 0:
        return f"exit code {sample.exit_code}: {last_lines(sample.stderr or sample.stdout)}"
    if expected is not None and executed != expected:
        return f"executed {executed} tasks, expected {expected}"
    if project.tool.name == "watchrun" and expected is not None:
        started = sum(1 for e in watchrun_events(sample.stdout) if e.get("event") == "unit_started")
        if started != expected:
            return f"watchrun reported {started} unit_started events, expected {expected}"
    for path, text in project.final.items():
        try:
            found = path.read_text()
        except FileNotFoundError:
            return f"{path.name} missing after the build"
        if found != text:
            return f"{path} holds {found[:40]!r}..., expected {text[:40]!r}..."
    return ""


# -- figures -------------------------------------------------------------------------------------

@dataclass
class Figure:
    """One number of the report (e.g. 'W1 null build, N=1000'), for every tool."""

    workload: str
    name: str
    params: dict[str, Any]
    key: str = ""  # stable id used by the report (e.g. "W1-null-1000")
    unit: str = "s"
    runs: dict[str, list[Run]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # tool -> why it has no figure
    notes: dict[str, str] = field(default_factory=dict)  # tool -> remark shown in the table
    incomparable: set[str] = field(default_factory=set)  # ran a different size: no ratio

    def valid(self, tool: str) -> list[Run]:
        return [run for run in self.runs.get(tool, []) if not run.problem]

    def to_json(self) -> dict[str, Any]:
        tools: dict[str, Any] = {}
        for tool in sorted(set(self.runs) | set(self.failed)):
            good = self.valid(tool)
            tools[tool] = {
                "seconds": summary([r.sample.seconds for r in good]),
                "cpu_seconds": summary([r.sample.cpu_seconds for r in good]),
                "peak_rss_mb": summary([r.sample.peak_rss_mb for r in good]),
                "executed": summary([float(r.executed) for r in good]),
                "ratio_to_watchrun": summary(self.ratios(tool)) if tool != "watchrun" else None,
                "comparable": tool not in self.incomparable,
                "failed": self.failed.get(tool, ""),
                "note": self.notes.get(tool, ""),
                "runs": [r.to_json() for r in self.runs.get(tool, [])],
            }
        return {"workload": self.workload, "name": self.name, "key": self.key, "kind": "build",
                "params": self.params, "unit": self.unit, "tools": tools}

    def ratios(self, tool: str) -> list[float]:
        """peer time / watchrun time, round by round, over rounds where both runs are valid."""
        if tool in self.incomparable:
            return []
        mine = self.runs.get(tool, [])
        ref = self.runs.get("watchrun", [])
        return [p.sample.seconds / w.sample.seconds for p, w in zip(mine, ref, strict=False)
                if not p.problem and not w.problem and w.sample.seconds > 0]


def measure_rounds(figure: Figure, projects: dict[str, Project], rounds: int, jobs: int,
                   prepare: Callable[[Project, int], int | None], timeout: float) -> Figure:
    """Run every tool once per round, in rotating order; prepare() readies a project (untimed)
    and returns how many tasks the build must execute (None: not checked, only recorded)."""
    names = [n for n in projects if n not in figure.failed]
    for rnd in range(rounds):
        shift = rnd % max(1, len(names))
        for name in names[shift:] + names[:shift]:
            if name in figure.failed:
                continue
            project = projects[name]
            expected = prepare(project, rnd)
            run = build_once(project, jobs, expected, timeout)
            figure.runs.setdefault(name, []).append(run)
            print(f"    {figure.workload} {figure.name} {name}: {run.sample.seconds:.3f} s, "
                  f"{run.executed} executed {run.problem}", flush=True)
            if run.sample.timed_out:
                figure.failed[name] = run.problem  # don't spend the budget on it again
    for name in names:
        if name not in figure.failed and not figure.valid(name):
            figure.failed[name] = figure.runs[name][-1].problem
    return figure


def warm_up(figure: Figure, projects: dict[str, Project], steps: list[tuple[int, int | None]],
            timeout: float, prepare: Callable[[Project, int], int | None] | None = None) -> None:
    """Untimed builds before the measured rounds: (jobs, expected executed) per step. A tool
    that fails here gets no figure, with the reason."""
    for name, project in projects.items():
        if name in figure.failed:
            continue
        for index, (jobs, expected) in enumerate(steps):
            if prepare is not None:
                prepare(project, -1 - index)
            run = build_once(project, jobs, expected, timeout)
            print(f"    warm-up {figure.workload} {name}: {run.sample.seconds:.3f} s, "
                  f"{run.executed} executed {run.problem}", flush=True)
            if run.problem:
                figure.failed[name] = f"warm-up: {run.problem}"
                break
