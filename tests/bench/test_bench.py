"""A quick pass of the benchmark suite (`pytest -m bench`), not part of the default test run.

It checks that the harness measures real work: each figure comes from runs that did the
expected number of tasks, or says why there is none. It uses the fast tools (watchrun, make,
ninja, doit) unless WATCHRUN_BENCH_TOOLS names others, and installs nothing unless
WATCHRUN_BENCH_SETUP=1 (then it runs the suite's --setup first).
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402

pytestmark = [pytest.mark.bench, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("bench")
    tools = os.environ.get("WATCHRUN_BENCH_TOOLS", "watchrun,make,ninja,doit")
    argv = ["--quick", "--runs", "2", "--workloads", "W1,W2,W3,W4,W6", "--tools", tools,
            "--workdir", str(work / "work"), "--json", str(work / "quick.json")]
    if os.environ.get("WATCHRUN_BENCH_SETUP") == "1":
        argv.append("--setup")
    return run.main(argv)


def figures(data: dict[str, Any], key: str) -> dict[str, Any]:
    found = [r for r in data["results"] if r.get("key") == key]
    assert found, f"the suite produced no {key} figure"
    return found[0]


def test_every_installed_builder_did_the_expected_work(quick: dict[str, Any]) -> None:
    for key in ("W1-null-100", "W3-100", "W2-full-100-j2"):
        fig = figures(quick, key)
        for name in ("watchrun", "make"):
            entry = fig["tools"][name]
            assert not entry["failed"], f"{key} {name}: {entry['failed']}"
            assert entry["seconds"]["n"] >= 2
        expected = {"W1-null-100": 0, "W3-100": 10, "W2-full-100-j2": 100}[key]
        for name, entry in fig["tools"].items():
            for sample in entry["runs"]:
                if not sample["problem"]:
                    assert sample["executed"] == expected, (key, name, sample)


def test_mtime_and_content_tools_differ_after_touch(quick: dict[str, Any]) -> None:
    touch = figures(quick, "W4-touch")["tools"]
    assert touch["make"]["note"] == "reran the task"
    assert touch["watchrun"]["note"] == "reran nothing", touch["watchrun"]


def test_ratios_are_computed_pair_by_pair(quick: dict[str, Any]) -> None:
    fig = figures(quick, "W1-null-100")
    pairs = zip(fig["tools"]["make"]["runs"], fig["tools"]["watchrun"]["runs"], strict=False)
    expected = [m["seconds"] / w["seconds"] for m, w in pairs
                if not m["problem"] and not w["problem"]]
    assert expected, "no round where both make and watchrun gave a valid run"
    ratio = fig["tools"]["make"]["ratio_to_watchrun"]
    assert ratio["median"] == pytest.approx(statistics.median(expected))
    assert ratio["min"] == pytest.approx(min(expected))


def test_generator_counts_items(quick: dict[str, Any]) -> None:
    first = figures(quick, "W6-first")["tools"]["watchrun"]
    assert not first["failed"], first["failed"]
    assert first["executed"]["median"] == figures(quick, "W6-first")["params"]["iterations"]
