"""The Ray executor against the local one: what running a unit on Ray costs.

    PYTHONPATH=. python tests/bench/bench_ray.py [--address HOST:PORT] [--units 1000]
                                                 [--iterations 10000] [--jobs 2] [--runs 3]

Without --address, starts a Ray cluster on this machine for the run (2 CPUs, loopback only,
see tests/ray_cluster.py) and stops it at the end. Measures:

1. Joining Ray: RayExecutor.start() (ray.init on an existing cluster), the first time in the
   process and again.
2. `--units` trivial CALL units (`return x + 1`), `--jobs` at a time, every slot kept busy by a
   minimal scheduler (the next unit is submitted from the sink, as the engine does), on a warm
   executor: wall time per unit, local and Ray, and the difference (Ray's overhead per unit).
3. A scope of `--iterations` iterations through the real CLI, `watchrun build --force`: a
   generator yields the numbers, a task per iteration adds one, a collector sums them (one push
   per iteration). Wall time of the whole command, local and Ray, and the difference per
   iteration (it includes joining Ray, about a second).

Medians of --runs runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.ray_cluster import RayCluster  # noqa: E402
from watchrun.executors.base import EventKind, ExecEvent, Executor, Job, Mode, UnitKey  # noqa: E402
from watchrun.executors.local import LocalExecutor  # noqa: E402

TASK = "def run(x):\n    return x + 1\n"

SCOPE = {
    "tasks/numbers.py": '# /// task\n# kind = "generator"\n# [params]\n# n = {n}\n# ///\n'
                        "def run(n):\n    yield from range(n)\n",
    "tasks/plus.py": '# /// task\n# after = ["numbers"]\n# ///\ndef run(numbers):\n'
                     "    return numbers + 1\n",
    "tasks/total.py": '# /// task\n# kind = "collector"\n# after = ["plus"]\n# ///\n'
                      "acc = 0\n\ndef run(plus):\n    global acc\n    acc += plus\n\n"
                      "def gather():\n    return acc\n",
}

Make = Callable[[Callable[[ExecEvent], None]], Executor]


async def trivial_units(make: Make, root: Path, units: int, jobs: int) -> tuple[float, float]:
    """(seconds for start(), seconds per unit on the warm executor)."""
    chain = [(root / "tasks" / "trivial.py", "tasks")]
    logs = root / ".watchrun" / "logs"
    pending = iter(range(units + 1))  # unit 0 warms up: the first round trip is not counted
    finished = 0
    warm = asyncio.get_running_loop().create_future()
    all_done = asyncio.get_running_loop().create_future()

    def submit_next() -> None:
        i = next(pending, None)
        if i is not None:
            job = Job(UnitKey("trivial", (i,)), Mode.CALL, root, chain, {"x": pickle.dumps(i)},
                      logs / f"trivial.{i}.log", fresh_log=True)
            executor.submit(job)

    def sink(event: ExecEvent) -> None:
        nonlocal finished
        if event.kind in (EventKind.STARTED, EventKind.YIELDED, EventKind.PUSHED):
            return
        if event.kind is not EventKind.DONE:
            raise RuntimeError(f"unexpected {event}")
        finished += 1
        if finished == 1:
            warm.set_result(None)
        elif finished == units + 1:
            all_done.set_result(None)
        else:
            submit_next()

    executor = make(sink)
    started = time.perf_counter()
    await executor.start()
    joined = time.perf_counter() - started
    submit_next()
    await warm
    started = time.perf_counter()
    for _ in range(jobs):
        submit_next()
    await all_done
    per_unit = (time.perf_counter() - started) / units
    await executor.close()
    return joined, per_unit


def build_scope(root: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "watchrun", "-C", str(root), "build", "--force"],
                          env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"build failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return elapsed


def write_scope(root: Path, iterations: int, jobs: int, executor: str) -> None:
    for rel, text in SCOPE.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("{n}", str(iterations)))
    (root / "watchrun.toml").write_text(f"jobs = {jobs}\n{executor}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", default="")
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--iterations", type=int, default=10000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    cluster = None
    address = args.address
    try:
        if not address:
            cluster = RayCluster(work / "cluster")
            cluster.start()
            print(f"started a Ray cluster at {cluster.address} in {cluster.started_in:.1f} s")
            os.environ.update(cluster.env())
            address = cluster.address
        run(work, address, args)
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, address: str, args: argparse.Namespace) -> None:
    from watchrun.executors.ray import RayExecutor

    root = work / "units"
    (root / "tasks").mkdir(parents=True)
    (root / "tasks" / "trivial.py").write_text(TASK)
    makers: dict[str, Make] = {
        "local": lambda sink: LocalExecutor(sink, args.jobs, 1.0),
        "ray": lambda sink: RayExecutor(sink, args.jobs, 1.0, address),
    }
    per_unit: dict[str, list[float]] = {"local": [], "ray": []}
    joins: list[float] = []
    for _ in range(args.runs):
        for name, make in makers.items():
            joined, seconds = asyncio.run(trivial_units(make, root, args.units, args.jobs))
            per_unit[name].append(seconds)
            if name == "ray":
                joins.append(joined)
    local, ray = (statistics.median(per_unit[n]) for n in ("local", "ray"))
    # the first join is what a `watchrun build` pays; joining again in the same process is
    # cheaper (Ray is imported, the cluster's workers for this driver may still be up)
    print(f"\njoining Ray (RayExecutor.start): {joins[0]:.2f} s the first time, "
          f"{statistics.median(joins[1:] or joins):.2f} s again")
    print(f"{args.units} trivial units, jobs={args.jobs}, warm executor:")
    print(f"  local  {local * 1e3:7.2f} ms/unit  ({1 / local:7.0f} units/s)")
    print(f"  ray    {ray * 1e3:7.2f} ms/unit  ({1 / ray:7.0f} units/s)")
    print(f"  Ray's overhead: {(ray - local) * 1e3:.2f} ms per unit")

    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    times: dict[str, list[float]] = {"local": [], "ray": []}
    on_ray = f'[executor]\nkind = "ray"\naddress = "{address}"\n'
    for name, section in (("local", ""), ("ray", on_ray)):
        scope = work / f"scope-{name}"
        write_scope(scope, args.iterations, args.jobs, section)
        for _ in range(args.runs):
            times[name].append(build_scope(scope, env))
    local, ray = (statistics.median(times[n]) for n in ("local", "ray"))
    n = args.iterations
    print(f"\na scope of {n} iterations (generator -> task per iteration -> collector), "
          f"`watchrun build --force`, jobs={args.jobs}:")
    print(f"  local  {local:7.2f} s  ({local / n * 1e3:.2f} ms/iteration)")
    print(f"  ray    {ray:7.2f} s  ({ray / n * 1e3:.2f} ms/iteration)")
    overhead = (ray - local) / n * 1e3
    print(f"  Ray's overhead: {overhead:.2f} ms per iteration (joining Ray included)")


if __name__ == "__main__":
    main()
