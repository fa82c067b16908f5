"""A job queued behind another on its worker (`LocalExecutor.follow`, executors/follow.py), with
real worker processes and real files: the worker goes on with it only when its leader ended
DONE and wrote what makes it dirty, the executor says so with the leader's DONE, and a job that
does not run leaves no trace (no event, no output, no process)."""

from __future__ import annotations

from pathlib import Path

from blake3 import blake3

from tests.test_executor_local import TERMINAL, Harness, drive, make_job, write_task
from watchrun.executors.base import EventKind, Job, UnitKey
from watchrun.executors.follow import Follow
from watchrun.executors.job_wire import job_label
from watchrun.state.signing import static_identity, unit_signature

PREFIX = "the follower's prefix"


def write_chain(root: Path, leader_body: str = "Path('mid.txt').write_text('made')") -> None:
    write_task(root, "leader", f"from pathlib import Path\nimport os\n\ndef run():\n"
                               f"    {leader_body}\n    return os.getpid()\n")
    write_task(root, "follower", "from pathlib import Path\nimport os\n\ndef run():\n"
                                 "    Path('end.txt').write_text(Path('mid.txt').read_text())\n"
                                 "    return os.getpid()\n")


def signature_if(content: bytes) -> str:
    """The follower's signature when the leader wrote `content` to mid.txt."""
    inputs = {"mid.txt": blake3(content).hexdigest()}
    return unit_signature(static_identity(PREFIX, inputs), {})


def leader_job(root: Path) -> Job:
    return make_job(root, "leader", outputs=(str(root / "mid.txt"),))


def follower_job(root: Path, known: frozenset[str] = frozenset()) -> Job:
    job = make_job(root, "follower", outputs=(str(root / "end.txt"),))
    job.follows = Follow(job_label(UnitKey("leader")), PREFIX, {},
                         {"mid.txt": str(root / "mid.txt")}, {}, known)
    return job


def test_a_follower_runs_on_its_leaders_worker_as_the_leader_ends(tmp_path: Path) -> None:
    write_chain(tmp_path)
    leader, follower = leader_job(tmp_path), follower_job(tmp_path)

    async def scenario(h: Harness) -> None:
        h.submit(leader)
        assert h.executor.follow(follower, leader.key)
        h.submitted.append(follower.key)
        done = await h.event(leader.key)
        assert done.kind is EventKind.DONE and done.follower == follower.key
        assert await h.result(follower.key) == await h.result(leader.key)  # the same worker
        assert (tmp_path / "end.txt").read_text() == "made"

    drive(tmp_path, scenario, jobs=1)


def test_a_follower_with_a_result_for_its_new_signature_never_starts(tmp_path: Path) -> None:
    write_chain(tmp_path)
    leader = leader_job(tmp_path)
    follower = follower_job(tmp_path, known=frozenset({signature_if(b"made")}))

    async def scenario(h: Harness) -> None:
        h.submit(leader)
        assert h.executor.follow(follower, leader.key)
        done = await h.event(leader.key)
        assert done.kind is EventKind.DONE and done.follower is None
        # the worker is free for the next job, and the follower left nothing behind
        again = make_job(tmp_path, "leader", outputs=(str(tmp_path / "mid.txt"),))
        again.key = UnitKey("leader", (1,))
        h.submit(again)
        await h.result(again.key)
        assert not [e for e in h.events if e.key == follower.key]
        assert not (tmp_path / "end.txt").exists()
        assert h.executor.free_slots() == 1

    drive(tmp_path, scenario, jobs=1)


def test_a_leader_that_fails_or_is_cancelled_takes_its_follower_with_it(
        tmp_path: Path) -> None:
    write_chain(tmp_path, leader_body="raise ValueError('no')")
    write_task(tmp_path, "slow", "import time\n\ndef run():\n    time.sleep(60)\n")
    failing, slow = leader_job(tmp_path), make_job(tmp_path, "slow")
    first, second = follower_job(tmp_path), follower_job(tmp_path)
    second.follows.leader = job_label(slow.key)  # type: ignore[union-attr]

    async def scenario(h: Harness) -> None:
        h.submit(failing)
        assert h.executor.follow(first, failing.key)
        assert (await h.event(failing.key)).kind is EventKind.FAILED
        h.submit(slow)
        await h.event(slow.key, {EventKind.STARTED})
        assert h.executor.follow(second, slow.key)
        h.executor.cancel(slow.key)
        assert (await h.event(slow.key)).kind is EventKind.CANCELLED
        assert not [e for e in h.events if e.key == first.key and e.kind in TERMINAL]
        assert not (tmp_path / "end.txt").exists()

    drive(tmp_path, scenario, jobs=1)


def test_follow_is_refused_behind_a_unit_that_is_not_running(tmp_path: Path) -> None:
    write_chain(tmp_path)
    leader = leader_job(tmp_path)

    async def scenario(h: Harness) -> None:
        assert not h.executor.follow(follower_job(tmp_path), leader.key)  # not submitted
        h.submit(leader)
        itself = follower_job(tmp_path)
        itself.key = leader.key
        assert not h.executor.follow(itself, leader.key)  # that unit runs already
        assert h.executor.follow(follower_job(tmp_path), leader.key)
        other = follower_job(tmp_path)
        other.key = UnitKey("follower", (1,))
        assert not h.executor.follow(other, leader.key)  # its place is taken
        h.submitted.append(UnitKey("follower"))
        await h.event(UnitKey("follower"))
        assert not h.executor.follow(other, leader.key)  # ended

    drive(tmp_path, scenario, jobs=1)
