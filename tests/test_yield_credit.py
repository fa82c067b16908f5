"""The bounded read-ahead at the worker: a generator sends at most its credit of yields the
executor has not read (executors/yield_credit.py), then waits for CREDIT; end to end, a
generator that yields at once stays a bounded number of items ahead of its consumer."""

from __future__ import annotations

import asyncio
import json
import pickle
import socket
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import watchrun
from tests.test_executor_local import Harness, drive, make_job, write_task
from tests.test_worker import WorkerProcess, output, spec, write
from watchrun.executors import protocol as proto
from watchrun.executors.base import EventKind, Mode
from watchrun.executors.protocol import Msg
from watchrun.executors.yield_credit import YIELD_CREDIT

pytestmark = pytest.mark.usefixtures("no_leaks")

COUNTING = """
    import pathlib

    def run():
        for i in range(10):
            pathlib.Path(f"made-{i}").touch()
            yield i
"""


@pytest.fixture
def worker() -> Any:
    process = WorkerProcess()
    yield process
    process.close()


def with_credit(job: proto.JobSpec, credit: int) -> proto.JobSpec:
    job.credit = credit
    return job


def nothing_comes(worker: WorkerProcess, seconds: float = 0.3) -> bool:
    worker.sock.settimeout(seconds)
    try:
        return not worker.sock.recv(1, socket.MSG_PEEK)  # b"": closed; data: something came
    except TimeoutError:
        return True
    finally:
        worker.sock.settimeout(20.0)


def values(messages: list[tuple[Msg, tuple[object, ...]]]) -> list[Any]:
    return [pickle.loads(fields[0]) for kind, fields in messages  # type: ignore[arg-type]
            if kind is Msg.YIELDED]


def test_a_generator_stops_at_its_credit_until_more_is_granted(
    tmp_path: Path, worker: WorkerProcess
) -> None:
    write(tmp_path / "tasks" / "gen.py", COUNTING)
    worker.send(Msg.JOB, *with_credit(spec(tmp_path, ["gen"], mode=proto.GENERATE), 3).fields())
    first = [worker.read() for _ in range(4)]
    assert [kind for kind, _ in first] == [Msg.STARTED, *[Msg.YIELDED] * 3]
    assert nothing_comes(worker)
    # it waits before taking its next value: the fourth item is not even made
    assert sorted(p.name for p in tmp_path.glob("made-*")) == ["made-0", "made-1", "made-2"]
    worker.send(Msg.CREDIT, "another[0]", 5)  # a grant for another job counts for nothing
    assert nothing_comes(worker)
    worker.send(Msg.CREDIT, "gen", 2)
    assert values([worker.read(), worker.read()]) == [3, 4]
    assert nothing_comes(worker)
    worker.send(Msg.CREDIT, "gen", 100)
    rest = worker.until_terminal()
    assert values(rest) == [5, 6, 7, 8, 9] and rest[-1][0] is Msg.DONE


def test_a_cancel_while_it_waits_for_credit_is_raised_at_its_yield(
    tmp_path: Path, worker: WorkerProcess
) -> None:
    write(tmp_path / "tasks" / "gen.py", """
        import pathlib

        def run():
            try:
                for i in range(10):
                    yield i
            except KeyboardInterrupt:
                pathlib.Path("interrupted").write_text("at the yield")
                raise
    """)
    worker.send(Msg.JOB, *with_credit(spec(tmp_path, ["gen"], mode=proto.GENERATE), 2).fields())
    assert [worker.read()[0] for _ in range(3)] == [Msg.STARTED, Msg.YIELDED, Msg.YIELDED]
    assert nothing_comes(worker)
    worker.interrupt()
    kind, _ = worker.read()
    assert kind is Msg.CANCELLED
    assert (tmp_path / "interrupted").read_text() == "at the yield"


def test_frames_that_come_while_it_waits_are_kept_in_order(
    tmp_path: Path, worker: WorkerProcess
) -> None:
    """An inner generator waiting for credit reads the pushes and the end sent meanwhile;
    each is still taken in its turn, and the next job queued behind it runs after."""
    write(tmp_path / "tasks" / "inner.py", """
        def run(v):
            yield from (10 * v, 10 * v + 1, 10 * v + 2)
    """)
    write(tmp_path / "tasks" / "t.py", "def run():\n    return 'next job'\n")
    job = with_credit(spec(tmp_path, ["inner"], mode=proto.INNER_GENERATE), 2)
    worker.sock.sendall(b"".join([
        proto.encode(Msg.JOB, *job.fields()),
        *(proto.encode(Msg.PUSH, {"v": pickle.dumps(v)}) for v in (0, 1)),
        proto.encode(Msg.END),
        proto.encode(Msg.JOB, *spec(tmp_path, ["t"]).fields()),
    ]))
    first = [worker.read() for _ in range(3)]
    assert [kind for kind, _ in first] == [Msg.STARTED, Msg.YIELDED, Msg.YIELDED]
    assert nothing_comes(worker)
    worker.send(Msg.CREDIT, "inner", 100)
    messages = first + worker.until_terminal()
    assert values(messages) == [0, 1, 2, 10, 11, 12]
    assert messages[-1][0] is Msg.DONE
    assert output(worker.until_terminal()) == "next job"


