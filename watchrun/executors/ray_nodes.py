"""The Ray cluster as the driver sees it: joining it (`ray.init`), its nodes, and what a unit
asks of them (its `resources` as a Ray request, and whether any node can ever meet it).

`ray` is imported only by `init_ray`: an environment variable it reads at import time depends
on the address (see ray_connect.py).
"""

from __future__ import annotations

import logging
import os
import re
import socket
from dataclasses import dataclass
from typing import Any

import watchrun
from watchrun.executors import ray_control, ray_where
from watchrun.executors.ray_connect import (
    RayConnectError,
    check_address,
    enable_faulthandler_on_the_terminal,
    explain_init_failure,
    first_line,
    is_loopback,
    resolve_address,
    session_start_failed,
)
from watchrun.project.header import memory_bytes
from watchrun.project.model import Resources

log = logging.getLogger("watchrun.executor")

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Ray Client's server now and then fails to start a driver's session on a fresh cluster
# (ray_connect.session_start_failed): measured 3 in 26 fresh two-node clusters here
CLIENT_SESSION_ATTEMPTS = 3


def init_ray(address: str, connect_timeout: float) -> Any:
    """Resolve the address, ask the cluster, then import and initialise Ray (blocking:
    seconds). Returns the ray module. Raises RayConnectError."""
    check_address(address, connect_timeout)
    import ray

    address = resolve_address(address)
    client = address.startswith("ray://")
    options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    package = os.path.dirname(os.path.abspath(watchrun.__file__))
    local = address == "" or is_loopback(address)
    job_config = _local_job_config(ray, os.path.dirname(package)) if local and not client else None
    if job_config is not None:
        # the cluster runs on this machine: its workers import watchrun from where we do
        options["job_config"] = job_config
    else:
        # the cluster need not have watchrun installed: its package travels with the job
        options["runtime_env"] = {"py_modules": [package]}
    enable_faulthandler_on_the_terminal()
    _quiet_cluster_errors(ray)
    for attempt in range(1, CLIENT_SESSION_ATTEMPTS + 1):
        try:
            if address:
                ray.init(address=address, **options)
            else:
                ray.init(address="local", include_dashboard=False,
                         _node_ip_address="127.0.0.1", **options)
            return ray
        except Exception as exc:
            if not (session_start_failed(exc) and attempt < CLIENT_SESSION_ATTEMPTS):
                raise RayConnectError(explain_init_failure(address, exc)) from exc
            log.info("Ray Client's server at %s could not start a session (%s): trying again",
                     address, first_line(str(exc)))
            ray.shutdown()
    raise AssertionError("unreachable: the last attempt returns or raises")


def _quiet_cluster_errors(ray: Any) -> None:
    """Ray's driver prints the cluster's error messages (a raylet that died, with 20 lines of
    its log; a node marked dead) on stdout, from a thread of its own: into `--json` output and
    over the TUI. Each unit they concern already ends saying why ("node lost: …"): the messages
    go to watchrun's log instead. The printer is a private function of Ray's, looked up when
    called; a Ray without it keeps printing."""
    worker_module: Any = getattr(getattr(ray, "_private", None), "worker", None)
    if worker_module is None or not hasattr(worker_module, "print_to_stdstream"):
        return

    def to_the_log(data: dict[str, Any], ignore_prefix: bool = False) -> None:
        lines = [str(line) for line in data.get("lines", ())]
        if lines:
            log.info("Ray (%s): %s", data.get("pid", "?"), first_line(ANSI.sub("", lines[0])))

    worker_module.print_to_stdstream = to_the_log


def _local_job_config(ray: Any, home: str) -> Any:
    """A job config that puts `home` on the Ray workers' sys.path, if this Ray has the (private)
    option; None otherwise."""
    try:
        return ray.job_config.JobConfig(_py_driver_sys_path=[home])
    except (TypeError, AttributeError):
        return None


@dataclass(frozen=True)
class Node:
    node_id: str
    address: str  # its IP
    resources: dict[str, float]  # what it has in all ("CPU", "GPU", "memory", …)
    raylet_port: int = 0  # its node manager's port; 0: not known

    def label(self) -> str:
        return f"{self.node_id[:8]} ({self.address})"


