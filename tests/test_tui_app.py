"""The TUI driven with Pilot: what it shows as events arrive, and what its keys ask the engine.

`FakeControl` is an `EngineControl` over a fixed `ProjectView` that records the calls made to
it: the UI is the thing tested here; tests against the real dev engine live with the engine.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from watchrun.engine import events as ev
from watchrun.engine.control import ErrorView, ParamView, ProjectView, TaskView, UnitState
from watchrun.ui.tui.app import WatchrunApp
from watchrun.ui.tui.detail import LogTail
from watchrun.ui.tui.state import Board, Progress, describe_change

pytestmark = pytest.mark.anyio

T0 = 1_000_000.0  # event times in tests: fixed, with a clock that the test controls


@dataclass
class FakeControl:
    project: ProjectView
    calls: list[tuple[str, ...]] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)
    dirty_reasons: dict[str, list[str]] = field(default_factory=dict)
    refuse_pause: str | None = None
    broken_method: str | None = None  # this call raises, like an engine bug would

    def _record(self, *call: str) -> None:
        self.calls.append(call)
        if call[0] == self.broken_method:
            raise RuntimeError(f"{call[0]} exploded")

    def view(self) -> ProjectView:
        self._record("view")
        return self.project

    def reasons(self, task: str) -> list[str]:
        self._record("reasons", task)
        return self.dirty_reasons.get(task, [])

    def log_path(self, task: str) -> str | None:
        return self.logs.get(task)

    def pause(self, task: str) -> str | None:
        self._record("pause", task)
        return self.refuse_pause

    def resume(self, task: str) -> str | None:
        self._record("resume", task)
        return None

    def interrupt(self, task: str) -> None:
        self._record("interrupt", task)

    def rerun(self, task: str) -> None:
        self._record("rerun", task)

    def pause_all(self) -> None:
        self._record("pause_all")

    def resume_all(self) -> None:
        self._record("resume_all")

    def quit(self) -> None:
        self._record("quit")

    def actions(self) -> list[tuple[str, ...]]:
        """The calls that steer the engine (not the reads)."""
        return [c for c in self.calls if c[0] not in ("view", "reasons")]


def task(name: str, kind: str = "task", ups: tuple[str, ...] = (), scope: tuple[str, ...] = (),
         chain: tuple[str, ...] | None = None, params: tuple[ParamView, ...] = (),
         abstract: bool = False) -> TaskView:
    return TaskView(name, kind, chain or (name,), ups, (), params, scope,
                    "tasks/" + name.replace(".", "/") + ".py", abstract)


def project(tasks: list[TaskView], errors: list[ErrorView] | None = None,
            watched: int = 0) -> ProjectView:
    """Fill in downstreams from upstreams, as the engine's view does."""
    downs: dict[str, list[str]] = {}
    for t in tasks:
        for up in t.upstreams:
            downs.setdefault(up, []).append(t.name)
    full = [TaskView(t.name, t.kind, t.chain, t.upstreams, tuple(sorted(downs.get(t.name, ()))),
                     t.params, t.scope, t.file, t.abstract) for t in tasks]
    return ProjectView(full, errors or [], watched)


def video_project() -> ProjectView:
    """A generator with a per-iteration chain and a collector, a report, a lone lint."""
    scope = ("video.extract",)
    return project([
        task("base", abstract=True),
        task("download"),
        task("video.extract", "generator", ("download",), chain=("video.extract", "base"),
             params=(ParamView("size", "64", "tasks/base.py:7 (base)"),
                     ParamView("fps", "25", "tasks/video/extract.py:5"))),
        task("frames.resize", ups=("video.extract",), scope=scope),
        task("frames.detect", ups=("frames.resize",), scope=scope),
        task("summary", "collector", ("frames.detect",), scope),
        task("report", ups=("summary", "download")),
        task("lint"),
    ], watched=12)


def wide_project(n: int = 300) -> ProjectView:
    tasks = []
    for i in range(n):
        ups: tuple[str, ...] = (f"t{i - 1:03}",) if i % 10 else ()
        if i % 10 == 9:
            ups += (f"t{i - 5:03}",)
        tasks.append(task(f"t{i:03}", ups=ups))
    return project(tasks, watched=n)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def make_app(view: ProjectView | None = None, **control: Any) -> tuple[WatchrunApp, FakeControl,
                                                                       Clock]:
    fake = FakeControl(view or video_project(), **control)
    clock = Clock()
    return WatchrunApp(fake, clock=clock), fake, clock


