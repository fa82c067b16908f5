"""W5: dev-loop latency. W8: `watchrun dev` at the scale of 10,000 tasks.

W5. The unit is a long-running Python program (think: a server, a training loop). It reports
over a Unix datagram socket when it starts (with its code version) and when it receives a signal,
each with a time.time() stamp. The harness saves a new version of the code 30 times, in place,
and measures for each save:

  save -> signal   the stale running unit receives its stop signal (SIGTERM, SIGINT, or
                   nodemon's SIGUSR2: whatever each tool sends by default)
  save -> running  the new version's code is running (its first statement after imports)

Peers: `entr -n -r`, `nodemon --exec`, the `watchfiles` CLI (each restarts a command), and
`doit auto` (from the doit-auto1 plugin), which reruns a task whose file_dep changed but cannot
stop a task still running: there the unit is a task that reports and exits, and only
save -> running is measured. watchrun: `watchrun dev --no-tui --json` with the unit as a task
whose run() loops until KeyboardInterrupt; measured once `dev` exists (see watchrun_has_dev).

W8. A 10,000-task project (the W1 chains) under `watchrun dev`: memory of watchrun's process
tree once idle, and the wall and CPU time from a one-file edit to the dispatch of the edited
task (its unit_started event).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from measure import kill_group, percentile, tree_cpu_seconds, tree_rss_mb
from peers import Tool, venv_bin
from workloads import chains
from workloads.common import tool_env, write_files

SETTLE = 0.5  # seconds between a restart and the next save, so debouncers have reset

UNIT = '''import os
import signal
import socket
import sys
import time

VERSION = {version}
SOCK = {sock!r}
_out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)


def report(kind):
    try:
        _out.sendto(f"{{kind}} {{VERSION}} {{time.time()!r}} {{os.getpid()}}".encode(), SOCK)
    except OSError:
        pass


def stop(signum, frame):
    report("signal")
    sys.exit(0)


def main():
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2):
        signal.signal(sig, stop)
    report("started")
    if "--once" in sys.argv:
        return
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
'''

WATCHRUN_UNIT = '''# /// task
# ///
import os
import socket
import time

VERSION = {version}
SOCK = {sock!r}


def run():
    out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def report(kind):
        try:
            out.sendto(f"{{kind}} {{VERSION}} {{time.time()!r}} {{os.getpid()}}".encode(), SOCK)
        except OSError:
            pass

    report("started")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        report("signal")
        raise
'''


def unit_python() -> str:
    """One interpreter for every watcher's unit, a real binary (not a pyenv shim)."""
    bench = venv_bin("bench", "python")
    return os.path.realpath(bench if bench.exists() else "/usr/bin/python3")


def watchrun_has_dev(tool: Tool) -> bool:
    proc = subprocess.run([str(tool.executable), "-m", "watchrun", "dev", "--help"],
                          capture_output=True, text=True, env=tool_env(tool), timeout=60)
    return proc.returncode == 0


def unit_file(tool: str) -> str:
    return "tasks/app.py" if tool == "watchrun" else "app.py"


def unit_source(tool: str, version: int, sock: str) -> str:
    template = WATCHRUN_UNIT if tool == "watchrun" else UNIT
    return template.format(version=version, sock=sock)


def watcher_argv(tool: Tool, root: Path) -> tuple[list[str], str | None]:
    """The watcher's command line, and what to feed on its stdin (entr reads the file list)."""
    py = unit_python()
    exe = str(tool.executable)
    if tool.name == "entr":
        return [exe, "-n", "-r", py, "app.py"], "app.py\n"
    if tool.name == "nodemon":
        return [exe, "--watch", "app.py", "--ext", "py", "--exec", f"{py} app.py"], None
    if tool.name == "watchfiles":
        return [exe, "--target-type", "command", f"{py} app.py", "app.py"], None
    if tool.name == "doit-auto":
        write_files(root, {"dodo.py": "def task_app():\n"
                           f"    return {{'actions': [{py + ' app.py --once'!r}],\n"
                           "            'file_dep': ['app.py']}\n"})
        return [exe, "auto"], None
    if tool.name == "watchrun":
        return [exe, "-m", "watchrun", "-C", ".", "dev", "--no-tui", "--json"], None
    raise ValueError(tool.name)


class Inbox:
    """The datagrams the units send: (kind, version, time, pid)."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)

    def wait(self, kind: str, version: int, timeout: float, seen: list[tuple[str, int, float]]
             ) -> float | None:
        """Receive until (kind, version) arrives; every message goes to `seen`."""
        deadline = time.monotonic() + timeout
        for msg in seen:
            if msg[0] == kind and msg[1] == version:
                return msg[2]
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(256).decode().split()
            except TimeoutError:
                return None
            msg = (data[0], int(data[1]), float(data[2]))
            seen.append(msg)
            if msg[0] == kind and msg[1] == version:
                return msg[2]
        return None

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def running(argv: list[str], root: Path, env: dict[str, str], stdin_text: str | None,
            logs: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start a watcher in its own session; on exit end its whole process group."""
    logs.mkdir(parents=True, exist_ok=True)
    stdin: Any = subprocess.DEVNULL
    if stdin_text is not None:  # a file, not a pipe: entr reads its list then sees EOF
        (logs / "stdin.txt").write_text(stdin_text)
    with open(logs / "stdout.log", "wb") as out, open(logs / "stderr.log", "wb") as err, \
            open(logs / "stdin.txt" if stdin_text is not None else os.devnull, "rb") as feed:
        if stdin_text is not None:
            stdin = feed
        proc = subprocess.Popen(argv, cwd=root, env=env, stdin=stdin, stdout=out, stderr=err,
                                start_new_session=True)
        try:
            yield proc
        finally:
            stop_group(proc)


