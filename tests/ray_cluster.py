"""A Ray cluster on this machine for the tests: loopback only, 2 CPUs, no dashboard, its own
ports, token and temp dir, and a way to stop exactly it (`ray stop` would stop every Ray on the
machine, other test sessions' included). A second node can join it (RayNode): a raylet of its
own, with its own ports and temp dir, on the same loopback address.

Why a second node needs more than `ray start --address=127.0.0.1:PORT`: `ray start` for a
non-head node turns a loopback address (the GCS's and the node's own) into this machine's network
address, where a loopback-only cluster does not listen, and waits for that GCS for ever; the
switch that keeps loopback (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) also makes it refuse to start a
non-head node at all. JOIN_ON_LOOPBACK runs Ray's own `ray start` with the address kept as
given and the refusal lifted; every daemon it starts still runs with the loopback switch, like
the head's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from tests.conftest import REPO, SESSION_TAG


def ray_cli() -> Path | None:
    """The `ray` command of this interpreter's environment, if Ray is installed there."""
    path = Path(sys.executable).with_name("ray")
    return path if path.exists() else None


def short_temp_dir() -> Path:
    """A Ray node's temp dir, short: its sockets live below it, in a session folder with a long
    name, and a Unix socket's path has at most 107 bytes (a pytest tmp path is too long)."""
    return Path(tempfile.mkdtemp(prefix="wr-ray-", dir="/tmp" if os.path.isdir("/tmp") else None))


def heavy_import_gate() -> Path:
    """The folder where tests/ray_heavy_import.py says it is being imported and waits for
    `go` (the same computation as there)."""
    tag = re.sub(r"[^0-9A-Za-z.-]", "_", SESSION_TAG)
    return Path("/tmp" if os.path.isdir("/tmp") else ".") / f"watchrun-heavy-import-{tag}"


