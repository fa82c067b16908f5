"""How long ProjectLoader.load() takes for a generated project of N tasks.

    python tests/bench/bench_loader.py [N] [--chains]

Prints, for a fresh project: the first load (empty store: every file read and parsed), alone
(CPU) and with the forked helpers of `fork_map` (wall, and CPU of this process), the warm load
as a new process does it (open store, stat cache, load: the whole-project cache hits), the warm
load when only the per-file analysis cache can help (the project cache is invalidated), and a
one-file change. Each figure is the best of a few runs. `--chains`: the project of benchmarks
W1-W3 (10 chains of one-step tasks, see workloads/chains.py) instead of the mixed one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests/bench"))  # for workloads.chains

from watchrun.config import load_config  # noqa: E402
from watchrun.project import parallel_map  # noqa: E402
from watchrun.project.loader import Project, ProjectLoader  # noqa: E402
from watchrun.project.snapshot import PROJECT_CACHE_KEY  # noqa: E402
from watchrun.state.hashing import FileHasher  # noqa: E402
from watchrun.state.store import Store  # noqa: E402

HELPERS = '''
import json
from pathlib import Path


def normalise(values):
    """Scale to 0..1."""
    top = max(values) or 1
    return [v / top for v in values]


def save(path, data):
    Path(path).write_text(json.dumps(data))
'''


def task_text(index: int, groups: int) -> str:
    """A mix of shapes: plain chains, a generator per group with per-iteration tasks and a
    collector, params, inputs and outputs, inheritance from an abstract base."""
    group, position = divmod(index, groups)
    name = f"g{group:03}"
    if position == 0:
        return textwrap.dedent(f"""\
            # /// task
            # kind = "generator"
            # outputs = ["out/{name}/items"]
            # [params]
            # count = 10
            # ///
            from lib.helpers import normalise


            def run(count, start=0):
                for i in range(start, count):
                    yield normalise([i, i + 1])
            """)
    if position == groups - 1:
        return textwrap.dedent(f"""\
            # /// task
            # kind = "collector"
            # after = ["{name}.t{position - 1:03}"]
            # ///
            items = []


            def run(value):
                items.append(value)


            def gather():
                return len(items)
            """)
    upstream = f"{name}.t{position - 1:03}" if position > 1 else f"{name}.t000"
    return textwrap.dedent(f"""\
        # /// task
        # extends = "base"
        # after = ["{upstream}"]
        # inputs = ["data/{name}/*.csv"]
        # [params]
        # scale = {position}
        # ///
        from lib import helpers


        def transform(x, scale):
            return [v * scale for v in x]


        def run(t{position - 1:03}, scale, inputs):
            return helpers.normalise(transform(t{position - 1:03}, scale))
        """)


def generate(root: Path, count: int, groups: int = 10) -> None:
    (root / "lib").mkdir(parents=True)
    (root / "lib/__init__.py").write_text("")
    (root / "lib/helpers.py").write_text(HELPERS)
    (root / "tasks").mkdir()
    (root / "tasks/base.py").write_text(
        "# /// task\n# abstract = true\n# [params]\n# scale = 1\n# ///\n\n"
        "def run(scale):\n    return scale\n")
    for index in range(count - 1):
        group = index // groups
        folder = root / "tasks" / f"g{group:03}"
        folder.mkdir(exist_ok=True)
        (folder / f"t{index % groups:03}.py").write_text(task_text(index, groups))


def load_once(root: Path) -> tuple[Project, float, int]:
    """Everything a new process does to get the project: config, store, stat cache, load.
    Measured in CPU time of this process: steadier than wall time on a busy machine, and the
    load does not wait on anything but the disk cache."""
    started = time.process_time()
    config, _ = load_config(root)
    store = Store(config.state_dir)
    hasher = FileHasher(store)
    loader = ProjectLoader(config, store, hasher)
    project = loader.load()
    elapsed = time.process_time() - started
    hasher.flush()
    store.commit()
    store.close()
    return project, elapsed, loader.parsed


def best(runs: int, action: Callable[[], float]) -> float:
    return min(action() for _ in range(runs))


def first_load(root: Path, helpers: bool) -> tuple[float, float, int]:
    """(CPU, wall, files parsed) of a load from an empty store, with or without fork_map's
    helpers (whose CPU is not counted: only this process's)."""
    config, _ = load_config(root)
    shutil.rmtree(config.state_dir, ignore_errors=True)
    saved = parallel_map.MIN_PER_PROCESS
    parallel_map.MIN_PER_PROCESS = saved if helpers else 10**9
    try:
        started = time.perf_counter()
        _, cpu, parsed = load_once(root)
        return cpu, time.perf_counter() - started, parsed
    finally:
        parallel_map.MIN_PER_PROCESS = saved


def generate_chains(root: Path, count: int) -> None:
    from workloads.chains import CHAINS, project_files, source_text, src

    for rel, text in project_files("watchrun", count // CHAINS).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "src").mkdir()
    for chain in range(CHAINS):
        (root / src(chain)).write_text(source_text(chain))


def invalidate_project_cache(root: Path) -> None:
    config, _ = load_config(root)
    store = Store(config.state_dir)
    store.kv_put(PROJECT_CACHE_KEY, b"")
    store.commit()
    store.close()


def main() -> None:
    numbers = [arg for arg in sys.argv[1:] if arg.isdigit()]
    count = int(numbers[0]) if numbers else 1000
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "--chains" in sys.argv:
            generate_chains(root, count)
            changed = root / "tasks/c5/s3.py"
            edits = [("x\")", "y\")"), ("y\")", "z\")")]
        else:
            generate(root, count)
            changed = root / "tasks/g005/t003.py"
            edits = [("scale = 3", "scale = 33"), ("scale = 33", "scale = 34")]
        time.sleep(0.1)  # let the files age past the hasher's racy window
        alone = [first_load(root, helpers=False) for _ in range(3)]
        forked = [first_load(root, helpers=True) for _ in range(3)]
        project, _, parsed = load_once(root)
        assert not project.errors, project.errors[:3]
        print(f"{len(project.tasks)} tasks, {len(project.modules)} modules")
        cpu = min(run[0] for run in alone)
        print(f"first load, no helpers:            {cpu * 1000:7.1f} ms CPU  "
              f"({cpu / alone[0][2] * 1e6:.0f} us per file, {alone[0][2]} files parsed)")
        print(f"first load, forked helpers:        {min(run[1] for run in forked) * 1000:7.1f} ms "
              f"wall, {min(run[0] for run in forked) * 1000:.1f} ms CPU here")
        warm = best(5, lambda: load_once(root)[1])
        print(f"warm load (project cache):         {warm * 1000:7.1f} ms")

        def per_file() -> float:
            invalidate_project_cache(root)
            return load_once(root)[1]

        print(f"warm load (per-file caches only):  {best(5, per_file) * 1000:7.1f} ms")
        changed.write_text(changed.read_text().replace(*edits[0]))
        _, one, parsed = load_once(root)
        print(f"one task changed:                  {one * 1000:7.1f} ms  ({parsed} parsed)")
        config, _ = load_config(root)
        store = Store(config.state_dir)
        dev = ProjectLoader(config, store, FileHasher(store))
        dev.load()
        changed.write_text(changed.read_text().replace(*edits[1]))
        started = time.process_time()
        dev.reload({changed})
        print(f"dev-mode reload after one change: {(time.process_time() - started) * 1000:7.1f} ms")
        store.close()
        script = ("import sys, time; t = time.process_time(); "
                  f"sys.path.insert(0, {str(REPO)!r}); "
                  "from tests.bench.bench_loader import load_once; "
                  f"load_once(__import__('pathlib').Path({tmp!r})); "
                  "print(time.process_time() - t)")
        load_once(root)
        # compiled modules as a user has them (this may run with PYTHONDONTWRITEBYTECODE set)
        env = dict(os.environ, PYTHONPYCACHEPREFIX=str(root / "pycache"))
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        runs = []
        for _ in range(6):
            started = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                 check=True, cwd=REPO, env=env).stdout
            runs.append((time.perf_counter() - started, float(out)))
        total, inner = min(runs[1:])
        print(f"new process, warm: {total * 1000:.1f} ms wall in total, of which imports + "
              f"load {inner * 1000:.1f} ms CPU")


if __name__ == "__main__":
    main()