def stop_group(proc: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    kill_group(proc.pid)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def w5_latency(tools: dict[str, Tool], workdir: Path, saves: int = 30) -> dict[str, Any]:
    result: dict[str, Any] = {"workload": "W5", "name": "dev latency", "kind": "latency",
                              "params": {"saves": saves, "settle_s": SETTLE}, "tools": {}}
    for name, tool in tools.items():
        print(f"    W5 {name} ...", flush=True)
        if name == "watchrun" and not watchrun_has_dev(tool):
            result["tools"][name] = {"failed": "`watchrun dev` is not implemented yet"}
            continue
        result["tools"][name] = _latency_one(tool, workdir / "devloop" / name, saves)
        print(f"    W5 {name}: {json.dumps(_short(result['tools'][name]))}", flush=True)
    return result


def _short(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k not in ("signal_samples", "start_samples")}


def _latency_one(tool: Tool, root: Path, saves: int) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    sock = tempfile.mktemp(prefix="wrb-", suffix=".sock", dir="/tmp")
    path = root / unit_file(tool.name)
    write_files(root, {unit_file(tool.name): unit_source(tool.name, 0, sock)})
    inbox = Inbox(sock)
    seen: list[tuple[str, int, float]] = []
    signals: list[float] = []
    starts: list[float] = []
    missed = 0
    argv, stdin_text = watcher_argv(tool, root)
    try:
        with running(argv, root, tool_env(tool), stdin_text, root / "logs"):
            if inbox.wait("started", 0, 60, seen) is None:
                return {"failed": "the first start never came (see " + str(root / "logs") + ")"}
            for version in range(1, saves + 1):
                time.sleep(SETTLE)
                saved = time.time()
                path.write_text(unit_source(tool.name, version, sock))
                started = inbox.wait("started", version, 15, seen)
                if started is None:
                    missed += 1
                    if missed >= 3:
                        break
                    continue
                starts.append(started - saved)
                stale = inbox.wait("signal", version - 1, 0.0, seen)
                if stale is not None:
                    signals.append(stale - saved)
    finally:
        inbox.close()
        os.unlink(sock)
    extra = sum(1 for kind, _, _ in seen if kind == "started") - 1 - len(starts)
    return {"saves": saves, "restarts": len(starts), "missed": missed,
            "extra_starts": max(0, extra),
            "signal": _percentiles(signals), "start": _percentiles(starts),
            "signal_samples": signals, "start_samples": starts,
            "failed": "" if starts else "no restart observed"}


def _percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"p50": percentile(values, 50), "p90": percentile(values, 90), "max": max(values),
            "n": float(len(values))}


# -- W8 --------------------------------------------------------------------------------------

class EventReader:
    """watchrun dev's JSON events, read on a thread so the harness can wait on them."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.events: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def _pump(self, stream: IO[bytes]) -> None:
        for line in stream:
            if not line.startswith(b"{"):
                continue
            with contextlib.suppress(json.JSONDecodeError), self.cond:
                self.events.append(json.loads(line))
                self.cond.notify_all()

    def wait_for(self, start: int, timeout: float, **match: Any) -> tuple[int, dict[str, Any]]:
        """The first event at index >= start whose fields match; raise on timeout."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for index in range(start, len(self.events)):
                    event = self.events[index]
                    if all(event.get(k) == v for k, v in match.items()):
                        return index, event
                left = deadline - time.monotonic()
                if left <= 0 or (not self.thread.is_alive() and start >= len(self.events)):
                    raise TimeoutError(f"no event {match} within {timeout} s")
                self.cond.wait(min(left, 0.5))


def w8_scale(tool: Tool, workdir: Path, tasks: int, edits: int, timeout: float
             ) -> dict[str, Any]:
    result: dict[str, Any] = {"workload": "W8", "name": f"dev at scale, {tasks} tasks",
                              "kind": "scale", "params": {"tasks": tasks, "edits": edits}}
    if not watchrun_has_dev(tool):
        return {**result, "failed": "`watchrun dev` is not implemented yet"}
    project = chains.make_project(tool, workdir / f"scale-{tasks}" / "watchrun", tasks)
    project.clean_state()
    length = tasks // chains.CHAINS
    target = project.root / f"tasks/c0/s{length - 1}.py"
    argv = [str(tool.executable), "-m", "watchrun", "-C", ".", "dev", "--no-tui", "--json"]
    proc = subprocess.Popen(argv, cwd=project.root, env=tool_env(tool), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        reader = EventReader(proc.stdout)
        started = time.monotonic()
        index, _ = reader.wait_for(0, timeout, event="idle")
        first_build = time.monotonic() - started
        rss_main, rss_tree = tree_rss_mb(proc.pid, children=False), tree_rss_mb(proc.pid)
        walls: list[float] = []
        cpus: list[float] = []
        for edit in range(1, edits + 1):
            cpu_before = tree_cpu_seconds(proc.pid, children=False)
            text = target.read_text().replace("def run():", f"def run():\n    _edit = {edit}")
            saved = time.time()
            target.write_text(text)
            index, event = reader.wait_for(index + 1, 60, event="unit_started",
                                           task=f"c0.s{length - 1}")
            cpus.append(tree_cpu_seconds(proc.pid, children=False) - cpu_before)
            walls.append(float(event["time"]) - saved)
            index, _ = reader.wait_for(index + 1, 60, event="idle")
        return {**result, "first_build_s": first_build, "idle_rss_main_mb": rss_main,
                "idle_rss_tree_mb": rss_tree, "edit_to_dispatch_s": _percentiles(walls),
                "edit_to_dispatch_cpu_s": _percentiles(cpus), "failed": ""}
    except TimeoutError as exc:
        return {**result, "failed": str(exc)}
    finally:
        stop_group(proc)
