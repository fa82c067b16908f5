"""The incremental reload of `dev` gives exactly the closures a full load gives, and leaves
structural changes to the full load."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import write_project
from watchrun.config import load_config
from watchrun.project.dev_reload import ReverseIndex, reload_code
from watchrun.project.loader import Project, ProjectLoader
from watchrun.state.hashing import FileHasher
from watchrun.state.store import Store

FILES = {
    "lib/__init__.py": "",
    "lib/text.py": "def shout(s):\n    return s.upper()\n\n\ndef whisper(s):\n"
                   "    return s.lower()\n",
    "tasks/base.py": '# /// task\n# abstract = true\n# ///\ndef helper(x):\n    return x\n\n\n'
                     "def run():\n    return helper(1)\n",
    "tasks/inherits.py": '# /// task\n# extends = "base"\n# ///\n',
    "tasks/overrides.py": '# /// task\n# extends = "base"\n# ///\ndef helper(x):\n'
                          "    return x * 2\n",
    "tasks/loud.py": "# /// task\n# ///\nfrom lib.text import shout\n\n\ndef run():\n"
                     "    return shout('a')\n",
    "tasks/quiet.py": "# /// task\n# ///\nfrom lib.text import whisper\n\n\ndef run():\n"
                      "    return whisper('A')\n",
}


def full_load(root: Path, state: str) -> Project:
    config, _ = load_config(root)
    store = Store(root / state)
    return ProjectLoader(config, store, FileHasher(store)).load()


@pytest.fixture
def loaded(tmp_path: Path) -> tuple[Path, ProjectLoader, Project, ReverseIndex]:
    root = write_project(tmp_path / "proj", FILES)
    config, _ = load_config(root)
    store = Store(config.state_dir)
    loader = ProjectLoader(config, store, FileHasher(store))
    project = loader.load()
    loader.warm()
    return root, loader, project, ReverseIndex(project)


def edit(root: Path, rel: str, old: str, new: str) -> Path:
    path = root / rel
    path.write_text(path.read_text().replace(old, new))
    return path


@pytest.mark.parametrize(("rel", "old", "new", "affected"), [
    ("lib/text.py", "s.upper()", "s.upper() + '!'", {"loud"}),
    ("lib/text.py", "s.lower()", "s.lower().strip()", {"quiet"}),
    ("tasks/base.py", "return x\n", "return x + 1\n", {"inherits"}),  # overrides has its own
    ("tasks/overrides.py", "x * 2", "x * 3", {"overrides"}),
    ("tasks/base.py", "return helper(1)", "return helper(1)  # a comment", {"inherits",
                                                                          "overrides"}),
])
def test_code_edit_recomputes_exactly_the_reaching_closures(
        loaded: tuple[Path, ProjectLoader, Project, ReverseIndex], rel: str, old: str,
        new: str, affected: set[str]) -> None:
    root, loader, project, index = loaded
    path = edit(root, rel, old, new)
    result = reload_code(loader, project, index, {path})
    assert result is not None
    fast, recomputed = result
    changed = {n for n, c in fast.closures.items() if c.digest != project.closures[n].digest}
    # recomputed: every task with code in the file; changed: only those reaching the edit
    assert changed == (affected if "comment" not in new else set())
    assert recomputed >= changed
    fresh = full_load(root, ".other-state")  # nothing cached: everything parsed again
    assert {n: c.digest for n, c in fast.closures.items()} == \
        {n: c.digest for n, c in fresh.closures.items()}


@pytest.mark.parametrize(("rel", "old", "new"), [
    ("tasks/base.py", "# abstract = true", "# abstract = true\n# [params]\n# k = 1"),  # header
    ("tasks/loud.py", "from lib.text import shout", "from lib.text import shout, whisper"),
    ("tasks/base.py", "def run():", "def run(size):"),  # what run() asks for
    ("tasks/quiet.py", "def run():", "def run(:"),  # a syntax error
])
def test_structural_changes_are_left_to_the_full_reload(
        loaded: tuple[Path, ProjectLoader, Project, ReverseIndex], rel: str, old: str,
        new: str) -> None:
    root, loader, project, index = loaded
    path = edit(root, rel, old, new)
    assert reload_code(loader, project, index, {path}) is None


def test_a_new_file_is_left_to_the_full_reload(
        loaded: tuple[Path, ProjectLoader, Project, ReverseIndex]) -> None:
    root, loader, project, index = loaded
    path = root / "tasks/new.py"
    path.write_text("# /// task\n# ///\ndef run():\n    return 1\n")
    assert reload_code(loader, project, index, {path}) is None
