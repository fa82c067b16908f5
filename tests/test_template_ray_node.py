"""The warm template on a Ray node (node_template.py), driven as a Ray worker process drives it
(ray_node.run_call), without a cluster: real template, real forked workers, real signals."""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.test_ray_e2e import node_job
from watchrun.executors import ray_node
from watchrun.executors.node_template import third_party_imports

pytestmark = [
    pytest.mark.usefixtures("no_leaks"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the template is Linux's"),
]

PRELOADED = """
    import os, sys
    SEEN = "psutil" in sys.modules
    import psutil

    def run(tag):
        return (SEEN, os.getpid(), os.getppid(), tag)
"""


@pytest.fixture
def node() -> Iterator[None]:
    """A fresh Ray-worker-side state, ended like a Ray worker's."""
    yield
    worker, ray_node._Warm.worker = ray_node._Warm.worker, None
    if worker is not None:
        worker.end()
    template, ray_node._Warm.template = ray_node._Warm.template, None
    if template is not None:
        template.close()


def result(item: tuple[object, ...]) -> tuple[bool, int, int, str]:
    assert item[0] == "end" and item[1] == "done", item
    payload = item[2]
    assert isinstance(payload, bytes)
    value: tuple[bool, int, int, str] = pickle.loads(payload)
    return value


@pytest.mark.usefixtures("node")
def test_units_on_a_node_fork_from_its_template_with_the_libraries_imported(
        tmp_path: Path) -> None:
    first = result(ray_node.run_call(node_job(tmp_path, "warm", PRELOADED, kwargs={"tag": "a"})))
    seen, worker, parent, _ = first
    assert seen, "the worker had to import psutil itself"
    template = psutil.Process(parent)
    assert "watchrun.executors.template" in " ".join(template.cmdline())
    assert template.ppid() == os.getpid()  # the Ray worker's own child
    # the next unit: the same warm worker (reused after a normal end)
    again = result(ray_node.run_call(node_job(tmp_path, "warm", PRELOADED, kwargs={"tag": "b"})))
    assert again[1] == worker


@pytest.mark.usefixtures("node")
def test_a_node_template_kills_its_workers_when_the_ray_worker_lets_go(tmp_path: Path) -> None:
    result(ray_node.run_call(node_job(tmp_path, "warm", PRELOADED, kwargs={"tag": "a"})))
    warm = ray_node._Warm.worker
    template = ray_node._Warm.template
    assert warm is not None and template is not None and warm.pid is not None
    worker = psutil.Process(warm.pid)
    template.close()  # what the end of the Ray worker's life pipe does
    worker.wait(timeout=5)
    assert not worker.is_running()


def test_what_a_node_preloads_comes_from_the_shipped_code(tmp_path: Path) -> None:
    (tmp_path / "helpers.py").write_text("")
    sources = {"t.py": b"import os, json\nimport psutil\nimport helpers\n"
                       b"from sklearn.ensemble import X\nfrom . import sibling\n"
                       b"def run():\n    import rich.text\n"}
    assert third_party_imports(sources, str(tmp_path)) == {"psutil", "sklearn.ensemble",
                                                           "rich.text"}
