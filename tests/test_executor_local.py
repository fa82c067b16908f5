"""LocalExecutor with real worker processes, real signals and real files.

Each test writes small task modules to a temporary project, drives the executor with
asyncio.run, and looks at the events, the log files and (with psutil) the processes. After every
test the executor is closed and no process it started may be left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pickle
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from watchrun.executors.base import EventKind, ExecEvent, Job, Mode, UnitKey
from watchrun.executors.local import LocalExecutor, WorkerStartError

REPO = Path(__file__).resolve().parents[1]
TERMINAL = {EventKind.DONE, EventKind.FAILED, EventKind.CANCELLED, EventKind.DIED}
GRACE = 10.0  # long: a unit expected to stop at SIGINT must not see SIGTERM on a busy machine
SHORT_GRACE = 0.2  # for the tests of the escalation itself
WAIT = 20.0  # seconds any single condition may take before the test fails


def write_task(root: Path, name: str, source: str) -> Path:
    path = root / "tasks" / f"{name.replace('.', '/')}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source).lstrip("\n"))
    return path


def make_job(
    root: Path,
    name: str,
    mode: Mode = Mode.CALL,
    *,
    chain: list[str] | None = None,
    kwargs: dict[str, Any] | None = None,
    iteration: tuple[int, ...] = (),
    **extra: Any,
) -> Job:
    modules = [(root / "tasks" / f"{n}.py", "tasks") for n in (chain or [name])]
    key = UnitKey(name, iteration)
    return Job(
        key=key,
        mode=mode,
        root=root,
        chain=modules,
        kwargs={k: pickle.dumps(v) for k, v in (kwargs or {}).items()},
        log_path=root / "logs" / f"{key.format()}.log",
        **extra,
    )


def gone(pid: int) -> bool:
    """The process no longer runs (a zombie waiting for a reaper does not run)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


@dataclass
class Harness:
    root: Path
    executor: LocalExecutor = field(init=False)
    events: list[ExecEvent] = field(default_factory=list)
    groups: dict[int, float | None] = field(default_factory=dict)
    submitted: list[UnitKey] = field(default_factory=list)
    _news: asyncio.Event = field(default_factory=asyncio.Event)

    def sink(self, event: ExecEvent) -> None:
        self.events.append(event)
        self._news.set()

    def on_pgroup(self, pgid: int, start_time: float | None) -> None:
        self.groups[pgid] = start_time

    def submit(self, job: Job) -> None:
        self.submitted.append(job.key)
        self.executor.submit(job)

    async def until(self, condition: Callable[[], bool], what: str = "condition") -> None:
        deadline = time.monotonic() + WAIT
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            self._news.clear()
            # events wake us at once; other conditions (files, processes) are polled
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._news.wait(), 0.01)

    async def event(self, key: UnitKey, kinds: set[EventKind] = TERMINAL) -> ExecEvent:
        found: list[ExecEvent] = []

        def seen() -> bool:
            found[:] = [e for e in self.events if e.key == key and e.kind in kinds]
            return bool(found)

        await self.until(seen, f"{key.format()} {sorted(k.value for k in kinds)}")
        return found[0]

    async def result(self, key: UnitKey) -> Any:
        event = await self.event(key)
        assert event.kind is EventKind.DONE, event
        return None if event.data is None else pickle.loads(event.data)

    def of(self, key: UnitKey, kind: EventKind) -> list[ExecEvent]:
        return [e for e in self.events if e.key == key and e.kind is kind]


Scenario = Callable[[Harness], Awaitable[None]]


def drive(
    root: Path,
    scenario: Scenario,
    jobs: int = 2,
    grace: float = GRACE,
    start: bool = True,
    pipeline_below: float = 0.0,
) -> Harness:
    """Run the scenario on a started executor, close it, and check that it left nothing.
    Pipelining is off unless asked for: which unit would be queued depends on timing."""

    async def main() -> Harness:
        harness = Harness(root)
        harness.executor = LocalExecutor(
            harness.sink, jobs, grace, on_pgroup=harness.on_pgroup, pipeline_below=pipeline_below
        )
        try:
            if start:
                await harness.executor.start()
            await scenario(harness)
        finally:
            await harness.executor.close()
        return harness

    harness = asyncio.run(main())
    assert harness.groups, "no worker group was reported"
    assert all(t is None for t in harness.groups.values()), "a group was not reported ended"
    for pgid in harness.groups:
        assert gone(pgid), f"worker {pgid} outlived close()"
    for key in harness.submitted:
        ends = [e.kind for e in harness.events if e.key == key and e.kind in TERMINAL]
        assert len(ends) == 1, f"{key.format()} ended {ends}"
    return harness


def read_pid(path: Path) -> int:
    return int(path.read_text())


# -- CALL -------------------------------------------------------------------------------------


def test_call_returns_output_of_run_with_its_kwargs(tmp_path: Path) -> None:
    write_task(tmp_path, "double", "def run(x, y):\n    return (x * 2, y)\n")

    async def scenario(h: Harness) -> None:
        job = make_job(tmp_path, "double", kwargs={"x": 21, "y": "why"})
        h.submit(job)
        assert await h.result(job.key) == (42, "why")
        started = h.of(job.key, EventKind.STARTED)
        assert len(started) == 1 and started[0].pid is not None

    drive(tmp_path, scenario)


