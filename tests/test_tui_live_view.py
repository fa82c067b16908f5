"""The live view a user keeps open (issue 19), driven with Pilot: proportions, progress that reads
at a glance, logs that follow, feedback for every key, history from the store.

The engine is the `FakeControl` of test_tui_app (the UI is the thing tested); the store is a
real SQLite store in a temporary folder, and logs are real files where the engine puts them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.test_tui_app import (
    T0,
    feedback,
    info_text,
    make_app,
    row_text,
    send,
    started,
    until,
    video_project,
    wide_project,
)
from watchrun.engine import events as ev
from watchrun.engine.control import ParamView, UnitState
from watchrun.state.store import ResultRecord, Store, UnitStatus
from watchrun.state.store import UnitState as StoredState
from watchrun.ui.tui.app import HELP, WatchrunApp
from watchrun.ui.tui.records import Records

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def scope_running(app: WatchrunApp, done: int, total: int | None, running: int = 0) -> None:
    """video.extract yielded `total` frames (still yielding if None); frames.resize finished
    `done` of them and runs `running` more; started 10 s before the app's clock."""
    events: list[ev.Event] = [
        ev.BuildStarted(tasks=["video.extract", "frames.resize"], time=T0 - 10),
        started("video.extract", at=T0 - 10),
    ]
    for i in range(max(done + running, total or 0)):
        events.append(ev.Iteration(task="video.extract", iter=(i,), time=T0 - 10))
    for i in range(done + running):
        events.append(started("frames.resize", (i,), at=T0 - 10))
    for i in range(done):
        events.append(ev.UnitFinished(task="frames.resize", iter=(i,), duration=0.1, time=T0))
    if total is not None:
        events.append(ev.UnitFinished(task="video.extract", iter=(), duration=1.0, time=T0 - 9))
    send(app, *events)


def write_store(state_dir: Path, task: str, took: float, finished: float,
                status: UnitStatus = UnitStatus.OK) -> None:
    """What an earlier session left in the store for a task (through the store's own API)."""
    with Store(state_dir) as store:
        if status is UnitStatus.OK:
            store.record_result(ResultRecord(task, f"sig-{finished}", "0" * 64, {}, took,
                                             finished))
        store.set_unit_state(StoredState(task, (), f"sig-{finished}", status, "m", None, took,
                                         None, finished))
        store.commit()


# -- 1. proportions ------------------------------------------------------------------------------


async def test_at_160x45_the_dag_is_as_wide_as_its_rows_and_params_do_not_wrap() -> None:
    view = video_project()
    long_origin = "tasks/video/some/deeply/nested/place/extract.py:117 (video.extract)"
    extract = next(t for t in view.tasks if t.name == "video.extract")
    view.tasks[view.tasks.index(extract)] = type(extract)(
        extract.name, extract.kind, extract.chain, extract.upstreams, extract.downstreams,
        (*extract.params, ParamView("model", "'yolov8n'", long_origin)), extract.scope,
        extract.file)
    app, _, _ = make_app(view)
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.press("j")
        await pilot.pause()
        dag, detail = app.dag.region, app.detail.region
        assert dag.width <= app.dag.wanted_width() <= 80  # ~16 characters of names
        assert detail.width >= 160 - dag.width - 1  # the rest goes to details and log
        info = app.detail.info
        lines = info_text(app).splitlines()
        assert any(long_origin in line for line in lines)
        # every line of the description fits its width: no param's file:line on a line of
        # its own, the description is as many lines tall as it has lines
        assert max(map(len, lines)) <= info.content_region.width
        assert info.region.height == len(lines)


