"""The TUI's per-task state comes from the plan: paused, continued, forced (issue 14), against
the real dev engine and real worker processes (the harness of test_tui_engine)."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from tests.test_tui_engine import Live, built, status
from tests.test_tui_engine import anyio_backend as anyio_backend  # the fixtures
from tests.test_tui_engine import root as root
from watchrun.engine import events as ev

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30), pytest.mark.usefixtures("no_leaks")]


async def interrupt_then_r(live: Live) -> tuple[int, ev.UnitStarted]:
    """`i` on the selected running hold, then (once dev is idle) `r`: where the events of the
    rerun start, and its unit_started."""
    mark = len(live.events)
    await live.pilot.press("i")
    await live.until_event(ev.UnitCancelled, "hold", after=mark)
    await live.idle(after=mark)
    (live.root / "hold.pid").unlink()
    mark = len(live.events)
    await live.pilot.press("r")
    started = await live.until_event(ev.UnitStarted, "hold", after=mark)
    assert isinstance(started, ev.UnitStarted)
    return mark, started


async def test_a_paused_unit_replaced_by_a_rerun_is_not_shown_paused(root: Path) -> None:
    async with built(root) as live:
        pid = await live.hold_pid()
        await live.select("hold")
        await live.pilot.press("space")
        await live.until(lambda: status(pid) == psutil.STATUS_STOPPED, "SIGSTOP")
        assert "1 paused" in live.header()
        (live.root / "hold.pid").unlink()
        mark = len(live.events)
        await live.pilot.press("f")  # force: the paused unit is cancelled and replaced
        await live.until_event(ev.UnitStarted, "hold", after=mark)
        new_pid = await live.hold_pid()
        assert new_pid != pid
        await live.until(lambda: "paused" not in live.header(), "paused to go")
        await live.until(lambda: live.marker("hold") == "▶", "hold to show running")
        assert live.engine.paused_tasks() == set()
        (live.root / "hold.go").write_text("")
        await live.until_event(ev.UnitFinished, "hold", after=mark)


async def test_r_continues_an_interrupted_task_and_f_forces_a_clean_one(root: Path) -> None:
    async with built(root) as live:
        await live.hold_pid()
        await live.select("hold")
        mark, started = await interrupt_then_r(live)
        assert started.reasons == ["last run cancelled"]  # continued, not forced
        await live.hold_pid()
        (live.root / "hold.go").write_text("")
        await live.until_event(ev.UnitFinished, "hold", after=mark)
        await live.idle(after=mark)
        mark = len(live.events)
        await live.pilot.press("f")
        started = await live.until_event(ev.UnitStarted, "hold", after=mark)
        assert isinstance(started, ev.UnitStarted) and "forced" in " ".join(started.reasons)
        await live.until_event(ev.UnitFinished, "hold", after=mark)


async def test_r_continues_a_forced_run_that_was_interrupted(root: Path) -> None:
    """r on a clean task forces it; i interrupts that run; r again continues it, which
    for a forced run is forcing it again (its units are clean under their signatures:
    a plain continue ran nothing, and the row turned clean)."""
    async with built(root) as live:
        await live.hold_pid()
        (live.root / "hold.go").write_text("")
        await live.idle()
        (live.root / "hold.go").unlink()
        (live.root / "hold.pid").unlink()
        await live.select("hold")
        mark = len(live.events)
        await live.pilot.press("r")  # clean: forced
        await live.until_event(ev.UnitStarted, "hold", after=mark)
        await live.hold_pid()
        mark, started = await interrupt_then_r(live)
        assert "forced" in " ".join(started.reasons)
        await live.hold_pid()
        (live.root / "hold.go").write_text("")
        await live.until_event(ev.UnitFinished, "hold", after=mark)
