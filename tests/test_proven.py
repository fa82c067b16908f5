"""A build after some data files changed takes the tasks that touch none of them from the
last build's proof (nullproof.ProvenClean, engine/proven.py) instead of resolving them: the
same outcome as a build that looks at everything, with the work of the units that run."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest

from tests.conftest import watchrun, write_project
from watchrun.config import load_config
from watchrun.engine.proven import covered_tasks
from watchrun.nullproof import try_null_build
from watchrun.project.loader import ProjectLoader
from watchrun.state.hashing import FileHasher
from watchrun.state.proof import ProvenClean

pytestmark = pytest.mark.usefixtures("no_leaks")


def step(name: str, reads: str, writes: str) -> str:
    return f'''
        # /// task
        # inputs = ["{reads}"]
        # outputs = ["{writes}"]
        # ///
        from pathlib import Path

        def run():
            Path("{writes}").parent.mkdir(parents=True, exist_ok=True)
            Path("{writes}").write_text(Path("{reads}").read_text() + "{name}")
            return len(Path("{writes}").read_text())
    '''


FILES = {
    "src/a.txt": "a\n", "src/b.txt": "b\n", "data/x.csv": "1\n",
    "tasks/a0.py": step("a0", "src/a.txt", "out/a0.txt"),
    "tasks/a1.py": step("a1", "out/a0.txt", "out/a1.txt"),
    "tasks/b0.py": step("b0", "src/b.txt", "out/b0.txt"),
    "tasks/b1.py": step("b1", "out/b0.txt", "out/b1.txt"),
    "tasks/table.py": '''
        # /// task
        # inputs = ["data/*.csv"]
        # ///
        def run(inputs):
            return sorted(p.name for p in inputs)
    ''',
    "tasks/both.py": '''
        # /// task
        # after = ["a1", "b1", "table"]
        # ///
        def run(a1, b1, table):
            return [a1, b1, table]
    ''',
}


@pytest.fixture
def built(tmp_path: Path) -> Path:
    root = write_project(tmp_path / "p", FILES)
    assert watchrun(root, "build").code == 0
    assert watchrun(root, "build").code == 0  # leaves a proof (with the tasks' values)
    return root


def covered_now(root: Path) -> list[str]:
    """What the proof covers as the files are now (the check the console script makes)."""
    proven = try_null_build(str(root), [])
    assert isinstance(proven, ProvenClean), proven
    config, _ = load_config(root)
    project = ProjectLoader(config).load()
    hasher = FileHasher(None)

    def paths_of(task):  # type: ignore[no-untyped-def]
        from watchrun.engine.resolve import Resolver

        found = Resolver(project, None, hasher).paths_of(task)  # type: ignore[arg-type]
        return None if found is None else found[1] + found[2]

    return covered_tasks(project, project.graph.order, proven, paths_of, hasher.hash_files)


def test_an_edit_leaves_the_tasks_that_do_not_touch_it_to_the_proof(built: Path) -> None:
    (built / "src/a.txt").write_text("AA\n")
    assert covered_now(built) == ["b0", "b1", "table"]  # a0 reads it; a1, both wait for a0
    run = watchrun(built, "build", "--json")
    assert run.code == 0, run.stderr
    assert sorted(run.ran()) == ["a0", "a1", "both"]
    assert sorted(t for t, _ in run.units("unit_skipped")) == ["b0", "b1", "table"]
    assert json.loads(watchrun(built, "show", "both", "--json").stdout) == [7, 6, ["x.csv"]]
    assert "ran 0" in watchrun(built, "build").stdout
    assert try_null_build(str(built), []) == 0  # the proof it left is whole again


def test_a_deleted_output_and_an_output_edited_by_hand_are_not_covered(built: Path) -> None:
    (built / "out/b1.txt").unlink()
    (built / "out/a0.txt").write_text("by hand\n")
    assert covered_now(built) == ["b0", "table"]  # b1, a0 wrote them; a1 waits for a0
    run = watchrun(built, "build", "--json")
    assert sorted(run.ran()) == ["a0", "b1"]  # a1 and both: early cutoff, same values
    assert (built / "out/b1.txt").read_text() == "b\nb0b1"


def test_a_stale_partial_proof_is_not_used(built: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The proof was checked, then another writer ran before this build took the lock (here
    `clean b1`, which forgets b1's results): what the check found is not used, and b1 runs."""
    (built / "src/a.txt").write_text("AA\n")
    proven = try_null_build(str(built), [])
    assert isinstance(proven, ProvenClean)
    assert watchrun(built, "clean", "b1").code == 0  # the other writer
    from watchrun.commands.build import build_command

    capsys.readouterr()
    code = build_command(built, [], jobs=1, force=False, dry_run=False, json_out=True,
                         fail_fast=False, verbose=False, executor=None, address=None,
                         proven=proven)
    assert code == 0
    started = [json.loads(line)["task"] for line in capsys.readouterr().out.splitlines()
               if '"unit_started"' in line]
    assert "b1" in started, started


