"""The Ray executor against the local one: what running a unit on Ray costs.

    PYTHONPATH=. python tests/bench/bench_ray.py [--address HOST:PORT] [--units 1000]
                                                 [--iterations 10000] [--jobs 2] [--runs 3]
    PYTHONPATH=. python tests/bench/bench_ray.py --two-nodes [--units 300] [--runs 5]

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

With --two-nodes, on a two-node cluster started on this machine (a head with 1 CPU and a second
node with 2, tests/ray_cluster.py), instead:

4. Point 2 on the two nodes, jobs=3: units land on both.
5. Node loss: a unit that fits only the second node (cpus = 2) runs there, that node's raylet is
   killed (SIGKILL), and the time until the executor reports the unit lost ("node lost") is
   measured, for a task unit (a Ray task) and a generator (a Ray actor). The node is started
   again for the next run.
6. kill -9 of `watchrun build` with two units running (each with a subprocess of its own), over
   HOST:PORT and over Ray Client (ray://): the time until the units and their subprocesses are
   gone (Ray Client alone keeps a dead driver's job ~30 s; watchrun's heartbeat ends them).
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

from tests.ray_cluster import RayCluster, RayNode  # noqa: E402
from tests.ray_fixtures import TwoNodes  # noqa: E402
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


WAITER = ("# /// task\n# resources = {cpus = 2}\n# ///\nimport os, time\n"
          "from pathlib import Path\n\ndef run():\n"
          "    Path('waiter.pid').write_text(str(os.getpid()))\n"
          "    while True:\n        time.sleep(0.05)\n")
TICKER = ("# /// task\n# kind = 'generator'\n# resources = {cpus = 2}\n# ///\n"
          "import os, time\nfrom pathlib import Path\n\ndef run():\n"
          "    Path('ticker.pid').write_text(str(os.getpid()))\n"
          "    while True:\n        time.sleep(0.05)\n        yield 1\n")


async def node_loss(cluster: TwoNodes, root: Path, name: str, mode: Mode) -> float:
    """Seconds from SIGKILL of the second node's raylet to the unit there reported lost."""
    from watchrun.executors.ray import RayExecutor

    ended: asyncio.Future[ExecEvent] = asyncio.get_running_loop().create_future()

    def sink(event: ExecEvent) -> None:
        terminal = (EventKind.DONE, EventKind.FAILED, EventKind.CANCELLED, EventKind.DIED)
        if event.kind in terminal and not ended.done():
            ended.set_result(event)

    executor = RayExecutor(sink, 3, 1.0, cluster.address)
    await executor.start()
    pid_file = root / f"{name}.pid"
    pid_file.unlink(missing_ok=True)
    executor.submit(Job(UnitKey(name), mode, root, [(root / "tasks" / f"{name}.py", "tasks")],
                        {}, root / ".watchrun" / "logs" / f"{name}.log", fresh_log=True))
    deadline = time.monotonic() + 120
    while not pid_file.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start")
        await asyncio.sleep(0.02)
    killed_at = cluster.node.kill_raylet()
    event = await asyncio.wait_for(ended, 120)
    lost_after = time.monotonic() - killed_at
    if event.kind is not EventKind.DIED or not (event.error or "").startswith("node lost"):
        raise RuntimeError(f"{name}: expected 'node lost', got {event.kind} {event.error}")
    await executor.close()
    return lost_after


