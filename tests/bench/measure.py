"""Run one command and measure it: wall time, CPU time and peak RSS of its whole process tree.

The tool is started in its own session through measure_exec (a tiny C launcher, compiled on
first use into the cache dir), which forks it, reaps it with wait4 and reports the usage of the
tool together with every descendant it waited for: CPU time is the tree's total, and ru_maxrss
is the largest single process in the tree. The launcher matters: Linux carries the RSS
high-water mark of the image a process replaces at exec into its ru_maxrss, so a tool started
straight from this (large) Python process would report our RSS as its peak. Without a C
compiler the harness spawns directly and says so (rss_clean = False). Nothing polls while the
tool runs, so the measurement does not steal a core from a 2-core machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from peers import CACHE

LAUNCHER_SOURCE = Path(__file__).with_name("measure_exec.c")
LAUNCHER = CACHE / "bin" / "measure_exec"


def launcher() -> Path | None:
    """The compiled launcher, built when missing or older than its source; None without cc."""
    fresh = LAUNCHER.exists() and LAUNCHER.stat().st_mtime >= LAUNCHER_SOURCE.stat().st_mtime
    if not fresh:
        LAUNCHER.parent.mkdir(parents=True, exist_ok=True)
        try:
            proc = subprocess.run(["cc", "-O2", "-o", str(LAUNCHER), str(LAUNCHER_SOURCE)],
                                  capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if proc.returncode != 0:
            return None
    return LAUNCHER


@dataclass
class Sample:
    """One timed run of one tool."""

    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    exit_code: int
    timed_out: bool
    rss_clean: bool = True  # False: peak RSS may include the harness's own (no launcher)
    stdout: str = field(repr=False, default="")
    stderr: str = field(repr=False, default="")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def brief(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("stdout")
        data["stderr_tail"] = self.stderr[-800:] if not self.ok else ""
        data.pop("stderr")
        return data


def run_measured(argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None,
                 timeout: float = 120.0) -> Sample:
    """Run argv in cwd to completion (or kill its process group after timeout) and measure it."""
    exe = launcher()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(prefix="wrb-usage-") as usage_file:
        command = [str(exe), usage_file.name, *argv] if exe else list(argv)
        timed_out = threading.Event()
        start = time.perf_counter()
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True)

        def on_timeout() -> None:
            timed_out.set()
            kill_group(proc.pid)

        timer = threading.Timer(timeout, on_timeout)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # interrupted: leave nothing running behind us
            kill_group(proc.pid)
            raise
        finally:
            timer.cancel()
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        kill_group(proc.pid)  # a tool that left a daemon behind must not skew the next run
        out.seek(0)
        err.seek(0)
        sample = Sample(
            seconds=seconds,
            cpu_seconds=usage.ru_utime + usage.ru_stime,
            peak_rss_mb=usage.ru_maxrss / 1024.0,
            exit_code=proc.returncode,
            timed_out=timed_out.is_set(),
            rss_clean=False,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )
        report = Path(usage_file.name).read_text().split() if exe else []
        if len(report) == 5:  # the launcher's own view of the tool, without our overhead
            elapsed_ns, maxrss_kb, utime_us, stime_us, _ = (int(x) for x in report)
            sample.seconds = elapsed_ns / 1e9
            sample.cpu_seconds = (utime_us + stime_us) / 1e6
            sample.peak_rss_mb = maxrss_kb / 1024.0
            sample.rss_clean = True
        return sample


def kill_group(pgid: int) -> None:
    """End what is left of a process group we started (by its id, never by name)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def summary(values: Sequence[float]) -> dict[str, float] | None:
    """Median with min and max, or None when there is nothing to summarise."""
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": float(len(values))}


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (p50, p90) of a small sample."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100.0 * len(ordered) + 0.4999)))
    return ordered[rank - 1]


def tree_rss_mb(pid: int, children: bool = True) -> float:
    """Current total RSS of a process and (unless children=False) all its descendants."""
    total = 0
    for child in (_descendants(pid) if children else []) + [pid]:
        try:
            text = Path(f"/proc/{child}/status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
                break
    return total / 1024.0


def tree_cpu_seconds(pid: int, children: bool = True) -> float:
    """User + system CPU time so far of a process and (unless children=False) its live
    descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for proc in (_descendants(pid) if children else []) + [pid]:
        try:
            fields = Path(f"/proc/{proc}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                children = Path(f"/proc/{current}/task/{tid}/children").read_text().split()
            except OSError:
                continue
            for child in children:
                found.append(int(child))
                stack.append(int(child))
    return found
