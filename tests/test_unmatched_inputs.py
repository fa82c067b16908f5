"""The warning about inputs that are not there: which declared inputs it names, on a loaded
project (no build). An input some task writes, itself or inside a folder it declares, is not
missing; a path that only shares the beginning of an output's name is."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import write_project
from watchrun.commands.common import unmatched_inputs
from watchrun.config import load_config
from watchrun.project.loader import ProjectLoader


def test_inputs_no_task_writes_and_no_file_holds_are_named(tmp_path: Path) -> None:
    root = write_project(tmp_path, {
        "data/there.csv": "a\n",
        "tasks/make.py": '# /// task\n# outputs = ["out/made.txt", "gen"]\n# ///\n'
                         "def run():\n    pass\n",
        "tasks/read.py": "# /// task\n"
                         '# inputs = ["out/made.txt", "gen/part/x.csv", "genx/y.csv",\n'
                         '#           "data/there.csv", "data/raw.csv", "out/made.txt/z"]\n'
                         "# ///\ndef run():\n    pass\n",
    })
    config, _ = load_config(root)
    project = ProjectLoader(config).load()

    found = unmatched_inputs(project, project.tasks)

    assert [(task, pattern) for task, pattern, _ in found] == [
        ("read", "genx/y.csv"), ("read", "data/raw.csv")]
    assert {where for _, _, where in found} == {"tasks/read.py:2"}
