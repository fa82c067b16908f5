"""A big output through `watchrun build` (issue 17 point 15): peak memory of watchrun and of
its worker, and the build's time against writing the output's pickle to disk once.

    python3 tests/bench/bench_bigout.py [--mib 500]

The output is `b"x" * size` (its pickle is `size` bytes and a few). Peaks are the kernel's
high-water marks (VmHWM) of the watchrun process and of every process below it, read every
few milliseconds until each ends. "pickle once" is one `pickle.dump` of the same value into a
file in the same folder, fsynced (as the store does), in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]


def hwm(pid: int) -> int:
    """The peak resident size of a process, in bytes (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Peaks:
    """Polls the high-water marks of a process and its descendants until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.top = 0
        self.below: dict[int, tuple[int, str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        try:
            proc = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            self.top = max(self.top, hwm(self.pid))
            try:
                children = proc.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            for child in children:
                peak = hwm(child.pid)
                if peak > self.below.get(child.pid, (0, ""))[0]:
                    try:
                        cmd = " ".join(child.cmdline())[:60]
                    except psutil.Error:
                        cmd = "?"
                    self.below[child.pid] = (peak, cmd)
            time.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def worker_peak(self) -> int:
        return max((peak for peak, _ in self.below.values()), default=0)


def pickle_once(size: int, folder: Path) -> float:
    code = textwrap.dedent(f"""
        import os, pickle, time
        value = b"x" * {size}
        start = time.perf_counter()
        with open({str(folder / "once.pickle")!r}, "wb") as f:
            pickle.dump(value, f, 5)
            f.flush()
            os.fsync(f.fileno())
        print(time.perf_counter() - start)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    os.unlink(folder / "once.pickle")
    return float(out)


def build_once(size: int, folder: Path) -> tuple[float, float, int, int]:
    """(build time, time of its big unit, watchrun's peak, the worker's peak)."""
    project = folder / "proj"
    (project / "tasks").mkdir(parents=True)
    (project / "tasks" / "large.py").write_text(
        f"# /// task\n# ///\nimport time\n"
        f"def run():\n    value = b'x' * {size}\n    return value\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "watchrun", "-C", str(project), "build",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, text=True)
    peaks = Peaks(proc.pid)
    out, err = proc.communicate(timeout=600)
    elapsed = time.perf_counter() - start
    peaks.stop()
    if proc.returncode != 0:
        raise SystemExit(f"build failed: {err}")
    unit = 0.0
    for line in out.splitlines():
        event = json.loads(line)
        if event.get("event") == "unit_finished":
            unit = float(event.get("duration", 0.0))
    return elapsed, unit, peaks.top, peaks.worker_peak()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    size = args.mib * 2**20
    onces: list[float] = []
    builds: list[tuple[float, float, int, int]] = []
    for _ in range(args.runs):  # side by side: the disk's pace drifts on a shared machine
        with tempfile.TemporaryDirectory() as tmp:
            onces.append(pickle_once(size, Path(tmp)))
            builds.append(build_once(size, Path(tmp)))
    mib = 2**20
    once = statistics.median(onces)
    elapsed = statistics.median(b[0] for b in builds)
    unit = statistics.median(b[1] for b in builds)
    top = max(b[2] for b in builds)
    worker = max(b[3] for b in builds)
    ratios = sorted(b[0] / o for b, o in zip(builds, onces, strict=True))
    print(f"output: {args.mib} MiB, {args.runs} runs (medians; peaks: the highest)")
    print(f"pickle once (dump + fsync): {once:.2f} s  (runs: "
          f"{', '.join(f'{o:.2f}' for o in onces)})")
    print(f"watchrun build: {elapsed:.2f} s wall (start, making the value, storing), "
          f"its unit {unit:.2f} s  (runs: {', '.join(f'{b[0]:.2f}' for b in builds)})")
    print(f"build / pickle once, per run: {', '.join(f'{r:.2f}x' for r in ratios)}")
    print(f"peak RSS watchrun: {top / mib:.0f} MiB ({top / size:.2f}x the output)")
    print(f"peak RSS worker: {worker / mib:.0f} MiB ({worker / size:.2f}x the output)")


if __name__ == "__main__":
    main()
