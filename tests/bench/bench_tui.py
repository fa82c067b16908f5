"""The TUI under load: 300 tasks, then 10,000, events published at a steady rate on the app's
own loop; and how fast the 10,000-task DAG scrolls.

    python tests/bench/bench_tui.py [SECONDS] [EVENTS_PER_SECOND] [RUNS]

Like the dev engine, a producer coroutine on the same asyncio loop publishes events through an
`EventBus` that `app.inbox.put` subscribes to, in bursts every 10 ms. A probe coroutine sleeps
5 ms at a time and records how late it wakes: the event-loop lag a user feels as a sluggish key.
Prints p50/p99/max of that lag (with and without the app, to show the app's share), the cost
of each fold-and-redraw (`flush`), and how many events were shown. Target: p99 lag <= 50 ms at
5,000 events/s, with 300 tasks and with 10,000.

Scrolling: with the 10,000-task project and the same event load, the DAG is paged down again
and again (PageDown's own action; each page rows never drawn before); a frame is a page and the
screen it leads to: the next page is asked for once every row of this one has been drawn by
Textual's compositor (which draws at most 60 times a second). Prints frames per second.
Target: >= 30.

Layout: the lane layout of a 300-task DAG (random edges, narrow and wide), the best of 5
runs each. Target: under 20 ms, so a structural change redraws within a frame or two.

With RUNS > 1 every measure is repeated and the medians of the runs are printed last.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.test_tui_app import FakeControl, project, task  # noqa: E402
from tests.test_tui_layout import lay, random_dag  # noqa: E402
from watchrun.engine import events as ev  # noqa: E402
from watchrun.engine.control import ProjectView  # noqa: E402
from watchrun.ui.tui.app import WatchrunApp  # noqa: E402

PROBE_EVERY = 0.005
BURST_EVERY = 0.010


def bench_project(groups: int = 30) -> ProjectView:
    """300 tasks: per group a generator, 6 per-iteration steps, a collector, 2 plain tasks."""
    tasks = []
    for g in range(groups):
        gen = f"g{g:02}.frames"
        scope = (gen,)
        tasks.append(task(f"g{g:02}.fetch"))
        tasks.append(task(gen, "generator", (f"g{g:02}.fetch",)))
        previous = gen
        for s in range(6):
            name = f"g{g:02}.step{s}"
            tasks.append(task(name, ups=(previous,), scope=scope))
            previous = name
        tasks.append(task(f"g{g:02}.collect", "collector", (previous,), scope))
        tasks.append(task(f"g{g:02}.report", ups=(f"g{g:02}.collect",)))
    return project(tasks, watched=600)


def event_stream(view: ProjectView) -> Callable[[], ev.Event]:
    """An endless, plausible mix: generators yield, scoped steps start and finish, pushes."""
    scoped = [t.name for t in view.tasks if t.scope and t.kind == "task"]
    generators = [t.name for t in view.tasks if t.kind == "generator"]
    counter = [0]

    def next_event() -> ev.Event:
        n = counter[0]
        counter[0] += 1
        i = n // 4
        name = scoped[i % len(scoped)]
        it = (i // len(scoped),)
        kind = n % 4
        if kind == 0:
            return ev.UnitStarted(task=name, iter=it, reasons=["upstream output changed"])
        if kind == 1:
            return ev.UnitFinished(task=name, iter=it, duration=0.01)
        if kind == 2:
            return ev.Iteration(task=generators[i % len(generators)], iter=it)
        return ev.Push(task=name.split(".")[0] + ".collect", iter=it)

    return next_event


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def percentiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (f"p50 {statistics.median(values) * 1000:6.2f} ms  p99 {p99(values) * 1000:6.2f} ms  "
            f"max {max(values) * 1000:6.2f} ms  (n={len(values)})")


@dataclass
class Load:
    lags: list[float]  # seconds late, per probe
    flushes: list[float]  # seconds per fold-and-redraw
    sent: int
    left: int  # still in the inbox after the run
    starts_shown: int  # unit starts the board counted


async def probe(seconds: float) -> list[float]:
    lags = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        await asyncio.sleep(PROBE_EVERY)
        lags.append(time.perf_counter() - start - PROBE_EVERY)
    return lags


async def produce(bus: ev.EventBus, rate: float, seconds: float,
                  next_event: Callable[[], ev.Event]) -> int:
    sent = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        due = int(elapsed * rate)
        while sent < due:
            bus.publish(next_event())
            sent += 1
        await asyncio.sleep(BURST_EVERY)
    return sent


async def baseline(seconds: float, rate: float) -> list[float]:
    """The same producer with a no-op subscriber: the loop's lag without the app."""
    bus = ev.EventBus()
    bus.subscribe(lambda event: None)
    lags, _ = await asyncio.gather(probe(seconds), produce(bus, rate, seconds,
                                                           event_stream(bench_project())))
    return lags


