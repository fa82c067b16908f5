"""The node side of the Ray executor, told where it runs: ray_node's unit runners, wrapped so
that the driver learns the Ray node of each unit (for its log, and to name a lost node).

Kept apart from ray_node.py, which imports no Ray: this module runs only inside Ray workers,
where `ray` is imported already.
"""

from __future__ import annotations

from typing import Any

from watchrun.executors import ray_node


def node_here() -> str:
    """The id of the Ray node this process runs on."""
    import ray

    return str(ray.get_runtime_context().get_node_id())


def run_call_where(job: ray_node.NodeJob) -> tuple[Any, ...]:
    """ray_node.run_call, its ("end", …) item followed by the node's id."""
    return (*ray_node.run_call(job), node_here())


class PlacedScope(ray_node.ScopeActor):
    """ray_node.ScopeActor, which can say where it was placed."""

    def where(self) -> str:
        return node_here()
