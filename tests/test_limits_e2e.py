"""The header's `timeout`, `retries` and `resources` on the local executor, through the CLI
(issue 20, point 2). The retry rule itself is proven fast in tests/test_retries.py."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Run, cli_env, watchrun

pytestmark = pytest.mark.usefixtures("no_leaks")

# fails on its first two attempts (counted in a file beside the project), then succeeds
FLAKY = """
    # /// task
    # retries = {retries}
    # ///
    from pathlib import Path

    def run(ctx):
        tries = Path(ctx.root) / "tries.txt"
        count = int(tries.read_text()) + 1 if tries.exists() else 1
        tries.write_text(str(count))
        print(f"try {{count}}")
        if count <= 2:
            raise ConnectionError(f"flaky {{count}}")
        return count
"""


def events(stdout: str, name: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return [e for e in lines if e["event"] == name]


def test_a_flaky_unit_succeeds_within_its_retries(
        project: Callable[[dict[str, str]], Path]) -> None:
    root = project({"tasks/flaky.py": FLAKY.format(retries=2)})
    run = watchrun(root, "build", "--json")
    assert run.code == 0, run.stdout + run.stderr
    retries = events(run.stdout, "unit_retry")
    assert [(e["task"], e["iter"], e["attempt"], e["cause"]) for e in retries] == [
        ("flaky", [], 2, "ConnectionError: flaky 1"),
        ("flaky", [], 3, "ConnectionError: flaky 2")]
    assert [e["reasons"] for e in events(run.stdout, "unit_started")] == [
        ["never run"],
        ["retry, attempt 2: previous attempt failed: ConnectionError: flaky 1"],
        ["retry, attempt 3: previous attempt failed: ConnectionError: flaky 2"]]
    assert not events(run.stdout, "unit_failed")
    log = (root / ".watchrun" / "logs" / "flaky.log").read_text()
    # every attempt's output and cause stays in the unit's log, in order
    assert log.index("try 1") < log.index(
        "attempt 2 of 3: previous attempt failed: ConnectionError: flaky 1") < log.index(
        "try 2") < log.index(
        "attempt 3 of 3: previous attempt failed: ConnectionError: flaky 2") < log.index(
        "try 3")
    assert watchrun(root, "build").code == 0  # and it is clean now
    assert (root / "tries.txt").read_text() == "3"


def test_a_unit_that_fails_more_often_than_its_retries_fails_saying_so(
        project: Callable[[dict[str, str]], Path]) -> None:
    root = project({"tasks/flaky.py": FLAKY.format(retries=1)})
    run = watchrun(root, "build", "--json")
    assert run.code == 1
    assert [e["attempt"] for e in events(run.stdout, "unit_retry")] == [2]
    [failed] = events(run.stdout, "unit_failed")
    assert "ConnectionError: flaky 2" in failed["error"]
    assert failed["error"].endswith(
        "\nConnectionError: flaky 2 (failed on attempt 2 of 2; earlier attempts: attempt 1: "
        "ConnectionError: flaky 1)")
    status = watchrun(root, "status")
    assert "ConnectionError: flaky 2 (failed on attempt 2 of 2" in status.stdout, status.stdout


def test_a_unit_past_its_timeout_is_cancelled_and_fails(
        project: Callable[[dict[str, str]], Path]) -> None:
    root = project({
        "tasks/hang.py": """
            # /// task
            # timeout = 1
            # ///
            import time

            def run():
                print("started", flush=True)
                time.sleep(120)
        """,
    })
    run = watchrun(root, "build", "--json")
    assert run.code == 1
    [failed] = events(run.stdout, "unit_failed")
    assert failed["task"] == "hang"
    assert failed["error"] == "timed out after 1 s"
    assert not events(run.stdout, "unit_cancelled")
    assert not events(run.stdout, "unit_retry")


def interval_task(cpus: float) -> str:
    return f"""
        # /// task
        # resources = {{cpus = {cpus}}}
        # ///
        import time
        from pathlib import Path

        def run(ctx):
            start = time.time()
            time.sleep(0.4)
            Path(ctx.root, ctx.name + ".span").write_text(f"{{start}} {{time.time()}}")
    """


def spans(root: Path, names: list[str]) -> list[tuple[float, float]]:
    result = []
    for name in names:
        start, end = (root / f"{name}.span").read_text().split()
        result.append((float(start), float(end)))
    return sorted(result)


def test_units_asking_for_two_cpus_take_two_slots(
        project: Callable[[dict[str, str]], Path]) -> None:
    root = project({"tasks/a.py": interval_task(2), "tasks/b.py": interval_task(2),
                    "tasks/c.py": interval_task(1.5)})
    run = watchrun(root, "build", "-j", "2")
    assert run.code == 0, run.stdout + run.stderr
    ordered = spans(root, ["a", "b", "c"])
    for (_, end), (start, _) in itertools.pairwise(ordered):
        assert end <= start, ordered  # never two at once on two slots


def test_a_unit_asking_more_cpus_than_jobs_runs_alone(
        project: Callable[[dict[str, str]], Path]) -> None:
    root = project({"tasks/big.py": interval_task(8), "tasks/s1.py": interval_task(1),
                    "tasks/s2.py": interval_task(1)})
    run = watchrun(root, "build", "-j", "2")
    assert run.code == 0, run.stdout + run.stderr
    (big,) = spans(root, ["big"])
    for start, end in spans(root, ["s1", "s2"]):
        assert end <= big[0] or start >= big[1], (big, start, end)


def test_units_of_one_cpu_still_share_the_slots(
        project: Callable[[dict[str, str]], Path]) -> None:
    # the positive control: each waits until it has seen the other start
    waiter = """
        # /// task
        # resources = {{cpus = 1}}
        # ///
        import time
        from pathlib import Path

        def run(ctx):
            Path(ctx.root, "{me}.started").touch()
            deadline = time.time() + 20
            while not Path(ctx.root, "{other}.started").exists():
                assert time.time() < deadline, "the other unit never ran beside this one"
                time.sleep(0.01)
    """
    root = project({"tasks/p.py": waiter.format(me="p", other="q"),
                    "tasks/q.py": waiter.format(me="q", other="p")})
    run = watchrun(root, "build", "-j", "2")
    assert run.code == 0, run.stdout + run.stderr


def watchrun_with(root: Path, env: dict[str, str | None], *args: str) -> Run:
    """The CLI with some environment variables set (a str) or removed (None)."""
    full = cli_env()
    for name, value in env.items():
        if value is None:
            full.pop(name, None)
        else:
            full[name] = value
    proc = subprocess.run([sys.executable, "-m", "watchrun", "-C", str(root), *args],
                          capture_output=True, text=True, timeout=60, env=full,
                          stdin=subprocess.DEVNULL)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def test_a_unit_asking_for_a_gpu_where_none_exist_fails_at_once(
        project: Callable[[dict[str, str]], Path]) -> None:
    root = project({
        "tasks/train.py": """
            # /// task
            # resources = {gpus = 1, cpus = 1}
            # retries = 2
            # ///
            def run():
                return 1
        """,
        "tasks/other.py": "# /// task\n# ///\ndef run():\n    return 2\n",
    })
    run = watchrun_with(root, {"CUDA_VISIBLE_DEVICES": None}, "build", "--json")
    assert run.code == 1
    [failed] = events(run.stdout, "unit_failed")
    assert failed["task"] == "train"
    assert failed["error"].startswith(
        "train asks for 1 GPU (`resources = {gpus = 1, cpus = 1}` at tasks/train.py:2), and "
        "this machine has none (CUDA_VISIBLE_DEVICES is not set and the NVIDIA driver lists "
        "no GPU) visible to watchrun"), failed["error"]
    assert [e["task"] for e in events(run.stdout, "unit_finished")] == ["other"]
    assert not events(run.stdout, "unit_retry")  # it would fail again: not retried


GPU_TASK = """
    # /// task
    # resources = {{gpus = 1}}
    # ///
    import os
    import time
    from pathlib import Path

    def run(ctx):
        Path(ctx.root, "{me}.gpu").write_text(os.environ["CUDA_VISIBLE_DEVICES"])
        deadline = time.time() + 20  # holds its GPU until the other has one too
        while not Path(ctx.root, "{other}.gpu").exists():
            assert time.time() < deadline, "the other unit never ran beside this one"
            time.sleep(0.01)
