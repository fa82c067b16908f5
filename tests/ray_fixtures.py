"""The Ray cluster of a test session, shared by every Ray test module (a plugin: conftest.py
loads it, so the session-scoped cluster is one fixture, started once)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator

import pytest

from tests.ray_cluster import RayCluster, RayNode, ray_cli

HAVE_RAY = importlib.util.find_spec("ray") is not None and ray_cli() is not None
RAY_TIMEOUT = 180  # seconds per test on the cluster: each watchrun run joins Ray anew

needs_ray = [
    pytest.mark.ray,
    pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed: pip install 'watchrun[ray]'"),
    pytest.mark.timeout(RAY_TIMEOUT),
    pytest.mark.usefixtures("no_leaks", "ray_env"),
]


# every Ray cluster and node this session started, for tests that look for processes of their
# own and must leave those out
session_nodes: list[RayCluster | RayNode] = []


def session_ray_pids() -> set[int]:
    return {p.pid for node in session_nodes for p in node.processes()}


def on_the_cluster(test: Callable[..., None]) -> Callable[..., None]:
    for mark in needs_ray:
        test = mark(test)
    return test


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    cluster = RayCluster(tmp_path_factory.mktemp("ray"))
    cluster.start()
    session_nodes.append(cluster)
    yield cluster
    cluster.stop()
    assert not cluster.processes(), "Ray processes outlived the test session"


@pytest.fixture
def ray_env(ray_cluster: RayCluster, monkeypatch: pytest.MonkeyPatch) -> RayCluster:
    """What the watchrun processes of a test need to join the cluster."""
    for name, value in ray_cluster.env().items():
        monkeypatch.setenv(name, value)
    return ray_cluster


class TwoNodes:
    """A head with one CPU and a second node with two, on this machine: three CPUs in all
    (more than this machine's count, which the jobs default must not stop at), and a unit
    that asks for two CPUs fits only the second node."""

    def __init__(self, head: RayCluster, node: RayNode) -> None:
        self.head = head
        self.node = node

    @property
    def address(self) -> str:
        return self.head.address

    def env(self) -> dict[str, str]:
        return self.head.env()

    def ensure_second_node(self) -> None:
        """A test that killed the second node's raylet leaves it dead: start it again."""
        if not self.node.alive():
            self.node.stop()
            self.node = RayNode(self.head, self.node.base.with_name(self.node.base.name + "+"),
                                num_cpus=2)
            self.node.start()
            session_nodes.append(self.node)


@pytest.fixture(scope="session")
def two_node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodes]:
    """A cluster of its own, not the session's `ray_cluster`: its tests kill its second node."""
    base = tmp_path_factory.mktemp("ray2")
    head = RayCluster(base / "head", num_cpus=1)
    head.start()
    session_nodes.append(head)
    node = RayNode(head, base / "node", num_cpus=2)
    try:
        node.start()
    except BaseException:
        head.stop()
        raise
    session_nodes.append(node)
    cluster = TwoNodes(head, node)
    yield cluster
    cluster.node.stop()
    head.stop()
    assert not head.processes() and not cluster.node.processes(), \
        "Ray processes outlived the test session"


@pytest.fixture
def two_nodes(two_node_cluster: TwoNodes, monkeypatch: pytest.MonkeyPatch) -> TwoNodes:
    """The two-node cluster with both nodes up, and this test's watchrun processes set to
    join it."""
    two_node_cluster.ensure_second_node()
    for name, value in two_node_cluster.env().items():
        monkeypatch.setenv(name, value)
    return two_node_cluster


needs_two_nodes = [
    pytest.mark.ray,
    pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed: pip install 'watchrun[ray]'"),
    pytest.mark.timeout(RAY_TIMEOUT),
    pytest.mark.usefixtures("no_leaks"),
]


def on_two_nodes(test: Callable[..., None]) -> Callable[..., None]:
    for mark in needs_two_nodes:
        test = mark(test)
    return test