SPAWNER = """# /// task
# ///
import os, subprocess, time
from pathlib import Path

def run():
    kid = subprocess.Popen(["sleep", "300"])
    Path("pids").mkdir(exist_ok=True)
    Path("pids", "{name}").write_text(f"{os.getpid()} {kid.pid}")
    time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_9_cleanup(root: Path, address: str) -> float:
    """Seconds from kill -9 of `watchrun build` to its two units and their subprocesses gone."""
    shutil.rmtree(root, ignore_errors=True)
    (root / "tasks").mkdir(parents=True)
    for name in ("a", "b"):
        (root / "tasks" / f"{name}.py").write_text(SPAWNER.replace("{name}", name))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    build = subprocess.Popen([sys.executable, "-m", "watchrun", "-C", str(root), "build",
                              "--executor", "ray", "--address", address],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 150
    while len(list((root / "pids").glob("*")) if (root / "pids").is_dir() else []) < 2:
        if time.monotonic() > deadline:
            build.kill()
            raise RuntimeError(f"the units did not start over {address}")
        time.sleep(0.05)
    pids = [int(p) for f in (root / "pids").iterdir() for p in f.read_text().split()]
    time.sleep(2.0)  # the heartbeat (ray://) has reached the nodes
    build.kill()
    killed_at = time.monotonic()
    build.wait()
    while any(_alive(pid) for pid in pids):
        if time.monotonic() > killed_at + 90:
            raise RuntimeError(f"units still alive 90 s after kill -9 ({address})")
        time.sleep(0.05)
    return time.monotonic() - killed_at


def run_two_nodes(work: Path, args: argparse.Namespace) -> None:
    from watchrun.executors.ray import RayExecutor

    head = RayCluster(work / "head", num_cpus=1)
    head.start()
    cluster = TwoNodes(head, RayNode(head, work / "node", num_cpus=2))
    try:
        cluster.node.start()
        print(f"two nodes on this machine: head in {head.started_in:.1f} s, second node in "
              f"{cluster.node.started_in:.1f} s")
        os.environ.update(head.env())
        root = work / "units"
        (root / "tasks").mkdir(parents=True)
        (root / "tasks" / "trivial.py").write_text(TASK)
        (root / "tasks" / "waiter.py").write_text(WAITER)
        (root / "tasks" / "ticker.py").write_text(TICKER)
        makers: dict[str, Make] = {
            "local": lambda sink: LocalExecutor(sink, 3, 1.0),
            "ray": lambda sink: RayExecutor(sink, 3, 1.0, cluster.address),
        }
        per_unit: dict[str, list[float]] = {"local": [], "ray": []}
        for _ in range(args.runs):
            for name, make in makers.items():
                per_unit[name].append(asyncio.run(trivial_units(make, root, args.units, 3))[1])
        local, ray = (statistics.median(per_unit[n]) for n in ("local", "ray"))
        print(f"\n{args.units} trivial units, jobs=3, on the two nodes (median of {args.runs}):")
        print(f"  local  {local * 1e3:7.2f} ms/unit")
        print(f"  ray    {ray * 1e3:7.2f} ms/unit")
        print(f"  Ray's overhead: {(ray - local) * 1e3:.2f} ms per unit")
        lost: dict[str, list[float]] = {"task": [], "generator": []}
        for _ in range(args.runs):
            for kind, name, mode in (("task", "waiter", Mode.CALL),
                                     ("generator", "ticker", Mode.GENERATE)):
                cluster.ensure_second_node()
                lost[kind].append(asyncio.run(node_loss(cluster, root, name, mode)))
        print(f"\nraylet of the second node killed -> its unit reported 'node lost' "
              f"(median of {args.runs}):")
        for kind, times in lost.items():
            print(f"  {kind:9} {statistics.median(times):6.1f} s  "
                  f"(runs: {', '.join(f'{t:.1f}' for t in times)})")
        cleanup: dict[str, list[float]] = {"HOST:PORT": [], "ray://": []}
        client = f"ray://127.0.0.1:{head.client_port}"
        for _ in range(args.runs):
            cluster.ensure_second_node()
            for kind, address in (("HOST:PORT", cluster.address), ("ray://", client)):
                cleanup[kind].append(kill_9_cleanup(work / "kill9", address))
        print(f"\nkill -9 of watchrun -> its units and their subprocesses gone "
              f"(median of {args.runs}):")
        for kind, times in cleanup.items():
            print(f"  {kind:9} {statistics.median(times):6.1f} s  "
                  f"(runs: {', '.join(f'{t:.1f}' for t in times)})")
    finally:
        cluster.node.stop()
        head.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--two-nodes", action="store_true")
    parser.add_argument("--address", default="")
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--iterations", type=int, default=10000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    if args.two_nodes:
        try:
            run_two_nodes(work, args)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
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