def test_ctx_is_passed_only_to_a_run_that_asks_for_it(tmp_path: Path) -> None:
    write_task(
        tmp_path,
        "withctx",
        """
        def run(ctx, n):
            ctx.log.info("hello from %s", ctx.name)
            return (ctx.name, ctx.root, ctx.iter, n)
        """,
    )
    write_task(tmp_path, "noctx", "def run(**kwargs):\n    return sorted(kwargs)\n")

    async def scenario(h: Harness) -> None:
        asks = make_job(tmp_path, "withctx", kwargs={"n": 1}, iteration=(4,))
        h.submit(asks)
        assert await h.result(asks.key) == ("withctx", tmp_path, (4,), 1)
        log = (tmp_path / "logs" / "withctx[4].log").read_text()
        assert "INFO hello from withctx" in log
        plain = make_job(tmp_path, "noctx", kwargs={"a": 1})
        h.submit(plain)
        assert await h.result(plain.key) == ["a"]

    drive(tmp_path, scenario)


def test_stdout_and_stderr_of_the_task_and_its_subprocesses_go_to_its_log(tmp_path: Path) -> None:
    write_task(
        tmp_path,
        "noisy",
        """
        import subprocess, sys
        def run():
            print("printed")
            print("to stderr", file=sys.stderr)
            subprocess.run(["echo", "hi from echo"], check=True)
            subprocess.run(["sh", "-c", "echo sh error >&2"], check=True)
            print("after")
        """,
    )

    async def scenario(h: Harness) -> None:
        job = make_job(tmp_path, "noisy")
        h.submit(job)
        await h.result(job.key)

    drive(tmp_path, scenario)
    log = (tmp_path / "logs" / "noisy.log").read_text()
    # in the order it happened: prints are line-buffered, not held back behind the subprocesses
    assert log.splitlines() == ["printed", "to stderr", "hi from echo", "sh error", "after"]


def test_each_unit_has_its_own_log_appended_to_or_started_afresh(tmp_path: Path) -> None:
    write_task(tmp_path, "say", "def run(word):\n    print(word)\n")
    logs = tmp_path / "logs"

    async def scenario(h: Harness) -> None:
        for word, i, fresh in (("one", 0, False), ("two", 1, False), ("three", 0, False)):
            job = make_job(tmp_path, "say", kwargs={"word": word}, iteration=(i,), fresh_log=fresh)
            h.submit(job)
            await h.event(job.key)
            h.events.clear()
            h.submitted.clear()
        assert (logs / "say[0].log").read_text() == "one\nthree\n"
        assert (logs / "say[1].log").read_text() == "two\n"
        job = make_job(tmp_path, "say", kwargs={"word": "four"}, iteration=(0,), fresh_log=True)
        h.submit(job)
        await h.event(job.key)
        assert (logs / "say[0].log").read_text() == "four\n"

    drive(tmp_path, scenario, jobs=1)


# -- inheritance ------------------------------------------------------------------------------


def test_parent_run_calls_the_child_override_of_a_helper(tmp_path: Path) -> None:
    write_task(
        tmp_path,
        "base",
        """
        LABEL = "base"
        def helper():
            return "base helper"
        def run():
            return (helper(), LABEL)
        """,
    )
    write_task(tmp_path, "child", "def helper():\n    return 'child helper'\n")
    write_task(tmp_path, "bare", "# /// task\n# extends = 'base'\n# ///\n")

    async def scenario(h: Harness) -> None:
        child = make_job(tmp_path, "child", chain=["base", "child"])
        bare = make_job(tmp_path, "bare", chain=["base", "bare"])
        h.submit(child)
        h.submit(bare)
        assert await h.result(child.key) == ("child helper", "base")
        assert await h.result(bare.key) == ("base helper", "base")

    drive(tmp_path, scenario)


# -- failures ---------------------------------------------------------------------------------


def test_a_raising_task_fails_with_its_full_traceback(tmp_path: Path) -> None:
    path = write_task(
        tmp_path,
        "broken",
        """
        def check(value):
            if value < 0:
                raise ValueError(f"negative: {value}")
        def run(value):
            check(value)
        """,
    )

    async def scenario(h: Harness) -> None:
        job = make_job(tmp_path, "broken", kwargs={"value": -1})
        h.submit(job)
        event = await h.event(job.key)
        assert event.kind is EventKind.FAILED
        assert event.error is not None
        error = event.error
        assert error.startswith("Traceback (most recent call last):")
        assert f'File "{path}", line 5, in run' in error
        assert f'File "{path}", line 3, in check' in error
        assert 'raise ValueError(f"negative: {value}")' in error
        assert error.rstrip().endswith("ValueError: negative: -1")
        assert "watchrun/executors/" not in error  # the worker's own frames are left out

    drive(tmp_path, scenario)


def test_an_unpicklable_output_fails_and_says_so(tmp_path: Path) -> None:
    write_task(tmp_path, "lam", "def run():\n    return lambda: 1\n")

    async def scenario(h: Harness) -> None:
        job = make_job(tmp_path, "lam")
        h.submit(job)
        event = await h.event(job.key)
        assert event.kind is EventKind.FAILED
        assert event.error is not None
        assert event.error.startswith("output of task 'lam' is not picklable: ")
        assert "lambda" in event.error

    drive(tmp_path, scenario)