async def test_at_80x24_state_reason_and_the_last_log_lines_show_without_scrolling(
        tmp_path: Path) -> None:
    records = Records(tmp_path / ".watchrun")
    (tmp_path / ".watchrun" / "logs").mkdir(parents=True)
    log = tmp_path / ".watchrun" / "logs" / "video.extract.log"
    log.write_text("".join(f"frame {i} decoded\n" for i in range(200)))
    _, fake, clock = make_app()
    app = WatchrunApp(fake, clock=clock, records=records)
    async with app.run_test(size=(80, 24)) as pilot:
        send(app, started("video.extract", reasons=["param size: 32 -> 64 (tasks/base.py:7)"]))
        await pilot.press("j")
        await until(pilot, lambda: "frame 199 decoded" in app.detail.log_view.lines)
        await pilot.pause()
        scroll = app.query_one("#info-scroll")
        assert scroll.scroll_offset.y == 0
        visible = info_text(app).splitlines()[:scroll.region.height]
        assert visible[0].startswith("▶ video.extract  running")
        assert any("runs for   param size: 32 -> 64" in line for line in visible)
        # the log's last lines are on screen, at its bottom
        log_view = app.detail.log_view
        assert log_view.region.height >= 3 and log_view.region.bottom <= 24
        assert log_view.scroll_offset.y == log_view.max_scroll_y > 0, (
            log_view.scroll_offset, log_view.max_scroll_y)
        shown = [log_view.render_line(y).text.strip()
                 for y in range(log_view.scrollable_content_region.height)]
        assert "frame 199 decoded" in shown


# -- 2. progress ---------------------------------------------------------------------------------


async def test_a_scope_shows_a_bar_with_its_track_count_rate_and_eta() -> None:
    app, _, clock = make_app()
    async with app.run_test(size=(160, 45)) as pilot:
        scope_running(app, done=40, total=100, running=4)
        await pilot.press("j", "j")
        assert app.dag.selected == "frames.resize"
        row = row_text(app, "frames.resize")
        assert "iter 40/100" in row
        # 8 cells: 3 done, 1 running (4 of 100 still takes a cell), 4 to do
        assert "███▓░░░░" in row
        info = info_text(app)
        assert re.search(r"progress   40/100 ██████▓░+ · 4 running · 4\.0/s · ETA 15s", info), info
        clock.now += 10  # 20 s for 40: 2/s, 30 s to go
        app.flush()
        app._tick()
        assert "· 2.0/s · ETA 30s" in info_text(app)


async def test_while_the_total_is_unknown_the_count_and_rate_show_without_eta() -> None:
    app, _, _ = make_app()
    async with app.run_test(size=(160, 45)) as pilot:
        scope_running(app, done=10, total=None)
        await pilot.press("j")
        assert "iter 10" in row_text(app, "video.extract")
        info = info_text(app)
        assert "progress   10 so far · 1.0/s" in info and "ETA" not in info


async def test_a_paused_tasks_clock_stops_and_goes_on_after_resume() -> None:
    app, _, clock = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        send(app, started("download", at=T0))
        clock.now = T0 + 5
        await pilot.press("space")
        assert app.board.elapsed("download") == pytest.approx(5)
        clock.now = T0 + 65  # a minute paused
        app._tick()
        assert app.board.elapsed("download") == pytest.approx(5)
        assert "running    5.0s (paused: the clock is stopped)" in info_text(app)
        assert "5.0s" in row_text(app, "download")
        await pilot.press("space")
        clock.now = T0 + 67
        assert app.board.elapsed("download") == pytest.approx(7)
        send(app, ev.UnitFinished(task="download", iter=(), duration=7.0, time=T0 + 67))
        assert app.board.elapsed("download") == pytest.approx(7)


async def test_a_paused_task_rerun_by_a_change_has_its_clock_running_again() -> None:
    """frames.resize paused, then a save replans it: units of the new run start while the
    paused ones are still being cancelled, and the new run's clock runs (it stayed at
    0.0s, and the run was recorded as taking 0.0s)."""
    app, _, clock = make_app()
    async with app.run_test(size=(120, 30)):
        send(app, started("video.extract", at=T0),
             ev.Iteration(task="video.extract", iter=(0,), time=T0),
             ev.Iteration(task="video.extract", iter=(1,), time=T0),
             started("frames.resize", (0,), at=T0))
        app.board.set_paused("frames.resize", True)
        clock.now = T0 + 5
        send(app, ev.BuildStarted(tasks=["frames.resize"], time=T0 + 6),
             started("frames.resize", (1,), at=T0 + 6),
             ev.UnitCancelled(task="frames.resize", iter=(0,), signal="SIGINT", time=T0 + 7))
        clock.now = T0 + 9
        app._tick()
        assert app.board.state("frames.resize") is UnitState.RUNNING
        assert app.board.elapsed("frames.resize") == pytest.approx(3)


