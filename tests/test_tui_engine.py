"""The TUI against the real dev engine: real worker processes, real signals, real SQLite.

Each test builds a small project, wires the store, loader, executor and `DevEngine` the way
`watchrun dev` does (`commands.dev.build_dev_engine`), runs `engine.run()` beside the app inside
`app.run_test()`, presses keys, and checks both what the screen says and what really happened to
the processes (psutil) and in the engine's events.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from textual.pilot import Pilot

from tests.conftest import SESSION_TAG, gone, watchrun, worker_processes, write_project
from watchrun.commands.dev import build_dev_engine
from watchrun.engine import events as ev
from watchrun.engine.control import UnitState
from watchrun.engine.dev import DevEngine
from watchrun.engine.events import EventBus
from watchrun.session import open_session
from watchrun.ui.tui.app import WatchrunApp
from watchrun.ui.tui.records import Records

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30), pytest.mark.usefixtures("no_leaks")]

SIZE = (140, 45)

# hold: runs until `hold.go` exists, printing a line every 50 ms (its live log); it records the
# pid of the worker it runs in. frames: a generator inheriting params from an abstract base,
# with a per-iteration downstream. boom: fails with a traceback through a helper.
PROJECT = {
    "watchrun.toml": "jobs = 2\ngrace = 0.3\n",
    "tasks/hold.py": '''
        # /// task
        # [params]
        # every = 0.05
        # ///
        import os
        import time
        from pathlib import Path

        def run(every):
            Path("hold.pid.tmp").write_text(str(os.getpid()))
            os.replace("hold.pid.tmp", "hold.pid")
            tick = 0
            while not Path("hold.go").exists():
                print(f"hold tick {tick}")
                tick += 1
                time.sleep(every)
            return "held"
    ''',
    "tasks/base.py": '''
        # /// task
        # abstract = true
        # [params]
        # size = 64
        # count = 2
        # ///
        def run(size, count):
            for i in range(count):
                yield i * size
    ''',
    "tasks/frames.py": '''
        # /// task
        # kind = "generator"
        # extends = "base"
        # [params]
        # count = 3
        # ///
    ''',
    "tasks/resize.py": '''
        # /// task
        # after = ["frames"]
        # ///
        def run(frames):
            print(f"resize: frame {frames}")
            return frames // 2
    ''',
    "tasks/boom.py": '''
        # /// task
        # ///
        def check(frame):
            raise ValueError(f"bad frame {frame}")

        def run():
            print("boom: checking frame 7")
            check(7)
    ''',
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Live:
    """A running app over a running engine, and what to look at."""

    root: Path
    app: WatchrunApp
    engine: DevEngine
    engine_task: asyncio.Task[int]
    pilot: Pilot[Any]
    events: list[ev.Event]

    async def until(self, condition: Callable[[], bool], what: str, timeout: float = 10.0
                    ) -> None:
        """Let the app and the engine run until the condition holds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await self.pilot.pause(0.02)

    async def until_event(self, kind: type[ev.Event], task: str | None = None, after: int = 0,
                          timeout: float = 10.0) -> ev.Event:
        """The first event of this kind (for this task) at index `after` or later."""
        def found() -> ev.Event | None:
            for event in self.events[after:]:
                if isinstance(event, kind) and getattr(event, "task", task) == task:
                    return event
            return None

        await self.until(lambda: found() is not None, f"{kind.name} of {task}", timeout)
        event = found()
        assert event is not None
        return event

    async def idle(self, after: int = 0) -> None:
        await self.until_event(ev.Idle, after=after)
        self.app.flush()

    async def select(self, name: str) -> None:
        """Move the selection with j and k, as a user would."""
        dag = self.app.dag
        while dag.selected != name:
            assert dag.selected is not None
            key = "j" if dag.index[dag.selected] < dag.index[name] else "k"
            await self.pilot.press(key)

    def state(self, name: str) -> UnitState:
        self.app.flush()
        return self.app.board.state(name)

    def marker(self, name: str) -> str:
        """The task's state symbol, as drawn in its DAG row."""
        self.app.flush()
        dag = self.app.dag
        row = dag.graph.rows[dag.index[name]]
        return self.row(name)[row.node]

    def row(self, name: str) -> str:
        dag = self.app.dag
        return dag.render_line(dag.index[name] - round(dag.scroll_offset.y)).text.rstrip()

    def info(self) -> str:
        self.app.flush()
        return str(self.app.detail.info.render())

    def header(self) -> str:
        self.app.flush()
        return str(self.app.header.render())

    async def hold_pid(self) -> int:
        path = self.root / "hold.pid"
        await self.until(path.exists, "hold to record its pid")
        return int(path.read_text())