@pytest.mark.parametrize(
    ("body", "cause"),
    [
        ("os._exit(3)", "exit code 3"),
        ("os.kill(os.getpid(), signal.SIGKILL)", "killed by SIGKILL"),
    ],
)
def test_a_dead_worker_fails_its_unit_with_the_cause_and_is_replaced(
    tmp_path: Path, body: str, cause: str
) -> None:
    write_task(tmp_path, "die", f"import os, signal\ndef run():\n    {body}\n")
    write_task(tmp_path, "ok", "def run():\n    return 'still working'\n")

    async def scenario(h: Harness) -> None:
        die = make_job(tmp_path, "die")
        h.submit(die)
        event = await h.event(die.key)
        assert (event.kind, event.error) == (EventKind.DIED, cause)
        assert event.pid is not None
        await h.until(lambda: gone(event.pid or 0), "the dead worker to be reaped")
        assert h.executor.free_slots() == 1
        ok = make_job(tmp_path, "ok")
        h.submit(ok)
        assert await h.result(ok.key) == "still working"

    drive(tmp_path, scenario, jobs=1)


def test_a_death_is_seen_without_pidfds_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # where os.pidfd_open is missing or refused, a thread waits for the worker's exit
    def no_pidfd(pid: int) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    write_task(tmp_path, "die", "import os\ndef run():\n    os._exit(5)\n")
    write_task(tmp_path, "ok", "def run():\n    return 'replaced'\n")

    async def scenario(h: Harness) -> None:
        die = make_job(tmp_path, "die")
        h.submit(die)
        event = await h.event(die.key)
        assert (event.kind, event.error) == (EventKind.DIED, "exit code 5")
        ok = make_job(tmp_path, "ok")
        h.submit(ok)
        assert await h.result(ok.key) == "replaced"

    drive(tmp_path, scenario, jobs=1)


def test_a_death_is_seen_even_when_a_forked_child_holds_the_channel(tmp_path: Path) -> None:
    # A forked child inherits every descriptor, the worker's end of the channel included: the
    # channel does not close when the worker dies, its exit must be noticed all the same.
    write_task(
        tmp_path,
        "forks",
        """
        import os, time
        def run():
            pid = os.fork()
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            with open("child.pid", "w") as f:
                f.write(str(pid))
            os._exit(3)
        """,
    )

    async def scenario(h: Harness) -> None:
        job = make_job(tmp_path, "forks")
        h.submit(job)
        event = await h.event(job.key)
        assert (event.kind, event.error) == (EventKind.DIED, "exit code 3")
        assert event.duration < 2.0  # not after the wait for the channel to close
        await h.until(lambda: gone(read_pid(tmp_path / "child.pid")), "the forked child to end")

    drive(tmp_path, scenario, jobs=1)


def test_cancel_while_the_worker_is_still_starting(tmp_path: Path) -> None:
    write_task(tmp_path, "ok", "def run():\n    return 1\n")

    async def scenario(h: Harness) -> None:
        job = make_job(tmp_path, "ok")
        h.submit(job)  # no start(): the worker is spawned now
        h.executor.cancel(job.key)
        event = await h.event(job.key)
        assert (event.kind, event.signal) == (EventKind.CANCELLED, "SIGKILL")
        again = make_job(tmp_path, "ok", iteration=(1,))
        h.submit(again)
        assert await h.result(again.key) == 1

    drive(tmp_path, scenario, start=False)


def test_a_worker_that_cannot_start_is_reported_with_its_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'cannot load the interpreter' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(broken))
    write_task(tmp_path, "ok", "def run():\n    return 1\n")
    events: list[ExecEvent] = []

    async def main() -> None:
        executor = LocalExecutor(events.append, 1, GRACE)
        try:
            with pytest.raises(WorkerStartError, match="cannot load the interpreter"):
                await executor.start()
            job = make_job(tmp_path, "ok")
            executor.submit(job)
            while not events:
                await asyncio.sleep(0.01)
        finally:
            await executor.close()

    asyncio.run(main())
    [event] = events
    assert event.kind is EventKind.DIED
    assert event.error == (
        "the worker process failed to start (exit code 1): cannot load the interpreter"
    )


def test_a_spawn_that_fails_fails_the_unit_and_leaves_no_descriptor_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_spawn(*args: object, **kwargs: object) -> None:
        raise OSError(24, "Too many open files")

    write_task(tmp_path, "ok", "def run():\n    return 1\n")
    events: list[ExecEvent] = []
    open_before = len(os.listdir("/proc/self/fd"))

    async def main() -> None:
        executor = LocalExecutor(events.append, 1, GRACE)
        monkeypatch.setattr(subprocess, "Popen", no_spawn)
        try:
            executor.submit(make_job(tmp_path, "ok"))
            while not events:
                await asyncio.sleep(0.01)
        finally:
            monkeypatch.undo()
            await executor.close()

    asyncio.run(main())
    [event] = events
    assert event.kind is EventKind.DIED
    assert event.error is not None and "OSError: [Errno 24] Too many open files" in event.error
    assert len(os.listdir("/proc/self/fd")) == open_before


def test_sys_exit_in_a_task_fails_the_unit_not_the_worker(tmp_path: Path) -> None:
    write_task(tmp_path, "quits", "import sys\ndef run():\n    sys.exit(4)\n")

    async def scenario(h: Harness) -> None:
        job = make_job(tmp_path, "quits")
        h.submit(job)
        event = await h.event(job.key)
        assert event.kind is EventKind.FAILED
        assert event.error is not None and "SystemExit: 4" in event.error

    drive(tmp_path, scenario, jobs=1)


# -- cancel -----------------------------------------------------------------------------------

SLEEPER = """
import os, signal, subprocess, time
{setup}
def run():
    child = subprocess.Popen(["sleep", "60"])
    with open("child.pid", "w") as f:
        f.write(str(child.pid))
    os.rename("child.pid", "child.ready")
    while True:
        time.sleep(0.01)
"""