async def test_last_run_comes_from_the_store_for_a_task_run_in_an_earlier_session(
        tmp_path: Path) -> None:
    state = tmp_path / ".watchrun"
    write_store(state, "download", took=3.25, finished=T0 - 7200)
    app, fake, clock = make_app()
    app = WatchrunApp(fake, clock=clock, records=Records(state))
    async with app.run_test(size=(120, 30)):
        info = info_text(app)
        assert app.dag.selected == "download"
        assert re.search(r"last run   3\.2s · \d\d-\d\d \d\d:\d\d|last run   3\.2s · .*\(2 h ago\)",
                         info), info
        assert "2 h ago" in info


# -- 3. logs -------------------------------------------------------------------------------------


def unit_log(state: Path, task: str, it: tuple[int, ...], text: str) -> Path:
    path = state / "logs" / (task + "".join(f".{i}" for i in it) + ".log")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


async def test_the_log_follows_the_running_unit_and_brackets_step_through_iterations(
        tmp_path: Path) -> None:
    state = tmp_path / ".watchrun"
    app, fake, clock = make_app()
    app = WatchrunApp(fake, clock=clock, records=Records(state))
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("j", "j")
        for i in range(3):
            unit_log(state, "frames.resize", (i,), f"resizing frame {i}\n")
            send(app, started("frames.resize", (i,)))
            await until(pilot, lambda i=i: f"resizing frame {i}" in app.detail.log_view.lines)
            # a very short unit: it is over before the next poll, its output still shows
            send(app, ev.UnitFinished(task="frames.resize", iter=(i,), duration=0.001))
        assert "following" in str(app.detail.log_title.render())
        await pilot.press("left_square_bracket")
        await until(pilot, lambda: "resizing frame 1" in app.detail.log_view.lines)
        assert "frames.resize: log of iteration [1]" in feedback(app)
        await pilot.press("left_square_bracket", "left_square_bracket")
        await until(pilot, lambda: "resizing frame 0" in app.detail.log_view.lines)
        assert "already at the first iteration" in feedback(app)
        await pilot.press("right_square_bracket", "right_square_bracket",
                          "right_square_bracket")
        assert "frames.resize: following the latest unit" in feedback(app)
        await until(pilot, lambda: "resizing frame 2" in app.detail.log_view.lines)
        await pilot.press("k")
        await pilot.press("left_square_bracket")
        assert "video.extract: one unit, no iterations" in feedback(app)


async def test_a_failed_unit_opens_on_its_traceback_then_its_output(tmp_path: Path) -> None:
    state = tmp_path / ".watchrun"
    unit_log(state, "frames.detect", (3,), "loading weights\nframe 3: 0 boxes\n")
    trace = "Traceback (most recent call last):\n  File \"x.py\", line 2\nValueError: empty"
    app, fake, clock = make_app()
    app = WatchrunApp(fake, clock=clock, records=Records(state))
    async with app.run_test(size=(120, 30)) as pilot:
        send(app, started("frames.detect", (3,)),
             ev.UnitFailed(task="frames.detect", iter=(3,), error=trace),
             started("frames.detect", (4,)),
             ev.UnitFinished(task="frames.detect", iter=(4,), duration=0.1))
        await pilot.press("j", "j", "j")
        await until(pilot, lambda: "frame 3: 0 boxes" in app.detail.log_view.lines)
        lines = list(app.detail.log_view.lines)
        assert lines[:3] == trace.splitlines()
        assert lines.index("frame 3: 0 boxes") > lines.index("── its output ──")
        assert "frames.detect[3]" in str(app.detail.log_title.render())


# -- 4. feedback for every key ---------------------------------------------------------------------


async def test_space_and_i_with_nothing_running_say_so_and_ask_nothing() -> None:
    app, fake, _ = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("space")
        assert feedback(app) == "download: nothing running to pause (dirty)"
        await pilot.press("i")
        assert feedback(app) == "download: nothing running to interrupt (dirty)"
        assert fake.actions() == []
        send(app, ev.UnitFinished(task="download", iter=(), duration=1.0))
        await pilot.press("r")  # clean: nothing to continue, so r reruns it (SPEC section 9)
        assert feedback(app) == "download: clean, so a forced rerun of every unit"
        assert fake.actions() == [("rerun", "download")]  # a control without force()
        fake.calls.clear()
        send(app, started("download"))
        await pilot.press("r")
        assert "already running" in feedback(app)
        await pilot.press("i")
        assert fake.actions() == [("interrupt", "download")]
        assert "interrupting" in feedback(app)