def row_text(app: WatchrunApp, name: str) -> str:
    """The DAG row of a task as the user reads it (the row must be on screen)."""
    y = app.dag.index[name] - round(app.dag.scroll_offset.y)
    return app.dag.render_line(y).text.rstrip()


def marker(app: WatchrunApp, name: str) -> str:
    """The task's state symbol, drawn as its node in the graph."""
    row = app.dag.graph.rows[app.dag.index[name]]
    return row_text(app, name)[row.node]


def info_text(app: WatchrunApp) -> str:
    return str(app.detail.info.render())


def spy_notes(app: WatchrunApp) -> list[str]:
    """Every message the footer's feedback line shows from now on."""
    notes: list[str] = []
    say = app.say

    def spy(message: str, severity: str = "information") -> None:
        notes.append(message)
        say(message, severity)

    app.say = spy  # type: ignore[method-assign]
    return notes


def feedback(app: WatchrunApp) -> str:
    """The footer's feedback line as the user reads it."""
    return str(app.feedback.render())


async def until(pilot: Any, condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Let the app run until the condition holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached"
        await pilot.pause(0.02)


def send(app: WatchrunApp, *events: ev.Event) -> None:
    for event in events:
        app.inbox.put(event)
    app.flush()


def started(name: str, it: tuple[int, ...] = (), at: float = T0, reasons: list[str] | None = None
            ) -> ev.UnitStarted:
    return ev.UnitStarted(task=name, iter=it, reasons=reasons or ["never run"], time=at)


# -- what it shows -----------------------------------------------------------------------------


async def test_rows_follow_the_dag_with_kinds_and_no_abstract_tasks() -> None:
    app, _, _ = make_app()
    async with app.run_test(size=(100, 30)):
        names = [row.name for row in app.dag.graph.rows]
        assert names == ["download", "video.extract", "frames.resize", "frames.detect",
                         "summary", "report", "lint"]
        assert "gen" in row_text(app, "video.extract")
        assert "col" in row_text(app, "summary")
        assert row_text(app, "frames.resize").startswith("│ ○ frames.resize")


async def test_states_follow_the_events() -> None:
    app, _, clock = make_app()
    async with app.run_test(size=(100, 30)):
        send(app, ev.BuildStarted(tasks=["download", "video.extract", "lint"], time=T0))
        assert marker(app, "lint") == "◌"
        send(app, ev.UnitSkipped(task="download", iter=(), time=T0), started("lint"))
        assert marker(app, "download") == "●"
        assert marker(app, "lint") == "▶"
        clock.now = T0 + 75
        app.dag.refresh_running()
        assert row_text(app, "lint").endswith("1m15s")
        send(app, ev.UnitFailed(task="lint", iter=(), error="Traceback\nValueError: no",
                                time=T0 + 80))
        assert marker(app, "lint") == "✗"
        send(app, ev.BuildFinished(ok=False, ran=1, skipped=1, failed=1, cancelled=0))
        assert marker(app, "video.extract") == "○"  # never ran: dirty again
        assert "1 clean" in str(app.header.render())
        assert "1 failed" in str(app.header.render())


async def test_iteration_progress_counts_then_shows_the_total() -> None:
    app, _, _ = make_app()
    async with app.run_test(size=(100, 30)):
        scope = ["video.extract", "frames.resize", "frames.detect", "summary"]
        send(app, ev.BuildStarted(tasks=scope, time=T0), started("video.extract"),
             started("summary"))
        for i in range(3):
            send(app, ev.Iteration(task="video.extract", iter=(i,), time=T0),
                 started("frames.resize", (i,)),
                 ev.UnitFinished(task="frames.resize", iter=(i,), duration=0.5, time=T0 + 1))
        assert "iter 3 " in row_text(app, "video.extract") + " "
        assert "iter 3 " in row_text(app, "frames.resize") + " "
        assert marker(app, "frames.resize") == "▶"  # more iterations to come
        send(app, ev.Iteration(task="video.extract", iter=(3,), time=T0),
             ev.UnitFinished(task="video.extract", iter=(), duration=2.0, time=T0 + 2))
        assert "iter 3/4" in row_text(app, "frames.resize")
        assert "iter 4/4 ████████" in row_text(app, "video.extract")
        send(app, ev.Push(task="summary", iter=(0,), time=T0 + 2))
        assert "iter 1/4 ██" in row_text(app, "summary")


async def test_header_shows_counts_watched_files_and_the_last_change() -> None:
    app, _, _ = make_app()
    async with app.run_test(size=(100, 30)):
        send(app, ev.Change(paths=["tasks/base.py"], dirty=["download", "lint", "report"],
                            time=T0))
        header = str(app.header.render())
        assert "12 files watched" in header
        assert "tasks/base.py: 3 tasks dirty" in header
        assert "7 dirty" in header


async def test_a_change_reloads_the_project_and_new_tasks_appear() -> None:
    app, fake, _ = make_app()
    async with app.run_test(size=(100, 30)):
        fake.project = project([*video_project().tasks, task("extra", ups=("lint",))])
        send(app, ev.Change(paths=["tasks/extra.py"], dirty=["extra"], time=T0))
        assert [row.name for row in app.dag.graph.rows][-2:] == ["lint", "extra"]
        assert marker(app, "extra") == "○"


async def test_project_errors_are_listed_and_their_tasks_broken() -> None:
    errors = [ErrorView("tasks/old.py", 3, "invalid TOML in header")]
    view = video_project()
    view.errors = errors
    app, _, _ = make_app(view)
    async with app.run_test(size=(100, 40)) as pilot:
        assert app.errors.display
        assert "tasks/old.py:3: invalid TOML in header" in str(app.errors.render())
        send(app, ev.Error(message="cycle in after: lint -> lint", file="/abs/tasks/lint.py",
                           line=2, time=T0))
        text = str(app.errors.render())
        assert "2 project errors" in text
        assert "/abs/tasks/lint.py:2: cycle in after: lint -> lint" in text
        assert marker(app, "lint") == "!"
        assert "1 broken" in str(app.header.render())
        await pilot.press("end")
        assert "error      line 2: cycle in after: lint -> lint" in info_text(app)


async def test_no_errors_no_error_panel() -> None:
    app, _, _ = make_app()
    async with app.run_test(size=(100, 30)):
        assert not app.errors.display


async def test_events_for_unknown_tasks_reload_the_view_and_never_crash() -> None:
    app, fake, _ = make_app()
    async with app.run_test(size=(100, 30)):
        before = fake.calls.count(("view",))
        send(app, started("nobody"), ev.UnitFinished(task="nobody", iter=(), duration=1.0),
             ev.Push(task="nobody", iter=(0,)), ev.Error(message="m", file=None, line=None))
        assert fake.calls.count(("view",)) == before + 1
        assert "project: m" in str(app.errors.render())


async def test_the_detail_pane_describes_the_selected_task() -> None:
    app, _, _ = make_app(dirty_reasons={"video.extract": ["code changed: run (tasks/base.py:9)",
                                                          "param size: 32 -> 64"]})
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("j")
        text = info_text(app)
        assert "video.extract" in text and "generator" in text
        assert "extends    base" in text
        assert "size = 64" in text and "tasks/base.py:7 (base)" in text
        assert "code changed: run (tasks/base.py:9)" in text
        assert "param size: 32 -> 64" in text
        assert "upstream   download" in text
        assert "downstream frames.resize" in text


async def test_a_failed_task_shows_its_traceback() -> None:
    app, _, _ = make_app()
    async with app.run_test(size=(100, 40)) as pilot:
        trace = 'Traceback (most recent call last):\n  File "tasks/lint.py", line 4\nKeyError: 3'
        send(app, started("lint"), ev.UnitFailed(task="lint", iter=(), error=trace))
        await pilot.press("end")
        assert app.dag.selected == "lint"
        assert "lint: KeyError: 3" in info_text(app)  # its last line, beside the state
        # the whole traceback opens the log pane, before what the unit printed
        await until(pilot, lambda: len(app.detail.log_view.lines) >= 3)
        assert app.detail.log_view.lines[:3] == trace.splitlines()


async def test_the_live_log_of_the_selected_task_is_tailed(tmp_path: Path) -> None:
    log = tmp_path / "lint.log"
    log.write_text("first line\n")
    app, _, _ = make_app(logs={"lint": str(log)})
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("end")
        await until(pilot, lambda: "first line" in app.detail.log_view.lines)
        with log.open("a") as f:
            f.write("second line\npartial")
        await until(pilot, lambda: "second line" in app.detail.log_view.lines)
        assert "lint.log" in str(app.detail.log_title.render())


def test_log_tail_reads_appends_and_starts_over_when_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    tail = LogTail(path)
    assert tail.read() == (False, "")  # no file yet
    path.write_bytes("héllo\n".encode())
    assert tail.read() == (True, "héllo\n")
    with path.open("ab") as f:
        f.write("wörld".encode()[:2])  # half of a UTF-8 character
    assert tail.read() == (False, "w")
    with path.open("ab") as f:
        f.write("wörld".encode()[2:])
    assert tail.read() == (False, "örld")
    path.write_bytes(b"new\n")  # a new unit rewrote it
    assert tail.read() == (True, "new\n")


# -- keys --------------------------------------------------------------------------------------


async def test_up_down_j_k_move_the_selection() -> None:
    app, _, _ = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        assert app.dag.selected == "download"
        await pilot.press("down", "j", "j")
        assert app.dag.selected == "frames.detect"
        await pilot.press("k", "up")
        assert app.dag.selected == "video.extract"
        await pilot.press("up", "up")
        assert app.dag.selected == "download"


async def test_space_pauses_and_resumes_the_selected_running_task() -> None:
    app, fake, _ = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        send(app, started("download"))
        await pilot.press("space")
        assert fake.actions() == [("pause", "download")]
        assert marker(app, "download") == "‖"
        assert "1 paused" in str(app.header.render())
        await pilot.press("space")
        assert fake.actions()[-1] == ("resume", "download")
        assert marker(app, "download") == "▶"


async def test_a_refused_pause_is_told_and_nothing_changes() -> None:
    app, fake, _ = make_app(refuse_pause="remote units cannot be paused")
    async with app.run_test(size=(100, 30)) as pilot:
        notes = spy_notes(app)
        send(app, started("download"))
        await pilot.press("space")
        assert fake.actions() == [("pause", "download")]
        assert any("remote units cannot be paused" in n for n in notes)
        assert marker(app, "download") == "▶"


async def test_space_on_a_task_that_does_not_run_asks_nothing() -> None:
    app, fake, _ = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        notes = spy_notes(app)
        await pilot.press("space")
        assert fake.actions() == []
        assert notes == ["download: nothing running to pause (dirty)"]
        assert feedback(app) == notes[0]  # in the footer, until the next key


async def test_i_interrupts_and_r_reruns_the_selected_task() -> None:
    app, fake, _ = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        send(app, started("video.extract"),
             ev.UnitCancelled(task="frames.resize", iter=(0,), signal="SIGINT", time=T0))
        await pilot.press("j", "i", "j", "r")
        assert fake.actions() == [("interrupt", "video.extract"), ("rerun", "frames.resize")]
        assert feedback(app) == "frames.resize: running it again"
        await pilot.press("R")
        assert fake.actions()[-1] == ("rerun", "frames.resize")
        assert "forced rerun of every unit" in feedback(app)


async def test_keys_act_on_events_that_arrived_since_the_last_redraw() -> None:
    """A key pressed the moment a unit starts (or stops) acts on that: the inbox is folded in
    before the key decides, not at the next redraw (else i said "nothing running")."""
    app, fake, _ = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        app.inbox.put(started("download"))
        await pilot.press("i")
        assert fake.actions() == [("interrupt", "download")]
        app.inbox.put(ev.UnitCancelled(task="download", iter=(), signal="SIGINT", time=T0))
        await pilot.press("space")
        assert fake.actions() == [("interrupt", "download")]
        assert feedback(app) == "download: nothing running to pause (cancelled)"


@dataclass
class ContinuingControl(FakeControl):
    """An engine that can continue a task where it stopped (the plan's "continue")."""

    def continue_task(self, task: str) -> None:
        self._record("continue_task", task)


async def test_r_continues_when_the_engine_can_and_shift_r_forces() -> None:
    fake = ContinuingControl(video_project())
    app = WatchrunApp(fake, clock=Clock())
    async with app.run_test(size=(100, 30)) as pilot:
        send(app, ev.UnitCancelled(task="download", iter=(), signal="SIGINT", time=T0))
        await pilot.press("r")
        assert fake.actions() == [("continue_task", "download")]
        assert feedback(app) == "download: running its cancelled units again"
        await pilot.press("R")
        assert fake.actions()[-1] == ("rerun", "download")


async def test_shift_p_pauses_and_resumes_everything() -> None:
    app, fake, _ = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        send(app, started("download"), started("lint"))
        await pilot.press("P")
        assert fake.actions() == [("pause_all",)]
        assert "PAUSED" in str(app.header.render())
        assert marker(app, "lint") == "‖"
        await pilot.press("P")
        assert fake.actions() == [("pause_all",), ("resume_all",)]
        assert marker(app, "lint") == "▶"
        assert "PAUSED" not in str(app.header.render())


async def test_q_quits_the_engine_then_the_app() -> None:
    app, fake, _ = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running)
    assert fake.actions() == [("quit",)]
    assert app.return_value == "quit"


