"""Whether a task's code files were written since the project was read (dev: a unit that ran
or failed then may have read other code than the plan's), over real files."""

from __future__ import annotations

import os
import time
from pathlib import Path

from watchrun.config import load_config
from watchrun.engine.code_on_disk import breaks_the_plan, gone_tasks, written_since
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


def load_files(root: Path, files: dict[str, str | None]) -> Project:
    for rel, text in files.items():
        path = root / rel
        if text is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    config, _ = load_config(root)
    return ProjectLoader(config).load()


FAMILY = {
    "tasks/base.py": "# /// task\n# abstract = true\n# ///\ndef run():\n    return step()\n"
                     "def step():\n    return 1\n",
    "tasks/child.py": '# /// task\n# extends = "base"\n# ///\n',
    "tasks/up.py": "# /// task\n# ///\ndef run():\n    return 2\n",
    "tasks/down.py": '# /// task\n# after = ["up"]\n# ///\ndef run(up):\n    return up\n',
    "tasks/lone.py": "# /// task\n# ///\ndef run():\n    return 3\n",
}


def test_a_read_that_lost_a_task_others_need_breaks_the_plan(tmp_path: Path) -> None:
    """dev takes no decision on a project read in which a task of the plan is gone and
    others are broken by it (a parent emptied by an editor, an upstream moved away for a
    moment); a task with an error of its own, or one deleted or renamed that nothing needs,
    is a valid successor."""
    planned = load_files(tmp_path, FAMILY)
    assert not breaks_the_plan(planned, planned)
    cases = {
        "a parent emptied": ({"tasks/base.py": ""}, True),
        "an upstream moved away": ({"tasks/up.py": None}, True),
        "a task that nothing needs, deleted": ({"tasks/lone.py": None}, False),
        "a task that nothing needs, renamed": (
            {"tasks/lone.py": None, "tasks/alone.py": FAMILY["tasks/lone.py"]}, False),
        "an error in a task's own header": (
            {"tasks/down.py": FAMILY["tasks/down.py"].replace("]", "")}, False),
    }
    for what, (files, breaks) in cases.items():
        read = load_files(tmp_path, files)
        assert breaks_the_plan(planned, read) is breaks, what
        assert bool(gone_tasks(planned, read)) is (what != "an error in a task's own header"), what
        load_files(tmp_path, {**{rel: FAMILY[rel] for rel in files if rel in FAMILY},
                              **{rel: None for rel in files if rel not in FAMILY}})
