"""How the TUI looks, as SVG snapshots (pytest-textual-snapshot).

Clocks and durations are frozen: events carry fixed times and the app's clock is fixed. NO_COLOR
and TEXTUAL_THEME are cleared so the snapshots do not depend on who runs them. After a change
on purpose: `pytest tests/test_tui_snapshots.py --snapshot-update`, then look at the report.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_tui_app import (
    T0,
    FakeControl,
    send,
    started,
    until,
    video_project,
    wide_project,
)
from watchrun.engine import events as ev
from watchrun.engine.control import ErrorView, ProjectView
from watchrun.state.store import ResultRecord, Store, UnitStatus
from watchrun.state.store import UnitState as StoredState
from watchrun.ui.tui.app import WatchrunApp
from watchrun.ui.tui.records import Records

Compare = Callable[..., bool]
TRACE = """\
Traceback (most recent call last):
  File "tasks/frames/detect.py", line 14, in run
    boxes = model.predict(frame)
  File "tasks/frames/detect.py", line 9, in predict
    raise ValueError(f"frame {index} is empty")
ValueError: frame 3 is empty"""


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("TEXTUAL_THEME", raising=False)
    monkeypatch.setenv("TZ", "UTC")  # times of day in the pictures
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def frozen_app(view: ProjectView, records: Records | None = None, **control: Any
               ) -> WatchrunApp:
    return WatchrunApp(FakeControl(view, **control), clock=lambda: T0 + 42.0, records=records)


def stored_runs(state_dir: Path) -> Records:
    """A store that remembers three runs of `report` from an earlier session (and a failure)."""
    with Store(state_dir) as store:
        for k, (took, ago) in enumerate([(2.5, 86_400 * 2), (2.1, 7200), (1.9, 3600)]):
            store.record_result(ResultRecord("report", f"sig{k}", "0" * 64, {}, took,
                                             T0 - ago))
        store.set_unit_state(StoredState("report", (), "sig3", UnitStatus.FAILED, "m", None,
                                         0.4, "ValueError: no rows", T0 - 600))
        store.commit()
    return Records(state_dir)


def mid_build(app: WatchrunApp) -> None:
    """download clean, the generator at its 57th frame, frame 3 failed in detect, lint running."""
    scope = ["download", "video.extract", "frames.resize", "frames.detect", "summary", "report",
             "lint"]
    events: list[ev.Event] = [
        ev.Change(paths=["tasks/base.py"], dirty=["video.extract", "frames.resize",
                                                  "frames.detect"], time=T0 - 1),
        ev.BuildStarted(tasks=scope, time=T0),
        ev.UnitSkipped(task="download", iter=(), time=T0),
        started("video.extract", at=T0, reasons=["param size: 32 -> 64 (tasks/base.py:7)"]),
        started("summary", at=T0),
        started("lint", at=T0 + 30),
    ]
    for i in range(57):
        at = T0 + i * 0.5
        events += [ev.Iteration(task="video.extract", iter=(i,), time=at),
                   started("frames.resize", (i,), at=at),
                   ev.UnitFinished(task="frames.resize", iter=(i,), duration=0.2, time=at + 0.2)]
        if i < 40:
            events += [started("frames.detect", (i,), at=at + 0.2)]
            if i == 3:
                events.append(ev.UnitFailed(task="frames.detect", iter=(i,), error=TRACE,
                                            time=at + 0.3))
            else:
                events += [ev.UnitFinished(task="frames.detect", iter=(i,), duration=0.1,
                                           time=at + 0.3),
                           ev.Push(task="summary", iter=(i,), time=at + 0.3)]
    send(app, *events)


def run_before(*keys: str, setup: Callable[[WatchrunApp], None] | None = None,
               wait: Callable[[WatchrunApp], bool] | None = None
               ) -> Callable[[Any], Awaitable[None]]:
    async def before(pilot: Any) -> None:
        app = pilot.app
        if setup is not None:
            setup(app)
        await pilot.press(*keys)
        # after a page key the detail pane follows once the paging stops
        await until(pilot, lambda: not app._paged_at)
        if wait is not None:
            await until(pilot, lambda: wait(app))
        app.flush()
        await pilot.pause()

    return before


def test_mid_build_at_80x24(snap_compare: Compare) -> None:
    app = frozen_app(video_project())
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before("j", setup=mid_build))


def test_a_failed_task_with_traceback_and_log_wide(snap_compare: Compare, tmp_path: Path
                                                    ) -> None:
    log = tmp_path / "frames.detect.3.log"
    log.write_text("loading model weights\nframe 3: 0 boxes\n")
    app = frozen_app(video_project(), logs={"frames.detect": str(log)})
    before = run_before("j", "j", "j", setup=mid_build,
                        wait=lambda app: "frame 3: 0 boxes" in app.detail.log_view.lines)
    assert snap_compare(app, terminal_size=(140, 36), run_before=before)


def test_project_errors_and_a_broken_task(snap_compare: Compare) -> None:
    view = video_project()
    view.errors = [ErrorView("tasks/lint.py", 2, "unknown key 'afterr' in the task header"),
                   ErrorView("tasks/old.py", 5, "syntax error: invalid syntax")]
    app = frozen_app(view, dirty_reasons={"download": ["never run"]})
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before())


def test_the_help_screen(snap_compare: Compare) -> None:
    app = frozen_app(video_project())
    assert snap_compare(app, terminal_size=(100, 30), run_before=run_before("question_mark"))


def test_300_tasks_scrolled(snap_compare: Compare) -> None:
    def busy(app: WatchrunApp) -> None:
        send(app, ev.BuildStarted(tasks=[f"t{i:03}" for i in range(300)], time=T0),
             *(ev.UnitSkipped(task=f"t{i:03}", iter=(), time=T0) for i in range(140)),
             *(started(f"t{i:03}", at=T0 + i / 10) for i in range(140, 144)))

    app = frozen_app(wide_project(300))
    before = run_before("pagedown", "pagedown", "pagedown", "pagedown", "pagedown", "pagedown",
                        "pagedown", setup=busy)
    assert snap_compare(app, terminal_size=(100, 40), run_before=before)


def test_no_color(snap_compare: Compare, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    app = frozen_app(video_project())
    assert app.no_color
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before("j", setup=mid_build))


def test_mid_build_at_160x45_the_dag_takes_what_it_needs(snap_compare: Compare) -> None:
    app = frozen_app(video_project())
    assert snap_compare(app, terminal_size=(160, 45), run_before=run_before("j", "j",
                                                                           setup=mid_build))


def test_a_paused_scope_with_the_filter(snap_compare: Compare) -> None:
    def paused(app: WatchrunApp) -> None:
        mid_build(app)
        app.board.set_paused("video.extract", True)

    app = frozen_app(video_project())
    assert snap_compare(app, terminal_size=(120, 30),
                        run_before=run_before("slash", "f", "r", "a", "enter", setup=paused))


def test_a_folded_scope(snap_compare: Compare) -> None:
    app = frozen_app(video_project())
    assert snap_compare(app, terminal_size=(120, 24),
                        run_before=run_before("j", "enter", setup=mid_build))


def test_history_of_a_task_from_the_store(snap_compare: Compare, tmp_path: Path) -> None:
    records = stored_runs(tmp_path / ".watchrun")

    def rerun(app: WatchrunApp) -> None:
        send(app, started("report", at=T0, reasons=["upstream output changed: summary"]),
             ev.UnitFinished(task="report", iter=(), duration=1.5, time=T0 + 1.5))

    app = frozen_app(video_project(), records)
    assert snap_compare(app, terminal_size=(110, 24),
                        run_before=run_before("end", "k", "h", setup=rerun))
