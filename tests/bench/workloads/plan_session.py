"""Issue 14's measurements of the build plan, run against the code in --code (a checkout):

  session  a scripted editing session under `watchrun dev --json` on a copy of
           examples/generators whose per-request step takes 50 ms: an upstream param change
           that leaves its output unchanged, a typo then its fix, a task added, a declared
           output deleted, each made while units run. Reported: the unit-seconds of work thrown
           away (from each cancelled unit's start to its cancel), and the units cancelled.
  stream   a scope of --items items (generator -> per-item task -> collector) under
           `watchrun build --json`: the time to the collector's first push, and the peak RSS of
           the largest watchrun process and of the watchrun process itself (the driver),
           sampled until --limit seconds or the end, and at 1,000 ... 1,000,000 pushes.

    python tests/bench/workloads/plan_session.py session --code . --python /path/to/python
    python tests/bench/workloads/plan_session.py stream --code . --items 1000000 --limit 60
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

Event = dict[str, Any]


class Dev:
    """`watchrun dev --no-tui --json`, its events read as they come."""

    def __init__(self, python: str, code: Path, root: Path, command: str = "dev") -> None:
        env = {**os.environ, "PYTHONPATH": str(code)}
        args = [python, "-m", "watchrun", "-C", str(root), command, "--json"]
        if command == "dev":
            args.insert(-1, "--no-tui")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env, start_new_session=True)
        self.events: list[Event] = []
        self.arrived: list[float] = []
        self._queue: queue.Queue[Event | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self._queue.put(json.loads(line))
        self._queue.put(None)

    def pump(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                item = self._queue.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                return True
            if item is None:
                return False
            self.events.append(item)
            self.arrived.append(time.monotonic())
        return True

    def until(self, predicate: Any, timeout: float = 120) -> None:
        start = len(self.events)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(predicate(e) for e in self.events[start:]):
                return
            if not self.pump(0.05):
                return
        raise SystemExit(f"timed out; last events {self.events[-5:]}")

    def idle(self) -> None:
        self.until(lambda e: e["event"] == "idle")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.pump(0.2)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def session(python: str, code: Path) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="plan-session-"))
    root = work / "generators"
    shutil.copytree(code / "examples/generators", root,
                    ignore=shutil.ignore_patterns(".watchrun", "out"))
    base = root / "tasks/enrich/base.py"
    edit(base, "from lib.logs import route_for\n",
         "import time\n\nfrom lib.logs import route_for\n")
    edit(base, "    route = route_for(", "    time.sleep(0.05)\n    route = route_for(")
    services = root / "tasks/services.py"
    edit(services, "# inputs = [\"data/services.csv\"]\n",
         "# inputs = [\"data/services.csv\"]\n# [params]\n# note = 1\n")
    dev = Dev(python, code, root)
    steps: dict[str, float] = {}
    marks: list[tuple[str, int]] = []  # (step, index of its first event)
    try:
        dev.idle()

        def mid_build(label: str, change: Any) -> None:
            """Make the change while the scope is being rebuilt (a new delay: new code)."""
            base.write_text(re.sub(r"time\.sleep\(0\.05\d*\)",
                                   f"time.sleep(0.05{len(steps) + 1})", base.read_text()))
            dev.until(lambda e: e["event"] == "unit_started" and e["task"] == "enrich.request")
            dev.pump(1.0)
            mark = time.monotonic()
            marks.append((label, len(dev.events)))
            change()
            dev.idle()
            steps[label] = time.monotonic() - mark

        mid_build("param change, same output",
                  lambda: edit(services, "# note = 1", "# note = 2"))

        def typo_then_fix() -> None:
            good = base.read_text()
            base.write_text(good.replace("def run(", "def run(:", 1))
            dev.until(lambda e: e["event"] == "error")
            base.write_text(good)

        mid_build("typo then fix", typo_then_fix)
        mid_build("task added", lambda: (root / "tasks/added.py").write_text(
            "# /// task\n# ///\ndef run():\n    return 1\n"))
        mid_build("output deleted", lambda: (root / "out/report.md").unlink())
    finally:
        dev.stop()
        shutil.rmtree(work, ignore_errors=True)
    result = _thrown(dev.events)
    result["step_seconds"] = {k: round(v, 3) for k, v in steps.items()}
    ends = [index for _, index in marks[1:]] + [len(dev.events)]
    result["cancelled_by_step"] = {
        label: _thrown(dev.events[:end])["cancelled"][len(_thrown(dev.events[:index])
                                                          ["cancelled"]):]
        for (label, index), end in zip(marks, ends, strict=True)}
    return result


def _thrown(events: list[Event]) -> dict[str, Any]:
    """Unit-seconds thrown away: from each cancelled unit's start to its cancel."""
    starts: dict[tuple[str, tuple[int, ...]], float] = {}
    thrown = 0.0
    cancelled = 0
    which: list[str] = []
    for e in events:
        unit = (e.get("task", ""), tuple(e.get("iter", [])))
        if e["event"] == "unit_started":
            starts[unit] = e["time"]
        elif e["event"] == "unit_cancelled":
            cancelled += 1
            thrown += e["time"] - starts.get(unit, e["time"])
            which.append(unit[0] + "".join(f"[{i}]" for i in unit[1]))
    return {"thrown_unit_seconds": round(thrown, 3), "cancelled_units": cancelled,
            "cancelled": which,
            "started_units": sum(1 for e in events if e["event"] == "unit_started")}