@pytest.mark.parametrize(
    ("setup", "last_signal", "grace"),
    [
        ("", "SIGINT", GRACE),
        ("signal.signal(signal.SIGINT, signal.SIG_IGN)", "SIGTERM", SHORT_GRACE),
        (
            "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)",
            "SIGKILL",
            SHORT_GRACE,
        ),
    ],
    ids=["interrupted", "ignores-sigint", "ignores-both"],
)
def test_cancel_escalates_until_the_unit_ends_and_leaves_no_process(
    tmp_path: Path, setup: str, last_signal: str, grace: float
) -> None:
    write_task(tmp_path, "sleeper", SLEEPER.format(setup=setup))
    write_task(tmp_path, "ok", "def run():\n    return 1\n")
    ready = tmp_path / "child.ready"

    async def scenario(h: Harness) -> None:
        job = make_job(tmp_path, "sleeper")
        h.submit(job)
        await h.until(ready.exists, "the task to start its subprocess")
        # STARTED may come a little after the unit's first effects (see worker.START_NOTICE)
        worker = (await h.event(job.key, {EventKind.STARTED})).pid
        assert worker is not None
        h.executor.cancel(job.key)
        h.executor.cancel(job.key)  # a second cancel changes nothing
        event = await h.event(job.key)
        assert (event.kind, event.signal) == (EventKind.CANCELLED, last_signal)
        assert job.key not in h.executor.running()
        await h.until(lambda: gone(read_pid(ready)), "the task's subprocess to end")
        await h.until(lambda: gone(worker), "the cancelled worker to end")
        # the worker was replaced: the slot works
        ok = make_job(tmp_path, "ok")
        h.submit(ok)
        assert await h.result(ok.key) == 1

    drive(tmp_path, scenario, jobs=1, grace=grace)


def test_a_task_may_handle_the_interrupt_and_clean_up(tmp_path: Path) -> None:
    write_task(
        tmp_path,
        "tidy",
        """
        import pathlib, time
        def run():
            pathlib.Path("running").touch()
            try:
                while True:
                    time.sleep(0.01)
            except KeyboardInterrupt:
                pathlib.Path("cleaned").touch()
                raise
        """,
    )

    async def scenario(h: Harness) -> None:
        job = make_job(tmp_path, "tidy")
        h.submit(job)
        await h.until((tmp_path / "running").exists, "the task to run")
        h.executor.cancel(job.key)
        event = await h.event(job.key)
        assert (event.kind, event.signal) == (EventKind.CANCELLED, "SIGINT")
        assert (tmp_path / "cleaned").exists()

    drive(tmp_path, scenario)


def test_close_cancels_running_units_and_ends_their_subprocesses(tmp_path: Path) -> None:
    write_task(tmp_path, "sleeper", SLEEPER.format(setup=""))
    ready = tmp_path / "child.ready"

    async def scenario(h: Harness) -> None:
        h.submit(make_job(tmp_path, "sleeper"))
        await h.until(ready.exists, "the task to start its subprocess")

    harness = drive(tmp_path, scenario)
    [event] = [e for e in harness.events if e.kind in TERMINAL]
    assert (event.kind, event.signal) == (EventKind.CANCELLED, "SIGINT")
    assert gone(read_pid(ready))


# -- pause ------------------------------------------------------------------------------------


def test_pause_stops_the_unit_and_resume_lets_it_finish(tmp_path: Path) -> None:
    write_task(
        tmp_path,
        "waits",
        """
        import pathlib, time
        def run():
            pathlib.Path("running").touch()
            while not pathlib.Path("go").exists():
                time.sleep(0.01)
            return "finished"
        """,
    )

    async def scenario(h: Harness) -> None:
        job = make_job(tmp_path, "waits")
        h.submit(job)
        await h.until((tmp_path / "running").exists, "the task to run")
        started = await h.event(job.key, {EventKind.STARTED})  # may come a little later
        assert started.pid is not None
        worker = psutil.Process(started.pid)
        assert h.executor.pause(job.key)
        await h.until(lambda: worker.status() == psutil.STATUS_STOPPED, "the worker to stop")
        (tmp_path / "go").touch()
        assert h.executor.resume(job.key)
        await h.until(lambda: worker.status() != psutil.STATUS_STOPPED, "the worker to go on")
        assert await h.result(job.key) == "finished"
        assert not h.executor.pause(job.key)  # nothing runs under that key any more

    drive(tmp_path, scenario)


def test_cancel_of_a_paused_unit_wakes_it_to_act_on_the_signal(tmp_path: Path) -> None:
    write_task(tmp_path, "sleeper", SLEEPER.format(setup=""))
    ready = tmp_path / "child.ready"

    async def scenario(h: Harness) -> None:
        job = make_job(tmp_path, "sleeper")
        h.submit(job)
        await h.until(ready.exists, "the task to start its subprocess")
        assert h.executor.pause(job.key)
        h.executor.cancel(job.key)
        event = await h.event(job.key)
        assert (event.kind, event.signal) == (EventKind.CANCELLED, "SIGINT")

    drive(tmp_path, scenario)


# -- persistent modes -------------------------------------------------------------------------


def test_generator_yields_arrive_while_it_still_runs(tmp_path: Path) -> None:
    write_task(
        tmp_path,
        "gen",
        """
        import pathlib, time
        def run(first):
            yield first
            while not pathlib.Path("more").exists():
                time.sleep(0.01)
            yield first + 1
        """,
    )

    async def scenario(h: Harness) -> None:
        job = make_job(tmp_path, "gen", Mode.GENERATE, kwargs={"first": 10})
        h.submit(job)
        first = await h.event(job.key, {EventKind.YIELDED})
        assert first.data is not None and pickle.loads(first.data) == 10
        assert not h.of(job.key, EventKind.DONE)
        (tmp_path / "more").touch()
        assert await h.result(job.key) is None
        values = [pickle.loads(e.data or b"") for e in h.of(job.key, EventKind.YIELDED)]
        assert values == [10, 11]

    drive(tmp_path, scenario)