def status(pid: int) -> str:
    return str(psutil.Process(pid).status())


@contextlib.asynccontextmanager
async def live_dev(root: Path, select: str | None = None) -> AsyncIterator[Live]:
    """`watchrun dev` with the TUI, in this process: what `commands.dev.run_dev` wires.
    `select`: a task selected before the engine starts."""
    with open_session(root, "watchrun dev", write=True) as session:
        bus = EventBus()
        events: list[ev.Event] = []
        bus.subscribe(events.append)
        engine = build_dev_engine(session, [], 2, bus)
        app = WatchrunApp(engine, records=Records(session.config.state_dir))
        bus.subscribe(app.inbox.put)
        async with app.run_test(size=SIZE) as pilot:
            while select is not None and app.dag.selected != select:
                await pilot.press("j")
            engine_task = asyncio.create_task(engine.run())
            try:
                yield Live(root, app, engine, engine_task, pilot, events)
            finally:
                engine.quit()
                await asyncio.wait_for(asyncio.shield(engine_task), 15)


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # the executor passes its environment to its workers: the leak check finds ours by this tag
    monkeypatch.setenv("WATCHRUN_TEST_SESSION", SESSION_TAG)
    return write_project(tmp_path / "proj", PROJECT)


@contextlib.asynccontextmanager
async def built(root: Path) -> AsyncIterator[Live]:
    """The first build has settled: hold runs (its pid known), the rest is clean or failed."""
    async with live_dev(root) as live:
        await live.until(lambda: live.app.board.state("boom") is UnitState.FAILED
                         and live.app.board.state("resize") is UnitState.CLEAN, "the build")
        await live.hold_pid()
        await live.until(lambda: live.state("hold") is UnitState.RUNNING, "hold to show")
        yield live


# -- what the screen shows -----------------------------------------------------------------------


async def test_the_first_build_shows_states_progress_and_counts(root: Path) -> None:
    async with built(root) as live:
        # the abstract base is no node; resize hangs below the generator it follows
        assert [r.name for r in live.app.dag.graph.rows] == ["boom", "frames", "resize", "hold"]
        assert live.marker("hold") == "▶"
        assert live.marker("boom") == "✗"
        assert live.marker("frames") == "●"
        assert "iter 3/3" in live.row("frames")
        assert "iter 3/3" in live.row("resize")
        header = live.header()
        assert "1 running" in header and "1 failed" in header and "2 clean" in header


async def test_j_k_up_down_move_the_selection(root: Path) -> None:
    async with built(root) as live:
        names = [r.name for r in live.app.dag.graph.rows]
        pilot = live.pilot
        assert live.app.dag.selected == names[0]
        await pilot.press("j")
        assert live.app.dag.selected == names[1]
        await pilot.press("down", "down")
        assert live.app.dag.selected == names[3]
        await pilot.press("down")  # the last row stays selected
        assert live.app.dag.selected == names[3]
        await pilot.press("k")
        assert live.app.dag.selected == names[2]
        await pilot.press("up", "up")
        assert live.app.dag.selected == names[0]
        assert f"{names[0]}" in live.info().splitlines()[0]


