"""The examples under examples/ build, rebuild to nothing, and rerun only what an edit touches.

Each test copies an example to a temporary folder and drives the real CLI on it, the way a user
who copied the folder would. Expected values are computed here from the example's data files,
not taken from watchrun's own output.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, Run, watchrun

pytestmark = pytest.mark.usefixtures("no_leaks")

EXAMPLES = REPO / "examples"


def copy_example(name: str, tmp_path: Path) -> Path:
    """The example as committed: no state, no outputs from someone's local runs."""
    dest = tmp_path / name
    shutil.copytree(EXAMPLES / name, dest,
                    ignore=shutil.ignore_patterns(".watchrun", "out", "__pycache__"))
    return dest


def build(root: Path) -> Run:
    run = watchrun(root, "build", "--json")
    assert run.code == 0, run.stdout + run.stderr
    assert run.events[-1]["event"] == "build_finished" and run.events[-1]["ok"]
    return run


def show(root: Path, task: str) -> Any:
    run = watchrun(root, "show", task, "--json")
    assert run.code == 0, run.stderr
    return json.loads(run.stdout)


def replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} should occur once in {path}"
    path.write_text(text.replace(old, new))


def test_every_example_has_a_test_here() -> None:
    folders = sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir())
    assert folders == ["classes", "generators", "quickstart"]


# -- quickstart ---------------------------------------------------------------------------------


def test_quickstart_builds_rebuilds_nothing_and_reruns_one_branch(tmp_path: Path) -> None:
    root = copy_example("quickstart", tmp_path)
    first = build(root)
    assert sorted(first.ran()) == ["clean.sales", "clean.weather", "report", "stats"]
    report = (root / "out/report.md").read_text()
    assert report.startswith("# Weekly report\n")
    for table in ("sales", "weather"):  # rows with an empty value are dropped
        rows = (root / f"data/{table}.csv").read_text().splitlines()[1:]
        assert f"| {table} | {sum(not r.endswith(',') for r in rows)} |" in report

    assert build(root).ran() == []

    replace_once(root / "data/weather.csv", "2026-01-04,south,4.8", "2026-01-04,south,40.8")
    third = build(root)
    assert sorted(third.ran()) == ["clean.weather", "report", "stats"]
    assert ("clean.sales", ()) in third.units("unit_skipped")
    assert "| 40.8 |" in (root / "out/report.md").read_text()  # the new maximum


# -- generators ---------------------------------------------------------------------------------


@dataclass
class Request:
    index: int  # its iteration of `requests`
    file: str
    line: int
    hour: str  # its 60-minute window, e.g. "2024-05-08T14:00"
    status: int