def _listens(host: str, port: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RayCluster:
    def __init__(self, base: Path, num_cpus: int = 2) -> None:
        self.base = base
        self.num_cpus = num_cpus
        self.port = _free_port()
        self.client_port = _free_port()  # Ray Client's server (ray://)
        self.token_path = base / "token"
        self.temp_dir = short_temp_dir()
        self._pgid: int | None = None
        self.started_in = 0.0  # seconds

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What a driver needs to join this cluster (the cluster itself runs with it too)."""
        return {
            # Ray turns 127.0.0.1 into the machine's routable address unless this is off
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(self.token_path),
        }

    def start(self) -> None:
        cli = ray_cli()
        assert cli is not None, "Ray is not installed"
        self.base.mkdir(parents=True, exist_ok=True)
        self.token_path.write_text(secrets.token_hex(32))
        env = {**os.environ, **self.env()}
        # the watchrun workers Ray starts carry the session tag: the leak check sees them
        env["WATCHRUN_TEST_SESSION"] = SESSION_TAG
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        command = [
            str(cli), "start", "--head",
            f"--port={self.port}",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={self.num_cpus}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={self.temp_dir}",
            # the fixed default ports, so that clusters of other sessions do not collide
            f"--ray-client-server-port={self.client_port}",
            f"--dashboard-port={_free_port()}",
            f"--dashboard-agent-listen-port={_free_port()}",
        ]
        started = time.perf_counter()
        # a session of its own: every daemon it leaves behind is in this process group
        proc = subprocess.run(command, env=env, capture_output=True, text=True,
                              start_new_session=True, timeout=120, stdin=subprocess.DEVNULL)
        self._pgid = _group_of(self.temp_dir, "gcs_server")
        if proc.returncode != 0 or self._pgid is None:
            self.stop()
            raise RuntimeError(f"ray start failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        # `ray start` returns once the GCS and the raylet are up; Ray Client's server is a
        # process of its own that listens seconds later on a slow machine, and a driver that
        # comes first is refused (watchrun says so at once: tests/test_ray_connect.py)
        if not _listens("127.0.0.1", self.client_port, within=90.0):
            self.stop()
            raise RuntimeError(f"Ray Client's server did not listen on {self.client_port} "
                               "within 90 s of `ray start`")
        self.started_in = time.perf_counter() - started

    def processes(self) -> list[psutil.Process]:
        """Every process of this cluster: its daemons (in its process group), the Ray workers
        they started (in groups of their own) and the watchrun workers those started."""
        return _processes_of(self._pgid)

    def stop(self) -> list[int]:
        """End the cluster: SIGTERM, then SIGKILL what is left. Returns the pids that had to
        be killed."""
        killed = _stop(self.processes())
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return killed


JOIN_ON_LOOPBACK = """
import sys
from ray._private import ray_constants, services
# see the module's docstring: keep the addresses as given, and start the node
services.resolve_ip_for_localhost = lambda host: host
ray_constants.ENABLE_RAY_CLUSTER = True
from ray.scripts.scripts import main
sys.argv[0] = "ray"
main()
"""


class RayNode:
    """A second node of `head`, on the same machine and loopback address: its own raylet,
    object manager, agents, worker ports and temp dir."""

    def __init__(self, head: RayCluster, base: Path, num_cpus: int = 1) -> None:
        self.head = head
        self.base = base
        self.num_cpus = num_cpus
        self.temp_dir = short_temp_dir()
        self._pgid: int | None = None
        self.node_id = ""
        self.started_in = 0.0  # seconds

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.head.env()}
        env["WATCHRUN_TEST_SESSION"] = SESSION_TAG
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        command = [
            sys.executable, "-c", JOIN_ON_LOOPBACK, "start",
            f"--address={self.head.address}",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={self.num_cpus}",
            "--disable-usage-stats",
            f"--temp-dir={self.temp_dir}",
            # every port of its own: the head's daemons hold theirs on the same address
            f"--node-manager-port={_free_port()}",
            f"--object-manager-port={_free_port()}",
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--dashboard-agent-grpc-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}",
            # workers bind ports the system picks: two raylets on one address would otherwise
            # hand out the same ones from the default range
            "--min-worker-port=0",
            "--max-worker-port=0",
        ]
        started = time.perf_counter()
        proc = subprocess.run(command, env=env, capture_output=True, text=True,
                              start_new_session=True, timeout=120, stdin=subprocess.DEVNULL)
        self._pgid = _group_of(self.temp_dir, "raylet")
        if proc.returncode != 0 or self._pgid is None:
            self.stop()
            raise RuntimeError(f"ray start (second node) failed ({proc.returncode}):\n"
                               f"{proc.stderr[-3000:]}")
        self.node_id = _node_id_of(self.raylet())
        self.started_in = time.perf_counter() - started

    def raylet(self) -> psutil.Process | None:
        for proc in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                if proc.name() == "raylet":
                    return proc
        return None

    def alive(self) -> bool:
        return self.raylet() is not None

    def kill_raylet(self) -> float:
        """SIGKILL this node's raylet (a machine lost, as the cluster sees it). Returns when
        it was sent (time.monotonic())."""
        raylet = self.raylet()
        assert raylet is not None, "the second node has no raylet"
        raylet.kill()
        return time.monotonic()

    def processes(self) -> list[psutil.Process]:
        return _processes_of(self._pgid)

    def stop(self) -> list[int]:
        killed = _stop(self.processes())
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return killed


def _node_id_of(raylet: psutil.Process | None) -> str:
    if raylet is None:
        return ""
    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
        for part in raylet.cmdline():
            if part.startswith("--node_id="):
                return part.split("=", 1)[1]
    return ""


def _processes_of(pgid: int | None) -> list[psutil.Process]:
    if pgid is None:
        return []
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) != pgid:
                continue
            found[proc.pid] = proc
            for child in proc.children(recursive=True):
                found[child.pid] = child
        except (psutil.NoSuchProcess, ProcessLookupError, psutil.AccessDenied):
            continue
    return [p for p in found.values() if _alive(p)]


def _stop(procs: list[psutil.Process]) -> list[int]:
    for proc in procs:
        _send(proc, signal.SIGTERM)
    alive = _wait_gone(procs, 3.0)  # some Ray daemons take long to act on SIGTERM
    for proc in alive:
        _send(proc, signal.SIGKILL)
    _wait_gone(alive, 10.0)
    return [p.pid for p in alive]


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until these processes are dead (zombies count: they are not ours to reap)."""
    deadline = time.monotonic() + timeout
    alive = procs
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _alive(p)]
    return alive


