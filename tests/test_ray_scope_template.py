"""Generators and collectors on Ray fork their worker from the node-local template, as calls
do (issue 15 point 4): the unit's process is a child of the template, which is the child of
the actor's Ray worker, and the libraries the task imports are already imported in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import watchrun, write_project
from tests.ray_cluster import RayCluster
from tests.ray_fixtures import on_the_cluster

pytestmark = pytest.mark.usefixtures("no_leaks")

WHERE = """
import os
import sys

SEEN = "psutil" in sys.modules  # before this module's own import of it
import psutil


def where():
    parent = psutil.Process(os.getppid())
    return {"preloaded": SEEN, "parent": " ".join(parent.cmdline()),
            "grandparent": " ".join(parent.parent().cmdline())}
"""

PROJECT = {
    "tasks/numbers.py": '# /// task\n# kind = "generator"\n# ///\n' + WHERE
                        + "\ndef run():\n    yield where()\n    yield where()\n",
    "tasks/total.py": '# /// task\n# kind = "collector"\n# after = ["numbers"]\n# ///\n' + WHERE
                      + "\nseen = []\n\ndef run(numbers):\n    seen.append(numbers)\n\n"
                        "def gather():\n    return {'self': where(), 'pushed': len(seen)}\n",
}


@on_the_cluster
def test_generators_and_collectors_fork_from_the_node_template_with_libraries_loaded(
        tmp_path: Path, ray_env: RayCluster) -> None:
    root = write_project(tmp_path / "proj", PROJECT)
    run = watchrun(root, "build", "--executor", "ray", "--address", ray_env.address, "--json",
                   timeout=180)
    assert run.code == 0, run.stdout + run.stderr
    total = watchrun(root, "show", "total")
    generated = watchrun(root, "show", "numbers", "--iter", "0")
    for shown in (total.stdout, generated.stdout):
        assert "'preloaded': True" in shown, shown
        assert "watchrun.executors.template" in shown, shown  # its parent
        assert "ray_guard" not in shown
    assert "'pushed': 2" in total.stdout