def test_large_and_small_values_arrive_whole_and_in_order(tmp_path: Path) -> None:
    # frames larger than the executor's read buffer, between small ones, from two processes
    write_task(
        tmp_path,
        "mixed",
        """
        def run(sizes):
            for i, size in enumerate(sizes):
                yield bytes([i % 251]) * size
        """,
    )
    write_task(tmp_path, "big", "def run(size):\n    return b'z' * size\n")
    sizes = [3, 1_500_000, 7, 200_000, 1, 70_000, 65_532, 2_500_000, 2]

    async def scenario(h: Harness) -> None:
        gen = make_job(tmp_path, "mixed", Mode.GENERATE, kwargs={"sizes": sizes})
        big = make_job(tmp_path, "big", kwargs={"size": 1_000_000})
        h.submit(gen)
        h.submit(big)
        assert await h.result(big.key) == b"z" * 1_000_000
        assert await h.result(gen.key) is None
        values = [pickle.loads(e.data or b"") for e in h.of(gen.key, EventKind.YIELDED)]
        assert values == [bytes([i % 251]) * size for i, size in enumerate(sizes)]

    drive(tmp_path, scenario)


def test_generator_gets_start_when_it_asks_for_it(tmp_path: Path) -> None:
    write_task(tmp_path, "resumable", "def run(start):\n    yield from range(start, 5)\n")
    write_task(tmp_path, "plain", "def run():\n    yield from range(3)\n")

    async def scenario(h: Harness) -> None:
        resumable = make_job(tmp_path, "resumable", Mode.GENERATE, start=3)
        plain = make_job(tmp_path, "plain", Mode.GENERATE, start=2)
        h.submit(resumable)
        h.submit(plain)
        await h.result(resumable.key)
        await h.result(plain.key)
        got = {
            key: [pickle.loads(e.data or b"") for e in h.of(key, EventKind.YIELDED)]
            for key in (resumable.key, plain.key)
        }
        assert got == {resumable.key: [3, 4], plain.key: [0, 1, 2]}

    drive(tmp_path, scenario)


def test_unpicklable_yield_fails_naming_the_iteration(tmp_path: Path) -> None:
    write_task(tmp_path, "badgen", "def run():\n    yield 1\n    yield lambda: 2\n")

    async def scenario(h: Harness) -> None:
        job = make_job(tmp_path, "badgen", Mode.GENERATE)
        h.submit(job)
        event = await h.event(job.key)
        assert event.kind is EventKind.FAILED
        assert event.error is not None
        assert event.error.startswith(
            "value yielded by task 'badgen' at iteration 1 is not picklable: "
        )
        assert len(h.of(job.key, EventKind.YIELDED)) == 1

    drive(tmp_path, scenario)


def test_collector_keeps_module_state_across_pushes_and_gathers(tmp_path: Path) -> None:
    write_task(
        tmp_path,
        "collect",
        """
        seen = []
        def run(frame, scale):
            seen.append(frame * scale)
        def gather(label):
            return (label, seen)
        """,
    )

    async def scenario(h: Harness) -> None:
        job = make_job(
            tmp_path,
            "collect",
            Mode.COLLECT,
            kwargs={"scale": 10},
            gather_kwargs={"label": pickle.dumps("total")},
        )
        h.submit(job)
        assert h.executor.free_slots() == 2  # a persistent unit takes no CALL slot
        for value in (1, 2, 3):
            h.executor.push(job.key, {"frame": pickle.dumps(value)})
        await h.until(lambda: len(h.of(job.key, EventKind.PUSHED)) == 3, "three pushes")
        assert not h.of(job.key, EventKind.DONE)
        h.executor.end_input(job.key)
        assert await h.result(job.key) == ("total", [10, 20, 30])

    drive(tmp_path, scenario)


def test_inner_generator_yields_per_push_and_finish_yields_the_rest(tmp_path: Path) -> None:
    write_task(
        tmp_path,
        "batch",
        """
        batch = []
        def run(value):
            batch.append(value)
            if len(batch) == 2:
                yield list(batch)
                batch.clear()
        def finish():
            if batch:
                yield list(batch)
        """,
    )

    async def scenario(h: Harness) -> None:
        job = make_job(tmp_path, "batch", Mode.INNER_GENERATE)
        h.submit(job)
        for value in range(1, 6):
            h.executor.push(job.key, {"value": pickle.dumps(value)})
        h.executor.end_input(job.key)
        assert await h.result(job.key) is None
        trace = [
            (e.kind.value, pickle.loads(e.data) if e.data else None)
            for e in h.events
            if e.key == job.key and e.kind is not EventKind.STARTED
        ]
        assert trace == [
            ("pushed", None),
            ("yielded", [1, 2]),
            ("pushed", None),
            ("pushed", None),
            ("yielded", [3, 4]),
            ("pushed", None),
            ("pushed", None),
            ("yielded", [5]),
            ("done", None),
        ]

    drive(tmp_path, scenario)


