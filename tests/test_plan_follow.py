"""Followers (engine/followers.py, executors/follow.py): in `watchrun build` the next unit of a
chain is queued behind the running one on its worker and starts there the moment its leader
ends, if the leader's new outputs make it dirty. Here the driver runs on a real project and a
real store against an executor that does each unit's file work itself (no processes), decides
its followers with the worker's own function, and counts them: what the driver queues, what it
adopts, and that a follower never runs where the driver would have found it clean."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Callable
from pathlib import Path

from tests.fake_executors import FakeExecutorBase, driver_for
from watchrun.engine.events import Event, UnitFinished, UnitSkipped, UnitStarted
from watchrun.engine.scheduler import BuildOptions, BuildSummary
from watchrun.executors.base import EventKind, ExecEvent, Job, UnitKey
from watchrun.executors.follow import runs
from watchrun.executors.job_wire import job_label
from watchrun.executors.worker_outputs import hash_written_outputs
from watchrun.session import default_targets, open_session

STEPS = 5


def chain_task(i: int) -> str:
    source = "src.txt" if i == 0 else f"out/s{i - 1}.txt"
    return (f'# /// task\n# inputs = ["{source}"]\n# outputs = ["out/s{i}.txt"]\n# ///\n'
            f"def run():\n    pass\n")


CHAIN = {f"tasks/s{i}.py": chain_task(i) for i in range(STEPS)}


class FileExecutor(FakeExecutorBase):
    """Runs a unit by writing `content(task)` to each of its declared outputs, on the next
    turn of the loop, and reports DONE with the worker's claims (their hashes). A job queued
    with `follow` runs right after its leader if `runs` says so, as a worker would; `fail`
    names tasks whose units fail instead."""

    def __init__(self, content: Callable[[str], str], fail: frozenset[str] = frozenset()
                 ) -> None:
        super().__init__()
        self.content = content
        self.fail = fail
        self.queued: dict[UnitKey, Job] = {}  # leader -> follower job
        self.ran: list[str] = []
        self.followed: list[str] = []  # followers that ran behind their leader

    def free_slots(self) -> int:
        return max(1 - len(self.busy), 0)

    def submit(self, job: Job) -> None:
        assert job.follows is None
        assert not self.busy, "submitted beyond free_slots()"
        self.busy.add(job.key)
        asyncio.get_running_loop().call_soon(self._run, job)

    def follow(self, job: Job, leader: UnitKey) -> bool:
        if leader not in self.busy or leader in self.queued:
            return False
        self.queued[leader] = job
        return True

    def _run(self, job: Job) -> None:
        assert self.sink is not None
        self.ran.append(job.key.task)
        if job.key.task in self.fail:
            self.busy.discard(job.key)
            self.queued.pop(job.key, None)
            self.sink(ExecEvent(job.key, EventKind.FAILED, error="boom"))
            return
        for path in job.outputs or ():
            Path(path).write_text(self.content(job.key.task))
        claims = hash_written_outputs(job.outputs or ())
        follower = self.queued.pop(job.key, None)
        started = None
        if follower is not None and follower.follows is not None \
                and runs(follower.follows, job_label(job.key), True, claims):
            started = follower.key
            self.busy.add(follower.key)
            self.followed.append(follower.key.task)
            asyncio.get_running_loop().call_soon(self._run, follower)
        self.busy.discard(job.key)
        self.sink(ExecEvent(job.key, EventKind.DONE, pickle.dumps(None), output_claims=claims,
                            follower=started))


def build(root: Path, executor: FileExecutor, follow: bool = True
          ) -> tuple[BuildSummary, list[Event]]:
    events: list[Event] = []

    async def run() -> BuildSummary:
        with open_session(root, "build", write=True) as session:
            scheduler = driver_for(session, executor, events, BuildOptions(follow=follow))
            return await asyncio.wait_for(
                scheduler.build(default_targets(session.project)), 10)

    return asyncio.run(run()), events


def versions(**by_task: str) -> Callable[[str], str]:
    """What each task writes: its name and a version (1 unless given)."""
    return lambda task: f"{task} v{by_task.get(task, '1')}\n"


def test_each_step_of_a_chain_runs_behind_the_one_before(
        project: Callable[[dict[str, str]], Path]) -> None:
    root = project({**CHAIN, "src.txt": "a\n"})
    (root / "out").mkdir()
    executor = FileExecutor(versions())
    summary, events = build(root, executor)
    assert summary.ok and summary.ran == STEPS
    assert executor.ran == [f"s{i}" for i in range(STEPS)]
    assert executor.followed == [f"s{i}" for i in range(1, STEPS)]
    # the events of each follower come in the usual order, with why it ran
    said = [(type(e).__name__, e.task) for e in events
            if isinstance(e, (UnitStarted, UnitFinished))]
    assert said == [(kind, f"s{i}") for i in range(STEPS)
                    for kind in ("UnitStarted", "UnitFinished")]
    reasons = [e.reasons for e in events if isinstance(e, UnitStarted)]
    assert all(reasons), reasons
    # what the followers ran is recorded: the next build finds everything clean
    again = FileExecutor(versions())
    summary, _ = build(root, again)
    assert summary.ran == 0 and summary.skipped == STEPS and again.ran == []


def test_a_leader_writing_what_it_wrote_before_leaves_its_follower_unrun(
        project: Callable[[dict[str, str]], Path]) -> None:
    """Early cut-off: s0 runs again (its input changed) but writes the same bytes, so s1's
    signature is the one it has a result for; the worker does not start it and the driver
    finds it, and the rest of the chain, clean."""
    root = project({**CHAIN, "src.txt": "a\n"})
    (root / "out").mkdir()
    build(root, FileExecutor(versions()))
    (root / "src.txt").write_text("b\n")
    executor = FileExecutor(versions())
    summary, events = build(root, executor)
    assert summary.ok and summary.ran == 1 and executor.ran == ["s0"]
    assert executor.followed == []
    assert sorted(e.task for e in events if isinstance(e, UnitSkipped)) == \
        [f"s{i}" for i in range(1, STEPS)]


def test_a_follower_whose_new_signature_has_an_older_result_is_restored_not_run(
        project: Callable[[dict[str, str]], Path]) -> None:
    """s0 writes v1, then v2, then v1 again: s1's signature in the third build is the one of
    the first, whose result is stored. It must be found clean, as without followers."""
    root = project({**CHAIN, "src.txt": "a\n"})
    (root / "out").mkdir()
    build(root, FileExecutor(versions()))
    (root / "src.txt").write_text("b\n")
    second = FileExecutor(versions(s0="2"))
    assert build(root, second)[0].ran == 2  # s1 writes what it wrote: s2 is cut off
    assert second.followed == ["s1"]
    (root / "src.txt").write_text("c\n")
    third = FileExecutor(versions())
    summary, _ = build(root, third)
    assert summary.ok and third.ran == ["s0"] and third.followed == []
    assert summary.skipped == STEPS - 1


def test_a_failed_leader_runs_no_follower_and_blocks_the_rest(
        project: Callable[[dict[str, str]], Path]) -> None:
    root = project({**CHAIN, "src.txt": "a\n"})
    (root / "out").mkdir()
    executor = FileExecutor(versions(), fail=frozenset({"s2"}))
    summary, _ = build(root, executor)
    assert executor.ran == ["s0", "s1", "s2"]
    assert executor.followed == ["s1", "s2"]
    assert summary.failed == 1 and sorted(summary.blocked) == ["s3", "s4"]
    assert not (root / "out" / "s3.txt").exists()


def test_without_follow_the_same_chain_runs_one_submit_per_unit(
        project: Callable[[dict[str, str]], Path]) -> None:
    """`dev` builds with follow off: every unit goes through the plan's own launch."""
    root = project({**CHAIN, "src.txt": "a\n"})
    (root / "out").mkdir()
    executor = FileExecutor(versions())
    summary, _ = build(root, executor, follow=False)
    assert summary.ran == STEPS and executor.followed == []


def test_a_task_that_takes_its_upstreams_value_is_not_queued_behind_it(
        project: Callable[[dict[str, str]], Path]) -> None:
    """Its signature needs the leader's value, known only once the driver has it."""
    root = project({
        "tasks/a.py": '# /// task\n# outputs = ["out/a.txt"]\n# ///\ndef run():\n    return 1\n',
        "tasks/b.py": '# /// task\n# after = ["a"]\n# inputs = ["out/a.txt"]\n'
                      '# outputs = ["out/b.txt"]\n# ///\ndef run(a):\n    return a\n',
    })
    (root / "out").mkdir()
    executor = FileExecutor(versions())
    summary, _ = build(root, executor)
    assert summary.ran == 2 and executor.followed == []