class Cluster:
    """A connected Ray: the module, the node functions wrapped as remote ones, and the nodes
    it last said were alive."""

    def __init__(self, ray: Any, client: bool) -> None:
        self.ray = ray
        self.client = client  # Ray Client (ray://): no streaming, no concurrency groups
        self.error: type[BaseException] = ray.exceptions.RayError
        self.cancelled: type[BaseException] = ray.exceptions.TaskCancelledError
        self.node_died: type[BaseException] = ray.exceptions.NodeDiedError
        # what a lost node looks like from an actor or a task: its worker gone
        self.worker_lost: tuple[type[BaseException], ...] = (
            ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError)
        # max_retries stays 0: watchrun's own plan decides about reruns (`retries`)
        self.call = ray.remote(num_cpus=1, max_retries=0)(ray_where.run_call_where)
        self.scope = ray.remote(
            num_cpus=0,
            max_restarts=0,
            max_task_retries=0,
            concurrency_groups={"inbox": 1},
        )(ray_where.PlacedScope)
        self.control = ray.remote(num_cpus=0, max_restarts=0)(ray_control.NodeControl)
        self.nodes: dict[str, Node] = {}
        self.known: dict[str, Node] = {}  # every node seen alive, for names of lost ones
        self.refresh_nodes()

    def control_on(self, node_id: str) -> Any:
        """A NodeControl actor on this node (see ray_control.py)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        pinned = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
        return self.control.options(scheduling_strategy=pinned).remote()

    def refresh_nodes(self) -> None:
        """Ask the cluster which nodes are alive (blocking: one call to its GCS)."""
        try:
            found = self.ray.nodes()
        except Exception as exc:  # Ray Client may not answer: feasibility is then not checked
            log.info("cannot list the Ray cluster's nodes: %s", exc)
            return
        self.nodes = {
            str(n["NodeID"]): Node(str(n["NodeID"]), str(n.get("NodeManagerAddress", "")),
                                    {k: float(v) for k, v in n.get("Resources", {}).items()},
                                    int(n.get("NodeManagerPort", 0) or 0))
            for n in found if n.get("Alive")
        }
        self.known.update(self.nodes)

    def cpus(self) -> int:
        return int(sum(node.resources.get("CPU", 0.0) for node in self.nodes.values()))

    def label(self, node_id: str) -> str:
        node = self.known.get(node_id)
        return node.label() if node is not None else node_id[:8]

    def shortfall(self, need: dict[str, float]) -> dict[str, float] | None:
        """None if some alive node has all of `need`; else, for each resource no node has
        enough of, the most any node has."""
        if not self.nodes:
            return None  # nothing known (Ray Client): let Ray decide
        wanted = {k: v for k, v in need.items() if v > 0}
        for node in self.nodes.values():
            if all(node.resources.get(k, 0.0) >= v for k, v in wanted.items()):
                return None
        most = {k: max(n.resources.get(k, 0.0) for n in self.nodes.values()) for k in wanted}
        return {k: most[k] for k, v in wanted.items() if most[k] < v} or most

    def raylet_refuses(self, node_id: str) -> bool:
        """Whether the node's raylet refuses connections: it is gone, though the cluster has
        not marked the node dead yet (that waits for missed health checks, about 15 s).
        Blocking: one TCP connect."""
        node = self.known.get(node_id)
        if node is None or not node.raylet_port or not node.address:
            return False
        try:
            with socket.create_connection((node.address, node.raylet_port), timeout=1.0):
                return False
        except ConnectionRefusedError:
            return True
        except OSError:  # unreachable or silent: a network problem may pass; ask the cluster
            return False

    def shutdown(self) -> None:
        self.ray.shutdown()


def resources_table(resources: Resources | None) -> dict[str, Any]:
    """A job's `resources` (as the driver parsed them from its task's header) as the table
    ray_options reads; None (the header asks nothing): the empty table, Ray's defaults."""
    if resources is None:
        return {}
    table: dict[str, Any] = {"cpus": resources.cpus, "gpus": resources.gpus}
    if resources.memory is not None:
        table["memory"] = resources.memory
    return table


def ray_options(table: dict[str, Any], persistent: bool) -> dict[str, Any]:
    """A `resources` table as Ray's request. A CALL unit takes 1 CPU unless it says; a
    persistent unit none (as locally, it is outside the `jobs` count) unless it says."""
    options: dict[str, Any] = {"num_cpus": table.get("cpus", 0 if persistent else 1)}
    if table.get("gpus"):
        options["num_gpus"] = table["gpus"]
    if table.get("memory") is not None:
        options["memory"] = memory_bytes(table["memory"])
    return options


def needs(options: dict[str, Any]) -> dict[str, float]:
    return {"CPU": float(options.get("num_cpus", 0)), "GPU": float(options.get("num_gpus", 0)),
            "memory": float(options.get("memory", 0))}


def _amount(resource: str, value: float) -> str:
    if resource == "memory":
        if value >= 2**30:
            return f"{value / 2**30:.4g} GiB memory"
        return f"{value / 2**20:.4g} MiB memory"
    count = f"{value:g}"
    return f"{count} {resource}" + ("s" if value != 1 else "")


def infeasible_message(task: str, need: dict[str, float], most: dict[str, float],
                       where: str) -> str:
    wanted = ", ".join(_amount(k, need[k]) for k in most)
    has = ", ".join(_amount(k, v) for k, v in most.items())
    return (f"{task} asks for {wanted} (its `resources`), and no node of the Ray cluster "
            f"{where} has that much (the most one node has: {has}); Ray would keep it waiting "
            "for ever. Lower the request, or add a node that has it")