def test_persistent_unit_does_not_block_calls_with_one_job(tmp_path: Path) -> None:
    write_task(tmp_path, "collect", "def run(v):\n    pass\ndef gather():\n    return 'g'\n")
    write_task(tmp_path, "ok", "def run():\n    return 'call'\n")

    async def scenario(h: Harness) -> None:
        collector = make_job(tmp_path, "collect", Mode.COLLECT)
        h.submit(collector)
        assert h.executor.free_slots() == 1
        call = make_job(tmp_path, "ok")
        h.submit(call)
        assert await h.result(call.key) == "call"
        assert set(h.executor.running()) == {collector.key}
        h.executor.end_input(collector.key)
        assert await h.result(collector.key) == "g"

    drive(tmp_path, scenario, jobs=1)


def test_cancel_of_a_collector_waiting_for_input(tmp_path: Path) -> None:
    write_task(tmp_path, "collect", "def run(v):\n    pass\ndef gather():\n    return 1\n")

    async def scenario(h: Harness) -> None:
        job = make_job(tmp_path, "collect", Mode.COLLECT)
        h.submit(job)
        await h.event(job.key, {EventKind.STARTED})
        h.executor.cancel(job.key)
        event = await h.event(job.key)
        # it was waiting for a push, not running task code: SIGINT is enough
        assert (event.kind, event.signal) == (EventKind.CANCELLED, "SIGINT")

    drive(tmp_path, scenario)


# -- the pool ---------------------------------------------------------------------------------


def test_warm_worker_is_reused_and_reimports_an_edited_helper(tmp_path: Path) -> None:
    helper = tmp_path / "lib" / "helpers.py"
    helper.parent.mkdir()
    helper.write_text("def value():\n    return 'old'\n")
    write_task(
        tmp_path, "uses", "from lib import helpers\ndef run():\n    return helpers.value()\n"
    )

    async def scenario(h: Harness) -> None:
        first = make_job(tmp_path, "uses", iteration=(0,))
        h.submit(first)
        assert await h.result(first.key) == "old"
        helper.write_text("def value():\n    return 'new'\n")  # same size, same second
        second = make_job(tmp_path, "uses", iteration=(1,))
        h.submit(second)
        assert await h.result(second.key) == "new"
        pids = {e.pid for e in h.events if e.kind is EventKind.STARTED}
        assert len(pids) == 1

    drive(tmp_path, scenario, jobs=1)


def test_module_state_does_not_leak_from_one_unit_to_the_next(tmp_path: Path) -> None:
    write_task(
        tmp_path,
        "counter",
        """
        calls = 0
        def run():
            global calls
            calls += 1
            return calls
        """,
    )

    async def scenario(h: Harness) -> None:
        for i in range(2):
            job = make_job(tmp_path, "counter", iteration=(i,))
            h.submit(job)
            assert await h.result(job.key) == 1

    drive(tmp_path, scenario, jobs=1)


def test_two_jobs_run_at_the_same_time(tmp_path: Path) -> None:
    # Each waits until the other has started: they finish only if both run at once.
    source = """
    import pathlib, time
    def run(me, other):
        pathlib.Path(me).touch()
        deadline = time.monotonic() + 15
        while not pathlib.Path(other).exists():
            if time.monotonic() > deadline:
                return "alone"
            time.sleep(0.01)
        return "together"
    """
    write_task(tmp_path, "meet", source)

    async def scenario(h: Harness) -> None:
        a = make_job(tmp_path, "meet", kwargs={"me": "a", "other": "b"}, iteration=(0,))
        b = make_job(tmp_path, "meet", kwargs={"me": "b", "other": "a"}, iteration=(1,))
        h.submit(a)
        assert h.executor.free_slots() == 1
        h.submit(b)
        assert h.executor.free_slots() == 0
        with pytest.raises(RuntimeError, match="no free slot"):
            h.executor.submit(make_job(tmp_path, "meet", iteration=(2,)))
        assert await h.result(a.key) == "together"
        assert await h.result(b.key) == "together"
        assert h.executor.free_slots() == 2

    drive(tmp_path, scenario, jobs=2)


def worker_children() -> list[psutil.Process]:
    """The workers among our children. A worker spawned a moment ago may still show no
    command line: Popen returns once the exec closed its error pipe, and Linux sets up the
    new arguments a little after that (about 1 spawn in 100 on 2 cores)."""
    return [p for p in psutil.Process().children() if _is_worker(p.cmdline())]


def _is_worker(cmdline: list[str]) -> bool:
    return not cmdline or any("watchrun.executors.worker" in part for part in cmdline)


def test_a_submitted_unit_runs_while_the_caller_keeps_the_loop_busy(tmp_path: Path) -> None:
    # The caller of submit() often goes on with its own work before the loop's next turn
    # (at the start of a build, for tens of milliseconds): the worker is spawned and sent its
    # job at once, not on that turn.
    write_task(tmp_path, "mark", "import pathlib\ndef run():\n    pathlib.Path('ran').touch()\n")

    async def scenario(h: Harness) -> None:
        job = make_job(tmp_path, "mark")
        h.submit(job)
        deadline = time.monotonic() + WAIT
        while not (tmp_path / "ran").exists():  # blocking: no turn of the loop meanwhile
            assert time.monotonic() < deadline, "the unit did not run before the loop's turn"
            time.sleep(0.01)
        assert (await h.event(job.key)).kind is EventKind.DONE

    drive(tmp_path, scenario, jobs=1, start=False)


def test_the_spare_worker_starts_once_the_first_one_is_ready(tmp_path: Path) -> None:
    write_task(tmp_path, "ok", "def run():\n    return 1\n")

    async def scenario(h: Harness) -> None:
        job = make_job(tmp_path, "ok")
        h.submit(job)
        assert len(worker_children()) == 1  # the unit's worker only: it starts alone
        assert await h.result(job.key) == 1
        await h.until(lambda: len(worker_children()) == 2, "the spare worker")

    drive(tmp_path, scenario, jobs=1, start=False)


