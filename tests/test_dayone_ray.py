"""Day one, point 1 on Ray: a task's own class and pool functions on a Ray node's worker, and
its output read back by a downstream unit there and by `watchrun show` on the driver."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import watchrun, write_project
from tests.ray_cluster import RayCluster
from tests.ray_fixtures import needs_ray
from tests.test_dayone_pickling import RESULT_TASK, USES_RESULT
from tests.test_ray_e2e import on_ray

pytestmark = needs_ray


def test_task_classes_pickle_on_ray(tmp_path: Path, ray_env: RayCluster) -> None:
    pool = """
        # /// task
        # after = ["make"]
        # ///
        import multiprocessing


        def doubled(result):
            return result.doubled()


        def run(make):
            with multiprocessing.get_context("spawn").Pool(1) as workers:
                return workers.map(doubled, [make])
    """
    root = write_project(tmp_path, on_ray({"tasks/make.py": RESULT_TASK,
                                           "tasks/use.py": USES_RESULT,
                                           "tasks/pool.py": pool}, ray_env))
    run = watchrun(root, "build", timeout=180)
    assert run.code == 0, run.stdout + run.stderr
    assert watchrun(root, "show", "use").stdout == "Result 42 ['made by make']"
    assert watchrun(root, "show", "pool").stdout.strip() == "[42]"
    assert watchrun(root, "show", "make").stdout.strip().startswith("Result(total=21")
