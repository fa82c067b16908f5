"""Runs units on a Ray cluster, with the local executor's semantics (`--executor ray`).

How units map to Ray:
- A CALL unit is a Ray task (`ray_node.run_call`, 1 CPU), at most `jobs` at a time.
- A persistent unit (GENERATE, COLLECT, INNER_GENERATE) is a Ray actor of its own (0 CPU, like
  the local executor's persistent workers outside the `jobs` count) whose `run` method is a
  streaming generator: yields and push acknowledgements reach the scheduler as they happen.
  Pushes, the end of input, cancel, pause and resume are calls to its other methods, served
  while `run` streams. Generators are actors too, not streaming tasks: Ray closes a cancelled
  streaming task at its next yield and reports nothing more, so the outcome of the cancel
  sequence (which signal ended it) could not reach the driver.
- On the node, either runs the unit in a watchrun worker process of its own group, exactly as
  the local executor does (see ray_node.py); the task's code (its chain of modules) is shipped
  with the job, inputs, outputs and project-local modules are read from the project root, which
  every node must see at the same path (a shared filesystem; see docs/ray.md).
- Results come back to the driver as pickled bytes; the scheduler stores them in the driver's
  store, as with the local executor. Logs are written by the node where the driver reads them
  when the node sees the driver's log folder, else shipped back with the result.

Cancel: SIGINT to the unit's group on its node, SIGTERM after `grace`, SIGKILL after another
`grace`, each sent by the node (a CALL task learns of the cancel through `ray.cancel`, an actor
through its `cancel` method). If the node does not answer within 2 x grace + FORCE_AFTER, its
Ray worker is killed (`ray.cancel(force=True)`, `ray.kill`), and the unit's group dies with it
(see ray_guard.py). Pause: SIGSTOP / SIGCONT to the unit's group, sent by its node too: an
actor through its `pause` and `resume` methods; a CALL task, which takes no calls while it
runs, through a marker file that a NodeControl actor on each node makes and removes, and that
the task's relay looks at (see ray_control.py). Through Ray Client, the driver also sends the
nodes a heartbeat: a unit whose driver was killed is cancelled by its node within seconds.

Ray is connected on the first submit, in a thread (ray.init takes seconds), so a build with
nothing to run never starts it. Address "" starts a Ray instance on this machine, listening on
loopback only; anything else is given to ray.init (a GCS "HOST:PORT", "auto", "ray://…"). The
watchrun package is shipped to a remote cluster as a runtime_env py_module; a cluster on this
machine imports it from where the driver does. Ray Client ("ray://") cannot stream: through it,
persistent units fail with a message saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import secrets
import time
from pathlib import Path
from typing import Any

if importlib.util.find_spec("ray") is None:
    # `ray` itself is imported when the executor connects (see ray_nodes.init_ray): an
    # environment variable it reads at import time depends on the address
    raise ImportError("No module named 'ray'", name="ray")

from watchrun.config import DEFAULT_CONNECT_TIMEOUT, default_jobs
from watchrun.executors import ray_control
from watchrun.executors.base import EventKind, ExecEvent, Job, Mode, Sink, UnitKey, hand_to_sink
from watchrun.executors.ray_connect import (
    RayConnectError,
    check_address,
    explain_init_failure,
    in_daemon_thread,
)
from watchrun.executors.ray_nodes import Cluster, init_ray, ray_options, resources_table
from watchrun.executors.ray_units import (
    RayUnit,
    Shipping,
    append_log,
    describe,
    lost_node,
    ray_name,
    unfit,
    write_log,
)
from watchrun.executors.unit_book import UnitBook

log = logging.getLogger("watchrun.executor")

FORCE_AFTER = 5.0  # seconds past the cancel sequence (2 x grace) before the Ray worker is killed


class RayExecutor:
    """The Executor of base.py on Ray. All methods run on one asyncio loop; `sink` is called on
    it, never from inside a method call of ours."""

    def __init__(self, sink: Sink, jobs: int, grace: float, address: str = "",
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
        """`jobs` 0: as many CALL units at a time as the cluster has CPUs (this machine's
        until connected)."""
        if jobs < 0:
            raise ValueError(f"jobs must be at least 1 (0: the cluster's CPUs), not {jobs}")
        self._sink = sink
        self._jobs_from_cluster = jobs == 0
        self._jobs = jobs or default_jobs()
        self._grace = grace
        self._address = address.strip()
        self._connect_timeout = connect_timeout
        self._book: UnitBook[RayUnit] = UnitBook()
        self._busy_calls = 0
        self._closing = False
        self._connection: asyncio.Task[Cluster] | None = None
        self._cluster: Cluster | None = None
        self._shipping = Shipping(grace)
        self._run = secrets.token_hex(8)  # names this run's pause markers on the nodes
        self._serial = 0
        self._controls: ray_control.Controls | None = None  # once connected

    # -- the Executor protocol ------------------------------------------------------------------

    async def preflight(self) -> None:
        """Check the address before anything is planned (no `ray.init`, which a null build must
        not wait for). Raises RayConnectError: a wrong or silent address, or a missing token."""
        address, timeout = self._address, self._connect_timeout
        await in_daemon_thread(asyncio.get_running_loop(),
                               lambda: check_address(address, timeout))

    async def start(self) -> None:
        """Connect now rather than on the first submit. Raises RayConnectError."""
        await asyncio.shield(self._connected())

    def free_slots(self) -> int:
        return max(self._jobs - self._busy_calls, 0)

    def submit(self, job: Job) -> None:
        self._book.check_new(job, self._closing)
        if job.mode is Mode.CALL:
            if self._busy_calls >= self._jobs:
                raise RuntimeError(f"no free slot for {job.key.format()}: wait for free_slots()")
            self._busy_calls += 1
        self._shipping.write_token(Path(job.log_path).parent)
        unit = RayUnit(job, time.monotonic())
        if job.mode is Mode.CALL:
            self._serial += 1
            unit.control = f"{self._run}/{self._serial}"
        self._book.add(unit)
        unit.driver = asyncio.get_running_loop().create_task(self._drive(unit))

    def push(self, key: UnitKey, kwargs: dict[str, bytes]) -> None:
        unit = self._book.taking_input(key)
        if unit is not None:
            unit.call_in_order("push", kwargs)

    def end_input(self, key: UnitKey) -> None:
        unit = self._book.taking_input(key)
        if unit is not None:
            unit.call_in_order("end_input")

    def cancel(self, key: UnitKey) -> None:
        unit = self._book.get(key)
        if unit is None or unit.cancelling:
            return
        unit.cancelling = True
        loop = asyncio.get_running_loop()
        if unit.ref is None and unit.actor is None:
            # not on the cluster yet (Ray is connecting): nothing runs, nothing to signal
            log.info("cancel %s: it had not started", key.format())
            loop.call_soon(self._finish, unit, EventKind.CANCELLED, None, None, "SIGINT")
            return
        log.info("cancel %s: SIGINT to its process group on its Ray node", key.format())
        if unit.ref is not None:
            assert self._cluster is not None
            self._cluster.ray.cancel(unit.ref)
        else:
            unit.call("cancel")
        unit.timer = loop.call_later(2 * self._grace + FORCE_AFTER, self._force, unit)

    def set_jobs(self, jobs: int) -> None:
        if jobs > 0:
            self._jobs = jobs

    def hold_yields(self, key: UnitKey, held: bool) -> bool:
        return False  # no credit on Ray's relay: the driver pauses instead (base.Executor)

    def pause(self, key: UnitKey) -> bool:
        """SIGSTOP to the unit's group on its node: a persistent unit through its actor, a
        CALL unit through the nodes' NodeControl actors (a running Ray task takes no calls).
        A CALL unit not on the cluster yet is stopped when it starts."""
        unit = self._book.get(key)
        if unit is None or unit.cancelling:
            return False
        if not unit.paused:
            unit.paused = True
            if unit.job.mode is Mode.CALL:
                self._mark(unit, "pause")
            else:
                unit.call("pause")
        return True

    def resume(self, key: UnitKey) -> bool:
        unit = self._book.get(key)
        if unit is None or unit.cancelling:
            return False
        if unit.paused:
            unit.paused = False
            if unit.job.mode is Mode.CALL:
                self._mark(unit, "resume")
            else:
                unit.call("resume")
        return True

    def running(self) -> list[UnitKey]:
        return self._book.running()

    async def close(self) -> None:
        """Cancel what runs (at most 2 x grace, then the Ray workers are killed), disconnect,
        and stop the Ray instance if this executor started it."""
        self._closing = True
        for key in self._book.running():
            self.cancel(key)
        await self._book.wait_all_ended(2 * self._grace + 2 * FORCE_AFTER + 1)
        for unit in self._book.units():
            self._abandon(unit)
        if self._controls is not None:
            await self._controls.end()
        cluster = self._cluster
        if self._connection is not None and not self._connection.done():
            # still connecting: nothing ran there; ray.init goes on in its daemon thread,
            # and nobody waits for it
            self._connection.cancel()
        if cluster is not None:
            await in_daemon_thread(asyncio.get_running_loop(), cluster.shutdown)
        self._shipping.remove_token()

    # -- connecting -----------------------------------------------------------------------------

    def _connected(self) -> asyncio.Task[Cluster]:
        failed = self._connection is not None and self._connection.done() and (
            self._connection.cancelled() or self._connection.exception() is not None)
        if self._connection is None or (failed and self._cluster is None):
            # a failed attempt is not kept: the next unit (`r` in the TUI) tries again
            self._connection = asyncio.get_running_loop().create_task(self._connect())
        return self._connection

    async def _connect(self) -> Cluster:
        where = f"at {self._address}" if self._address else "on this machine"
        started = time.perf_counter()
        address, timeout = self._address, self._connect_timeout
        try:
            ray = await in_daemon_thread(asyncio.get_running_loop(),
                                         lambda: init_ray(address, timeout), stay=True)
            cluster = Cluster(ray, self._address.startswith("ray://"))
        except RayConnectError as exc:
            raise RayConnectError(f"could not start or join Ray {where}: {exc}") from exc
        except Exception as exc:
            raise RayConnectError(f"could not start or join Ray {where}: "
                                  f"{explain_init_failure(address, exc)}") from exc
        log.info("connected to Ray %s in %.1f s", where, time.perf_counter() - started)
        self._cluster = cluster
        self._controls = ray_control.Controls(cluster, self._run)
        if cluster.client:
            self._shipping.heartbeat = self._run
            self._controls.start_heartbeat()
        if self._jobs_from_cluster and cluster.cpus() > 0:
            self._jobs = cluster.cpus()
        return cluster

    def _mark(self, unit: RayUnit, verb: str) -> None:
        """Pause or resume a CALL unit through the nodes' NodeControl actors; not before it is
        on the cluster (_run_call marks it then)."""
        if unit.ref is None or self._controls is None:
            return
        if verb == "pause":
            unit.marked = True
        self._controls.mark(unit.control, verb, unit.job.key.format())

    # -- one unit's life ------------------------------------------------------------------------

    async def _drive(self, unit: RayUnit) -> None:
        try:
            cluster = await asyncio.shield(self._connected())
        except RayConnectError as exc:
            self._finish(unit, EventKind.DIED, error=str(exc))
            return
        if unit.cancelling:  # cancelled while connecting: cancel() has ended it
            return
        try:
            if unit.job.mode is Mode.CALL:
                await self._run_call(cluster, unit)
            else:
                await self._run_persistent(cluster, unit)
        except cluster.cancelled:  # by ray.cancel: a task still waiting to start, or forced
            self._lost(unit, None, cancelled=True)
        except cluster.error as exc:
            self._lost(unit, exc, node=await lost_node(cluster, unit, exc))
        except Exception as exc:  # a bug of ours: the unit must still end, and say why
            log.exception("running %s on Ray failed", unit.job.key.format())
            self._finish(unit, EventKind.DIED, error=f"the Ray executor failed: {exc!r}")
        finally:
            if unit.actor is not None:
                with contextlib.suppress(Exception):
                    cluster.ray.kill(unit.actor)

    async def _fits(self, cluster: Cluster, unit: RayUnit, options: dict[str, Any]) -> bool:
        """Whether some node can ever run the unit; if none can, it fails now."""
        where = f"at {self._address}" if self._address else "on this machine"
        why = await unfit(cluster, unit.job, options, where)
        if why is not None:
            self._finish(unit, EventKind.FAILED, error=why)
        return why is None

    async def _run_call(self, cluster: Cluster, unit: RayUnit) -> None:
        options = ray_options(resources_table(unit.job.resources), persistent=False)
        if not await self._fits(cluster, unit, options) or unit.cancelling:
            return
        call = cluster.call.options(name=ray_name(unit.job), **options)
        unit.ref = call.remote(self._shipping.node_job(unit.job, unit.control))
        if unit.paused:  # paused before it reached the cluster: it starts stopped
            self._mark(unit, "pause")
        self._end(unit, await unit.ref)

    async def _run_persistent(self, cluster: Cluster, unit: RayUnit) -> None:
        if cluster.client:
            kind = "generator" if unit.job.mode is not Mode.COLLECT else "collector"
            self._finish(
                unit,
                EventKind.FAILED,
                error=(
                    f"{unit.job.key.task} is a {kind}: through Ray Client ({self._address}) its "
                    "values cannot stream back. Run watchrun on a node of the cluster and give "
                    "the cluster's address (HOST:PORT, or auto) instead"
                ),
            )
            return
        options = ray_options(resources_table(unit.job.resources), persistent=True)
        if not await self._fits(cluster, unit, options) or unit.cancelling:
            return
        node_job = self._shipping.node_job(unit.job)  # the actor preloads what its code imports
        unit.actor = cluster.scope.options(**options).remote(node_job)
        stream = unit.actor.run.options(name=ray_name(unit.job)).remote(node_job)
        unit.deliver_inbox()
        unit.node = await unit.actor.where.options(concurrency_group="inbox").remote()
        async for ref in stream:
            item = await ref
            if unit.finished:
                return
            kind = item[0]
            if kind == "yielded":
                self._emit(unit, EventKind.YIELDED, data=item[1])
            elif kind == "pushed":
                self._emit(unit, EventKind.PUSHED)
            elif kind == "started":
                self._emit(unit, EventKind.STARTED)
            elif kind == "end":
                self._end(unit, item)
                return
        self._lost(unit, None)  # the stream ended without an outcome

    def _end(self, unit: RayUnit, item: tuple[Any, ...]) -> None:
        _, outcome, payload, duration, log_bytes, _host = item[:6]
        if len(item) > 6:  # a CALL unit says its node with its outcome
            unit.node = item[6]
        if log_bytes is not None:
            write_log(unit.job, log_bytes)
        if unit.node and self._cluster is not None:
            append_log(unit.job, f"[watchrun] ran on Ray node "
                                       f"{self._cluster.label(unit.node)}\n")
        if outcome == "done":
            self._finish(unit, EventKind.DONE, data=payload, duration=duration)
        elif outcome == "cancelled":
            self._finish(unit, EventKind.CANCELLED, signal=payload, duration=duration)
        elif outcome == "died":
            self._finish(unit, EventKind.DIED, error=payload, duration=duration)
        else:
            self._finish(unit, EventKind.FAILED, error=str(payload), duration=duration)

    def _lost(self, unit: RayUnit, exc: BaseException | None, cancelled: bool = False,
              node: str = "") -> None:
        """The Ray task or actor ended without an outcome: cancelled by Ray, killed, lost
        with its node."""
        if unit.finished:
            return
        if unit.cancelling or cancelled:
            self._finish(unit, EventKind.CANCELLED, signal="SIGKILL" if unit.forced else "SIGINT")
            return
        if node:
            unit.node = node if node != "?" else unit.node
            label = self._cluster.label(node) if self._cluster is not None else node[:8]
            append_log(unit.job, f"[watchrun] node lost: Ray node {label}\n")
            self._finish(unit, EventKind.DIED, error=f"node lost: Ray node {label} died while "
                                                      "running it")
            return
        why = "its stream ended early" if exc is None else describe(exc)
        self._finish(unit, EventKind.DIED, error=f"the Ray worker running it was lost: {why}")

    # -- the end of a unit ----------------------------------------------------------------------

    def _force(self, unit: RayUnit) -> None:
        unit.timer = None
        if unit.finished or self._cluster is None:
            return
        log.warning(
            "cancel %s: no answer %.1f s after SIGINT; killing its Ray worker",
            unit.job.key.format(),
            2 * self._grace + FORCE_AFTER,
        )
        unit.forced = True
        with contextlib.suppress(Exception):
            if unit.ref is not None:
                self._cluster.ray.cancel(unit.ref, force=True)
            if unit.actor is not None:
                self._cluster.ray.kill(unit.actor)
        loop = asyncio.get_running_loop()
        unit.timer = loop.call_later(FORCE_AFTER, self._abandon, unit)

    def _abandon(self, unit: RayUnit) -> None:
        """Ray does not answer at all: end the unit here."""
        unit.timer = None
        if unit.finished:
            return
        log.warning("%s: Ray gave no answer; given up", unit.job.key.format())
        self._finish(unit, EventKind.CANCELLED, signal="SIGKILL")
        if unit.driver is not None:
            unit.driver.cancel()

    def _finish(
        self,
        unit: RayUnit,
        kind: EventKind,
        data: bytes | None = None,
        error: str | None = None,
        signal: str | None = None,
        duration: float | None = None,
    ) -> None:
        if unit.finished:
            return
        unit.finished = True
        if unit.timer is not None:
            unit.timer.cancel()
            unit.timer = None
        self._book.remove(unit)
        if unit.job.mode is Mode.CALL:
            self._busy_calls -= 1
            if unit.marked and unit.paused:  # its marker stays on the nodes: remove it
                self._mark(unit, "resume")
        if duration is None:
            duration = time.monotonic() - unit.submitted
        self._emit(unit, kind, data=data, error=error, signal=signal, duration=duration)

    def _emit(
        self,
        unit: RayUnit,
        kind: EventKind,
        *,
        data: bytes | None = None,
        error: str | None = None,
        signal: str | None = None,
        duration: float = 0.0,
    ) -> None:
        hand_to_sink(self._sink, ExecEvent(unit.job.key, kind, data, error, signal, duration,
                                           None, node=unit.node or None))