LONG = {
    "watchrun.toml": "jobs = 2\ngrace = 0.3\n",
    "tasks/up.py": "# /// task\n# [params]\n# x = 1\n# ///\nimport time\n\n"
                   "def run(x):\n    time.sleep(0.3)\n    return 'same'\n",
    "tasks/down.py": "# /// task\n# after = ['up']\n# ///\nimport time\n\n"
                     "def run(up):\n    time.sleep(2.0)\n    return up\n",
    "tasks/other.py": "# /// task\n# ///\nimport time\n\n"
                      "def run():\n    time.sleep(2.0)\n    return 1\n",
}


def long_session(python: str, code: Path) -> dict[str, Any]:
    """Two-second units, each step made one second into them: a param change upstream whose
    output stays the same, and a typo saved then fixed in a running task."""
    work = Path(tempfile.mkdtemp(prefix="plan-long-"))
    for rel, text in LONG.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(text)
    dev = Dev(python, code, work)
    try:
        dev.idle()
        edit(work / "tasks/down.py", "2.0", "2.01")  # down runs again
        dev.until(lambda e: e["event"] == "unit_started" and e["task"] == "down")
        dev.pump(1.0)
        edit(work / "tasks/up.py", "# x = 1", "# x = 2")
        dev.idle()
        edit(work / "tasks/other.py", "2.0", "2.01")
        dev.until(lambda e: e["event"] == "unit_started" and e["task"] == "other")
        dev.pump(1.0)
        good = (work / "tasks/other.py").read_text()
        (work / "tasks/other.py").write_text(good.replace("def run(", "def run(:"))
        dev.until(lambda e: e["event"] == "error")
        (work / "tasks/other.py").write_text(good)
        dev.pump(0.5)
        dev.idle()
    finally:
        dev.stop()
        shutil.rmtree(work, ignore_errors=True)
    return _thrown(dev.events)


