"""Day one, point 1: classes and functions a task defines pickle like any module's — as outputs,
as yields, into multiprocessing and concurrent.futures pools of every start method, into
downstream units and `watchrun show`; a stored value whose class is gone fails naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import watchrun, write_project

pytestmark = pytest.mark.usefixtures("no_leaks")

RESULT_TASK = """
    # /// task
    # ///
    from dataclasses import dataclass, field


    @dataclass
    class Result:
        total: int
        notes: list[str] = field(default_factory=list)

        def doubled(self) -> int:
            return self.total * 2


    def run():
        return Result(21, ["made by make"])
"""

USES_RESULT = """
    # /// task
    # after = ["make"]
    # ///
    def run(make):
        # a method of the task's own class, on the value as the downstream unit received it
        return f"{type(make).__name__} {make.doubled()} {make.notes}"
"""


def test_a_task_dataclass_is_an_output_downstream_units_and_show_can_read(
        tmp_path: Path) -> None:
    root = write_project(tmp_path, {"tasks/make.py": RESULT_TASK, "tasks/use.py": USES_RESULT})
    run = watchrun(root, "build")
    assert run.code == 0, run.stdout + run.stderr
    assert watchrun(root, "show", "use").stdout == "Result 42 ['made by make']"
    shown = watchrun(root, "show", "make")
    assert shown.code == 0 and shown.stdout.strip() == "Result(total=21, notes=['made by make'])"
    again = watchrun(root, "build", "--json")
    assert again.code == 0 and again.ran() == []


POOLS = """
    # /// task
    # ///
    import concurrent.futures
    import multiprocessing


    class Square:
        def __init__(self, value):
            self.value = value * value


    def square(x):
        return Square(x)


    def run():
        totals = {}
        for method in ("fork", "spawn", "forkserver"):
            with multiprocessing.get_context(method).Pool(2) as pool:
                totals[method] = sum(s.value for s in pool.map(square, range(5)))
        with concurrent.futures.ProcessPoolExecutor(2) as executor:
            totals["futures"] = sum(s.value for s in executor.map(square, range(5)))
        spawned = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=spawned) as executor:
            totals["futures-spawn"] = sum(s.value for s in executor.map(square, range(5)))
        return totals