async def test_slash_filters_the_dag_by_name_and_escape_clears_it() -> None:
    app, _, _ = make_app(wide_project(300))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("slash", "t", "1", "2")
        assert [r.name for r in app.dag.graph.rows] == [f"t{i:03}" for i in range(120, 130)]
        assert feedback(app) == "filter 't12': 10 of 300 tasks (escape clears)"
        await pilot.press("q")  # typed into the filter, not quitting
        assert app.is_running and feedback(app) == "filter 't12q': 0 of 300 tasks (escape clears)"
        await pilot.press("backspace", "enter")  # keep the filter, back to the DAG
        assert app.focused is app.dag
        await pilot.press("j")
        assert app.dag.selected == "t121"
        await pilot.press("escape")
        assert len(app.dag.graph.rows) == 300 and app.dag.selected == "t121"
        assert feedback(app) == "filter cleared: 300 tasks"


async def test_enter_folds_and_unfolds_a_generators_scope() -> None:
    app, _, _ = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("j", "j", "j")  # frames.detect, in the scope
        await pilot.press("enter")
        names = [r.name for r in app.dag.graph.rows]
        assert names == ["download", "video.extract", "report", "lint"]
        assert app.dag.selected == "video.extract"
        assert "video.extract ▸3" in row_text(app, "video.extract")
        assert "scope folded (3 tasks under it" in feedback(app)
        await pilot.press("enter")
        assert len(app.dag.graph.rows) == 7
        await pilot.press("end")
        await pilot.press("enter")
        assert "lint: not in a generator's scope" in feedback(app)


async def test_question_mark_lists_every_key() -> None:
    app, _, _ = make_app()
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("question_mark")
        text = str(app.screen.query_one("#help").render())
        for key in ("↑ ↓", "j k", "PgUp", "/", "enter", "space", "i", "r", "R", "P", "[ ]",
                    "h", "?", "q", "ctrl+c", "escape"):
            assert key in text, key
        actions = {b.action.split("(")[0] for b in app.BINDINGS}  # type: ignore[union-attr]
        assert actions == {"cursor", "toggle_pause", "interrupt", "continue", "force",
                           "pause_all", "filter", "fold", "step_log", "history",
                           "clear_filter", "help", "quit", "interrupt_app"}
        assert "where it stopped" in HELP and "force a rerun" in HELP


# -- 5. history ----------------------------------------------------------------------------------


async def test_h_lists_recent_runs_from_this_session_and_the_store(tmp_path: Path) -> None:
    state = tmp_path / ".watchrun"
    write_store(state, "lint", took=2.0, finished=T0 - 3600)
    write_store(state, "lint", took=0.5, finished=T0 - 600, status=UnitStatus.FAILED)
    app, fake, clock = make_app()
    app = WatchrunApp(fake, clock=clock, records=Records(state))
    async with app.run_test(size=(120, 30)) as pilot:
        send(app, started("lint", at=T0, reasons=["code changed: run (tasks/lint.py:3)"]),
             ev.UnitFinished(task="lint", iter=(), duration=1.25, time=T0 + 1.25))
        clock.now = T0 + 60
        await pilot.press("end", "h")
        text = str(app.screen.query_one("#history").render())
        lines = [line for line in text.splitlines() if re.match(r"\d\d-\d\d ", line)]
        assert len(lines) == 3
        assert "1.2s" in lines[0] and "ok" in lines[0] and "code changed: run" in lines[0]
        assert "0.5s" in lines[1] and "failed" in lines[1] and "11 min ago" in lines[1]
        assert "2.0s" in lines[2] and "ok" in lines[2] and "1 h ago" in lines[2]
        await pilot.press("escape")
        assert type(app.screen).__name__ == "Screen"


async def test_history_of_a_task_that_never_ran_says_so() -> None:
    app, _, _ = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("h")
        assert "No run recorded yet" in str(app.screen.query_one("#history").render())
        assert app.board.state("download") is UnitState.DIRTY