async def test_ctrl_c_quits_too() -> None:
    app, fake, _ = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("ctrl+c")
        await until(pilot, lambda: not app.is_running)
    assert fake.actions() == [("quit",)]
    assert app.return_value == "interrupt"


async def test_question_mark_shows_the_help_and_escape_closes_it() -> None:
    app, _, _ = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("question_mark")
        assert type(app.screen).__name__ == "HelpScreen"
        assert "pause / resume everything" in str(app.screen.query_one("#help").render())
        send(app, started("download"))  # events go on arriving under the help screen
        await pilot.press("escape")
        assert type(app.screen).__name__ == "Screen"
        assert marker(app, "download") == "▶"


async def test_the_footer_shows_the_keys_whole_at_80_columns() -> None:
    from textual.widgets._footer import FooterKey

    app, _, _ = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        keys = list(app.query(FooterKey))
        on_screen = {k.key for k in keys if k.region.width > 0 and k.region.right <= 80}
        assert {"space", "i", "r", "R", "P", "slash", "h", "question_mark", "q"} <= on_screen


async def test_an_engine_call_that_raises_is_shown_not_fatal() -> None:
    app, _, _ = make_app(broken_method="rerun")
    async with app.run_test(size=(100, 30)) as pilot:
        notes = spy_notes(app)
        await pilot.press("r")
        assert any("rerun exploded" in n for n in notes)
        assert "rerun exploded" in feedback(app)  # and no word of success after it
        await pilot.press("j")
        assert app.is_running and app.dag.selected == "video.extract"