async def test_the_detail_pane_shows_chain_params_origins_and_reasons(root: Path) -> None:
    async with built(root) as live:
        await live.select("frames")
        info = live.info()
        assert info.splitlines()[0].endswith("frames  clean  generator")
        assert "file       tasks/frames.py" in info
        assert "extends    base" in info
        # each param with the file, line and task that set it: count is overridden here
        assert _line(info, "count = 3").endswith("tasks/frames.py:5 (frames)")
        assert _line(info, "size = 64").endswith("tasks/base.py:4 (base)")
        assert "dirty      no (clean)" in info
        assert "downstream resize" in info
        assert "progress   3/3 ████" in info  # a full bar: every iteration done
        await live.select("hold")
        info = live.info()
        assert "hold  running" in info
        assert "runs for   never run" in info


async def test_an_edit_shows_why_the_task_runs_again(root: Path) -> None:
    async with built(root) as live:
        await live.select("hold")
        go = live.root / "hold.go"
        go.write_text("")
        await live.until_event(ev.UnitFinished, "hold")
        go.unlink()
        assert "dirty      no (clean)" in live.info()
        mark = len(live.events)
        path = live.root / "tasks/hold.py"
        path.write_text(path.read_text().replace("every = 0.05", "every = 0.04"))
        await live.until_event(ev.UnitStarted, "hold", after=mark)
        await live.until(lambda: "hold  running" in live.info(), "the new run to show")
        info = live.info()
        assert _line(info, "every = 0.04").endswith("tasks/hold.py:3 (hold)")
        assert ("runs for   param changed: every 0.05 -> 0.04 (tasks/hold.py:3 (hold))"
                in info)
        assert "1 task dirty" in live.header()  # the last change
        assert live.marker("hold") == "▶"


async def test_the_detail_pane_shows_the_traceback_of_a_failed_task(root: Path) -> None:
    async with built(root) as live:
        await live.select("boom")
        info = live.info()
        assert "boom  failed" in info
        assert "boom: ValueError: bad frame 7" in info  # the cause, beside the state
        assert "dirty      last run failed" in info
        assert re.search(r"last run   \d+\.\ds", info)  # how long it ran before it failed
        # the log pane: the traceback first, then what the unit printed
        # the pane follows the log at its own pace: the failure may reach it after the output
        await live.until(lambda: "boom: checking frame 7" in live.app.detail.log_view.lines
                         and "── its output ──" in live.app.detail.log_view.lines,
                         "boom's log with its traceback")
        lines = list(live.app.detail.log_view.lines)
        assert lines[0] == "Traceback (most recent call last):"
        trace = "\n".join(lines[:lines.index("── its output ──")])
        assert 'tasks/boom.py", line 8, in run' in trace
        assert 'tasks/boom.py", line 4, in check' in trace
        assert "ValueError: bad frame 7" in trace
        assert lines.index("boom: checking frame 7") > lines.index("── its output ──")


async def test_the_detail_pane_follows_the_live_log(root: Path) -> None:
    async with built(root) as live:
        await live.select("hold")
        log = live.app.detail.log_view
        await live.until(lambda: "hold tick 1" in log.lines, "the first lines")
        seen = len(log.lines)
        await live.until(lambda: len(log.lines) >= seen + 5, "more lines, live")
        assert log.lines[:3] == ["hold tick 0", "hold tick 1", "hold tick 2"]
        assert "hold.log" in str(live.app.detail.log_title.render())


async def test_a_task_selected_before_it_starts_shows_its_log(root: Path) -> None:
    # the worker creates the log as the unit starts, a moment after the UI hears of it
    async with live_dev(root, select="hold") as live:
        await live.until_event(ev.UnitStarted, "hold")
        log = live.app.detail.log_view
        await live.until(lambda: "hold tick 2" in log.lines, "hold's log")
        assert "hold.log" in str(live.app.detail.log_title.render())


