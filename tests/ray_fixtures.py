"""The Ray cluster of a test session, shared by every Ray test module (a plugin: conftest.py
loads it, so the session-scoped cluster is one fixture, started once)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator

import pytest

from tests.ray_cluster import RayCluster, ray_cli

HAVE_RAY = importlib.util.find_spec("ray") is not None and ray_cli() is not None
RAY_TIMEOUT = 180  # seconds per test on the cluster: each watchrun run joins Ray anew

needs_ray = [
    pytest.mark.ray,
    pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed: pip install 'watchrun[ray]'"),
    pytest.mark.timeout(RAY_TIMEOUT),
    pytest.mark.usefixtures("no_leaks", "ray_env"),
]


def on_the_cluster(test: Callable[..., None]) -> Callable[..., None]:
    for mark in needs_ray:
        test = mark(test)
    return test


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    cluster = RayCluster(tmp_path_factory.mktemp("ray"))
    cluster.start()
    yield cluster
    cluster.stop()
    assert not cluster.processes(), "Ray processes outlived the test session"


@pytest.fixture
def ray_env(ray_cluster: RayCluster, monkeypatch: pytest.MonkeyPatch) -> RayCluster:
    """What the watchrun processes of a test need to join the cluster."""
    for name, value in ray_cluster.env().items():
        monkeypatch.setenv(name, value)
    return ray_cluster