def test_a_key_cannot_run_twice_at_once(tmp_path: Path) -> None:
    write_task(tmp_path, "collect", "def run(v):\n    pass\ndef gather():\n    return 1\n")

    async def scenario(h: Harness) -> None:
        job = make_job(tmp_path, "collect", Mode.COLLECT)
        h.submit(job)
        with pytest.raises(ValueError, match="already running"):
            h.executor.submit(job)
        h.executor.end_input(job.key)
        await h.event(job.key)

    drive(tmp_path, scenario)


# -- pipelining -------------------------------------------------------------------------------

STEP = """
import os, pathlib, time
def run(i, hold=None, nap=0.0, die=False):
    pathlib.Path(f"ran-{i}").write_text(str(os.getpid()))
    time.sleep(nap)
    while hold and not pathlib.Path(hold).exists():
        time.sleep(0.01)
    if die:
        os._exit(3)
    return i
"""


async def learn_short(h: Harness, root: Path, units: int = 3) -> None:
    """Run a few quick units of `step`, so that the executor knows the task is short."""
    for i in range(units):
        job = make_job(root, "step", kwargs={"i": 100 + i}, iteration=(100 + i,))
        h.submit(job)
        assert await h.result(job.key) == 100 + i


def test_a_short_unit_gets_the_next_job_queued_behind_it(tmp_path: Path) -> None:
    write_task(tmp_path, "step", STEP)

    async def scenario(h: Harness) -> None:
        await learn_short(h, tmp_path)
        first = make_job(tmp_path, "step", kwargs={"i": 0, "hold": "go"}, iteration=(0,))
        h.submit(first)
        assert h.executor.free_slots() == 1  # jobs=1, busy: a place in its queue
        second = make_job(tmp_path, "step", kwargs={"i": 1}, iteration=(1,))
        h.submit(second)
        assert h.executor.free_slots() == 0
        with pytest.raises(RuntimeError, match="no free slot"):
            h.executor.submit(make_job(tmp_path, "step", kwargs={"i": 2}, iteration=(2,)))
        await h.event(first.key, {EventKind.STARTED})
        await asyncio.sleep(0.2)
        assert not (tmp_path / "ran-1").exists()  # it waits for the first one
        assert not h.of(second.key, EventKind.STARTED)
        (tmp_path / "go").touch()
        assert await h.result(second.key) == 1
        assert await h.result(first.key) == 0
        kinds = [(e.key, e.kind) for e in h.events if e.key in (first.key, second.key)]
        assert kinds == [
            (first.key, EventKind.STARTED),
            (first.key, EventKind.DONE),
            (second.key, EventKind.STARTED),
            (second.key, EventKind.DONE),
        ]
        assert read_pid(tmp_path / "ran-0") == read_pid(tmp_path / "ran-1")

    drive(tmp_path, scenario, jobs=1, pipeline_below=1.0)


def test_nothing_is_queued_behind_a_task_not_known_to_be_short(tmp_path: Path) -> None:
    write_task(tmp_path, "step", STEP)

    async def scenario(h: Harness) -> None:
        first = make_job(tmp_path, "step", kwargs={"i": 0, "nap": 0.1}, iteration=(0,))
        h.submit(first)
        assert h.executor.free_slots() == 0  # never ran: its length is unknown
        await h.result(first.key)
        slow = make_job(tmp_path, "step", kwargs={"i": 1, "hold": "later"}, iteration=(1,))
        h.submit(slow)
        assert h.executor.free_slots() == 0  # it took longer than pipeline_below
        (tmp_path / "later").touch()
        await h.result(slow.key)

    drive(tmp_path, scenario, jobs=1, pipeline_below=0.05)


@pytest.mark.parametrize(("jobs", "queued"), [(1, True), (2, False)])
def test_a_task_that_never_ran_is_short_enough_to_queue_behind_with_one_job(
        tmp_path: Path, jobs: int, queued: bool) -> None:
    # a first build: every task is new, and the others were short. With one slot the next job
    # waits for this worker anyway; with two, another worker may well be free first.
    write_task(tmp_path, "step", STEP)
    write_task(tmp_path, "other", STEP)

    async def scenario(h: Harness) -> None:
        await learn_short(h, tmp_path)
        busy = [make_job(tmp_path, "other", kwargs={"i": n, "hold": "go"}, iteration=(n,))
                for n in range(jobs)]
        for job in busy:
            h.submit(job)
        assert h.executor.free_slots() == (1 if queued else 0)
        (tmp_path / "go").touch()
        for n, job in enumerate(busy):
            assert await h.result(job.key) == n

    drive(tmp_path, scenario, jobs=jobs, pipeline_below=1.0)


def test_a_queued_unit_cancelled_before_it_starts_is_interrupted_when_it_does(
    tmp_path: Path,
) -> None:
    write_task(tmp_path, "step", STEP)

    async def scenario(h: Harness) -> None:
        await learn_short(h, tmp_path)
        first = make_job(tmp_path, "step", kwargs={"i": 0, "hold": "go"}, iteration=(0,))
        second = make_job(tmp_path, "step", kwargs={"i": 1, "hold": "never"}, iteration=(1,))
        h.submit(first)
        h.submit(second)
        await h.event(first.key, {EventKind.STARTED})
        h.executor.cancel(second.key)
        assert set(h.executor.running()) == {first.key, second.key}
        (tmp_path / "go").touch()
        assert await h.result(first.key) == 0  # the one running is not disturbed
        event = await h.event(second.key)
        assert (event.kind, event.signal) == (EventKind.CANCELLED, "SIGINT")
        third = make_job(tmp_path, "step", kwargs={"i": 3}, iteration=(3,))
        h.submit(third)
        assert await h.result(third.key) == 3

    drive(tmp_path, scenario, jobs=1, pipeline_below=1.0)