def test_a_job_without_credit_yields_without_waiting(
    tmp_path: Path, worker: WorkerProcess
) -> None:
    """Ray's relay sends no credit: its jobs carry none and never wait."""
    write(tmp_path / "tasks" / "gen.py", COUNTING)
    messages = worker.run(spec(tmp_path, ["gen"], mode=proto.GENERATE))
    assert values(messages) == list(range(10)) and messages[-1][0] is Msg.DONE


def test_the_executor_holds_a_generator_by_withholding_its_credit(tmp_path: Path) -> None:
    """The plan's read-ahead hold, as the local executor keeps it: no SIGSTOP, the generator
    waits at a `yield` once its credit is spent, and goes on when let go."""
    write_task(tmp_path, "gen", """
        import pathlib

        def run():
            for i in range(100):
                pathlib.Path(f"made-{i}").touch()
                yield i
    """)

    async def scenario(h: Harness) -> None:
        job = make_job(tmp_path, "gen", Mode.GENERATE)
        h.submit(job)
        await h.event(job.key, {EventKind.YIELDED})
        assert h.executor.hold_yields(job.key, True)
        at_hold = len(h.of(job.key, EventKind.YIELDED))
        await asyncio.sleep(0.5)
        held = len(h.of(job.key, EventKind.YIELDED))
        # what was granted before the hold, then its credit: and there it waits
        assert held <= at_hold + 2 * YIELD_CREDIT, (at_hold, held)
        assert len(list(tmp_path.glob("made-*"))) == held
        await asyncio.sleep(0.3)
        assert len(h.of(job.key, EventKind.YIELDED)) == held
        assert not h.of(job.key, EventKind.DONE)
        assert h.executor.hold_yields(job.key, False)
        assert await h.result(job.key) is None
        values = [pickle.loads(e.data or b"") for e in h.of(job.key, EventKind.YIELDED)]
        assert values == list(range(100))

    drive(tmp_path, scenario)


def test_only_a_generator_is_held_by_its_credit(tmp_path: Path) -> None:
    write_task(tmp_path, "t", "import time\ndef run():\n    time.sleep(0.2)\n    return 1\n")

    async def scenario(h: Harness) -> None:
        job = make_job(tmp_path, "t")
        h.submit(job)
        await h.event(job.key, {EventKind.STARTED})
        assert not h.executor.hold_yields(job.key, True)  # the driver pauses it instead
        assert await h.result(job.key) == 1

    drive(tmp_path, scenario)


INSTANT = {
    "watchrun.toml": "jobs = 2\n",
    "tasks/items.py": """
        # /// task
        # kind = "generator"
        # ///
        import os

        def run():
            with open("ahead.log", "w") as log:
                for i in range(300):
                    log.write(f"{i} {len(os.listdir('done'))}\\n")
                    log.flush()
                    yield i
    """,
    "tasks/a.py": """
        # /// task
        # after = ["items"]
        # ///
        import time

        def run(items):
            time.sleep(0.01)
            open(f"done/{items}", "w").close()
            return items
    """,
    "tasks/total.py": """
        # /// task
        # kind = "collector"
        # after = ["a"]
        # ///
        seen = []

        def run(a):
            seen.append(a)

        def gather():
            return sum(seen)
    """,
}


def test_a_generator_that_yields_at_once_stays_a_window_ahead_of_its_consumer(
    tmp_path: Path,
) -> None:
    """SPEC section 3: a generator is not read further ahead of its slowest consumer than a
    bounded window. Without the credit, one that yields at once ran 67 to 198 items ahead
    of its consumer's finished units here (its yields waited in the socket); now at most
    the plan's window (8 waiting units) plus the credit (8 yields) plus the units running
    (2) and the one being made."""
    ahead = most_ahead(tmp_path, INSTANT, ran=302)
    assert ahead <= 8 + 8 + 2 + 1, ahead


def most_ahead(root: Path, files: dict[str, str], ran: int) -> int:
    """Build the project (its generator logs, at each of its 300 yields, how many consumer
    units had finished): how many items it was at most ahead of them."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text).lstrip("\n"))
    (root / "done").mkdir()
    result = watchrun(root, "build", "--json")
    assert result.code == 0, result.stderr
    finished = [json.loads(line) for line in result.stdout.splitlines()][-1]
    assert finished["ok"] and finished["ran"] == ran
    rows = [tuple(map(int, line.split()))
            for line in (root / "ahead.log").read_text().splitlines()]
    assert len(rows) == 300
    return max(made - done for made, done in rows)


NESTED = {
    "watchrun.toml": "jobs = 2\n",
    "tasks/outer.py": """
        # /// task
        # kind = "generator"
        # ///
        def run():
            yield from range(2)
    """,
    "tasks/items.py": """
        # /// task
        # kind = "generator"
        # after = ["outer"]
        # ///
        import os

        def run(outer):
            with open("ahead.log", "a") as log:
                for i in range(150):
                    log.write(f"{outer * 150 + i} {len(os.listdir('done'))}\\n")
                    log.flush()
                    yield outer * 150 + i
    """,
    "tasks/a.py": INSTANT["tasks/a.py"],
    "tasks/total.py": INSTANT["tasks/total.py"],
}


def test_an_inner_generator_that_yields_at_once_stays_a_window_ahead(tmp_path: Path) -> None:
    """The same bound in a nested scope: the units waiting in the inner generator's scope
    hold the inner generator. Holding the outer one, done after its two items, let the
    inner one run 150 items ahead of its consumer (at most 300 in the log)."""
    ahead = most_ahead(tmp_path, NESTED, ran=303)
    assert ahead <= 8 + 8 + 2 + 1, ahead