async def with_app(seconds: float, rate: float, groups: int = 30) -> Load:
    """Run the app headless under load; returns what was measured."""
    view = bench_project(groups)
    app = WatchrunApp(FakeControl(view))
    flushes: list[float] = []
    flush = app.flush

    def timed_flush() -> None:
        start = time.perf_counter()
        flush()
        flushes.append(time.perf_counter() - start)

    app.flush = timed_flush  # type: ignore[method-assign]
    bus = ev.EventBus()
    bus.subscribe(app.inbox.put)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("j", "j", "j")  # a busy scoped task selected: its pane redraws too
        await pilot.pause(0.3)
        flushes.clear()
        lags, sent = await asyncio.gather(probe(seconds),
                                          produce(bus, rate, seconds, event_stream(view)))
        await pilot.pause(0.2)
        shown = sum(row.starts for row in app.board.rows.values())
        return Load(lags, list(flushes), sent, len(app.inbox), shown)


async def scrolling(seconds: float, rate: float, groups: int = 1000) -> tuple[int, float]:
    """PageDown through the DAG under the event load: (frames, seconds)."""
    view = bench_project(groups)
    app = WatchrunApp(FakeControl(view))
    bus = ev.EventBus()
    bus.subscribe(app.inbox.put)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.3)
        producer = asyncio.create_task(produce(bus, rate, seconds + 1, event_stream(view)))
        frames = 0
        dag = app.dag
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            if dag.cursor >= len(dag.graph.rows) - dag.size.height:
                dag.action_jump(0)
            else:
                dag.action_page(1)
            top = round(dag.scroll_offset.y)
            shown = range(top, min(top + dag.size.height, len(dag.graph.rows)))
            while not all(y in dag._strips for y in shown):
                await asyncio.sleep(0.001)
            frames += 1
        took = time.perf_counter() - start
        producer.cancel()
        return frames, took


@dataclass
class Summary:
    p99_300: float
    p99_10k: float
    fps: float


def layout_times() -> str:
    parts = []
    for window in (10, 300):
        names, edges = random_dag(300, 7, window=window)
        best = min(_timed_layout(names, edges) for _ in range(5))
        parts.append(f"window {window}: {best * 1000:.1f} ms")
    return ", ".join(parts)


def _timed_layout(names: list[str], edges: list[tuple[str, str]]) -> float:
    start = time.perf_counter()
    lay(names, edges)
    return time.perf_counter() - start


def run_once(seconds: float, rate: float) -> Summary:
    print(f"layout of 300 tasks (best of 5): {layout_times()}")
    print(f"300 tasks, {rate:.0f} events/s for {seconds:.0f} s")
    print(f"baseline: lag {percentiles(asyncio.run(baseline(seconds, rate)))}")
    p99s = []
    for groups in (30, 1000):
        load = asyncio.run(with_app(seconds, rate, groups))
        if groups != 30:
            print(f"{groups * 10} tasks, {rate:.0f} events/s for {seconds:.0f} s")
        print(f"app:      lag {percentiles(load.lags)}")
        print(f"flush:        {percentiles(load.flushes)}  ({len(load.flushes) / seconds:.1f}/s)")
        print(f"events:   {load.sent} sent ({load.sent / seconds:.0f}/s), {load.left} left in "
              f"the inbox, {load.starts_shown} unit starts shown of {(load.sent + 3) // 4}")
        p99s.append(p99(load.lags))
    frames, took = asyncio.run(scrolling(seconds, rate))
    fps = frames / took
    print(f"scrolling 10000 tasks (PageDown, {rate:.0f} events/s): {frames} frames in "
          f"{took:.1f} s = {fps:.0f} frames/s")
    return Summary(p99s[0], p99s[1], fps)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    rate = float(sys.argv[2]) if len(sys.argv) > 2 else 5000.0
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    results = [run_once(seconds, rate) for _ in range(runs)]
    if runs > 1:
        med = statistics.median
        print(f"medians of {runs} runs: lag p99 300 tasks "
              f"{med(r.p99_300 for r in results) * 1000:.2f} ms, 10000 tasks "
              f"{med(r.p99_10k for r in results) * 1000:.2f} ms; scrolling "
              f"{med(r.fps for r in results):.0f} frames/s")


if __name__ == "__main__":
    main()
