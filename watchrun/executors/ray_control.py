"""The driver's hand on the nodes of a Ray cluster, beside what Ray itself offers: pausing a
running task unit, and telling the nodes that the driver is alive.

A running Ray task takes no calls (only `ray.cancel`), so the driver cannot tell a task unit's
relay (ray_node.Relay) to pause as it tells a scope actor. And with Ray Client (`ray://`) a
driver that is killed leaves its job alive for Ray Client's reconnect grace (about 30 s), and
its units running. So the driver keeps a NodeControl actor on each node (no CPU), which writes
into a folder of the run on the node's own disk: a marker file per paused task unit, and the
time of the driver's last heartbeat (the mtime of a file, on the node's clock). The relays
look at both at every TICK: a marker stops the unit's group (SIGSTOP) until it is removed; a
heartbeat older than DRIVER_SILENCE starts the cancel sequence, as if the driver had asked.

NodeControl and the helpers above it run in Ray worker processes (imported by ray_node);
Controls is the driver's side. Stdlib only: `ray` is reached through the driver's cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import tempfile
import threading
import time
from typing import Any

from watchrun.executors.ray_connect import in_daemon_thread

log = logging.getLogger("watchrun.executor")

BEAT = 0.4  # seconds between the driver's heartbeats (ray:// only)
DRIVER_SILENCE = 2.0  # seconds without one after which the driver is taken for gone
_ALIVE = "driver.alive"


def run_folder(run: str) -> str:
    """The folder where this node keeps one driver's run: the markers of its paused CALL units
    and its heartbeat. On the node's own disk, in a folder of this user's."""
    return os.path.join(tempfile.gettempdir(), f"watchrun-ray-{os.getuid()}", run)


def pause_marker(control: str) -> str:
    """A unit's marker (`control` is "RUN/UNIT")."""
    run, _, unit = control.partition("/")
    return os.path.join(run_folder(run), unit)


class NodeControl:
    """A Ray actor the driver pins to each node (see the module's docstring). The driver does
    not know where Ray runs a task unit until it ends: it tells every node, and only the relay
    running the unit acts. A marker made before the unit started is seen when it starts."""

    def pause(self, control: str) -> None:
        _touch(pause_marker(control))

    def beat(self, run: str) -> None:
        """The driver is alive."""
        _touch(driver_alive_file(run))

    def resume(self, control: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(pause_marker(control))

    def clear(self, run: str) -> None:
        """The driver's run ends: its markers and its heartbeat go."""
        folder = run_folder(run)
        with contextlib.suppress(OSError):
            for name in os.listdir(folder):
                os.unlink(os.path.join(folder, name))
            os.rmdir(folder)


def driver_alive_file(run: str) -> str:
    return os.path.join(run_folder(run), _ALIVE)


def driver_silent(path: str) -> bool:
    """Whether the driver's heartbeat stopped: the file was touched, long enough ago. No
    file: nothing is known (no heartbeat reached this node yet, or the run ended)."""
    try:
        return time.time() - os.stat(path).st_mtime > DRIVER_SILENCE
    except OSError:
        return False


def _touch(path: str) -> None:
    """Create the file, or set its mtime to now, in the run's folder (made private)."""
    folder = os.path.dirname(path)
    if not _own_folder(os.path.dirname(folder)) or not _own_folder(folder):
        return  # not a folder of ours: someone else's, or a link; do nothing
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    with contextlib.suppress(OSError):
        os.utime(path, follow_symlinks=False)


def _own_folder(path: str) -> bool:
    """Make the folder (private) if needed; whether it is a real folder of this user's."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()


class Controls:
    """The driver's side: a NodeControl actor on each node, made when first needed; pause and
    resume marks sent in the order asked; the heartbeat (Ray Client only). `cluster` is the
    driver's ray_nodes.Cluster (its nodes, `control_on`, `refresh_nodes`, `label`, `ray`)."""

    def __init__(self, cluster: Any, run: str) -> None:
        self.cluster = cluster
        self.run = run
        self._actors: dict[str, Any] = {}  # node id -> its NodeControl
        self._actors_lock = threading.Lock()  # the loop and the heartbeat thread make them
        self._order = asyncio.Lock()  # a resume must not overtake its pause
        self._beating: threading.Event | None = None  # set: the heartbeat stops

    def mark(self, control: str, verb: str, unit: str) -> None:
        """Tell every node to pause (or resume) a task unit (`control` is its "RUN/UNIT";
        `unit` names it in the log): the driver does not know where Ray runs it until it
        ends. Sent from a task of the running loop."""
        asyncio.get_running_loop().create_task(self._send(control, verb, unit))

    async def _send(self, control: str, verb: str, unit: str) -> None:
        cluster = self.cluster
        async with self._order:
            # a node that joined since: Ray may run the unit there
            await in_daemon_thread(asyncio.get_running_loop(), cluster.refresh_nodes)
            for node_id in cluster.nodes:
                try:
                    getattr(self._actor(node_id), verb).remote(control)
                except Exception as exc:  # a node going away: its units end anyway
                    log.info("cannot %s %s on node %s: %s", verb, unit, cluster.label(node_id),
                             exc)

    def _actor(self, node_id: str) -> Any:
        with self._actors_lock:
            actor = self._actors.get(node_id)
            if actor is None:
                actor = self._actors[node_id] = self.cluster.control_on(node_id)
            return actor

    def start_heartbeat(self) -> None:
        """Every BEAT, the nodes hear that the driver is alive; a relay that stops hearing it
        cancels its unit. From a thread of its own: a loop busy for a moment must not look
        like a dead driver."""
        stop = self._beating = threading.Event()
        cluster = self.cluster

        def beat() -> None:
            beats = 0
            while not stop.is_set():
                if beats % 25 == 0:  # a node that joined since hears it too
                    cluster.refresh_nodes()
                beats += 1
                for node_id in list(cluster.nodes):
                    try:
                        self._actor(node_id).beat.remote(self.run)
                    except Exception as exc:  # a node going away, or Ray shutting down
                        log.info("heartbeat to %s: %s", cluster.label(node_id), exc)
                stop.wait(BEAT)

        threading.Thread(target=beat, name="watchrun-ray-heartbeat", daemon=True).start()

    async def end(self) -> None:
        """Stop the heartbeat, remove this run's markers from the nodes, end the actors."""
        if self._beating is not None:
            self._beating.set()
        if not self._actors:
            return
        async with self._order:
            pass  # the marks on their way are sent before the markers are cleared
        cleared = []
        for actor in self._actors.values():
            with contextlib.suppress(Exception):
                cleared.append(actor.clear.remote(self.run))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*cleared, return_exceptions=True), 5.0)
        for actor in self._actors.values():
            with contextlib.suppress(Exception):
                self.cluster.ray.kill(actor)
        self._actors.clear()
