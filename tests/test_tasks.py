"""Discovery, names, and inheritance of tasks (params with origins, fields, abstract, after)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from watchrun.config import load_config
from watchrun.project.header import parse_header
from watchrun.project.model import Kind, Origin, Resources
from watchrun.project.tasks import (
    TaskSource,
    discover,
    module_name,
    package_name,
    resolve_tasks,
    task_name,
)


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))


def sources_of(root: Path, files: dict[str, str]) -> dict[str, TaskSource]:
    write(root, files)
    config, _ = load_config(root)
    sources = {}
    for path in discover(config):
        header, errors = parse_header(path.read_text(), path)
        assert errors == []
        if header is not None and path.name != "__init__.py":
            name = task_name(path, config.tasks[0])
            sources[name] = TaskSource(name, path, header, module_name(path, root))
    return sources


def header(*lines: str) -> str:
    return "\n".join(["# /// task", *(f"# {line}" for line in lines), "# ///", ""])


def test_discover_skips_caches_hidden_folders_and_the_state_dir(tmp_path: Path) -> None:
    write(tmp_path, {
        "watchrun.toml": 'state_dir = "tasks/state"\n',
        "tasks/a.py": "", "tasks/sub/b.py": "", "tasks/sub/__init__.py": "",
        "tasks/__pycache__/a.cpython-311.py": "", "tasks/.hidden/c.py": "",
        "tasks/state/d.py": "", "tasks/.#e.py": "", "tasks/notes.txt": "", "lib/x.py": ""})
    config, _ = load_config(tmp_path)
    assert discover(config) == [tmp_path / "tasks/a.py", tmp_path / "tasks/sub/__init__.py",
                                tmp_path / "tasks/sub/b.py"]


def test_discover_several_folders_and_a_missing_one(tmp_path: Path) -> None:
    write(tmp_path, {"watchrun.toml": 'tasks = ["one", "two", "gone"]\n', "two/b.py": "",
                     "one/a.py": "", "one/deep/er/c.py": ""})
    config, _ = load_config(tmp_path)
    assert discover(config) == [tmp_path / "one/a.py", tmp_path / "one/deep/er/c.py",
                                tmp_path / "two/b.py"]


def test_names() -> None:
    root = Path("/p")
    assert task_name(root / "tasks/models/train.py", root / "tasks") == "models.train"
    assert task_name(root / "tasks/a.py", root / "tasks") == "a"
    with pytest.raises(ValueError):
        task_name(root / "tasks/models/__init__.py", root / "tasks")
    assert module_name(root / "tasks/models/train.py", root) == "tasks.models.train"
    assert package_name(root / "tasks/models/train.py", root) == "tasks.models"
    assert module_name(root / "tasks/models/__init__.py", root) == "tasks.models"
    assert package_name(root / "tasks/models/__init__.py", root) == "tasks.models"
    assert package_name(root / "top.py", root) == ""


def test_defaults_of_a_bare_task(tmp_path: Path) -> None:
    sources = sources_of(tmp_path, {"tasks/a.py": header()})
    tasks, errors = resolve_tasks(sources, tmp_path)
    assert errors == []
    task = tasks["a"]
    assert (task.kind, task.after, task.inputs, task.outputs, task.abstract, task.params,
            task.chain, task.field_origins, task.line) == \
        (Kind.TASK, {}, (), (), False, {}, ("a",), {}, 1)
    assert task.path == tmp_path / "tasks/a.py" and task.parent is None


def test_params_merge_along_the_chain_nearest_wins_with_origins(tmp_path: Path) -> None:
    sources = sources_of(tmp_path, {
        "tasks/base.py": header("abstract = true", "[params]", "size = 64", "lr = 0.1",
                                "name = 'base'"),
        "tasks/mid.py": header("extends = 'base'", "[params]", "size = 128"),
        "tasks/leaf.py": header("extends = 'mid'", "", "[params]", "name = 'leaf'", "extra = [1]"),
    })
    tasks, errors = resolve_tasks(sources, tmp_path)
    assert errors == []
    leaf = tasks["leaf"]
    assert leaf.chain == ("leaf", "mid", "base") and leaf.parent == "mid"
    values = {k: p.value for k, p in leaf.params.items()}
    assert values == {"size": 128, "lr": 0.1, "name": "leaf", "extra": [1]}
    origins = {k: p.origin for k, p in leaf.params.items()}
    assert origins == {
        "size": Origin("mid", tmp_path / "tasks/mid.py", 4),
        "lr": Origin("base", tmp_path / "tasks/base.py", 5),
        "name": Origin("leaf", tmp_path / "tasks/leaf.py", 5),
        "extra": Origin("leaf", tmp_path / "tasks/leaf.py", 6),
    }
    assert leaf.params["size"].origin.format(tmp_path) == "tasks/mid.py:4 (mid)"


def test_fields_come_whole_from_the_nearest_setter_and_abstract_is_not_inherited(
        tmp_path: Path) -> None:
    sources = sources_of(tmp_path, {
        "tasks/base.py": header("abstract = true", "kind = 'generator'",
                                "inputs = ['data/*.csv', 'more/*.csv']", "outputs = 'out/x'",
                                "after = ['prep']"),
        "tasks/child.py": header("extends = 'base'", "inputs = 'other/*.txt'"),
        "tasks/prep.py": header(),
    })
    tasks, errors = resolve_tasks(sources, tmp_path)
    assert errors == []
    child, base = tasks["child"], tasks["base"]
    assert base.abstract and not child.abstract
    assert child.kind is Kind.GENERATOR
    assert child.inputs == ("other/*.txt",)  # replaced whole, not merged
    assert child.outputs == ("out/x",)
    assert child.after == {"prep": "prep"}
    assert child.field_origins == {
        "kind": Origin("base", tmp_path / "tasks/base.py", 3),
        "inputs": Origin("child", tmp_path / "tasks/child.py", 3),
        "outputs": Origin("base", tmp_path / "tasks/base.py", 5),
        "after": Origin("base", tmp_path / "tasks/base.py", 6),
    }
    assert child.after_lines == {"prep": 6}


def test_after_list_and_table_forms(tmp_path: Path) -> None:
    sources = sources_of(tmp_path, {
        "tasks/video/extract.py": header(),
        "tasks/download.py": header(),
        "tasks/listed.py": header("after = [", "  'video.extract',", "  'download',", "]"),
        "tasks/tabled.py": header("[after]", "frames = 'video.extract'", "raw = 'download'"),
    })
    tasks, errors = resolve_tasks(sources, tmp_path)
    assert errors == []
    assert tasks["listed"].after == {"extract": "video.extract", "download": "download"}
    assert tasks["listed"].after_lines == {"extract": 3, "download": 4}
    assert tasks["tabled"].after == {"frames": "video.extract", "raw": "download"}
    assert tasks["tabled"].after_lines == {"frames": 3, "raw": 4}


def test_duplicate_argument_names_in_after(tmp_path: Path) -> None:
    sources = sources_of(tmp_path, {
        "tasks/a/extract.py": header(), "tasks/b/extract.py": header(),
        "tasks/t.py": header("after = ['a.extract', 'b.extract']"),
        "tasks/u.py": header("after = [", "'a.extract',", "'a.extract',", "]"),
        "tasks/child.py": header("extends = 't'"),
    })
    tasks, errors = resolve_tasks(sources, tmp_path)
    assert [e.format(tmp_path) for e in errors] == [
        "tasks/t.py:2: error: after: 'a.extract' and 'b.extract' both give the argument name "
        "'extract'; choose names with a table: after = {a = \"a.extract\", b = \"b.extract\"}",
        "tasks/u.py:4: error: after lists 'a.extract' twice",
    ]
    assert sorted(tasks) == ["a.extract", "b.extract"]  # t, u and t's child are left out


def test_missing_parent_with_suggestion(tmp_path: Path) -> None:
    sources = sources_of(tmp_path, {
        "tasks/base.py": header(),
        "tasks/b.py": header("kind = 'task'", "extends = 'basee'"),
        "tasks/c.py": header("extends = 'b'"),
        "tasks/d.py": header("extends = 'zzz'"),
    })
    tasks, errors = resolve_tasks(sources, tmp_path)
    assert [e.format(tmp_path) for e in errors] == [
        "tasks/b.py:3: error: extends 'basee': no such task (did you mean 'base'?)",
        "tasks/d.py:2: error: extends 'zzz': no such task",
    ]
    assert sorted(tasks) == ["base"]  # c is left out silently: its parent is the problem


def test_cycles_in_extends_are_printed_as_a_chain_once(tmp_path: Path) -> None:
    sources = sources_of(tmp_path, {
        "tasks/b.py": header("extends = 'c'"),
        "tasks/c.py": header("extends = 'a'"),
        "tasks/a.py": header("", "extends = 'b'"),
        "tasks/self.py": header("extends = 'self'"),
        "tasks/into.py": header("extends = 'c'"),
        "tasks/fine.py": header(),
    })
    tasks, errors = resolve_tasks(sources, tmp_path)
    assert [e.format(tmp_path) for e in errors] == [
        "tasks/a.py:3: error: extends forms a cycle: a -> b -> c -> a",
        "tasks/self.py:2: error: extends forms a cycle: self -> self",
    ]
    assert sorted(tasks) == ["fine"]


def test_a_child_may_change_its_parents_kind_and_params_only(tmp_path: Path) -> None:
    sources = sources_of(tmp_path, {
        "tasks/base.py": header("kind = 'collector'", "[params]", "n = 1"),
        "tasks/child.py": header("extends = 'base'", "kind = 'task'"),
    })
    tasks, _ = resolve_tasks(sources, tmp_path)
    assert tasks["base"].kind is Kind.COLLECTOR and tasks["child"].kind is Kind.TASK
    assert tasks["child"].params["n"].origin.task == "base"


def test_timeout_retries_and_resources_come_whole_from_the_nearest_setter(
        tmp_path: Path) -> None:
    sources = sources_of(tmp_path, {
        "tasks/base.py": header("abstract = true", "timeout = 60", "retries = 2",
                                "resources = {cpus = 2, memory = '2G'}"),
        "tasks/child.py": header("extends = 'base'", "resources = {gpus = 1}"),
        "tasks/plain.py": header(),
    })
    tasks, errors = resolve_tasks(sources, tmp_path)
    assert errors == []
    child, plain = tasks["child"], tasks["plain"]
    assert (child.timeout, child.retries) == (60, 2)
    # the whole table from the nearest setter: the parent's cpus and memory are not merged in
    assert child.resources == Resources(cpus=1.0, gpus=1, memory=None)
    assert tasks["base"].resources == Resources(cpus=2, gpus=0, memory=2 * 2**30)
    assert child.field_origins["timeout"] == Origin("base", tmp_path / "tasks/base.py", 3)
    assert child.field_origins["resources"] == Origin("child", tmp_path / "tasks/child.py", 3)
    assert (plain.timeout, plain.retries, plain.resources) == (None, 0, Resources())


def test_changing_timeout_retries_or_resources_reruns_nothing(tmp_path: Path) -> None:
    from tests.conftest import watchrun, write_project

    def task(settings: str) -> dict[str, str]:
        return {"tasks/t.py": f"# /// task\n{settings}# ///\ndef run():\n    return 1\n"}

    root = write_project(tmp_path, task("# timeout = 10\n"))
    assert watchrun(root, "build", "--json").ran() == ["t"]
    write_project(root, task("# timeout = 20\n# retries = 3\n"
                             "# resources = {cpus = 2, memory = '1G'}\n"))
    again = watchrun(root, "build", "--json")
    assert again.code == 0, again.stderr
    assert again.ran() == []
    # the header is still read: a bad value is an error, not ignored
    write_project(root, task("# timeout = -1\n"))
    bad = watchrun(root, "build")
    assert bad.code == 2, bad.stderr
    assert "tasks/t.py:2: error: timeout must be a number of seconds greater than 0" in bad.stderr
