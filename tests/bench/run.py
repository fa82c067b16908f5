"""The benchmark suite: watchrun against its peers, on the workloads of tests/bench/README.md.

    python tests/bench/run.py --setup                      # install the peers, run everything
    python tests/bench/run.py --workloads W1,W3 --runs 5   # a subset
    python tests/bench/run.py --quick                      # small sizes, minutes not an hour

A full run writes BENCHMARKS.md at the repository root, the raw results to
tests/bench/results/latest.json and the chart to tests/bench/results/ratios.png. A --quick run
writes only its JSON (to the work dir) unless --report is given.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peers  # noqa: E402
import report  # noqa: E402
from peers import CACHE, REPO, Tool  # noqa: E402
from workloads import bigfiles, chains, devloop, generators  # noqa: E402
from workloads.common import Figure, tool_env  # noqa: E402

ALL_WORKLOADS = ["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8"]
RESULTS = HERE / "results"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--setup", action="store_true", help="install the peers first (idempotent)")
    p.add_argument("--workloads", default=",".join(ALL_WORKLOADS))
    p.add_argument("--tools", default=",".join(peers.all_tools()),
                   help="comma-separated; default: every tool")
    p.add_argument("--runs", type=int, default=5, help="measured runs per figure")
    p.add_argument("--sizes", default="100,1000,10000", help="W1 task counts")
    p.add_argument("--tasks", type=int, default=1000, help="task count of W2 and W3")
    p.add_argument("--w4-files", type=int, default=bigfiles.FILES)
    p.add_argument("--w4-size", type=int, default=bigfiles.FILE_SIZE, help="bytes per file")
    p.add_argument("--saves", type=int, default=30, help="W5 saves per watcher")
    p.add_argument("--iterations", type=int, default=10_000, help="W6 generator iterations")
    p.add_argument("--cap", default="snakemake=500,pytask=1000",
                   help="W6: fewer iterations for slow peers (tool=n,...)")
    p.add_argument("--scope-items", type=int, default=100_000, help="W6 scope for peak RSS")
    p.add_argument("--scale-tasks", type=int, default=10_000, help="W8 task count")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per build, then killed")
    p.add_argument("--quick", action="store_true",
                   help="small: W1 100 tasks, W2/W3 100, W4 20 files, 10 saves, 1,000 iterations")
    p.add_argument("--workdir", type=Path, default=CACHE / "work")
    p.add_argument("--json", type=Path, help="raw results (default: results/latest.json)")
    p.add_argument("--report", type=Path, help="markdown report (default: BENCHMARKS.md)")
    p.add_argument("--render", type=Path, metavar="RESULTS_JSON",
                   help="measure nothing: rewrite the report (and chart) from these raw results")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.tasks, args.w4_files, args.saves = "100", 100, 20, 10
        args.iterations, args.scope_items, args.scale_tasks = 1000, 10_000, 1000
        args.runs = min(args.runs, 3)
    return args


class Suite:
    def __init__(self, args: argparse.Namespace, argv: list[str]) -> None:
        self.args = args
        self.argv = argv
        self.started = time.monotonic()
        self.load_at_start = os.getloadavg()
        self.results: list[dict[str, Any]] = []
        self.workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
        everything = peers.all_tools()
        wanted = [t.strip() for t in args.tools.split(",") if t.strip()]
        unknown = [t for t in wanted if t not in everything]
        if unknown:
            raise SystemExit(f"unknown tools: {', '.join(unknown)}")
        if args.setup:
            print("setup:", flush=True)
            for problem in peers.setup(set(wanted)):
                print("  problem:", problem, flush=True)
            everything = peers.all_tools()
        self.missing = [t for t in wanted if not everything[t].available()]
        self.tools = {t: everything[t] for t in wanted if everything[t].available()}
        self.json_path = args.json or (
            args.workdir.parent / "quick.json" if args.quick else RESULTS / "latest.json")
        self.report_path = args.report or (None if args.quick else REPO / "BENCHMARKS.md")

    def of_kind(self, kind: str) -> dict[str, Tool]:
        return {n: t for n, t in self.tools.items() if t.kind == kind}

    def add(self, result: Figure | dict[str, Any]) -> None:
        self.results.append(result.to_json() if isinstance(result, Figure) else result)
        self.save()

    # -- workloads ---------------------------------------------------------------------------

    def run(self) -> None:
        steps: list[tuple[str, Callable[[], None]]] = [
            ("W1", self.chains), ("W4", self.bigfiles), ("W5", self.devloop),
            ("W6", self.generators), ("W7", self.tui), ("W8", self.scale)]
        for workload, step in steps:
            if workload == "W1" and not {"W1", "W2", "W3"} & set(self.workloads):
                continue
            if workload != "W1" and workload not in self.workloads:
                continue
            print(f"== {workload if workload != 'W1' else 'W1-W3'}", flush=True)
            step()

    def chains(self) -> None:
        args, builders = self.args, self.of_kind("builder")
        base: dict[str, chains.Project] | None = None
        sizes = [int(s) for s in args.sizes.split(",")] if "W1" in self.workloads else []
        for size in sizes:
            projects = chains.make_projects(builders, args.workdir, size)
            timeout = args.timeout * (2 if size > 1000 else 1)
            self.add(chains.w1_null_build(projects, size, args.runs, timeout))
            if size == args.tasks:
                base = projects
        if base is None and {"W2", "W3"} & set(self.workloads):
            base = chains.make_projects(builders, args.workdir, args.tasks)
        if base is None:
            return
        if "W3" in self.workloads:
            self.add(chains.w3_one_chain(base, args.tasks, args.runs, args.timeout))
        if "W2" in self.workloads:
            for jobs in (1, 2):
                self.add(chains.w2_full_build(base, args.tasks, jobs, args.runs, args.timeout))

    def bigfiles(self) -> None:
        for figure in bigfiles.w4_big_inputs(self.of_kind("builder"), self.args.workdir,
                                             self.args.runs, self.args.timeout,
                                             self.args.w4_files, self.args.w4_size):
            self.add(figure)

    def devloop(self) -> None:
        watchers = self.of_kind("watcher")
        if "watchrun" in self.tools:
            watchers = {"watchrun": self.tools["watchrun"], **watchers}
        self.add(devloop.w5_latency(watchers, self.args.workdir, self.args.saves))

    def generators(self) -> None:
        caps = {k: int(v) for k, v in (kv.split("=") for kv in self.args.cap.split(",") if kv)}
        for figure in generators.w6_generators(self.of_kind("builder"), self.args.workdir,
                                               self.args.iterations, self.args.runs,
                                               self.args.timeout, caps):
            self.add(figure)
        if "watchrun" in self.tools:
            self.add(generators.w6_scope_rss(self.tools["watchrun"], self.args.workdir,
                                             self.args.scope_items, self.args.timeout * 2))

    def tui(self) -> None:
        """W7 is measured by tests/bench/bench_tui.py (its own helper); run it if present."""
        script = HERE / "bench_tui.py"
        result: dict[str, Any] = {"workload": "W7", "name": "TUI lag (bench_tui.py)",
                                  "kind": "external"}
        if not script.exists() or "watchrun" not in self.tools:
            self.add({**result, "output": "tests/bench/bench_tui.py is not there yet: no figure"})
            return
        tool = self.tools["watchrun"]
        try:
            proc = subprocess.run([str(tool.executable), str(script)], cwd=REPO,
                                  env=tool_env(tool), capture_output=True, text=True,
                                  timeout=self.args.timeout * 2, stdin=subprocess.DEVNULL)
            output = proc.stdout + (f"\n(exit code {proc.returncode})\n{proc.stderr[-2000:]}"
                                    if proc.returncode else "")
        except subprocess.TimeoutExpired:
            output = f"timed out after {self.args.timeout * 2:.0f} s"
        self.add({**result, "output": output})

    def scale(self) -> None:
        if "watchrun" not in self.tools:
            return
        self.add(devloop.w8_scale(self.tools["watchrun"], self.args.workdir,
                                  self.args.scale_tasks, self.args.runs, self.args.timeout * 2))

    # -- output ------------------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        versions = {name: peers.version(name) for name in self.tools}
        versions.update({name: "not installed" for name in self.missing})
        python, _ = peers.watchrun_python()
        versions["python (watchrun and the Python peers)"] = peers.python_version(python)
        return {"command": "python3 tests/bench/run.py " + " ".join(self.argv),
                "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "runs": self.args.runs, "elapsed_s": time.monotonic() - self.started,
                "machine": {**report.machine(),
                            "load average (1 min) at start / end":
                                f"{self.load_at_start[0]:.2f} / {os.getloadavg()[0]:.2f}"},
                "versions": versions,
                "workloads": self.workloads}

    def save(self) -> dict[str, Any]:
        data = {"meta": getattr(self, "_meta", {}), "results": self.results}
        self.json_path.parent.mkdir(parents=True, exist_ok=True)
        self.json_path.write_text(json.dumps(data, indent=1))
        return data

    def finish(self) -> dict[str, Any]:
        self._meta = self.meta()
        data = self.save()
        if self.report_path is not None:
            chart = RESULTS / "ratios.png" if self.report_path.parent == REPO \
                else self.report_path.with_suffix(".png")
            drawn = report.write_chart(self.json_path, chart, peers.venv_bin("bench", "python"))
            report.write_report(data, self.json_path, self.report_path, chart if drawn else None)
            print(f"report: {self.report_path}", flush=True)
        print(f"raw results: {self.json_path}", flush=True)
        return data


def render_only(json_path: Path, markdown: Path) -> dict[str, Any]:
    data = report.load(json_path)
    chart = RESULTS / "ratios.png" if markdown.parent == REPO else markdown.with_suffix(".png")
    drawn = report.write_chart(json_path, chart, peers.venv_bin("bench", "python"))
    report.write_report(data, json_path, markdown, chart if drawn else None)
    print(f"report: {markdown}")
    return data


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.render is not None:
        return render_only(args.render, args.report or REPO / "BENCHMARKS.md")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    suite = Suite(args, argv)
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    args.workdir.mkdir(parents=True)
    print(f"tools: {', '.join(suite.tools)}; missing: {', '.join(suite.missing) or 'none'}",
          flush=True)
    os.environ.pop("MAKEFLAGS", None)  # a caller's make flags must not change make's figures
    suite.run()
    return suite.finish()


if __name__ == "__main__":
    main()