EDITS = ["edit src", "edit data", "add data", "delete output", "edit output", "touch",
         "same text", "edit task", "nothing"]


def test_random_edits_build_the_same_with_and_without_the_proof(tmp_path: Path) -> None:
    """Differential: two copies take the same edits; one builds with the proofs it leaves,
    the other without any (removed before each build). Same units run, same values."""
    with_proof = write_project(tmp_path / "with", FILES)
    without = write_project(tmp_path / "without", FILES)
    proof = Path(".watchrun/clean.proof")
    rng = random.Random(11)
    for number in range(14):
        edit = rng.choice(EDITS)
        target = rng.choice(["a", "b"])
        for root in (with_proof, without):
            apply_edit(root, edit, target, number)
        (without / proof).unlink(missing_ok=True)
        runs = [watchrun(root, "build", "--json") for root in (with_proof, without)]
        assert [r.code for r in runs] == [0, 0], [r.stderr for r in runs]
        assert sorted(runs[0].ran()) == sorted(runs[1].ran()), (number, edit, target)
        shown = [watchrun(root, "show", "both").stdout for root in (with_proof, without)]
        assert shown[0] == shown[1], (number, edit, target)


def apply_edit(root: Path, edit: str, target: str, number: int) -> None:
    if edit == "edit src":
        (root / f"src/{target}.txt").write_text(f"{target} {number}\n")
    elif edit == "edit data":
        (root / "data/x.csv").write_text(f"{number}\n")
    elif edit == "add data":
        (root / f"data/n{number}.csv").write_text("n\n")
    elif edit == "delete output":
        (root / f"out/{target}1.txt").unlink(missing_ok=True)
    elif edit == "edit output":
        if (root / "out").exists():
            (root / f"out/{target}0.txt").write_text(f"hand {number}\n")
    elif edit == "touch":
        os.utime(root / f"src/{target}.txt")
    elif edit == "same text":
        path = root / f"src/{target}.txt"
        path.write_text(path.read_text())
    elif edit == "edit task":
        path = root / f"tasks/{target}1.py"
        path.write_text(path.read_text() + f"\n# edit {number}\nX = {number}\n")
    else:
        shutil.rmtree(root / ".watchrun" / "never", ignore_errors=True)


# -- the rule itself, on a loaded project and a made-up proof (no build) --------------------

SCOPED = {
    "src/a.txt": "a\n", "src/b.txt": "b\n",
    "tasks/a0.py": step("a0", "src/a.txt", "out/a0.txt"),
    "tasks/b0.py": step("b0", "src/b.txt", "out/b0.txt"),
    "tasks/gen.py": '# /// task\n# kind = "generator"\n# ///\ndef run():\n    yield 1\n',
    "tasks/item.py": '# /// task\n# after = ["gen"]\n# ///\ndef run(gen):\n    return gen\n',
    "tasks/after_gen.py": '# /// task\n# after = ["gen", "a0"]\n# ///\n'
                          "def run(gen, a0):\n    return a0\n",
    "tasks/last.py": '# /// task\n# after = ["a0", "b0"]\n# ///\ndef run(a0, b0):\n    return 1\n',
}


def made_up_proof(root: Path, hashes: dict[str, str], values: list[str]) -> ProvenClean:
    """A proof that observed `hashes` (root-relative path -> hash, "" for missing) and holds
    a value for each of `values`."""
    from watchrun.state.proof import join

    paths = [str(root / p) for p in hashes]
    proof = {"observed": join(paths), "hashes": join(hashes.values()),
             "values": (join(values), join(f"v-{v}" for v in values))}
    return ProvenClean(proof, set(), None)


def test_the_covered_tasks_follow_the_rule(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", SCOPED)
    config, _ = load_config(root)
    project = ProjectLoader(config).load()
    now = {"src/a.txt": "ha", "src/b.txt": "hb", "out/a0.txt": "", "out/b0.txt": ""}

    def covered(hashes: dict[str, str], values: list[str], changed: frozenset[str] = frozenset()
                ) -> list[str]:
        proven = made_up_proof(root, hashes, values)
        proven.changed = {str(root / p) for p in changed}

        def paths_of(task):  # type: ignore[no-untyped-def]
            return [str(root / p) for p in (*task.inputs, *task.outputs)]

        def hashes_of(paths: list[str]) -> dict[str, str | None]:
            return {p: now[os.path.relpath(p, root)] or None for p in paths}

        return covered_tasks(project, project.graph.order, proven, paths_of, hashes_of)

    everything = ["a0", "b0", "gen", "item", "after_gen", "last"]
    # generators, their scope and what follows a generator are never covered
    assert covered(now, everything) == ["a0", "b0", "last"]
    assert covered(now, everything, frozenset({"src/a.txt"})) == ["b0"]  # last waits for a0
    assert covered({**now, "src/b.txt": "old"}, everything) == ["a0"]  # hashed again: changed
    partial = {p: h for p, h in now.items() if p != "out/b0.txt"}
    assert covered(partial, everything) == ["a0"]  # a path the proof never saw
    assert covered(now, ["a0", "last"]) == ["a0"]  # no value for b0
