"""Day one's small parts on their own: exclusions in input expansion, the root search, `--set`
parsing, and the chain a task module is rebuilt from."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import write_project
from watchrun.executors.taskmodules import task_chain
from watchrun.project.inputs import expand_inputs, with_exclusions
from watchrun.project.overrides import OverrideError, parse_overrides
from watchrun.project.root import find_root, locate


def test_a_globs_matches_leave_out_the_tasks_outputs(tmp_path: Path) -> None:
    write_project(tmp_path, {"data/a.csv": "", "data/sum.csv": "", "out/x/1.png": "",
                             "out/y.png": ""})
    patterns = with_exclusions(("data/*.csv", "out/**/*.png"), ("data/sum.csv", "out/x"))
    assert expand_inputs(patterns, str(tmp_path)) == ["data/a.csv", "out/y.png"]
    # plain paths are left as they are (naming an output there is a project error)
    assert with_exclusions(("data/a.csv",), ("data/sum.csv",)) == ("data/a.csv",)


def test_the_root_is_the_nearest_project_folder_up(tmp_path: Path) -> None:
    write_project(tmp_path, {"outer/tasks/a.py": "", "outer/inner/watchrun.toml": "",
                             "outer/inner/deep/x.txt": "",
                             "outer/py/pyproject.toml": "[tool.black]\n",
                             "outer/tool/pyproject.toml": "[tool.watchrun]\njobs = 1\n"})
    outer = tmp_path / "outer"
    assert find_root(str(outer / "inner/deep")) == str(outer / "inner")
    assert find_root(str(outer / "tasks")) == str(outer)
    assert find_root(str(outer / "py")) == str(outer)  # a pyproject without our table
    assert find_root(str(outer / "tool")) == str(outer / "tool")
    assert locate(str(tmp_path / "missing"))[0] is None
    assert "not a watchrun project" in locate(str(outer / "py"))[1]


def test_set_values_are_toml_else_text() -> None:
    assert parse_overrides(["a.b.size=3", "a.b.rate=0.5", "t.name=plain words",
                            't.q="quoted"', "t.xs=[1, 2]", "t.on=true"]) == {
        "a.b": {"size": 3, "rate": 0.5}, "t": {"name": "plain words", "q": "quoted",
                                               "xs": [1, 2], "on": True}}
    for bad in ("nodot=1", "t.x", ".x=1", "t.=1"):
        with pytest.raises(OverrideError):
            parse_overrides([bad])


def test_a_task_module_is_rebuilt_from_its_chain_root_ancestor_first(tmp_path: Path) -> None:
    write_project(tmp_path, {
        "tasks/base.py": "# /// task\n# abstract = true\n# ///\n",
        "tasks/models/mid.py": '# /// task\n# extends = "base"\n# ///\n',
        "tasks/models/leaf.py": '# /// task\n# extends = "models.mid"\n# ///\n',
    })
    chain, below = task_chain(str(tmp_path), "models.leaf")
    assert chain == [(str(tmp_path / "tasks/base.py"), "tasks"),
                     (str(tmp_path / "tasks/models/mid.py"), "tasks.models"),
                     (str(tmp_path / "tasks/models/leaf.py"), "tasks.models")]
    assert not below
    assert task_chain(str(tmp_path), "models") == ([], True)
    assert task_chain(str(tmp_path), "nothing") == ([], False)


def test_a_task_module_imported_by_name_is_rebuilt_after_its_file_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a warm worker does between units: a task module it imported to read a value is
    dropped when the task's file changed, so the next import reads the new code."""
    import importlib
    import os
    import sys

    from watchrun.executors import taskmodules

    write_project(tmp_path, {"tasks/a.py": "# /// task\n# ///\nVERSION = 1\n",
                             "tasks/b.py": "# /// task\n# ///\n"})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(taskmodules.ROOT_ENV, str(tmp_path))
    b_chain = [(str(tmp_path / "tasks/b.py"), "tasks")]
    try:
        taskmodules.namespace_for("b", str(tmp_path), b_chain)
        assert importlib.import_module("watchrun.task.a").VERSION == 1
        path = tmp_path / "tasks/a.py"
        path.write_text("# /// task\n# ///\nVERSION = 2\n")
        os.utime(path, ns=(1, 1))  # a different mtime even on a coarse clock
        taskmodules.namespace_for("b", str(tmp_path), b_chain)  # the next unit starts
        assert importlib.import_module("watchrun.task.a").VERSION == 2
    finally:
        for name in ("watchrun.task.a", "watchrun.task.b"):
            sys.modules.pop(name, None)
            taskmodules._BUILT.pop(name, None)