# -- keys that steer the engine --------------------------------------------------------------------


async def test_space_pauses_the_worker_and_space_again_resumes_it(root: Path) -> None:
    async with built(root) as live:
        pid = await live.hold_pid()
        await live.select("hold")
        await live.pilot.press("space")
        await live.until(lambda: status(pid) == psutil.STATUS_STOPPED, "SIGSTOP")
        assert live.marker("hold") == "‖"
        assert "1 paused" in live.header()
        assert "hold  paused" in live.info()
        # stopped for real: its log does not grow
        log = live.root / ".watchrun" / "logs"
        size = sum(p.stat().st_size for p in log.rglob("hold*"))
        await live.pilot.pause(0.3)
        assert sum(p.stat().st_size for p in log.rglob("hold*")) == size
        await live.pilot.press("space")
        await live.until(lambda: status(pid) != psutil.STATUS_STOPPED, "SIGCONT")
        assert live.marker("hold") == "▶"
        assert "paused" not in live.header()
        (live.root / "hold.go").write_text("")
        await live.until_event(ev.UnitFinished, "hold")
        assert live.marker("hold") == "●"


async def test_space_on_a_task_that_does_not_run_stops_nothing(root: Path) -> None:
    async with built(root) as live:
        pid = await live.hold_pid()
        await live.select("frames")
        await live.pilot.press("space")
        await live.pilot.pause(0.2)
        assert status(pid) != psutil.STATUS_STOPPED
        assert live.marker("frames") == "●" and live.marker("hold") == "▶"


async def test_i_interrupts_it_stays_cancelled_and_r_reruns_it(root: Path) -> None:
    async with built(root) as live:
        pid = await live.hold_pid()
        await live.select("hold")
        mark = len(live.events)
        await live.pilot.press("i")
        cancelled = await live.until_event(ev.UnitCancelled, "hold", after=mark)
        assert isinstance(cancelled, ev.UnitCancelled) and cancelled.signal == "SIGINT"
        await live.until(lambda: gone(pid), "the worker to end")
        await live.idle(after=mark)
        assert live.marker("hold") == "⊘"
        assert "hold  cancelled" in live.info()
        assert "dirty      last run cancelled" in live.info()
        assert re.search(r"last run   \d+\.\ds", live.info())
        # it stays cancelled: nothing starts it again by itself
        await live.pilot.pause(0.5)
        assert not [e for e in live.events[mark:] if isinstance(e, ev.UnitStarted)]
        assert live.marker("hold") == "⊘"

        (live.root / "hold.pid").unlink()
        mark = len(live.events)
        await live.pilot.press("r")
        started = await live.until_event(ev.UnitStarted, "hold", after=mark)
        # r continues an interrupted unit (issue 14): not forced, it reruns as cancelled
        assert isinstance(started, ev.UnitStarted) and started.reasons == ["last run cancelled"]
        new_pid = await live.hold_pid()
        assert new_pid != pid and status(new_pid) != psutil.STATUS_ZOMBIE
        await live.until(lambda: live.marker("hold") == "▶", "hold to show running")
        (live.root / "hold.go").write_text("")
        await live.until_event(ev.UnitFinished, "hold", after=mark)
        await live.until(lambda: live.marker("hold") == "●", "hold to show clean")


async def test_shift_r_forces_a_clean_task_and_its_downstream(root: Path) -> None:
    async with built(root) as live:
        mark = len(live.events)
        (live.root / "hold.go").write_text("")
        await live.idle(after=mark)
        await live.select("frames")
        mark = len(live.events)
        await live.pilot.press("R")
        await live.until_event(ev.UnitFinished, "frames", after=mark)
        await live.idle(after=mark)
        ran = {e.task for e in live.events[mark:] if isinstance(e, ev.UnitStarted)}
        assert ran == {"frames"}  # same values: its per-iteration downstream stays clean
        assert live.marker("frames") == "●" and "iter 3/3" in live.row("frames")


