"""Benchmark: analyse 1,000 generated task modules (plus shared helpers) and close every task.

    PYTHONPATH=. python tests/bench/bench_codemap.py [--tasks 1000] [--rounds 5]

The project: 20 helper modules of 20 functions each (calling each other, importing json and
rich); 100 abstract base tasks; the other tasks extend a base (a third of them override a helper)
and each has ~30 lines: a header, imports, constants, two helpers and `run`. Reports the median
of each step over the rounds (a fresh CodeIndex each round, as a new process would have), and the
time to unpickle every ModuleInfo (what a null build pays instead of parsing). Target: analyse +
close 1,000 tasks well under 1 s.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import time
from itertools import pairwise

from watchrun.project.codemap import ChainLink, CodeIndex, ModuleInfo, analyze_module
from watchrun.project.externals import version_of

HELPER_MODULES = 20
HELPERS_PER_MODULE = 20
BASES = 100


def helper_module(m: int) -> str:
    lines = ['"""Helpers."""', "import json", "from rich.text import Text", ""]
    for f in range(HELPERS_PER_MODULE):
        callee = f"f{f + 1}(x)" if f + 1 < HELPERS_PER_MODULE and f % 4 else "x"
        lines += [
            f"def f{f}(x, scale={f}):",
            f'    """Helper {f} of module {m}."""',
            f"    value = json.dumps({{'x': {callee}, 'scale': scale}})",
            "    return Text(value) if scale > 100 else value",
            "",
        ]
    return "\n".join(lines)


def base_task(b: int) -> str:
    m = b % HELPER_MODULES
    return f'''# /// task
# abstract = true
# [params]
# size = {b}
# ///
"""Base {b}."""
from pathlib import Path

from lib.h{m} import f0, f5

LIMIT = {b * 10}


def prepare(path):
    return f5(Path(path).read_text()[:LIMIT])


def helper(rows):
    return [f0(r) for r in rows]


def run(inputs, size):
    rows = [prepare(p) for p in inputs]
    return {{"size": size, "rows": helper(rows)}}
'''


def child_task(t: int) -> str:
    m = (t * 7) % HELPER_MODULES
    override = "\n\ndef helper(rows):\n    return sorted(rows)\n" if t % 3 == 0 else ""
    return f'''# /// task
# extends = "base{t % BASES}"
# after = ["t{max(t - 1, 0)}"]
# inputs = ["data/{t}/*.csv"]
# [params]
# size = {t}
# ///
"""Task {t}: {"overrides helper" if override else "inherits everything but finish"}."""
import json
import statistics

from lib import h{m}

THRESHOLD = {t % 17}
NAMES = ["a", "b", "c"]
NAMES += ["d"]


def score(rows):
    """Score rows."""
    values = [len(json.dumps(r)) for r in rows]
    return statistics.mean(values) if values else 0


def finish():
    return h{m}.f{t % HELPERS_PER_MODULE}(score([THRESHOLD, NAMES])){override}
'''


def project(tasks: int) -> tuple[dict[str, str], dict[str, str], list[list[ChainLink]]]:
    sources: dict[str, str] = {}
    for m in range(HELPER_MODULES):
        sources[f"lib.h{m}"] = helper_module(m)
    for b in range(BASES):
        sources[f"tasks.base{b}"] = base_task(b)
    chains = []
    for t in range(tasks - BASES):
        sources[f"tasks.t{t}"] = child_task(t)
        chains.append([f"base{t % BASES}", f"t{t}"])
    files = {name: name.replace(".", "/") + ".py" for name in sources}
    links = [[ChainLink(n, f"tasks.{n}", f"tasks/{n}.py") for n in chain] for chain in chains]
    links += [[ChainLink(f"base{b}", f"tasks.base{b}", f"tasks/base{b}.py")] for b in range(BASES)]
    return sources, files, links


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sources, files, chains = project(args.tasks)
    lines = sum(s.count("\n") for s in sources.values())
    print(f"{len(sources)} modules, {lines} lines, {len(chains)} tasks")
    version_of("rich")  # the distribution lookup is per process, not per round

    wall: dict[str, list[float]] = {"analyse": [], "close": [], "unpickle": []}
    cpu: dict[str, list[float]] = {"analyse": [], "close": [], "unpickle": []}
    blobs: list[bytes] = []
    for _ in range(args.rounds):
        marks = [(time.perf_counter(), time.process_time())]
        modules = {name: analyze_module(src, name) for name, src in sources.items()}
        marks.append((time.perf_counter(), time.process_time()))
        index = CodeIndex(modules, files, version_of)
        digests = {chain[-1].task: index.task_closure(chain).digest for chain in chains}
        marks.append((time.perf_counter(), time.process_time()))
        blobs = [pickle.dumps(info) for info in modules.values()]
        marks.append((time.perf_counter(), time.process_time()))
        loaded: list[ModuleInfo] = [pickle.loads(blob) for blob in blobs]
        marks.append((time.perf_counter(), time.process_time()))
        assert len(digests) == len(chains) and len(loaded) == len(modules)
        steps = ("analyse", "close", None, "unpickle")
        for step, (start, end) in zip(steps, pairwise(marks), strict=True):
            if step is not None:
                wall[step].append(end[0] - start[0])
                cpu[step].append(end[1] - start[1])

    def ms(values: list[float]) -> float:
        return statistics.median(values) * 1000

    size = sum(len(b) for b in blobs) / 1024
    print(f"median of {args.rounds} rounds          wall       cpu")
    for step, label in (("analyse", "analyse all modules"), ("close", "close every task")):
        print(f"{label:28} {ms(wall[step]):7.1f} ms {ms(cpu[step]):7.1f} ms")
    both_wall = ms([a + c for a, c in zip(wall["analyse"], wall["close"], strict=True)])
    both_cpu = ms([a + c for a, c in zip(cpu["analyse"], cpu["close"], strict=True)])
    print(f"{'analyse + close':28} {both_wall:7.1f} ms {both_cpu:7.1f} ms")
    print(
        f"{'unpickle every ModuleInfo':28} {ms(wall['unpickle']):7.1f} ms "
        f"{ms(cpu['unpickle']):7.1f} ms   ({size:.0f} KiB pickled)"
    )


if __name__ == "__main__":
    main()
