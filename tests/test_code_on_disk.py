"""Whether a task's code files were written since the project was read (dev: a unit that ran
or failed then may have read other code than the plan's), over real files."""

from __future__ import annotations

import os
import time
from pathlib import Path

from watchrun.config import load_config
from watchrun.engine.code_on_disk import written_since
from watchrun.project.loader import Project, ProjectLoader


def loaded(root: Path) -> Project:
    (root / "tasks").mkdir()
    (root / "tasks/a.py").write_text("# /// task\n# ///\ndef run():\n    return 1\n")
    config, _ = load_config(root)
    return ProjectLoader(config).load()


def test_a_file_untouched_since_the_read_is_not_written(tmp_path: Path) -> None:
    project = loaded(tmp_path)
    read_ns = time.time_ns()
    assert not written_since(project, "a", read_ns)


def test_a_rewrite_a_removal_and_a_move_away_and_back_are_writes(tmp_path: Path) -> None:
    project = loaded(tmp_path)
    path = tmp_path / "tasks/a.py"
    read_ns = time.time_ns()
    time.sleep(0.02)  # file times come from a coarser clock than time.time_ns()
    path.rename(tmp_path / "a.away")
    assert written_since(project, "a", read_ns)  # gone
    (tmp_path / "a.away").rename(path)
    before = path.stat().st_mtime_ns
    assert before < read_ns  # a move keeps the mtime: the ctime tells it
    assert written_since(project, "a", read_ns)
    read_ns = time.time_ns()
    assert not written_since(project, "a", read_ns)
    os.utime(path, ns=(read_ns + 1, read_ns + 1))
    assert written_since(project, "a", read_ns)