"""


def test_each_unit_sees_the_gpus_it_holds(project: Callable[[dict[str, str]], Path]) -> None:
    root = project({"tasks/g1.py": GPU_TASK.format(me="g1", other="g2"),
                    "tasks/g2.py": GPU_TASK.format(me="g2", other="g1")})
    run = watchrun_with(root, {"CUDA_VISIBLE_DEVICES": "3,5"}, "build", "-j", "2")
    assert run.code == 0, run.stdout + run.stderr
    assert sorted((root / f"{n}.gpu").read_text() for n in ("g1", "g2")) == ["3", "5"]


def test_units_wait_for_a_gpu_held_by_another(
        project: Callable[[dict[str, str]], Path]) -> None:
    files = {f"tasks/{n}.py": interval_task(1).replace(
        "cpus = 1", "cpus = 1, gpus = 1") for n in ("h1", "h2")}
    root = project(files)
    run = watchrun_with(root, {"CUDA_VISIBLE_DEVICES": "0"}, "build", "-j", "2")
    assert run.code == 0, run.stdout + run.stderr
    (_, end), (start, _) = spans(root, ["h1", "h2"])
    assert end <= start


def memory_task(memory: str) -> str:
    return interval_task(1).replace("cpus = 1", f"memory = '{memory}'")


def test_units_wait_while_the_memory_budget_is_used(
        project: Callable[[dict[str, str]], Path]) -> None:
    root = project({"watchrun.toml": 'memory_budget = "1G"\n',
                    "tasks/m1.py": memory_task("600M"), "tasks/m2.py": memory_task("600M")})
    run = watchrun(root, "build", "-j", "2")
    assert run.code == 0, run.stdout + run.stderr
    (_, end), (start, _) = spans(root, ["m1", "m2"])
    assert end <= start


def test_a_unit_asking_more_memory_than_the_budget_fails_at_once(
        project: Callable[[dict[str, str]], Path]) -> None:
    root = project({"watchrun.toml": 'memory_budget = "1G"\n',
                    "tasks/fit.py": memory_task("3G")})
    run = watchrun(root, "build", "--json")
    assert run.code == 1
    [failed] = events(run.stdout, "unit_failed")
    assert failed["error"] == (
        "fit asks for 3 GiB of memory (`resources = {memory = '3G'}` at tasks/fit.py:2), more "
        "than the memory budget of 1 GiB (`memory_budget` in watchrun.toml)")


def test_a_bad_memory_budget_is_refused_naming_its_line(
        project: Callable[[dict[str, str]], Path]) -> None:
    root = project({"watchrun.toml": 'jobs = 2\nmemory_budget = "lots"\n',
                    "tasks/a.py": "# /// task\n# ///\ndef run():\n    return 1\n"})
    run = watchrun(root, "build")
    assert "watchrun.toml:2" in run.stderr + run.stdout, run.stderr
    assert "memory_budget" in run.stderr + run.stdout
    assert "Traceback" not in run.stderr