def test_a_queued_unit_moves_on_when_the_unit_before_it_is_cancelled(tmp_path: Path) -> None:
    write_task(tmp_path, "step", STEP)

    async def scenario(h: Harness) -> None:
        await learn_short(h, tmp_path)
        first = make_job(tmp_path, "step", kwargs={"i": 0, "hold": "never"}, iteration=(0,))
        second = make_job(tmp_path, "step", kwargs={"i": 1}, iteration=(1,))
        h.submit(first)
        h.submit(second)
        await h.event(first.key, {EventKind.STARTED})
        h.executor.cancel(first.key)
        assert (await h.event(first.key)).kind is EventKind.CANCELLED
        assert await h.result(second.key) == 1  # on a fresh worker
        pids = {e.pid for e in h.events if e.kind is EventKind.STARTED}
        assert read_pid(tmp_path / "ran-1") != h.of(first.key, EventKind.STARTED)[0].pid
        assert read_pid(tmp_path / "ran-1") in pids

    drive(tmp_path, scenario, jobs=1, pipeline_below=1.0)


def test_a_queued_unit_moves_on_when_its_worker_dies(tmp_path: Path) -> None:
    write_task(tmp_path, "step", STEP)

    async def scenario(h: Harness) -> None:
        await learn_short(h, tmp_path)
        first = make_job(
            tmp_path, "step", kwargs={"i": 0, "hold": "go", "die": True}, iteration=(0,)
        )
        second = make_job(tmp_path, "step", kwargs={"i": 1}, iteration=(1,))
        h.submit(first)
        h.submit(second)
        await h.event(first.key, {EventKind.STARTED})
        (tmp_path / "go").touch()
        event = await h.event(first.key)
        assert (event.kind, event.error) == (EventKind.DIED, "exit code 3")
        assert await h.result(second.key) == 1
        assert read_pid(tmp_path / "ran-1") != read_pid(tmp_path / "ran-0")

    drive(tmp_path, scenario, jobs=1, pipeline_below=1.0)


def test_a_queued_unit_paused_before_it_starts_is_stopped_when_it_does(tmp_path: Path) -> None:
    write_task(tmp_path, "step", STEP)

    async def scenario(h: Harness) -> None:
        await learn_short(h, tmp_path)
        first = make_job(tmp_path, "step", kwargs={"i": 0, "hold": "go"}, iteration=(0,))
        second = make_job(tmp_path, "step", kwargs={"i": 1, "hold": "go2"}, iteration=(1,))
        h.submit(first)
        h.submit(second)
        await h.event(first.key, {EventKind.STARTED})
        worker = psutil.Process(h.of(first.key, EventKind.STARTED)[0].pid)
        assert h.executor.pause(second.key)
        assert worker.status() != psutil.STATUS_STOPPED  # the first one goes on
        (tmp_path / "go").touch()
        assert await h.result(first.key) == 0
        await h.until(lambda: worker.status() == psutil.STATUS_STOPPED, "SIGSTOP")
        (tmp_path / "go2").touch()
        await asyncio.sleep(0.2)
        assert not h.of(second.key, EventKind.DONE)
        assert h.executor.resume(second.key)
        assert await h.result(second.key) == 1

    drive(tmp_path, scenario, jobs=1, pipeline_below=1.0)


# -- nothing outlives watchrun ----------------------------------------------------------------

DRIVER = """
import asyncio, json, sys
from pathlib import Path
from watchrun.executors.base import Job, Mode, UnitKey
from watchrun.executors.local import LocalExecutor, WorkerStartError

root = Path(sys.argv[1])

async def main():
    started = asyncio.Event()
    def sink(event):
        if event.kind.value == "started":
            print(json.dumps({"worker": event.pid}), flush=True)
            started.set()
    executor = LocalExecutor(sink, 1, 0.2)
    await executor.start()
    executor.submit(Job(UnitKey("sleeper"), Mode.CALL, root,
                        [(root / "tasks" / "sleeper.py", "tasks")], {}, root / "sleeper.log"))
    await started.wait()
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_workers_and_their_subprocesses_end_when_watchrun_is_killed(tmp_path: Path) -> None:
    write_task(tmp_path, "sleeper", SLEEPER.format(setup=""))
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    driver = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert driver.stdout is not None
        worker = json.loads(driver.stdout.readline())["worker"]
        ready = tmp_path / "child.ready"
        deadline = time.monotonic() + WAIT
        while not ready.exists():
            assert time.monotonic() < deadline, "the task did not start its subprocess"
            time.sleep(0.01)
        processes = [p.pid for p in psutil.Process(driver.pid).children(recursive=True)]
        sleep = read_pid(ready)
        assert worker in processes and sleep in processes
        assert len(processes) == 3  # the busy worker, its sleep, the spare
    finally:
        driver.kill()
        driver.wait()
        if driver.stdout is not None:
            driver.stdout.close()
    deadline = time.monotonic() + 5
    while not all(gone(pid) for pid in processes):
        assert time.monotonic() < deadline, [p for p in processes if not gone(p)]
        time.sleep(0.01)
