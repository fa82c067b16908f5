"""Throughput of LocalExecutor: 1,000 trivial CALL units with jobs=2.

    PYTHONPATH=. python tests/bench/bench_executor.py [--units N] [--jobs J] [--runs R]
                                                      [--new-logs]

Prints the spawn-to-ready time of the workers and, per run, units per second from the first
submit to the last DONE (a warm pool: start() has returned) and the CPU time per unit of this
process (the executor's share of the scheduler's loop, plus the minimal sink) and of the workers
(their whole life, start-up included), then the medians. A minimal
scheduler keeps every slot busy: it submits the next unit from the sink, as the engine does.

Each unit writes to its own log file. By default the files exist already (a warm-up run
creates them), so the number is the executor's own cost; with --new-logs every run creates
them, which on some disks costs more than everything else (0.1-1 ms per file).
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
from watchrun.executors.local import LocalExecutor

TASK = "def run(x):\n    return x + 1\n"


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


async def one_run(
    root: Path, units: int, jobs: int, logs: Path
) -> tuple[float, float, list[float]]:
    chain = [(root / "tasks" / "trivial.py", "tasks")]
    pending = iter(range(units))
    finished = 0
    all_done = asyncio.get_running_loop().create_future()
    executor: LocalExecutor

    def submit_next() -> None:
        i = next(pending, None)
        if i is not None:
            key = UnitKey("trivial", (i,))
            executor.submit(
                Job(key, Mode.CALL, root, chain, {"x": pickle.dumps(i)}, logs / f"{i}.log")
            )

    def sink(event: ExecEvent) -> None:
        nonlocal finished
        if event.kind is EventKind.STARTED:
            return
        if event.kind is not EventKind.DONE:
            raise RuntimeError(f"unexpected {event}")
        finished += 1
        if finished == units:
            all_done.set_result(None)
        else:
            submit_next()

    executor = LocalExecutor(sink, jobs, 1.0)
    await executor.start()
    started = time.perf_counter()
    cpu = cpu_seconds(resource.RUSAGE_SELF)
    for _ in range(jobs):
        submit_next()
    await all_done
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(resource.RUSAGE_SELF) - cpu
    ready = list(executor.ready_times)
    await executor.close()
    return units / elapsed, cpu / units, ready


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--new-logs", action="store_true", help="create the log files per run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "tasks").mkdir()
        (root / "tasks" / "trivial.py").write_text(TASK)
        if not args.new_logs:
            asyncio.run(one_run(root, args.units, args.jobs, root / "logs"))
        rates, ours, theirs = [], [], []
        for run in range(args.runs):
            logs = root / (f"logs{run}" if args.new_logs else "logs")
            children = cpu_seconds(resource.RUSAGE_CHILDREN)
            rate, cpu, ready = asyncio.run(one_run(root, args.units, args.jobs, logs))
            workers = (cpu_seconds(resource.RUSAGE_CHILDREN) - children) / args.units
            rates.append(rate)
            ours.append(cpu)
            theirs.append(workers)
            spawn = ", ".join(f"{t * 1000:.0f}" for t in ready)
            print(
                f"{rate:8.0f} units/s   cpu per unit: here {cpu * 1e6:.0f} us, "
                f"workers {workers * 1e6:.0f} us   (workers ready after {spawn} ms)"
            )
    kind = "new" if args.new_logs else "existing"
    print(
        f"median: {statistics.median(rates):.0f} units/s, cpu per unit: here "
        f"{statistics.median(ours) * 1e6:.0f} us, workers {statistics.median(theirs) * 1e6:.0f} us"
        f" ({args.units} units, jobs={args.jobs}, {kind} log files)"
    )


if __name__ == "__main__":
    main()