def _group_of(temp_dir: Path, daemon: str) -> int | None:
    """`ray start` exits once its daemons run; they keep its process group, whose id is the
    pid it had. Find it through one daemon (the head's GCS server, a node's raylet), which
    carries our temp dir in its command."""
    for candidate in psutil.process_iter(["cmdline"]):
        cmdline = candidate.info["cmdline"] or []
        if any(str(temp_dir) in part for part in cmdline) and daemon in " ".join(cmdline):
            try:
                return os.getpgid(candidate.pid)
            except ProcessLookupError:
                return None
    return None


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _send(proc: psutil.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
        proc.send_signal(sig)


# ---------------------------------------------------------------------------------------------
# `python -m tests.ray_cluster pause ROOT ADDRESS` and `… slots ADDRESS`: the Ray executor
# driven directly (pause and resume have no command line; the slots before the first wave are
# the plan's to ask), in a process of its own so that the test process does not import Ray.
# Prints what it saw as one JSON object.
# ---------------------------------------------------------------------------------------------

TICKER = """
import time
from pathlib import Path

def run():
    i = 0
    while True:
        Path("ticks").write_text(str(i))
        i += 1
        time.sleep(0.01)
        if i % 5 == 0:
            yield i
"""

WAITER = """
import time
from pathlib import Path

def run():
    Path("waiter.started").write_text("")
    i = 0
    while not Path("go").exists():
        Path("wticks").write_text(str(i))
        i += 1
        time.sleep(0.01)
    return "went"
"""


def _ticks(root: Path, name: str = "ticks") -> int:
    text = (root / name).read_text() if (root / name).exists() else ""
    return int(text) if text.isdigit() else -1


async def _until(condition: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def _until_still(root: Path, name: str, timeout: float = 60.0) -> None:
    """Until the tick file stops changing (for 0.3 s)."""
    deadline = time.monotonic() + timeout
    last = _ticks(root, name)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        now = _ticks(root, name)
        if now == last:
            return
        last = now
    raise AssertionError(f"{name} kept ticking")


async def pause_scenario(root: Path, address: str) -> dict[str, Any]:
    from watchrun.executors.base import EventKind, ExecEvent, Job, Mode, UnitKey
    from watchrun.executors.ray import RayExecutor

    for name, source in (("ticker", TICKER), ("waiter", WAITER)):
        (root / "tasks").mkdir(parents=True, exist_ok=True)
        (root / "tasks" / f"{name}.py").write_text(source)
    events: list[ExecEvent] = []
    executor = RayExecutor(events.append, jobs=1, grace=0.3, address=address)

    def job(name: str, mode: Mode) -> Job:
        return Job(UnitKey(name), mode, root, [(root / "tasks" / f"{name}.py", "tasks")], {},
                   root / ".watchrun" / "logs" / f"{name}.log", fresh_log=True)

    def ended(name: str) -> ExecEvent | None:
        terminal = {EventKind.DONE, EventKind.FAILED, EventKind.CANCELLED, EventKind.DIED}
        return next((e for e in events if e.key.task == name and e.kind in terminal), None)

    seen: dict[str, Any] = {}
    executor.submit(job("ticker", Mode.GENERATE))
    executor.submit(job("waiter", Mode.CALL))
    try:
        await _until(lambda: _ticks(root) > 10 and (root / "waiter.started").exists(),
                     "both units")
    except AssertionError as exc:  # say what Ray was doing
        import ray

        raise AssertionError(f"{exc}: ticks {_ticks(root)}, events {events}, Ray's free "
                             f"resources {ray.available_resources()}") from None
    seen["call_pause"] = executor.pause(UnitKey("waiter"))
    seen["generator_pause"] = executor.pause(UnitKey("ticker"))
    # nothing to wait for: a stopped unit does nothing. Give SIGSTOP time to arrive (the task
    # unit's through a NodeControl actor, which Ray starts on the first pause), then look
    # twice, a while apart
    started = time.monotonic()
    await _until_still(root, "wticks")
    seen["call_paused_in"] = time.monotonic() - started
    before, waited = _ticks(root), _ticks(root, "wticks")
    await asyncio.sleep(0.5)
    seen["ticked_while_paused"] = _ticks(root) != before
    seen["waiter_ticked_while_paused"] = _ticks(root, "wticks") != waited
    seen["resume"] = executor.resume(UnitKey("ticker"))
    seen["call_resume"] = executor.resume(UnitKey("waiter"))
    await _until(lambda: _ticks(root) > before + 5, "the ticker to tick again")
    await _until(lambda: _ticks(root, "wticks") > waited + 5, "the waiter to tick again")
    executor.cancel(UnitKey("ticker"))
    await _until(lambda: ended("ticker") is not None, "the ticker to end")
    (root / "go").write_text("")
    await _until(lambda: ended("waiter") is not None, "the waiter to end")
    await executor.close()
    for name in ("ticker", "waiter"):
        event = ended(name)
        assert event is not None
        seen[name] = [event.kind.name, event.signal]
    seen["yields"] = len([e for e in events if e.kind is EventKind.YIELDED])
    return seen


async def slots_scenario(address: str) -> dict[str, Any]:
    """The CALL slots of a Ray executor whose jobs come from the cluster, before and after it
    connects."""
    from watchrun.executors.ray import RayExecutor

    executor = RayExecutor(lambda event: None, jobs=0, grace=0.3, address=address)
    before = executor.free_slots()
    await executor.start()
    after = executor.free_slots()
    await executor.close()
    return {"before": before, "after": after}


# `python -m tests.ray_cluster tuipause ROOT`: `watchrun dev` with its TUI on the project's
# Ray cluster (its watchrun.toml says which), as `commands.dev` wires it; `space` pauses the
# task `work` while its units run, and again resumes it.

WORK_SCOPE = {
    "tasks/gen.py": "# /// task\n# kind = \"generator\"\n# ///\n"
                    "def run():\n    yield from range(6)\n",
    "tasks/work.py": """# /// task
# after = ["gen"]
# ///
import os
import time
from pathlib import Path

def run(gen):
    Path("ticks").mkdir(exist_ok=True)
    Path("pids").mkdir(exist_ok=True)
    Path("pids", f"{gen}.tmp").write_text(str(os.getpid()))
    os.replace(Path("pids", f"{gen}.tmp"), Path("pids", str(gen)))
    for i in range(150):
        Path("ticks", str(gen)).write_text(str(i))
        time.sleep(0.02)
    return gen
""",
}


def _all_ticks(root: Path) -> dict[str, str]:
    folder = root / "ticks"
    return {p.name: p.read_text() for p in sorted(folder.iterdir())} if folder.is_dir() else {}


async def tui_pause_scenario(root: Path) -> dict[str, Any]:
    from watchrun.commands.dev import build_dev_engine
    from watchrun.engine import events as ev
    from watchrun.engine.events import EventBus
    from watchrun.session import open_session
    from watchrun.ui.tui.app import WatchrunApp
    from watchrun.ui.tui.records import Records

    seen: dict[str, Any] = {}
    with open_session(root, "watchrun dev", write=True) as session:
        bus = EventBus()
        events: list[ev.Event] = []
        bus.subscribe(events.append)
        engine = build_dev_engine(session, [], 0, bus)
        app = WatchrunApp(engine, records=Records(session.config.state_dir))
        bus.subscribe(app.inbox.put)

        def work_events(kind: type[ev.Event]) -> int:
            return sum(1 for e in events
                       if isinstance(e, kind) and getattr(e, "task", "") == "work")

        async with app.run_test(size=(140, 45)) as pilot:
            engine_task = asyncio.create_task(engine.run())
            try:
                await _until(lambda: any(int(t or 0) > 5 for t in _all_ticks(root).values()),
                             "work units to run", timeout=150)
                while app.dag.selected != "work":
                    await pilot.press("j")
                await pilot.press("space")
                seen["said_on_pause"] = str(app.feedback.render())
                started = time.monotonic()
                await _until(lambda: _running_stopped(root, events), "SIGSTOP on the nodes")
                seen["paused_in"] = time.monotonic() - started
                await asyncio.sleep(1.0)  # a unit that was just starting is stopped too
                seen["started_when_paused"] = work_events(ev.UnitStarted)
                ticks = _all_ticks(root)
                await asyncio.sleep(1.5)  # a unit of work would finish or start meanwhile
                seen["started_while_paused"] = work_events(ev.UnitStarted) - seen[
                    "started_when_paused"]
                seen["ticked_while_paused"] = [ticks, _all_ticks(root)]
                await pilot.press("space")
                seen["said_on_resume"] = str(app.feedback.render())
                await _until(lambda: work_events(ev.UnitFinished) >= 6, "every unit of work",
                             timeout=150)
                seen["finished"] = work_events(ev.UnitFinished)
            finally:
                engine.quit()
                seen["exit"] = await asyncio.wait_for(asyncio.shield(engine_task), 60)
    return seen


def _running_stopped(root: Path, events: list[Any]) -> bool:
    """Whether the process of every unit of `work` that runs (it wrote its pid) is stopped."""
    from watchrun.engine import events as ev

    ended = {e.iter for e in events if isinstance(e, ev.UnitFinished) and e.task == "work"}
    # a unit writes N.tmp then renames it to N: only the renamed files are whole
    pids = [int(p.read_text() or 0) for p in (root / "pids").iterdir()
            if p.name.isdigit() and (int(p.name),) not in ended] \
        if (root / "pids").is_dir() else []
    try:
        return all(pid and psutil.Process(pid).status() == psutil.STATUS_STOPPED
                   for pid in pids)
    except psutil.NoSuchProcess:  # it ended meanwhile
        return False


if __name__ == "__main__":
    if sys.argv[1] == "tuipause":
        print(json.dumps(asyncio.run(tui_pause_scenario(Path(sys.argv[2])))))
    elif sys.argv[1] == "slots":
        print(json.dumps(asyncio.run(slots_scenario(sys.argv[2]))))
    else:
        print(json.dumps(asyncio.run(pause_scenario(Path(sys.argv[2]), sys.argv[3]))))
