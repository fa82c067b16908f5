"""Turn the raw results (JSON) into BENCHMARKS.md: machine, versions, the command, the targets,
one table per figure, the dev-loop latencies, and the chart of ratios."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from peers import REPO

PEERS_ORDER = ["watchrun", "make", "ninja", "doit", "pytask", "snakemake",
               "entr", "nodemon", "watchfiles", "doit-auto"]

# (figure key, what, limit, how to read the measurement)
TARGETS = [
    ("W1-null-1000", "null build of 1,000 tasks", "<= 0.12 s", "seconds", 0.12),
    ("W1-null-1000", "null build of 1,000 tasks vs doit", ">= 2.5x faster", "ratio:doit", 2.5),
    ("W2-full-1000-j2", "full build, 1,000 trivial tasks, 2 jobs", "<= 0.8 s", "seconds", 0.8),
    ("W3-1000", "rebuild after one edit (100 tasks)", "<= 0.2 s", "seconds", 0.2),
    ("W4-first", "1 GB of inputs: first hash", "<= 1.0 s", "seconds", 1.0),
    ("W4-touch", "1 GB of inputs: no-op after touching every mtime", "<= 0.05 s, reruns nothing",
     "touch", 0.05),
    ("W6-first", "generator: 10,000 iterations", ">= 3,000 it/s", "rate", 3000.0),
    ("W6-noop", "generator: no-op rebuild", "<= 0.5 s", "seconds", 0.5),
    ("W6-collector", "generator: after changing only the collector", "<= 2 s", "seconds", 2.0),
    ("W6-scope-rss", "generator: peak RSS of a 100,000-item scope", "<= 300 MB", "rss", 300.0),
]


# The hand-written section on where watchrun is behind and why, kept apart so that a new run
# of the suite does not overwrite it (update it when the figures change).
ANALYSIS = Path(__file__).with_name("analysis.md")

def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    fs = subprocess.run(["df", "-T", str(REPO)], capture_output=True, text=True).stdout
    fs_type = fs.splitlines()[-1].split()[1] if fs.strip() else "unknown"
    return {"cpu": cpu, "cores": str(os.cpu_count()), "memory": f"{mem_gb:.0f} GiB",
            "kernel": platform.release(), "os": platform.platform(), "filesystem": fs_type}


def _fmt_s(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 0.1:
        return f"{value * 1000:.1f} ms"
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def _stat(entry: dict[str, Any] | None, field: str = "median") -> float | None:
    return None if not entry else entry.get(field)


def _order(names: list[str]) -> list[str]:
    return sorted(names, key=lambda n: PEERS_ORDER.index(n) if n in PEERS_ORDER else 99)


def figure_table(fig: dict[str, Any]) -> list[str]:
    lines = [f"### {fig['workload']}: {fig['name']}", "",
             "| tool | median | min | max | CPU (median) | peak RSS | tasks run | "
             "time / watchrun time (median, min-max) | note |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in _order(list(fig["tools"])):
        entry = fig["tools"][name]
        if entry["failed"] and not entry["seconds"]:
            lines.append(f"| {name} | no figure: {_cell(entry['failed'])} | | | | | | | "
                         f"{_cell(entry['note'])} |")
            continue
        secs = entry["seconds"]
        ratio = entry.get("ratio_to_watchrun") if comparable(entry) else None
        ratio_text = "(reference)" if name == "watchrun" else (
            f"{ratio['median']:.2f}x ({ratio['min']:.2f}-{ratio['max']:.2f})" if ratio else
            "-" if comparable(entry) else "n/a: another size")
        executed = entry["executed"]
        lines.append(
            f"| {name} | {_fmt_s(secs['median'])} | {_fmt_s(secs['min'])} | "
            f"{_fmt_s(secs['max'])} | {_fmt_s(_stat(entry['cpu_seconds']))} | "
            f"{_stat(entry['peak_rss_mb']) or 0:.0f} MB | "
            f"{executed['median']:.0f} | {ratio_text} | {_cell(entry['note'])} |")
    lines.append("")
    return lines


def comparable(entry: dict[str, Any]) -> bool:
    """False for a tool measured at another size than watchrun (a capped W6 peer)."""
    return bool(entry.get("comparable", True)) and "capped" not in entry.get("note", "")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")[:220]


def latency_table(res: dict[str, Any]) -> list[str]:
    lines = [f"### {res['workload']}: {res['name']} ({res['params']['saves']} saves)", "",
             "| tool | save -> signal to the stale unit (p50 / p90 / max) | "
             "save -> new code running (p50 / p90 / max) | restarts | missed | extra starts |",
             "| --- | --- | --- | --- | --- | --- |"]

    def trio(entry: dict[str, Any] | None) -> str:
        if not entry:
            return "n/a"
        return " / ".join(_fmt_s(entry[k]) for k in ("p50", "p90", "max"))

    for name in _order(list(res["tools"])):
        entry = res["tools"][name]
        if "saves" not in entry:
            lines.append(f"| {name} | no figure: {_cell(entry.get('failed', ''))} | | | | |")
            continue
        lines.append(f"| {name} | {trio(entry['signal'])} | {trio(entry['start'])} | "
                     f"{entry['restarts']} | {entry['missed']} | {entry['extra_starts']} |")
    lines.append("")
    return lines


def scale_table(res: dict[str, Any]) -> list[str]:
    lines = [f"### {res['workload']}: {res['name']}", ""]
    if res.get("failed"):
        return [*lines, f"No figure: {res['failed']}", ""]
    wall, cpu = res["edit_to_dispatch_s"], res["edit_to_dispatch_cpu_s"]
    return [*lines, "| measure | value |", "| --- | --- |",
            f"| first build under dev | {_fmt_s(res['first_build_s'])} |",
            f"| RSS once idle: watchrun process | {res['idle_rss_main_mb']:.0f} MB |",
            f"| RSS once idle: whole tree (with workers) | {res['idle_rss_tree_mb']:.0f} MB |",
            f"| one-file edit -> dispatch, wall (p50 / max) | {_fmt_s(wall['p50'])} / "
            f"{_fmt_s(wall['max'])} |",
            f"| one-file edit -> dispatch, CPU of watchrun (p50 / max) | {_fmt_s(cpu['p50'])} / "
            f"{_fmt_s(cpu['max'])} |", ""]


def target_rows(results: list[dict[str, Any]]) -> list[str]:
    by_key = {r.get("key"): r for r in results if r.get("key")}
    lines = ["| target | limit | watchrun measured | met? |", "| --- | --- | --- | --- |"]
    for key, what, limit, how, bound in TARGETS:
        fig = by_key.get(key)
        if fig is not None and not _at_target_size(key, fig["params"]):
            lines.append(f"| {what} | {limit} | measured at a smaller size only | - |")
            continue
        entry = fig["tools"].get("watchrun") if fig else None
        value, met = _target_value(fig, entry, how, bound)
        lines.append(f"| {what} | {limit} | {value} | {met} |")
    return [*lines, ""]


def _at_target_size(key: str, params: dict[str, Any]) -> bool:
    """The targets are stated for the full sizes; a --quick run is not held to them."""
    if key.startswith("W4"):
        return bool(params.get("bytes", 0) >= 10**9)
    if key == "W6-scope-rss":
        return bool(params.get("iterations") == 100_000)
    if key.startswith("W6"):
        return bool(params.get("iterations") == 10_000)
    return True


def _target_value(fig: dict[str, Any] | None, entry: dict[str, Any] | None, how: str,
                  bound: float) -> tuple[str, str]:
    if fig is None or entry is None:
        return "not measured in this run", "-"
    if entry["failed"] and not entry["seconds"]:
        return f"no figure: {_cell(entry['failed'])}", "no"
    median = entry["seconds"]["median"]
    if how == "seconds":
        return _fmt_s(median), "yes" if median <= bound else "no"
    if how == "touch":
        reran = entry["executed"]["max"] > 0
        ok = median <= bound and not reran
        return f"{_fmt_s(median)}, {'reran the task' if reran else 'reran nothing'}", (
            "yes" if ok else "no")
    if how == "rate":
        rate = fig["params"]["iterations"] / median
        return f"{rate:,.0f} it/s", "yes" if rate >= bound else "no"
    if how == "rss":
        rss = entry["peak_rss_mb"]["median"]
        return f"{rss:.0f} MB", "yes" if rss <= bound else "no"
    peer = how.split(":", 1)[1]
    ratio = fig["tools"].get(peer, {}).get("ratio_to_watchrun")
    if not ratio:
        return f"no {peer} figure", "-"
    return f"{ratio['median']:.2f}x", "yes" if ratio["median"] >= bound else "no"


def render(data: dict[str, Any], json_rel: str, chart_rel: str | None) -> str:
    meta = data["meta"]
    out = ["# Benchmarks", "",
           "watchrun against make, ninja, doit, pytask and Snakemake (builds), and entr, nodemon, "
           "the watchfiles CLI and `doit auto` (dev loop). Every figure below comes from one run "
           "of the suite on the machine described here; how the suite works is in "
           "`tests/bench/README.md`.", "",
           "Reproduce with:", "", "```", meta["command"], "```", "",
           f"Run on {meta['date']}, {meta['runs']} measured runs per figure after a warm-up "
           f"(median, min, max). Total time of the suite: {meta['elapsed_s'] / 60:.1f} min.", "",
           "The load average is part of the machine table: on a busy machine absolute times "
           "are noisy, while the ratios, taken from runs made side by side, hold better.", "",
           "## Machine", "", "| | |", "| --- | --- |"]
    out += [f"| {k} | {v} |" for k, v in meta["machine"].items()]
    out += ["", "## Versions", "", "| tool | version |", "| --- | --- |"]
    out += [f"| {k} | {v} |" for k, v in meta["versions"].items()]
    results = data["results"]
    out += ["", "## watchrun's targets", "", *target_rows(results)]
    if chart_rel:
        out += ["## Ratios", "",
                "Each bar: a peer's time divided by watchrun's, the median over rounds in which "
                "both ran side by side (above 1: watchrun is faster). Log scale.", "",
                f"![ratios of each peer's time to watchrun's]({chart_rel})", ""]
    out += ["## Figures", "",
            "*tasks run*: outputs the tool rewrote during the timed run (counted on disk from "
            "mtimes; for watchrun also its `unit_started` events; for W6, per-item tasks). A run "
            "whose count is not the expected one, or whose final outputs have the wrong content, "
            "is rejected: it gives no figure. *peak RSS*: the largest single process of the "
            "tool's process tree (wait4 ru_maxrss). *CPU*: user + system time of the whole tree.",
            ""]
    for res in results:
        kind = res.get("kind", "build")
        if kind == "build":
            out += figure_table(res)
        elif kind == "latency":
            out += latency_table(res)
        elif kind == "scale":
            out += scale_table(res)
        elif kind == "external":
            out += [f"### {res['workload']}: {res['name']}", "", "```",
                    res.get("output", "").strip()[-4000:], "```", ""]
    if ANALYSIS.exists():  # written by people after a run: why the figures are what they are
        out += [ANALYSIS.read_text().strip(), ""]
    out += ["## Raw results", "", f"Every run, with its exit code and counts: `{json_rel}`.", ""]
    return "\n".join(out)


def write_chart(json_path: Path, png_path: Path, python: Path) -> bool:
    """Draw the chart with matplotlib from the bench venv (the harness itself needs none)."""
    script = Path(__file__).with_name("chart.py")
    if not python.exists():
        return False
    proc = subprocess.run([str(python), str(script), str(json_path), str(png_path)],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        print("chart failed:", proc.stderr[-1000:])
    return proc.returncode == 0


def write_report(data: dict[str, Any], json_path: Path, markdown: Path, chart: Path | None
                 ) -> None:
    base = markdown.parent
    json_rel = os.path.relpath(json_path, base)
    chart_rel = os.path.relpath(chart, base) if chart else None
    markdown.write_text(render(data, json_rel, chart_rel))


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data
