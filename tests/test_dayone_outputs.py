"""Day one, points 2 and 3: the outputs contract and reserved names, through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import watchrun, write_project

pytestmark = pytest.mark.usefixtures("no_leaks")


def writes(path: str, extra: str = "") -> str:
    return (f'# /// task\n# outputs = ["{path}"]\n{extra}# ///\n'
            "def run(outputs):\n"
            "    outputs[0].parent.mkdir(parents=True, exist_ok=True)\n"
            '    outputs[0].write_text("made")\n')


def test_two_tasks_declaring_one_output_is_an_error_naming_both(tmp_path: Path) -> None:
    root = write_project(tmp_path, {"tasks/a.py": writes("out/x.csv"),
                                    "tasks/b.py": writes("./out//x.csv")})
    run = watchrun(root, "build")
    assert run.code == 2
    assert "tasks/a.py:2" in run.stderr and "tasks/b.py:2" in run.stderr, run.stderr
    assert "declared by two tasks" in run.stderr
    assert not (root / "out").exists()


def test_a_task_naming_its_output_among_its_inputs_is_an_error(tmp_path: Path) -> None:
    root = write_project(tmp_path, {"tasks/grow.py": writes("log.txt", '# inputs = ["log.txt"]\n')})
    run = watchrun(root, "build")
    assert run.code == 2 and "tasks/grow.py:3" in run.stderr and "its own output" in run.stderr


def test_an_input_glob_skips_the_tasks_own_output(tmp_path: Path) -> None:
    root = write_project(tmp_path, {
        "data/a.csv": "1\n", "data/b.csv": "2\n",
        "tasks/summary.py": """
            # /// task
            # inputs = ["data/*.csv"]
            # outputs = ["data/summary.csv"]
            # ///
            def run(inputs, outputs):
                names = [p.name for p in inputs]
                with open(outputs[0], "a") as f:  # appends: a self-feeding task would grow
                    f.write(",".join(names) + "\\n")
                return names
        """,
    })
    first = watchrun(root, "build", "--json")
    assert first.code == 0 and first.ran() == ["summary"]
    assert watchrun(root, "show", "summary").stdout.strip() == "['a.csv', 'b.csv']"
    for _ in range(2):  # it did not feed itself: nothing to do, with or without the proof
        again = watchrun(root, "build", "--json")
        assert again.code == 0 and again.ran() == []
    assert (root / "data/summary.csv").read_text() == "a.csv,b.csv\n"
    (root / "data/c.csv").write_text("3\n")
    assert watchrun(root, "build", "--json").ran() == ["summary"]


def test_a_unit_that_does_not_write_a_declared_output_fails_naming_it(tmp_path: Path) -> None:
    root = write_project(tmp_path, {
        "tasks/lazy.py": """
            # /// task
            # outputs = ["out/model.bin", "out/report.md"]
            # ///
            def run(outputs):
                outputs[0].parent.mkdir(exist_ok=True)
                outputs[0].write_bytes(b"weights")
                return [str(p) for p in outputs]
        """,
        "tasks/after_lazy.py": """
            # /// task
            # after = ["lazy"]
            # ///
            def run(lazy):
                return lazy
        """,
    })
    for _ in range(2):  # and it stays failed: not clean on the next build
        run = watchrun(root, "build", "--json")
        assert run.code == 1 and run.ran() == ["lazy"]  # its downstream never started
        [failed] = [e for e in run.events if e["event"] == "unit_failed"]
        assert "without writing its declared output 'out/report.md'" in failed["error"]
        assert "Traceback" not in failed["error"]
    assert "'out/report.md'" in watchrun(root, "build").stdout
    fixed = writes("out/model.bin").replace('"out/model.bin"', '"out/model.bin", "out/report.md"')
    fixed += '    outputs[1].write_text("# report")\n    return [str(p) for p in outputs]\n'
    write_project(root, {"tasks/lazy.py": fixed})
    run = watchrun(root, "build")
    assert run.code == 0, run.stdout
    # run(outputs) receives the declared outputs as paths, in their declared order
    assert watchrun(root, "show", "after_lazy").stdout.strip() == \
        "['out/model.bin', 'out/report.md']"


@pytest.mark.parametrize(("header", "line", "words"), [
    ("[params]\n# inputs = 1", 3, "param 'inputs' is a reserved name"),
    ("[params]\n# outputs = 1", 3, "param 'outputs' is a reserved name"),
    ("[params]\n# ctx = 1", 3, "param 'ctx' is a reserved name"),
    ("[params]\n# start = 0", 3, "param 'start' is a reserved name"),
    ('after = {ctx = "up"}', 2, "upstream argument 'ctx' is a reserved name"),
    ('after = ["up"]\n# [params]\n# up = 2', 4, "param 'up' has the name of the upstream"),
])
def test_reserved_and_shadowed_names_are_project_errors(tmp_path: Path, header: str, line: int,
                                                         words: str) -> None:
    root = write_project(tmp_path, {
        "tasks/up.py": "# /// task\n# ///\ndef run():\n    return 1\n",
        "tasks/down.py": f"# /// task\n# {header}\n# ///\ndef run(**kwargs):\n"
                         "    return kwargs\n",
    })
    run = watchrun(root, "build")
    assert run.code == 2, run.stdout + run.stderr
    assert f"tasks/down.py:{line}:" in run.stderr and words in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


def test_a_task_writing_into_its_own_input_glob_does_not_loop_in_dev(tmp_path: Path) -> None:
    from tests.devproc import DevProcess, started

    root = write_project(tmp_path / "proj", {
        "data/a.csv": "1\n",
        "tasks/summary.py": """
            # /// task
            # inputs = ["data/*.csv"]
            # outputs = ["data/summary.csv"]
            # ///
            def run(inputs, outputs):
                with open(outputs[0], "a") as f:
                    f.write(",".join(p.name for p in inputs) + "\\n")
        """,
    })
    dev = DevProcess(root)
    try:
        assert started(dev.idle(timeout=30)) == ["summary"]
        assert started(dev.quiet(1.5)) == []  # its own write changed none of its inputs
        (root / "data/b.csv").write_text("2\n")
        assert started(dev.idle(timeout=30)) == ["summary"]
        assert started(dev.quiet(1.5)) == []
    finally:
        assert dev.stop() in (0, 130)
    assert (root / "data/summary.csv").read_text() == "a.csv\na.csv,b.csv\n"


def test_a_newly_declared_output_that_is_missing_reruns_its_task(tmp_path: Path) -> None:
    root = write_project(tmp_path, {"tasks/make.py": writes("out/a.txt")})
    assert watchrun(root, "build").code == 0
    path = root / "tasks/make.py"  # the header alone changes: the signature does not
    path.write_text(path.read_text().replace('["out/a.txt"]', '["out/a.txt", "out/b.txt"]'))
    dry = watchrun(root, "build", "--dry-run")
    assert "would run make" in dry.stdout and "output missing: out/b.txt" in dry.stdout
    run = watchrun(root, "build", "--json")
    assert run.code == 1 and run.ran() == ["make"]
    (root / "out/b.txt").write_text("by hand")  # now it is there: nothing is missing
    path.write_text(path.read_text().replace('write_text("made")', 'write_text("made!")'))
    assert watchrun(root, "build").code == 0
    assert watchrun(root, "build", "--json").ran() == []
