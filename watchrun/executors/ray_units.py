"""One unit on Ray as the driver sees it (RayUnit), and what the Ray executor does for a unit
alone, without the rest of the executor: calls to its actor, where its logs go, whether its
node died, whether any node can run it, how Ray's errors read in its message.

The executor (ray.py) keeps the units in flight in a UnitBook and decides their ends; this
module holds no state across units but what is shipped with every job (Shipping)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watchrun.executors.base import Job
from watchrun.executors.local import job_spec
from watchrun.executors.ray_connect import first_line, in_daemon_thread
from watchrun.executors.ray_node import NodeJob
from watchrun.executors.ray_nodes import ANSI, Cluster, infeasible_message, needs

log = logging.getLogger("watchrun.executor")

# seconds to wait, after a unit's actor or Ray worker was lost, for the cluster to say whether
# its node died (Ray marks a node dead after missed health checks, not at once)
NODE_DEATH_WAIT = 30.0
TOKEN_NAME = ".ray-token"  # in the log folder: tells a node whether it sees that folder
_NODE_ID = re.compile(r"node id:? ([0-9a-f]{16,})", re.IGNORECASE)


@dataclass(eq=False)
class RayUnit:
    job: Job
    submitted: float  # time.monotonic()
    ref: Any = None  # CALL: the Ray task's ObjectRef
    actor: Any = None  # persistent: its actor
    inbox: list[tuple[str, tuple[object, ...]]] = field(default_factory=list)  # calls made
    # before the actor existed (Ray still connecting)
    seq: int = 0  # pushes and end_input, numbered: the node applies them in this order
    cancelling: bool = False
    forced: bool = False  # the cancel got no answer: its Ray worker was killed
    paused: bool = False
    timer: asyncio.TimerHandle | None = None
    driver: asyncio.Task[None] | None = None
    finished: bool = False
    node: str = ""  # the Ray node id it runs on, once known
    control: str = ""  # CALL: its name among the nodes' pause markers ("RUN/SERIAL")
    marked: bool = False  # CALL: the nodes were told to pause it at least once

    def call(self, method: str, *args: object) -> None:
        """Call a method of the unit's actor in its inbox group (or keep it for later)."""
        if self.actor is None:
            self.inbox.append((method, args))
            return
        getattr(self.actor, method).options(concurrency_group="inbox").remote(*args)

    def call_in_order(self, method: str, *args: object) -> None:
        """A push or the end of input: numbered, as the node applies them in order."""
        self.call(method, self.seq, *args)
        self.seq += 1

    def deliver_inbox(self) -> None:
        """The actor exists now: make the calls kept for it, in their order."""
        for method, args in self.inbox:
            self.call(method, *args)
        self.inbox.clear()


class Sources:
    """The chain files' sources, shipped with each job; read again only when they change."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[tuple[int, int, int], bytes]] = {}

    def read(self, files: list[str]) -> dict[str, bytes]:
        sources = {}
        for file in files:
            try:
                st = os.stat(file)
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
                known = self._known.get(file)
                if known is None or known[0] != stamp:
                    known = (stamp, Path(file).read_bytes())
                    self._known[file] = known
            except OSError:
                continue  # the worker reads it itself, and says what is wrong
            sources[file] = known[1]
        return sources


class Shipping:
    """What goes with each job to its node besides the job itself: the chain files' sources,
    the cancel grace, the token that tells a node whether it sees the driver's log folder, and
    the name of the run whose heartbeat the node watches (Ray Client only)."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.heartbeat = ""  # the run's name once connected through Ray Client
        self._sources = Sources()
        self._token = secrets.token_hex(16)
        self._token_path: Path | None = None

    def write_token(self, log_dir: Path) -> None:
        """Once, where the first unit's log goes: nodes that find this token where the driver
        wrote it write logs there directly."""
        if self._token_path is not None:
            return
        path = log_dir / TOKEN_NAME
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(self._token, encoding="utf-8")
        except OSError as exc:
            log.warning("cannot write %s (%s): logs come back with the results", path, exc)
        self._token_path = path

    def remove_token(self) -> None:
        if self._token_path is not None:
            with contextlib.suppress(OSError):
                self._token_path.unlink()

    def node_job(self, job: Job, control: str = "") -> NodeJob:
        spec = job_spec(job)
        spec.sources = self._sources.read([file for file, _ in spec.chain])
        token_path = "" if self._token_path is None else str(self._token_path)
        return NodeJob(spec.fields(), self.grace, token_path, self._token, control,
                       self.heartbeat)


def append_log(job: Job, line: str) -> None:
    try:
        with open(job.log_path, "a", encoding="utf-8") as f:
            f.write(line)
    except OSError as exc:
        log.warning("cannot write the log %s: %s", job.log_path, exc)


def write_log(job: Job, data: bytes) -> None:
    """A log the node could not write where the driver reads it, shipped with the result."""
    try:
        os.makedirs(os.path.dirname(job.log_path), exist_ok=True)
        with open(job.log_path, "wb" if job.fresh_log else "ab") as f:
            f.write(data)
    except OSError as exc:
        log.warning("cannot write the log %s: %s", job.log_path, exc)


async def unfit(cluster: Cluster, job: Job, options: dict[str, Any], where: str) -> str | None:
    """None if some node of the cluster can ever run the unit, else why none can (Ray would
    keep it pending for ever). A request that fits no node known asks the cluster again
    first: a node may have joined."""
    need = needs(options)
    if cluster.shortfall(need) is None:
        return None
    await in_daemon_thread(asyncio.get_running_loop(), cluster.refresh_nodes)
    most = cluster.shortfall(need)
    if most is None:
        return None
    return infeasible_message(job.key.task, need, most, where)


async def lost_node(cluster: Cluster, unit: RayUnit, exc: BaseException) -> str:
    """The id of the node whose loss ended the unit, or "" when its node is alive (or
    unknown): a NodeDiedError names it; a lost actor or worker on a node the cluster then
    marks dead counts too (Ray takes some seconds to mark it)."""
    if unit.finished or unit.cancelling:
        return ""
    if isinstance(exc, cluster.node_died):
        named = _NODE_ID.search(ANSI.sub("", str(exc)))
        return named[1] if named else unit.node or "?"
    if not unit.node or not isinstance(exc, cluster.worker_lost):
        return ""
    loop = asyncio.get_running_loop()
    node = unit.node
    if await in_daemon_thread(loop, lambda: cluster.raylet_refuses(node)):
        return node
    deadline = time.monotonic() + NODE_DEATH_WAIT
    while time.monotonic() < deadline and not unit.finished:
        await in_daemon_thread(loop, cluster.refresh_nodes)
        if node not in cluster.nodes:
            return node
        await asyncio.sleep(0.5)
    return ""


def ray_name(job: Job) -> str:
    """The name Ray shows for a unit (its process title, `ray list tasks`, the dashboard)."""
    return f"watchrun:{job.key.format()}"


def describe(exc: BaseException) -> str:
    """A Ray error in one line: its type and the first line of its message, no colours."""
    first = first_line(ANSI.sub("", str(exc)))
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
