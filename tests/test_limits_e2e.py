"""The header's `timeout`, `retries` and `resources` on the local executor, through the CLI
(issue 20, point 2). The retry rule itself is proven fast in tests/test_retries.py."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import watchrun

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
    assert len(events(run.stdout, "unit_started")) == 3
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
        "(failed on attempt 2 of 2; earlier attempts: attempt 1: ConnectionError: flaky 1)")
    status = watchrun(root, "status")
    assert "failed on attempt 2 of 2" in status.stdout, status.stdout


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
