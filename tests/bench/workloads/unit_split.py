"""Where a unit's time goes in W2/W3, seen from watchrun's own events (`build --json`).

    python tests/bench/workloads/unit_split.py --code . --tasks 1000 --runs 3

Builds the W1-W3 chains project (tests/bench/workloads/chains.py) in a temporary folder and
runs, `--runs` times each: W2 (a full build from a clean state, -j1) and W3 (a rebuild after
editing src/c0.txt). For each run it prints:

- start: from the process start to `build_started` (imports, loading the project, the store);
- round trip: `unit_started` to `unit_finished` of a unit, median; this is the executor's part
  (the job sent, the worker preparing and running it, the result read back) plus the driver's
  handling of the result before it says finished (hashing the outputs, storing the value);
- turnaround: `unit_finished` to the next `unit_started` (-j1: the driver's part between two
  units: recording, waking downstream units, resolving and launching the next), median and sum;
- the round trip of the first and of the last tenth of the units: a cost per unit that grows
  with the units already run shows as the second far above the first.

`--driver`: the driver's own part, without worker processes. The scheduler runs in this
process against an executor that does each unit's file work itself at once (reads the step's
input, writes its output) and reports it done on the next turn of the loop, so what is measured
is the driver: resolving, planning, recording, events. It prints, per build, the CPU time of
this process per unit for W2 (a full build), W1 through the driver (every unit skipped) and W3
(the rebuild of one chain): the figures to hold against a peer's whole time per unit.

Python modules are compiled once into a pycache of its own (as an installed watchrun has them),
whatever PYTHONDONTWRITEBYTECODE says. Peers are not run: this splits watchrun's own time; the
ratios to doit come from run.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from peers import Tool  # noqa: E402
from workloads import chains  # noqa: E402


def build(python: str, root: Path, env: dict[str, str], jobs: int) -> dict[str, Any]:
    started_at = time.time()
    proc = subprocess.run([python, "-m", "watchrun", "build", "--json", "-j", str(jobs)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not events:
        raise SystemExit(f"watchrun build failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    started: dict[str, float] = {}
    round_trips: list[float] = []
    turnarounds: list[float] = []
    last_finished: float | None = None
    for event in events:
        kind = event["event"]
        if kind == "unit_started":
            started[event["task"]] = event["time"]
            if last_finished is not None:
                turnarounds.append(event["time"] - last_finished)
                last_finished = None
        elif kind == "unit_finished":
            round_trips.append(event["time"] - started.pop(event["task"]))
            last_finished = event["time"]
    tenth = max(1, len(round_trips) // 10)
    return {
        "start_s": events[0]["time"] - started_at,
        "build_s": events[-1]["time"] - events[0]["time"],
        "units": len(round_trips),
        "round_trip_ms": 1e3 * statistics.median(round_trips),
        "first_tenth_ms": 1e3 * statistics.median(round_trips[:tenth]),
        "last_tenth_ms": 1e3 * statistics.median(round_trips[-tenth:]),
        "turnaround_ms": 1e3 * statistics.median(turnarounds) if turnarounds else 0.0,
        "turnaround_sum_s": sum(turnarounds),
    }


class InstantExecutor:
    """Runs a chains step (tests/bench/workloads/chains.py) in this process at once."""

    def __init__(self, root: Path, jobs: int) -> None:
        import pickle

        from watchrun.executors.base import EventKind, ExecEvent
        self.root = root
        self.jobs = jobs
        self.sink: Any = None
        self.busy: set[Any] = set()
        self.cpu = 0.0  # spent on the units' own file work: a worker's part, not the driver's
        self._done = (EventKind.DONE, ExecEvent, pickle.dumps(None))

    async def start(self) -> None:
        pass

    def free_slots(self) -> int:
        return self.jobs - len(self.busy)

    def submit(self, job: Any) -> None:
        import asyncio

        started = time.process_time()
        c, i = (int(part[1:]) for part in job.key.task.split("."))
        text = (self.root / chains.dep(c, i)).read_text()
        (self.root / chains.out(c, i)).write_text(text + "x")
        # what a worker sends with DONE: its hash of the output it wrote (worker_outputs.py)
        claims = self._claims(job.outputs or ())
        self.cpu += time.process_time() - started
        self.busy.add(job.key)
        kind, event, data = self._done
        asyncio.get_running_loop().call_soon(self._finish, event(job.key, kind, data,
                                                                 duration=0.0,
                                                                 output_claims=claims))

    @staticmethod
    def _claims(outputs: tuple[str, ...]) -> Any:
        from watchrun.executors.worker_outputs import hash_written_outputs

        return hash_written_outputs(outputs)

    def _finish(self, event: Any) -> None:
        self.busy.discard(event.key)
        self.sink(event)

    def push(self, key: Any, kwargs: Any) -> None:
        raise AssertionError("the chains project has no scopes")

    def end_input(self, key: Any) -> None:
        raise AssertionError("the chains project has no scopes")

    def cancel(self, key: Any) -> None:
        pass

    def pause(self, key: Any) -> bool:
        return False

    def set_jobs(self, jobs: int) -> None:
        pass

    def hold_yields(self, key: Any, held: bool) -> bool:
        return False

    def resume(self, key: Any) -> bool:
        return False

    def running(self) -> list[Any]:
        return list(self.busy)

    async def close(self) -> None:
        pass


def driver_build(root: Path, jobs: int, profile: str | None = None) -> tuple[float, int]:
    """(CPU seconds of the driver, units resolved) for one `build` through the driver: this
    process's CPU time without the units' own file work. `profile`: a cProfile of the build
    is written there (its CPU figure then includes the profiler's)."""
    import asyncio

    from watchrun.engine.events import EventBus
    from watchrun.engine.scheduler import BuildOptions, Scheduler
    from watchrun.session import default_targets, open_session

    async def run() -> tuple[float, int]:
        with open_session(root, "build", write=True) as session:
            executor = InstantExecutor(root, jobs)
            bus = EventBus()
            lines: list[str] = []
            bus.subscribe(lambda event: lines.append(event.to_json()))  # as --json does
            scheduler = Scheduler(session.project, session.store, session.hasher, executor,
                                  bus, BuildOptions())
            executor.sink = scheduler.on_exec
            cpu = time.process_time()
            if profile is not None:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            summary = await scheduler.build(default_targets(session.project))
            if profile is not None:
                profiler.disable()
                profiler.dump_stats(profile)
            cpu = time.process_time() - cpu - executor.cpu
            if not summary.ok:
                raise SystemExit(f"the driver's build failed: {summary}")
            return cpu, summary.ran + summary.skipped

    return asyncio.run(run())


def driver_main(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(args.code.resolve()))
    work = Path(tempfile.mkdtemp(prefix="unit-split-driver-"))
    try:
        root = work / "project"
        tool = Tool("watchrun", "builder", Path(sys.executable), [".watchrun"])
        project = chains.make_project(tool, root, args.tasks)
        for rnd in range(args.runs):
            project.clean_state()
            figures = []
            cpu, units = driver_build(root, 1, _profile(args, "W2", rnd))
            figures.append(f"W2 {1e6 * cpu / units:.0f} us/unit")
            # outputs written within the stat cache's racy window are hashed again by the
            # next build; the real W1 and W3 come long after the outputs were written
            time.sleep(0.1)
            driver_build(root, 1)
            cpu, units = driver_build(root, 1)
            figures.append(f"W1 (all skipped) {1e6 * cpu / units:.0f} us/unit")
            (root / chains.src(0)).write_text(chains.source_text(0, rnd + 1000))
            cpu, units = driver_build(root, 1, _profile(args, "W3", rnd))
            figures.append(f"W3 {1e3 * cpu:.1f} ms for {units} units")
            print(f"driver run {rnd + 1}: " + ", ".join(figures), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _profile(args: argparse.Namespace, workload: str, rnd: int) -> str | None:
    if args.profile is None:
        return None
    return f"{args.profile}-{workload}-{rnd + 1}.prof"


def line(name: str, r: dict[str, Any]) -> str:
    return (f"{name}: start {r['start_s']:.3f} s, build {r['build_s']:.3f} s, {r['units']} units;"
            f" round trip {r['round_trip_ms']:.2f} ms (first tenth {r['first_tenth_ms']:.2f},"
            f" last tenth {r['last_tenth_ms']:.2f}); turnaround {r['turnaround_ms']:.2f} ms"
            f" (sum {r['turnaround_sum_s']:.3f} s)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--code", type=Path, default=HERE.parents[2], help="the watchrun checkout")
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--driver", action="store_true",
                   help="the driver's part alone, in this process (see above)")
    p.add_argument("--profile", help="with --driver: write a cProfile of each W2 and W3 build "
                   "to PROFILE-W2-1.prof, PROFILE-W3-1.prof ... (its figures then include the "
                   "profiler's own cost)")
    args = p.parse_args(argv)
    if args.driver:
        driver_main(args)
        return
    work = Path(tempfile.mkdtemp(prefix="unit-split-"))
    try:
        env = dict(os.environ, PYTHONPATH=str(args.code.resolve()),
                   PYTHONPYCACHEPREFIX=str(work / "pycache"))
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        root = work / "project"
        tool = Tool("watchrun", "builder", Path(sys.executable), [".watchrun"])
        project = chains.make_project(tool, root, args.tasks)
        for rnd in range(args.runs):
            project.clean_state()
            print(line(f"W2 -j1 run {rnd + 1}", build(sys.executable, root, env, 1)), flush=True)
            (root / chains.src(0)).write_text(chains.source_text(0, rnd + 1000))
            print(line(f"W3 run {rnd + 1}", build(sys.executable, root, env, 1)), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
