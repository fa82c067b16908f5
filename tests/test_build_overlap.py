"""How a build shares the machine: the dirty units run while the clean ones are still being
skipped, and a build of plain tasks starts no worker it does not use. Through the real CLI, with
real workers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import cli_env, spawn_watchrun, wait_for, watchrun, worker_processes

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("no_leaks")]

CLEAN = 2000  # clean tasks skipped after the dirty chain started: tens of milliseconds of work
CHAIN = 30


def _overlap_project() -> dict[str, str]:
    # `a.s<i>` sort before every `z<i>`: the dirty chain is the first thing the build starts
    files = {"src.txt": "0\n"}
    for i in range(CHAIN):
        source = "src.txt" if i == 0 else f"out/s{i - 1}.txt"
        files[f"tasks/a/s{i:02d}.py"] = f'''
            # /// task
            # inputs = ["{source}"]
            # outputs = ["out/s{i}.txt"]
            # ///
            from pathlib import Path

            def run():
                Path("out/s{i}.txt").write_text(Path("{source}").read_text() + "x")
        '''
    for i in range(CLEAN):
        files[f"tasks/z/t{i:04d}.py"] = f"# /// task\n# ///\ndef run():\n    return {i}\n"
    return files


def test_a_dirty_chain_runs_while_the_clean_units_are_skipped(
        project: Callable[[dict[str, str]], Path]) -> None:
    root = project(_overlap_project())
    (root / "out").mkdir()
    first = watchrun(root, "build", "-j1")
    assert first.code == 0, first.stderr
    (root / "src.txt").write_text("1\n")

    run = watchrun(root, "build", "-j1", "--json")

    assert run.code == 0, run.stderr
    events = [json.loads(line)["event"] for line in run.stdout.splitlines()]
    assert events.count("unit_skipped") == CLEAN
    assert events.count("unit_finished") == CHAIN
    last_skip = len(events) - 1 - events[::-1].index("unit_skipped")
    # the chain's first unit goes to a worker before the clean units are all resolved; how
    # far the chain gets meanwhile depends on how soon the OS runs that worker, so the rule
    # that a result read meanwhile starts the next unit at once is proven over a fake
    # executor (test_plan_driver.py::test_a_dirty_chain_advances_while_the_clean_units_...)
    assert events[:last_skip].count("unit_started") >= 1, "the chain waited for all the skips"
    assert (root / f"out/s{CHAIN - 1}.txt").read_text() == "1\n" + "x" * CHAIN


HOLD = '''
    # /// task
    # ///
    from pathlib import Path
    import time

    def run():
        Path("started").touch()
        while not Path("go").exists():
            time.sleep(0.02)
'''


@pytest.mark.parametrize(("kinds", "workers"), [("plain", 1), ("with a generator", 2)])
def test_a_build_starts_a_spare_worker_only_for_generators_and_collectors(
        project: Callable[[dict[str, str]], Path], kinds: str, workers: int) -> None:
    files = {"tasks/hold.py": HOLD}
    if kinds == "with a generator":
        files["tasks/gen.py"] = '''
            # /// task
            # kind = "generator"
            # after = ["hold"]
            # ///
            def run(hold):
                yield 1
        '''
    root = project(files)
    proc = spawn_watchrun(root, "build", "-j1")
    try:
        wait_for(lambda: (root / "started").exists(), what="the task to start")
        if workers > 1:
            wait_for(lambda: len(worker_processes()) == workers, what="the spare worker")
        else:
            time.sleep(0.5)  # a spare, if any, starts once the first worker is ready
        assert len(worker_processes()) == workers
        (root / "go").touch()
        err = proc.communicate(timeout=30)[1]
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


ONE_TASK = {"tasks/one.py": "# /// task\n# ///\ndef run():\n    return 1\n"}


@pytest.mark.parametrize("case", ["nothing to run", "project error", "dry run", "ran"])
def test_workers_started_before_the_engine_are_gone_when_build_exits(
        project: Callable[[dict[str, str]], Path], case: str) -> None:
    # `build` starts its first workers before importing the engine; whatever the build then
    # does with them, none is left the moment it exits (no waiting for them to notice)
    root = project(ONE_TASK)
    args = ["build", "-j2"]
    expected = 0
    if case == "nothing to run":
        assert watchrun(root, "build").code == 0
        args.append("-v")  # the full check, not the null-build proof, which starts nothing
    elif case == "project error":
        (root / "tasks/broken.py").write_text("# /// task\n# after = 3\n# ///\n")
        expected = 2
    elif case == "dry run":
        args.append("--dry-run")
    adopted = _orphans_of(root, args, expected)
    assert adopted == [], "workers outlived build (to end on their own)"
    assert worker_processes() == []


# Runs `watchrun ARGS` as a child of a subreaper (Linux), so that any process it leaves behind
# is adopted by this script instead of init: those are counted, alive or already exited.
SUBREAPER = """
import ctypes, json, os, subprocess, sys, time
import psutil
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
code = subprocess.call([sys.executable, "-m", "watchrun", "-C", *sys.argv[1:]],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(0.5)  # an orphan that ends itself, on its life pipe, is adopted meanwhile
adopted = [c.pid for c in psutil.Process().children()]
for pid in adopted:  # reap them, the living ones once killed
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
while True:
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        break
print(json.dumps({"code": code, "adopted": adopted}))
"""


def _orphans_of(root: Path, args: list[str], expected: int) -> list[int]:
    proc = subprocess.run([sys.executable, "-c", SUBREAPER, str(root), *args],
                          capture_output=True, text=True, timeout=60, env=cli_env())
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["code"] == expected
    adopted: list[int] = result["adopted"]
    return adopted