# -- the inbox and the screen's economy ---------------------------------------------------------


async def test_events_put_before_the_app_runs_are_shown() -> None:
    app, _, _ = make_app()
    app.inbox.put(started("lint"))
    async with app.run_test(size=(100, 30)):
        assert marker(app, "lint") == "▶"


async def test_the_inbox_takes_events_from_other_threads() -> None:
    app, _, _ = make_app(wide_project(50))
    async with app.run_test(size=(100, 30)) as pilot:
        names = [f"t{i:03}" for i in range(50)]

        def produce(part: list[str]) -> None:
            for _ in range(200):
                for name in part:
                    app.inbox.put(started(name, (0,)))
                    app.inbox.put(ev.UnitFinished(task=name, iter=(0,), duration=0.1))

        threads = [threading.Thread(target=produce, args=(names[i::4],)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        await until(pilot, lambda: len(app.inbox) == 0)
        app.flush()
        assert all(app.board.rows[n].starts == 200 for n in names)
        assert app.board.counts()[UnitState.CLEAN] == 50


async def test_only_visible_rows_are_rendered() -> None:
    app, _, _ = make_app(wide_project(300))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        height = app.dag.size.height
        assert 0 < len(app.dag._strips) <= height
        send(app, *(started(f"t{i:03}") for i in range(300)))
        await pilot.pause()
        assert len(app.dag._strips) <= height
        await pilot.press("end")
        await pilot.pause()
        assert app.dag.selected == "t299"
        assert "t299" in row_text(app, "t299")


async def test_narrow_terminals_stack_the_detail_under_the_dag() -> None:
    app, _, _ = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        assert not app.main.has_class("wide")
        assert app.detail.region.y > app.dag.region.y
        await pilot.resize_terminal(140, 30)
        await pilot.pause()
        assert app.main.has_class("wide")
        assert app.detail.region.x > app.dag.region.x


# -- the board on its own ----------------------------------------------------------------------


def test_a_scoped_failure_stays_failed_while_other_iterations_finish() -> None:
    board = Board(video_project(), Clock())
    for event in (started("video.extract"), started("frames.resize", (0,)),
                  ev.UnitFailed(task="frames.resize", iter=(0,), error="boom"),
                  started("frames.resize", (1,)),
                  ev.UnitFinished(task="frames.resize", iter=(1,), duration=1.0)):
        board.apply(event)
    assert board.rows["frames.resize"].error == "boom"
    board.apply(ev.UnitFinished(task="video.extract", iter=(), duration=1.0))
    assert board.state("frames.resize") is UnitState.FAILED


def test_a_cancelled_unit_and_a_new_build() -> None:
    board = Board(video_project(), Clock())
    board.apply_all([started("lint"), ev.UnitCancelled(task="lint", iter=(), signal="SIGINT")])
    assert board.state("lint") is UnitState.CANCELLED
    board.apply(ev.BuildStarted(tasks=["lint", "download"]))
    assert board.state("lint") is UnitState.CANCELLED  # stays, until a change or a rerun
    assert board.state("download") is UnitState.QUEUED
    board.apply(ev.Change(paths=["tasks/lint.py"], dirty=["lint"]))
    assert board.state("lint") is UnitState.DIRTY


def test_progress_of_a_generator_that_was_skipped_is_its_replayed_count() -> None:
    board = Board(video_project(), Clock())
    board.apply(ev.BuildStarted(tasks=["video.extract", "frames.resize"]))
    board.apply(ev.UnitSkipped(task="video.extract", iter=()))
    board.apply_all(ev.Iteration(task="video.extract", iter=(i,)) for i in range(5))
    assert board.progress("video.extract") == Progress(5, 5)
    assert board.progress("frames.resize") is None  # none of its units seen yet
    board.apply_all(ev.UnitSkipped(task="frames.resize", iter=(i,)) for i in range(2))
    assert board.progress("frames.resize") == Progress(2, 5)
    board.apply(ev.UnitSkipped(task="summary", iter=()))  # a clean collector: nothing pushed
    assert board.progress("summary") is None


def test_describe_change() -> None:
    assert describe_change(["tasks/base.py"], 3) == "tasks/base.py: 3 tasks dirty"
    assert describe_change(["a.py", "b.py"], 1) == "a.py (+1 more): 1 task dirty"


@pytest.mark.parametrize("paused_all", [False, True])
def test_paused_state_comes_from_the_user_not_events(paused_all: bool) -> None:
    board = Board(video_project(), Clock())
    board.apply(started("lint"))
    if paused_all:
        board.set_paused_all(True)
    else:
        board.set_paused("lint", True)
    assert board.state("lint") is UnitState.PAUSED
    board.apply(ev.UnitCancelled(task="lint", iter=(), signal="SIGINT"))
    assert board.state("lint") is UnitState.CANCELLED


def test_a_unit_restarted_before_its_stale_run_is_cancelled_stays_running() -> None:
    board = Board(video_project(), Clock())
    board.apply_all([started("lint"), ev.Change(paths=["tasks/lint.py"], dirty=["lint"]),
                     ev.BuildStarted(tasks=["lint"]), started("lint"),
                     ev.UnitCancelled(task="lint", iter=(), signal="SIGINT")])
    assert board.state("lint") is UnitState.RUNNING
    board.apply(ev.UnitFinished(task="lint", iter=(), duration=1.5))
    assert board.state("lint") is UnitState.CLEAN
    assert board.elapsed("lint") == 1.5


async def test_idle_refreshes_what_the_view_says() -> None:
    app, fake, _ = make_app()
    async with app.run_test(size=(100, 30)):
        fake.project.watched_files = 40
        send(app, ev.Idle())
        assert "watching · 40 files watched" in str(app.header.render())


async def test_every_event_of_a_5000_a_second_stream_is_shown_with_300_tasks() -> None:
    # the loop's lag under this load is W7 in tests/bench/bench_tui.py, measured, not asserted
    from tests.bench.bench_tui import with_app

    load = await with_app(seconds=2.0, rate=5000)
    assert load.sent > 1000
    assert load.left == 0 and load.starts_shown == (load.sent + 3) // 4  # all shown
