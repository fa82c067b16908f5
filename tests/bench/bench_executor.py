"""Throughput and latency of LocalExecutor with trivial CALL units.

    PYTHONPATH=. python tests/bench/bench_executor.py [--units N] [--jobs J] [--runs R]
                                                      [--chain] [--print] [--no-pipeline]
                                                      [--distinct]

A minimal scheduler submits units from the sink, as the engine does: by default it keeps
submitting while free_slots() says so (throughput; with pipelining, a short unit may have the
next one queued behind it); with --chain it submits the next unit only when the previous one is
done (latency: each step of a chain of dependent tasks waits for the one before). With
--distinct every unit is a task of its own, in a module of its own, as in a full build of many
tasks: nothing is pipelined (no task is known to be short), and each worker reads and compiles
every module it runs.

Prints the spawn-to-ready time of the workers and, per run, units per second from the first
submit to the last DONE (a warm pool: start() has returned) and the CPU time per unit of this
process (the executor's share of the scheduler's loop, plus the minimal sink that makes each
job), of its main thread alone (asyncio's child watcher may add threads) and of the workers
(their whole life, start-up included), then the medians.

A unit that prints nothing leaves no log file (the worker creates one only for output); with
--print each unit prints a line, so each run creates a log file per unit, which on some disks
costs more than everything else (0.05-1 ms per file).
"""

from __future__ import annotations

import argparse
import asyncio
import pickle
import resource
import statistics
import tempfile
import time
from pathlib import Path

from watchrun.executors.base import EventKind, ExecEvent, Job, Mode, UnitKey
from watchrun.executors.local import PIPELINE_BELOW, LocalExecutor

QUIET = "def run(x):\n    return x + 1\n"
NOISY = "def run(x):\n    print(x)\n    return x + 1\n"


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


async def one_run(
    root: Path, args: argparse.Namespace, logs: Path
) -> tuple[float, float, float, list[float]]:
    chain = [(root / "tasks" / "trivial.py", "tasks")]
    pending = iter(range(args.units))
    finished = 0
    all_done = asyncio.get_running_loop().create_future()
    executor: LocalExecutor

    def submit_next() -> None:
        i = next(pending, None)
        if i is None:
            return
        log = logs / f"{i}.log"
        if args.distinct:
            own = [(root / "tasks" / f"t{i}.py", "tasks")]
            job = Job(UnitKey(f"t{i}"), Mode.CALL, root, own, {"x": pickle.dumps(i)}, log)
        else:
            job = Job(UnitKey("trivial", (i,)), Mode.CALL, root, chain, {"x": pickle.dumps(i)}, log)
        executor.submit(job)

    def fill() -> None:
        if args.chain:
            submit_next()
            return
        while executor.free_slots() > 0 and finished + len(executor.running()) < args.units:
            submit_next()

    def sink(event: ExecEvent) -> None:
        nonlocal finished
        if event.kind is EventKind.STARTED:
            return
        if event.kind is not EventKind.DONE:
            raise RuntimeError(f"unexpected {event}")
        finished += 1
        if finished == args.units:
            all_done.set_result(None)
        else:
            fill()

    below = 0.0 if args.no_pipeline else PIPELINE_BELOW
    executor = LocalExecutor(sink, args.jobs, 1.0, pipeline_below=below)
    await executor.start()
    started = time.perf_counter()
    cpu = cpu_seconds(resource.RUSAGE_SELF)
    thread = time.thread_time()
    fill()
    await all_done
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(resource.RUSAGE_SELF) - cpu
    thread = time.thread_time() - thread
    ready = list(executor.ready_times)
    await executor.close()
    return args.units / elapsed, cpu / args.units, thread / args.units, ready


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chain", action="store_true", help="one unit at a time")
    parser.add_argument("--print", action="store_true", help="each unit prints (a log file)")
    parser.add_argument("--no-pipeline", action="store_true")
    parser.add_argument("--distinct", action="store_true", help="a task module per unit")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "tasks").mkdir()
        source = NOISY if args.print else QUIET
        (root / "tasks" / "trivial.py").write_text(source)
        if args.distinct:
            for i in range(args.units):
                (root / "tasks" / f"t{i}.py").write_text(source)
        rates, ours, mains, theirs = [], [], [], []
        for run in range(args.runs):
            children = cpu_seconds(resource.RUSAGE_CHILDREN)
            rate, cpu, main_thread, ready = asyncio.run(one_run(root, args, root / f"logs{run}"))
            workers = (cpu_seconds(resource.RUSAGE_CHILDREN) - children) / args.units
            rates.append(rate)
            ours.append(cpu)
            mains.append(main_thread)
            theirs.append(workers)
            spawn = ", ".join(f"{t * 1000:.0f}" for t in ready)
            print(
                f"{rate:8.0f} units/s ({1e6 / rate:.0f} us/unit)   cpu per unit: here "
                f"{cpu * 1e6:.0f} us (main thread {main_thread * 1e6:.0f}), workers "
                f"{workers * 1e6:.0f} us   (workers ready after {spawn} ms)"
            )
    mode = "chain, one at a time" if args.chain else "as many as free_slots()"
    print(
        f"median: {statistics.median(rates):.0f} units/s, cpu per unit: here "
        f"{statistics.median(ours) * 1e6:.0f} us (main thread "
        f"{statistics.median(mains) * 1e6:.0f}), workers "
        f"{statistics.median(theirs) * 1e6:.0f} us ({args.units} units, jobs={args.jobs}, {mode}"
        f"{', pipelining off' if args.no_pipeline else ''}{', printing' if args.print else ''}"
        f"{', a module per unit' if args.distinct else ''})"
    )


if __name__ == "__main__":
    main()