def stream(python: str, code: Path, items: int, limit: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="plan-stream-"))
    files = {
        "watchrun.toml": "jobs = 2\n",
        "tasks/gen.py": f"# /// task\n# kind = \"generator\"\n# ///\ndef run():\n"
                        f"    yield from range({items})\n",
        "tasks/item.py": "# /// task\n# after = [\"gen\"]\n# ///\ndef run(gen):\n"
                         "    return gen * 2\n",
        "tasks/total.py": "# /// task\n# kind = \"collector\"\n# after = [\"item\"]\n# ///\n"
                          "total = 0\n\ndef run(item):\n    global total\n    total += item\n\n"
                          "def gather():\n    return total\n",
    }
    for rel, text in files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(text)
    build = Dev(python, code, work, "build")
    first_push: float | None = None
    peak = 0.0
    pushes = 0
    rss_at: dict[int, float] = {}
    driver_peak = 0.0  # the watchrun process itself (the plan and driver live there)
    driver_at: dict[int, float] = {}
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            alive = build.pump(0.2)
            new_pushes = sum(1 for e in build.events if e["event"] == "push")
            if first_push is None and new_pushes:
                index = next(i for i, e in enumerate(build.events) if e["event"] == "push")
                first_push = build.arrived[index] - build.started
            pushes = new_pushes
            rss = _largest_rss_mb(build.proc.pid)
            peak = max(peak, rss)
            driver = _rss_mb(build.proc.pid)
            driver_peak = max(driver_peak, driver)
            for mark in MARKS:
                if pushes >= mark and mark not in rss_at:
                    rss_at[mark] = round(peak, 1)
                    if driver:  # 0: the build ended before this sample
                        driver_at[mark] = round(driver, 1)
            build.events = [e for e in build.events if e["event"] in ("push", "build_finished")]
            build.arrived = build.arrived[-len(build.events):] if build.events else []
            if not alive:
                break
    finally:
        build.stop()
        shutil.rmtree(work, ignore_errors=True)
    return {"items": items, "first_push_seconds": first_push, "pushes_seen": pushes,
            "peak_rss_mb": round(peak, 1), "peak_rss_mb_by_pushes": rss_at,
            "driver_peak_rss_mb": round(driver_peak, 1), "driver_rss_mb_by_pushes": driver_at,
            "seconds": round(time.monotonic() - build.started, 1)}


def stream_doit(items: int, limit: float) -> dict[str, Any]:
    """The same scope under doit, as W6 writes it (tests/bench/workloads/generators.py: a
    task creator yields one sub-task per value, the collector takes them all with getargs):
    doit has no stream, so nothing reaches the collector before every item ran; reported are
    the time until the collector's output exists and the peak RSS of doit's process, sampled
    until --limit seconds or the end. doit from the bench's venv (peers.py --setup)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from peers import venv_bin
    from workloads.generators import WRITERS

    work = Path(tempfile.mkdtemp(prefix="plan-stream-doit-"))
    (work / "out").mkdir()
    for rel, text in WRITERS["doit"](items).items():
        (work / rel).write_text(text)
    started = time.monotonic()
    proc = subprocess.Popen([str(venv_bin("doit", "doit")), "-n", "1"], cwd=work,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    peak = 0.0
    collected: float | None = None
    deadline = started + limit
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            peak = max(peak, _largest_rss_mb(proc.pid))
            if collected is None and (work / "out/total.txt").exists():
                collected = time.monotonic() - started
            time.sleep(0.2)
        if collected is None and (work / "out/total.txt").exists():
            collected = time.monotonic() - started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    return {"tool": "doit", "items": items, "collector_output_seconds": collected,
            "peak_rss_mb": round(peak, 1), "finished": collected is not None,
            "seconds": round(time.monotonic() - started, 1)}


MARKS = (1_000, 10_000, 20_000, 100_000, 200_000, 500_000, 1_000_000)


def _rss_mb(pid: int) -> float:
    try:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except psutil.Error:
        return 0.0


def _largest_rss_mb(pid: int) -> float:
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0.0
    largest = 0
    for p in procs:
        try:
            largest = max(largest, p.memory_info().rss)
        except psutil.Error:
            continue
    return largest / 2**20


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["session", "long", "stream", "stream-doit"])
    p.add_argument("--code", type=Path, default=Path.cwd(), help="the checkout to measure")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--limit", type=float, default=60.0, help="stream: seconds at most")
    args = p.parse_args(argv)
    code = args.code.resolve()
    if args.what == "session":
        result = session(args.python, code)
    elif args.what == "long":
        result = long_session(args.python, code)
    elif args.what == "stream-doit":
        result = stream_doit(args.items, args.limit)
    else:
        result = stream(args.python, code, args.items, args.limit)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