def requests_in(root: Path) -> list[Request]:
    """The requests the example's generator should yield, read independently of it: every
    log line in file order, except health checks (the services table gives them no service)."""
    found: list[Request] = []
    for path in sorted((root / "data/logs").glob("*.log")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            time, _ip, _method, url, status, _ms = line.split()
            if url.startswith("/healthz"):
                continue
            found.append(Request(len(found), path.name, number, time[:14] + "00", int(status)))
    return found


def per_task(run: Run, event: str, task: str) -> list[tuple[int, ...]]:
    return [key for name, key in run.units(event) if name == task]


def position(run: Run, event: str, task: str, key: tuple[int, ...] = ()) -> int:
    for i, e in enumerate(run.events):
        if e["event"] == event and e.get("task") == task and tuple(e["iter"]) == key:
            return i
    raise AssertionError(f"no {event} event for {task}{list(key)}")


@pytest.fixture
def generators(tmp_path: Path) -> tuple[Path, Run]:
    root = copy_example("generators", tmp_path)
    return root, build(root)


def test_generators_first_build_follows_the_seed_sequence(generators: tuple[Path, Run]) -> None:
    root, run = generators
    requests = requests_in(root)
    n = len(requests)
    hours = list(dict.fromkeys(r.hour for r in requests))
    assert 200 <= n <= 400 and len(hours) > 10  # a few hundred records, many windows

    # START_GENERATOR, then ITER_TASK per request, each running the per-request step
    assert Counter(t for t, key in run.units("unit_started") if key == ()) == {
        "services": 1, "requests": 1, "windows": 1, "summary": 1, "report": 1}
    assert per_task(run, "iteration", "requests") == [(i,) for i in range(n)]
    assert sorted(per_task(run, "unit_finished", "enrich.request")) == [(i,) for i in range(n)]
    assert position(run, "unit_finished", "services") < position(run, "unit_started", "requests")
    assert position(run, "iteration", "requests", (0,)) < position(
        run, "unit_started", "enrich.request", (0,))

    # the inner generator: one push per request; a window closes when the next one begins, and
    # finish() yields the last one, numbered after the n requests
    assert per_task(run, "push", "windows") == [(i,) for i in range(n)]
    windows = per_task(run, "iteration", "windows")
    first_of_next = [r.index for a, r in pairwise(requests) if a.hour != r.hour]
    assert windows == [(i, 0) for i in first_of_next] + [(n, 0)]
    assert len(windows) == len(hours)

    # PUSH_TASK per window in order, each after that window's stats; then PULL_TASK; then report
    assert per_task(run, "push", "summary") == windows
    for key in windows:
        assert position(run, "unit_finished", "window_stats", key) < position(
            run, "push", "summary", key)
    assert run.units("gather") == [("summary", ())]
    assert position(run, "push", "summary", windows[-1]) < position(run, "gather", "summary")
    assert position(run, "gather", "summary") < position(run, "unit_started", "report")
    assert run.events[-1]["ran"] == 5 + n + len(windows)  # services requests windows summary report

    summary = show(root, "summary")
    assert summary["requests"] == n
    assert summary["windows"] == len(hours)
    assert summary["errors"] == sum(r.status >= 500 for r in requests)
    assert (summary["first"], summary["last"]) == (hours[0], hours[-1])
    assert sorted(summary["services"]) == ["accounts", "cart", "orders", "search", "static"]
    assert summary["worst_windows"][0]["start"] == "2024-05-08T14:00"  # the incident
    assert (root / "out/report.md").read_text().startswith(
        f"# Traffic report\n\n{n} requests in {len(hours)} windows")


def test_generators_second_build_runs_nothing(generators: tuple[Path, Run]) -> None:
    root, first = generators
    again = build(root)
    assert again.ran() == []
    assert again.units("push") == [] and again.units("gather") == []
    # the iterations are replayed from the store, not produced by running the generator:
    # each generator's keys in the same order (how two generators interleave is timing)
    for task in ("requests", "windows"):
        assert [u for u in again.units("iteration") if u[0] == task] == \
            [u for u in first.units("iteration") if u[0] == task]
    assert again.events[-1]["skipped"] == first.events[-1]["ran"]


def test_generators_one_changed_log_line_reruns_one_request(
        generators: tuple[Path, Run]) -> None:
    root, first = generators
    requests = requests_in(root)
    target = next(r for r in requests if r.file == "2024-05-07.log" and r.status == 200)
    path = root / "data/logs" / target.file
    lines = path.read_text().splitlines(keepends=True)
    assert " 200 " in lines[target.line - 1]
    lines[target.line - 1] = lines[target.line - 1].replace(" 200 ", " 503 ")
    path.write_text("".join(lines))
    window = next(k for k in per_task(first, "iteration", "windows") if k[0] > target.index)

    run = build(root)
    assert sorted(run.ran()) == sorted([
        "requests",  # its input changed: it runs again from start = 0
        f"enrich.request[{target.index}]",
        "windows",  # replays every request into a fresh process
        "window_stats" + "".join(f"[{i}]" for i in window),
        "summary",
        "report",
    ])
    skipped = per_task(run, "unit_skipped", "enrich.request")
    assert sorted(skipped) == [(r.index,) for r in requests if r is not target]
    assert ("services", ()) in run.units("unit_skipped")
    assert per_task(run, "push", "summary") == per_task(first, "push", "summary")
    assert show(root, "summary")["errors"] == sum(r.status >= 500 for r in requests) + 1


def test_generators_collector_edit_replays_pushes_without_upstreams(
        generators: tuple[Path, Run]) -> None:
    root, first = generators
    replace_once(root / "tasks/summary.py", "ranked[:worst]", "ranked[: worst - 2]")
    run = build(root)
    assert sorted(run.ran()) == ["report", "summary"]
    assert per_task(run, "push", "summary") == per_task(first, "push", "summary")
    assert run.units("gather") == [("summary", ())]
    assert len(show(root, "summary")["worst_windows"]) == 3


def test_generators_dry_run_after_an_edit_says_every_unit_and_runs_none(
        generators: tuple[Path, Run]) -> None:
    """The scope's values are known (its generator is clean): the dry run says each task's
    units in one line with their count, ends, and leaves the next build all of them."""
    root, _ = generators
    count = len(requests_in(root))
    replace_once(root / "tasks/enrich/base.py", 'return "ok"', 'return "fine"')

    dry = watchrun(root, "build", "--dry-run", timeout=30)

    assert dry.code == 0, dry.stdout + dry.stderr
    assert f"would run enrich.request  ({count} iteration units: code changed: outcome" \
        in dry.stdout, dry.stdout
    assert len(per_task(build(root), "unit_started", "enrich.request")) == count  # none ran


# -- classes ------------------------------------------------------------------------------------


def least_squares(points: list[tuple[float, float]]) -> tuple[float, float]:
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / \
        sum((x - mean_x) ** 2 for x, _ in points)
    return round(slope, 4), round(mean_y - slope * mean_x, 4)


def test_classes_returns_its_own_dataclass_and_writes_its_outputs(tmp_path: Path) -> None:
    root = copy_example("classes", tmp_path)
    first = build(root)
    assert first.ran() == ["fit", "predict"]
    rows = (root / "data/measurements.csv").read_text().splitlines()[1:]
    points = [(float(x), float(y)) for x, y in (r.split(",") for r in rows)]
    slope, intercept = least_squares(points)
    shown = watchrun(root, "show", "fit")
    assert shown.code == 0
    assert shown.stdout.strip() == f"Line(slope={slope}, intercept={intercept}, points=6)"
    expected = {str(x): round(slope * x + intercept, 3) for x in (7, 8, 10)}
    assert show(root, "predict") == expected
    assert (root / "out/predictions.csv").read_text() == "x,y\n" + "".join(
        f"{x},{y}\n" for x, y in expected.items())
    assert (root / "out/fit.txt").exists()
    assert build(root).ran() == []

    (root / "out/predictions.csv").unlink()  # a declared output gone: its task reruns
    assert build(root).ran() == ["predict"]

    replace_once(root / "data/measurements.csv", "6,12.2", "6,14.0")
    assert build(root).ran() == ["fit", "predict"]
    assert watchrun(root, "clean", "--outputs").code == 0
    assert not (root / "out/fit.txt").exists() and not (root / "out/predictions.csv").exists()