"""


def test_task_functions_go_to_process_pools_of_every_start_method(tmp_path: Path) -> None:
    root = write_project(tmp_path, {"tasks/pools.py": POOLS})
    run = watchrun(root, "build", timeout=120)
    assert run.code == 0, run.stdout + run.stderr
    shown = watchrun(root, "show", "pools").stdout
    assert shown.strip() == ("{'fork': 30, 'spawn': 30, 'forkserver': 30, 'futures': 30, "
                             "'futures-spawn': 30}")


def test_classes_of_a_parent_module_and_of_dotted_task_names_pickle(tmp_path: Path) -> None:
    root = write_project(tmp_path, {
        "tasks/base.py": """
            # /// task
            # abstract = true
            # ///
            from dataclasses import dataclass


            @dataclass
            class Model:
                weights: list


            def run(size):
                return Model([size] * 3)
        """,
        "tasks/models/small.py": """
            # /// task
            # extends = "base"
            # [params]
            # size = 2
            # ///
        """,
        "tasks/report.py": """
            # /// task
            # after = {m = "models.small"}
            # ///
            import multiprocessing


            def weight_sum(model):
                return sum(model.weights)


            def run(m):
                with multiprocessing.get_context("spawn").Pool(1) as pool:
                    return pool.map(weight_sum, [m, m])
        """,
    })
    run = watchrun(root, "build", timeout=120)
    assert run.code == 0, run.stdout + run.stderr
    assert watchrun(root, "show", "models.small").stdout.strip() == "Model(weights=[2, 2, 2])"
    assert watchrun(root, "show", "report").stdout.strip() == "[6, 6]"


def test_yielded_task_objects_reach_iteration_units_and_a_collector(tmp_path: Path) -> None:
    root = write_project(tmp_path, {
        "tasks/frames.py": """
            # /// task
            # kind = "generator"
            # ///
            from typing import NamedTuple


            class Frame(NamedTuple):
                index: int
                pixels: bytes


            def run():
                for i in range(3):
                    yield Frame(i, bytes([i]) * 4)
        """,
        "tasks/size.py": """
            # /// task
            # after = ["frames"]
            # ///
            def run(frames):
                return (frames.index, len(frames.pixels))
        """,
        "tasks/album.py": """
            # /// task
            # kind = "collector"
            # after = ["size"]
            # ///
            sizes = []


            def run(size):
                sizes.append(size)


            def gather():
                return sizes
        """,
    })
    run = watchrun(root, "build")
    assert run.code == 0, run.stdout + run.stderr
    assert watchrun(root, "show", "album").stdout.strip() == "[(0, 4), (1, 4), (2, 4)]"
    assert "Frame(index=1, pixels=b'\\x01\\x01\\x01\\x01')" in \
        watchrun(root, "show", "frames", "--iter", "1").stdout


def test_a_value_whose_class_the_task_no_longer_defines_fails_naming_both(
        tmp_path: Path) -> None:
    root = write_project(tmp_path, {"tasks/make.py": RESULT_TASK, "tasks/use.py": USES_RESULT})
    assert watchrun(root, "build").code == 0
    # the class goes away, and the old output is kept as it is (accept): the downstream unit
    # receives a value that refers to a class nobody defines any more
    write_project(root, {"tasks/make.py": "# /// task\n# ///\ndef run():\n    return 1\n"})
    assert watchrun(root, "accept", "make").code == 0
    run = watchrun(root, "build", "--force", "use")
    assert run.code == 1
    assert "'Result'" in run.stdout and "task 'make' no longer defines" in run.stdout, run.stdout
    assert "Traceback" not in run.stdout + run.stderr
    shown = watchrun(root, "show", "make")
    assert shown.code == 2 and "'Result'" in shown.stderr and "'make'" in shown.stderr


def test_a_warm_worker_reads_a_changed_class_afresh_in_dev(tmp_path: Path) -> None:
    from tests.devproc import DevProcess

    make = """
        # /// task
        # [params]
        # v = 1
        # ///
        from dataclasses import dataclass


        @dataclass
        class Result:
            v: int

            def label(self):
                return f"old {self.v}"


        def run(v):
            return Result(v)
    """
    root = write_project(tmp_path / "proj", {
        "tasks/make.py": make,
        "tasks/use.py": '# /// task\n# after = ["make"]\n# ///\ndef run(make):\n'
                        '    return make.label()\n',
    })
    dev = DevProcess(root, "-j", "1")  # one worker runs every unit, one after the other
    try:
        dev.idle(timeout=30)
        assert watchrun(root, "show", "use").stdout == "old 1"
        path = root / "tasks/make.py"
        path.write_text(path.read_text().replace('f"old {self.v}"', 'f"new {self.v}"')
                        .replace("# v = 1", "# v = 2"))
        dev.wait(lambda e: e["event"] == "unit_finished" and e["task"] == "use",
                 timeout=30, what="use to rerun")
        dev.idle(timeout=30)
        assert watchrun(root, "show", "use").stdout == "new 2"
    finally:
        assert dev.stop() in (0, 130)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_custom_scikit_learn_transformer_and_joblib_workers(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    root = write_project(tmp_path, {
        "tasks/model.py": """
            # /// task
            # ///
            import numpy as np
            from joblib import Parallel, delayed
            from sklearn.base import BaseEstimator, TransformerMixin
            from sklearn.linear_model import LinearRegression
            from sklearn.pipeline import make_pipeline


            class Scale(BaseEstimator, TransformerMixin):
                def __init__(self, factor=2.0):
                    self.factor = factor

                def fit(self, X, y=None):
                    return self

                def transform(self, X):
                    return np.asarray(X) * self.factor


            def square(x):
                return x * x


            def run():
                # joblib's loky workers import the task's function by its module's name now
                squares = Parallel(n_jobs=2)(delayed(square)(i) for i in range(4))
                X = np.arange(10).reshape(-1, 1)
                pipe = make_pipeline(Scale(), LinearRegression()).fit(X, 3 * X.ravel() + 1)
                return {"pipe": pipe, "squares": squares}
        """,
        "tasks/predict.py": """
            # /// task
            # after = ["model"]
            # ///
            def run(model):
                return round(float(model["pipe"].predict([[20]])[0]), 3), model["squares"]
        """,
    })
    run = watchrun(root, "build", timeout=200)
    assert run.code == 0, run.stdout + run.stderr
    assert watchrun(root, "show", "predict", timeout=120).stdout.strip() == "(61.0, [0, 1, 4, 9])"
    assert "('scale', Scale())" in watchrun(root, "show", "model", timeout=120).stdout