async def test_shift_p_pauses_everything_and_scheduling_then_resumes(root: Path) -> None:
    async with built(root) as live:
        pid = await live.hold_pid()
        await live.pilot.press("P")
        await live.until(lambda: status(pid) == psutil.STATUS_STOPPED, "SIGSTOP to hold")
        assert "PAUSED" in live.header()
        assert live.marker("hold") == "‖"
        # scheduling stopped too: a rerun asked now waits
        await live.select("boom")
        mark = len(live.events)
        await live.pilot.press("r")
        await live.pilot.pause(0.5)
        assert not [e for e in live.events[mark:] if isinstance(e, ev.UnitStarted)]
        await live.pilot.press("P")
        await live.until(lambda: status(pid) != psutil.STATUS_STOPPED, "SIGCONT to hold")
        await live.until_event(ev.UnitFailed, "boom", after=mark)
        assert "PAUSED" not in live.header()
        assert live.marker("hold") == "▶"


async def test_question_mark_shows_help_while_the_engine_goes_on(root: Path) -> None:
    async with built(root) as live:
        await live.pilot.press("question_mark")
        assert type(live.app.screen).__name__ == "HelpScreen"
        assert "interrupt its running units" in str(live.app.screen.query_one("#help").render())
        (live.root / "hold.go").write_text("")
        await live.until_event(ev.UnitFinished, "hold")
        await live.pilot.press("escape")
        assert type(live.app.screen).__name__ == "Screen"
        assert live.marker("hold") == "●"


async def test_q_ends_every_process_and_the_engine(root: Path) -> None:
    async with built(root) as live:
        pid = await live.hold_pid()
        assert worker_processes()
        await live.select("hold")
        await live.pilot.press("space")  # a stopped worker must end too
        await live.until(lambda: status(pid) == psutil.STATUS_STOPPED, "SIGSTOP")
        await live.pilot.press("q")
        code = await asyncio.wait_for(asyncio.shield(live.engine_task), 15)
        assert code == 0
        assert live.app.return_value == "quit"
        assert gone(pid)
        assert not worker_processes()
        # what ran when q was pressed is recorded as cancelled, the rest as it was
        states = {r["task"]: r["state"] for r in watchrun(live.root, "status", "--json").events}
        assert states == {"hold": "cancelled", "boom": "failed", "frames": "clean",
                          "resize": "clean"}


def _line(text: str, start: str) -> str:
    found = [line.rstrip() for line in text.splitlines() if line.strip().startswith(start)]
    assert found, f"no line starting with {start!r} in:\n{text}"
    return found[0]


async def test_last_run_and_history_come_from_the_store_after_an_earlier_session(
        root: Path) -> None:
    (root / "hold.go").write_text("")
    assert watchrun(root, "build", "frames").code == 0  # an earlier session
    (root / "hold.go").unlink()
    async with built(root) as live:
        await live.select("frames")
        info = live.info()
        assert live.app.board.state("frames") is UnitState.CLEAN
        assert re.search(r"last run   \d+\.\ds · \d\d:\d\d:\d\d \(", info), info
        await live.pilot.press("h")
        text = str(live.app.screen.query_one("#history").render())
        assert re.search(r"ok +\(an earlier run\)", text), text
        await live.pilot.press("escape")


async def test_the_output_of_very_short_units_is_shown(root: Path) -> None:
    async with built(root) as live:
        await live.select("resize")  # its units print a line and end in a millisecond
        assert live.app.board.state("resize") is UnitState.CLEAN
        await live.until(lambda: "resize: frame 128" in live.app.detail.log_view.lines,
                         "the last unit's output")
        await live.pilot.press("left_square_bracket")
        await live.until(lambda: "resize: frame 64" in live.app.detail.log_view.lines,
                         "the unit before")
        assert "resize[1]" in str(live.app.detail.log_title.render())
