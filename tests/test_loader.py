"""Loading whole projects from real files: every project error of SPEC section 7 with its file and
line, all at once, the healthy part still usable, local modules, and a null build that parses
nothing."""

from __future__ import annotations

import pickle
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from watchrun.config import load_config
from watchrun.project import codemap, loader, snapshot
from watchrun.project.loader import Project, ProjectLoader
from watchrun.project.model import Kind
from watchrun.state.hashing import FileHasher
from watchrun.state.store import Store


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


class Opened:
    """A loader on a real store, as `watchrun build` opens it."""

    def __init__(self, root: Path) -> None:
        config, errors = load_config(root)
        assert errors == []
        self.root = root
        self.store = Store(config.state_dir)
        self.hasher = FileHasher(self.store)
        self.loader = ProjectLoader(config, self.store, self.hasher)

    def load(self) -> Project:
        project = self.loader.load()
        self.hasher.flush()
        self.store.commit()
        return project

    def close(self) -> None:
        self.hasher.flush()
        self.store.close()


@pytest.fixture
def opened() -> Iterator[list[Opened]]:
    created: list[Opened] = []
    yield created
    for item in created:
        item.close()


def open_project(opened: list[Opened], root: Path) -> Opened:
    item = Opened(root)
    opened.append(item)
    return item


def load(opened: list[Opened], root: Path, files: dict[str, str] | None = None) -> Project:
    if files is not None:
        write(root, files)
    return open_project(opened, root).load()


def messages(project: Project) -> list[str]:
    return [e.format(project.root) for e in project.errors]


OK = """
# /// task
# ///
def run():
    return 1
"""


def test_a_healthy_project(tmp_path: Path, opened: list[Opened]) -> None:
    project = load(opened, tmp_path, {
        "lib/__init__.py": "",
        "lib/helpers.py": "from lib import deeper\n\ndef norm(x):\n    return deeper.f(x)\n",
        "lib/deeper.py": "import json\n\ndef f(x):\n    return x\n",
        "tasks/__init__.py": "",
        "tasks/common.py": "def shared():\n    return 2\n",
        "tasks/unused.py": "def nothing():\n    pass\n",
        "tasks/base.py": """
            # /// task
            # abstract = true
            # [params]
            # size = 3
            # ///
            from lib import helpers

            def run(size):
                return helpers.norm(size)
            """,
        "tasks/video/extract.py": """
            # /// task
            # kind = "generator"
            # ///
            from tasks.common import shared

            def run(start, ctx):
                yield shared()
            """,
        "tasks/child.py": """
            # /// task
            # extends = "base"
            # after = ["video.extract"]
            # ///
            """,
        "tasks/collect.py": """
            # /// task
            # kind = "collector"
            # after = ["child"]
            # ///
            items = []

            def run(value):
                items.append(value)

            def gather():
                return items
            """,
    })
    assert messages(project) == []
    assert project.broken == set()
    assert sorted(project.tasks) == ["base", "child", "collect", "video.extract"]
    assert project.graph.order == ["video.extract", "child", "collect"]
    assert project.tasks["child"].kind is Kind.TASK
    assert project.graph.scope == {"video.extract": (), "child": ("video.extract",),
                                   "collect": ("video.extract",)}
    assert sorted(project.closures) == ["child", "collect", "video.extract"]
    assert project.task_modules == {"base": "tasks.base", "child": "tasks.child",
                                    "collect": "tasks.collect",
                                    "video.extract": "tasks.video.extract"}
    # task modules and the local modules they reach, not third-party ones or unused helpers
    assert sorted(project.modules) == ["lib", "lib.deeper", "lib.helpers", "tasks",
                                       "tasks.base", "tasks.child", "tasks.collect",
                                       "tasks.common", "tasks.video.extract"]
    assert project.module_files["lib.helpers"] == tmp_path / "lib/helpers.py"
    assert project.module_files["tasks"] == tmp_path / "tasks/__init__.py"


def test_namespace_packages_and_plain_modules_are_local(tmp_path: Path,
                                                        opened: list[Opened]) -> None:
    project = load(opened, tmp_path, {
        "util.py": "def u():\n    pass\n",
        "ns/pkg/mod.py": "def m():\n    pass\n",
        "tasks/a.py": """
            # /// task
            # ///
            import util
            import ns.pkg.mod
            import os.path

            def run():
                return util.u(), ns.pkg.mod.m()
            """,
    })
    assert messages(project) == []
    assert sorted(project.modules) == ["ns.pkg.mod", "tasks.a", "util"]


# -- every project error of SPEC section 7 ------------------------------------------------------

ERRORS: dict[str, tuple[dict[str, str], list[str]]] = {
    "invalid TOML in a header": (
        {"tasks/a.py": "# /// task\n# kind = \n# ///\ndef run():\n    pass\n"},
        ["tasks/a.py:2: error: invalid TOML in the task header: Invalid value (column 8)"]),
    "unknown key": (
        {"tasks/a.py": "# /// task\n# colour = 1\n# ///\ndef run():\n    pass\n"},
        ["tasks/a.py:2: error: unknown key 'colour' in the task header; allowed: abstract, "
         "after, extends, inputs, kind, outputs, params, priority, resources, retries, timeout"]),
    "unknown kind": (
        {"tasks/a.py": "# /// task\n# kind = 'genrator'\n# ///\ndef run():\n    pass\n"},
        ["tasks/a.py:2: error: kind must be one of 'task', 'generator', 'collector', not "
         "'genrator' (did you mean 'generator'?)"]),
    "missing parent": (
        {"tasks/a.py": "# /// task\n# extends = 'fin'\n# ///\n"},
        ["tasks/a.py:2: error: extends 'fin': no such task (did you mean 'fine'?)"]),
    "missing upstream": (
        {"tasks/a.py": "# /// task\n# after = ['fien']\n# ///\ndef run(fien):\n    pass\n"},
        ["tasks/a.py:2: error: after 'fien': no such task (did you mean 'fine'?)"]),
    "cycle in after": (
        {"tasks/a.py": "# /// task\n# after = ['b']\n# ///\ndef run(b):\n    pass\n",
         "tasks/b.py": "# /// task\n# after = ['a']\n# ///\ndef run(a):\n    pass\n"},
        ["tasks/a.py:2: error: after forms a cycle: a -> b -> a"]),
    "cycle in extends": (
        {"tasks/a.py": "# /// task\n# extends = 'b'\n# ///\n",
         "tasks/b.py": "# /// task\n# extends = 'a'\n# ///\n"},
        ["tasks/a.py:2: error: extends forms a cycle: a -> b -> a"]),
    "collector outside any scope": (
        {"tasks/a.py": "# /// task\n# kind = 'collector'\n# ///\ndef run(v):\n    pass\n"
                       "def gather():\n    return 1\n"},
        ["tasks/a.py:2: error: collector 'a' is not downstream of any generator"]),
    "a task following two generators": (
        {"tasks/g1.py": "# /// task\n# kind = 'generator'\n# ///\ndef run():\n    yield 1\n",
         "tasks/g2.py": "# /// task\n# kind = 'generator'\n# ///\ndef run():\n    yield 2\n",
         "tasks/t.py": "# /// task\n# after = ['g1', 'g2']\n# ///\ndef run(g1, g2):\n"
                       "    pass\n"},
        ["tasks/t.py:2: error: task 't' follows two generators, 'g1' and 'g2' (a task may be "
         "in one generator scope only)"]),
    "a generator whose run is not a generator function": (
        {"tasks/g.py": "# /// task\n# kind = 'generator'\n# ///\n\ndef run():\n"
                       "    return [1]\n"},
        ["tasks/g.py:5: error: generator 'g': run() is not a generator function (it never "
         "yields)"]),
    "a syntax error in a task": (
        {"tasks/a.py": "# /// task\n# ///\ndef run(:\n    pass\n"},
        ["tasks/a.py:3: error: syntax error: invalid syntax"]),
    "a syntax error in a helper": (
        {"lib/__init__.py": "", "lib/h.py": "x = 1\ndef f(:\n",
         "tasks/a.py": "# /// task\n# ///\nfrom lib.h import f\n\ndef run():\n"
                       "    return f()\n"},
        ["lib/h.py:2: error: syntax error: invalid syntax"]),
    "a required run parameter nothing provides": (
        {"tasks/a.py": "# /// task\n# after = ['fine']\n# [params]\n# size = 1\n# ///\n"
                       "def run(fine, size, inputs, ctx, sise, *args, opt=1, **kw):\n"
                       "    pass\n"},
        ["tasks/a.py:6: error: run() of 'a' requires 'sise', which nothing provides (it can "
         "receive: ctx, fine, inputs, outputs, size); add it to after or [params], or give it a "
         "default"]),
    "a task without run": (
        {"tasks/a.py": "# /// task\n# ///\ndef runn():\n    pass\n"},
        ["tasks/a.py:1: error: task 'a' has no run() function (not in its module)"]),
    "a collector without gather": (
        {"tasks/g.py": "# /// task\n# kind = 'generator'\n# ///\ndef run():\n    yield 1\n",
         "tasks/c.py": "# /// task\n# kind = 'collector'\n# after = ['g']\n# ///\n"
                       "def run(g):\n    pass\n"},
        ["tasks/c.py:1: error: collector 'c' has no gather() function (it is called when "
         "the generator is exhausted, and returns the collector's output)"]),
    "a header in a package's __init__.py": (
        {"tasks/pkg/__init__.py": "x = 1\n# /// task\n# ///\ndef run():\n    pass\n"},
        ["tasks/pkg/__init__.py:2: error: a package's __init__.py cannot be a task; move the "
         "header and run() into a module of their own"]),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_each_project_error_names_file_and_line(tmp_path: Path, opened: list[Opened],
                                                case: str) -> None:
    files, expected = ERRORS[case]
    project = load(opened, tmp_path, {"tasks/fine.py": OK, **files})
    assert messages(project) == expected
    # the healthy task is untouched
    assert "fine" in project.graph.order and "fine" in project.closures
    assert "fine" not in project.broken
    assert not project.broken & set(project.graph.order)
    assert not project.broken & set(project.closures)


def test_all_errors_are_reported_at_once_and_the_healthy_part_loads(
        tmp_path: Path, opened: list[Opened]) -> None:
    project = load(opened, tmp_path, {
        "tasks/fine.py": OK,
        "tasks/toml.py": "# /// task\n# kind = \n# ///\ndef run():\n    pass\n",
        "tasks/key.py": "# /// task\n# colour = 1\n# ///\ndef run():\n    pass\n",
        "tasks/orphan.py": "# /// task\n# extends = 'nobody'\n# ///\n",
        "tasks/lost.py": "# /// task\n# after = ['nowhere']\n# ///\ndef run(nowhere):\n"
                         "    pass\n",
        "tasks/loop1.py": "# /// task\n# after = ['loop2']\n# ///\ndef run(loop2):\n    pass\n",
        "tasks/loop2.py": "# /// task\n# after = ['loop1']\n# ///\ndef run(loop1):\n    pass\n",
        "tasks/lonely.py": "# /// task\n# kind = 'collector'\n# ///\ndef run(v):\n    pass\n"
                           "def gather():\n    pass\n",
        "tasks/gen.py": "# /// task\n# kind = 'generator'\n# ///\ndef run():\n    return 1\n",
        "tasks/syntax.py": "# /// task\n# ///\ndef run(:\n",
        "tasks/needs.py": "# /// task\n# ///\ndef run(thing):\n    pass\n",
        "tasks/down.py": "# /// task\n# after = ['fine', 'syntax']\n# ///\n"
                         "def run(fine, syntax):\n    pass\n",
    })
    assert [m.split(": error: ")[0] for m in messages(project)] == [
        "tasks/gen.py:4", "tasks/key.py:2", "tasks/lonely.py:2", "tasks/loop1.py:2",
        "tasks/lost.py:2", "tasks/needs.py:3", "tasks/orphan.py:2", "tasks/syntax.py:3",
        "tasks/toml.py:2"]
    assert project.graph.order == ["fine"]
    assert project.broken == {"gen", "key", "lonely", "loop1", "loop2", "lost", "needs",
                              "orphan", "syntax", "toml", "down"}
    assert sorted(project.closures) == ["fine"]


# -- code checks along the chain ----------------------------------------------------------------

def test_run_inherited_from_the_root_ancestor(tmp_path: Path, opened: list[Opened]) -> None:
    project = load(opened, tmp_path, {
        "tasks/base.py": """
            # /// task
            # abstract = true
            # kind = "generator"
            # ///
            def run(n):
                return n
            """,
        "tasks/mid.py": "# /// task\n# extends = 'base'\n# abstract = true\n# ///\n",
        "tasks/leaf.py": "# /// task\n# extends = 'mid'\n# [params]\n# n = 2\n# ///\n",
        "tasks/other.py": """
            # /// task
            # extends = "mid"
            # [params]
            # n = 2
            # ///
            def run(n, start=0):
                yield n
            """,
    })
    # the winning run is the root's: the error is in the root's file, naming the task
    assert messages(project) == ["tasks/base.py:5: error: generator 'leaf': run() is not a "
                                 "generator function (it never yields)"]
    assert project.graph.order == ["other"]
    assert project.broken == {"leaf"}


def test_a_plain_task_whose_run_yields_is_told_to_be_a_generator(tmp_path: Path,
                                                                 opened: list[Opened]) -> None:
    """Its units would fail at run time, on pickling a generator object: said at load time,
    where the fix is (an abstract parent of generators may yield without saying its kind)."""
    project = load(opened, tmp_path, {
        "tasks/items.py": "# /// task\n# ///\ndef run():\n    yield 1\n",
        "tasks/base.py": "# /// task\n# abstract = true\n# ///\ndef run():\n    yield 1\n",
        "tasks/gen.py": "# /// task\n# extends = 'base'\n# kind = 'generator'\n# ///\n",
    })
    assert messages(project) == [
        "tasks/items.py:3: error: task 'items': run() yields, so its output would be a "
        "generator object; a task whose units come from its yields is a generator: add "
        'kind = "generator" to its header']
    assert project.graph.order == ["gen"]


def test_the_hint_for_a_missing_argument_fits_the_case(tmp_path: Path,
                                                      opened: list[Opened]) -> None:
    """`start` is no param to add (a reserved name): it comes to outer generators only; an
    upstream whose file name is no identifier is named with a table."""
    project = load(opened, tmp_path, {
        "tasks/my-task.py": "# /// task\n# ///\ndef run():\n    return 1\n",
        "tasks/b.py": "# /// task\n# after = ['my-task']\n# ///\ndef run(my_task):\n"
                      "    return 1\n",
        "tasks/c.py": "# /// task\n# ///\ndef run(start):\n    return 1\n",
    })
    assert messages(project) == [
        "tasks/b.py:4: error: run() of 'b' requires 'my_task', which nothing provides (it can "
        "receive: ctx, inputs, my-task, outputs); name it with a table: "
        'after = {my_task = "my-task"}',
        "tasks/c.py:3: error: run() of 'c' requires 'start', which nothing provides (it can "
        "receive: ctx, inputs, outputs); 'start' is given to a generator outside any scope "
        "only (the index to resume from)"]


def test_what_run_may_receive(tmp_path: Path, opened: list[Opened]) -> None:
    project = load(opened, tmp_path, {
        "tasks/g.py": """
            # /// task
            # kind = "generator"
            # ///
            def run(start, ctx, inputs):
                yield start
            """,
        "tasks/inner.py": """
            # /// task
            # kind = "generator"
            # after = ["g"]
            # ///
            def run(value, g):
                yield value
            """,
        "tasks/frames.py": """
            # /// task
            # [after]
            # items = "inner"
            # ///
            def run(items, *, ctx):
                return items
            """,
        "tasks/c.py": """
            # /// task
            # kind = "collector"
            # after = ["frames"]
            # ///
            def run(pushed, frames):
                pass

            def gather():
                return 1
            """,
        "tasks/inner_start.py": """
            # /// task
            # kind = "generator"
            # after = ["g"]
            # ///
            def run(value, start):
                yield value
            """,
    })
    # `start` is for outermost generators only
    assert messages(project) == [
        "tasks/inner_start.py:5: error: run() of 'inner_start' requires 'start', which nothing "
        "provides (it can receive: ctx, g, inputs, outputs); 'start' is given to a generator "
        "outside any scope only (the index to resume from)"]
    assert project.graph.order == ["g", "inner", "frames", "c"]


def test_a_syntax_error_in_a_parent_breaks_its_children(tmp_path: Path,
                                                          opened: list[Opened]) -> None:
    project = load(opened, tmp_path, {
        "tasks/base.py": "# /// task\n# abstract = true\n# ///\ndef run(:\n",
        "tasks/child.py": "# /// task\n# extends = 'base'\n# ///\n",
        "tasks/fine.py": OK,
    })
    (message,) = messages(project)
    assert message.startswith("tasks/base.py:4: error: syntax error: ")
    assert project.broken == {"base", "child"}
    assert project.graph.order == ["fine"]


def test_header_errors_break_the_task_and_its_downstream_without_more_noise(
        tmp_path: Path, opened: list[Opened]) -> None:
    project = load(opened, tmp_path, {
        "tasks/bad.py": "# /// task\n# kind = \n# ///\ndef run():\n    pass\n",
        "tasks/down.py": "# /// task\n# after = ['bad']\n# ///\ndef run(bad):\n    pass\n",
        "tasks/child.py": "# /// task\n# extends = 'bad'\n# ///\n",
        "tasks/fine.py": OK,
    })
    assert len(project.errors) == 1  # no "no such task 'bad'" for its downstream
    assert project.broken == {"bad", "down", "child"}
    assert project.graph.order == ["fine"]


def test_tasks_defined_twice_in_two_folders(tmp_path: Path, opened: list[Opened]) -> None:
    write(tmp_path, {"watchrun.toml": 'tasks = ["one", "two"]\n', "one/a.py": OK,
                     "two/a.py": OK, "two/b.py": OK})
    project = load(opened, tmp_path)
    assert messages(project) == ["two/a.py:1: error: task 'a' is defined twice: here and in "
                                 f"{tmp_path}/one/a.py"]
    assert project.graph.order == ["b"]


def test_a_missing_tasks_folder_is_an_error(tmp_path: Path, opened: list[Opened]) -> None:
    project = load(opened, tmp_path, {"watchrun.toml": 'jobs = 2\ntasks = "jobs"\n'})
    assert messages(project) == [
        "watchrun.toml:2: error: the tasks folder 'jobs' does not exist"]
    # and it is never stale: it goes when the folder appears, even with a cached project
    (tmp_path / "jobs").mkdir()
    assert load(opened, tmp_path).errors == []


def test_an_unreachable_helper_with_a_syntax_error_is_not_reported(
        tmp_path: Path, opened: list[Opened]) -> None:
    project = load(opened, tmp_path, {"tasks/fine.py": OK, "tasks/scratch.py": "def (:\n"})
    assert project.errors == []


# -- caching: a null build parses nothing -------------------------------------------------------

def many_tasks(count: int) -> dict[str, str]:
    files = {"lib/__init__.py": "", "lib/helpers.py": "def h(x):\n    return x\n"}
    for i in range(count):
        after = f"# after = ['t{i - 1:03}']\n" if i else ""
        arg = f"t{i - 1:03}" if i else ""
        files[f"tasks/t{i:03}.py"] = (f"# /// task\n{after}# [params]\n# i = {i}\n# ///\n"
                                      f"from lib.helpers import h\n\ndef run({arg}):\n"
                                      f"    return h({i})\n")
    return files


def forbid_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("parsed a file on a null build")

    monkeypatch.setattr(codemap, "analyze_module", refuse)
    monkeypatch.setattr(loader, "parse_header", refuse)


def test_null_build_parses_nothing(tmp_path: Path, opened: list[Opened],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, many_tasks(30))
    first = open_project(opened, tmp_path)
    cold = first.load()
    assert first.loader.parsed == 32  # 30 tasks, lib/__init__.py, lib/helpers.py
    first.close()
    opened.remove(first)

    forbid_parsing(monkeypatch)
    second = open_project(opened, tmp_path)  # a new process would start like this
    warm = second.load()
    assert second.loader.parsed == 0
    assert warm.tasks == cold.tasks and warm.graph.order == cold.graph.order
    assert warm.closures == cold.closures and warm.modules == cold.modules


def test_one_changed_file_is_the_only_one_parsed_again(
        tmp_path: Path, opened: list[Opened]) -> None:
    write(tmp_path, many_tasks(10))
    load(opened, tmp_path)
    path = tmp_path / "tasks/t005.py"
    path.write_text(path.read_text().replace("# i = 5", "# i = 55"))
    again = open_project(opened, tmp_path)
    project = again.load()
    assert again.loader.parsed == 1
    assert project.tasks["t005"].params["i"].value == 55


def test_a_new_file_where_an_import_looked_is_picked_up(
        tmp_path: Path, opened: list[Opened]) -> None:
    files = {"tasks/a.py": "# /// task\n# ///\nimport helpers\n\ndef run():\n"
                           "    return helpers.x\n"}
    project = load(opened, tmp_path, files)
    assert "helpers" not in project.modules  # a third-party module, as far as we know
    write(tmp_path, {"helpers.py": "x = 1\n"})
    project = load(opened, tmp_path)
    assert "helpers" in project.modules


def test_reload_reparses_only_what_changed_and_follows_fixes(
        tmp_path: Path, opened: list[Opened]) -> None:
    write(tmp_path, {"tasks/a.py": OK, "tasks/b.py": OK, "lib/h.py": "def f():\n    pass\n",
                     "tasks/c.py": "# /// task\n# ///\nfrom lib.h import f\n\n"
                                   "def run():\n    return f()\n"})
    item = open_project(opened, tmp_path)
    project = item.load()
    assert project.errors == [] and item.loader.parsed == 4

    (tmp_path / "tasks/b.py").write_text("# /// task\n# ///\ndef run(:\n")
    project = item.loader.reload({tmp_path / "tasks/b.py"})
    assert item.loader.parsed == 5
    assert [e.line for e in project.errors] == [3] and project.broken == {"b"}
    assert project.graph.order == ["a", "c"]

    (tmp_path / "tasks/b.py").write_text(OK.lstrip())  # fixed: the old analysis is reused
    (tmp_path / "lib/h.py").write_text("def f(:\n")
    (tmp_path / "tasks/new.py").write_text(OK.lstrip())
    (tmp_path / "tasks/a.py").unlink()
    project = item.loader.reload({tmp_path / "tasks/b.py", tmp_path / "lib/h.py",
                                  tmp_path / "tasks/new.py", tmp_path / "tasks/a.py"})
    assert item.loader.parsed == 7  # lib/h.py and tasks/new.py
    (message,) = messages(project)
    assert message.startswith("lib/h.py:1: error: syntax error: ")
    assert project.broken == {"c"}
    assert project.graph.order == ["b", "new"]


def test_loads_without_store_or_hasher(tmp_path: Path) -> None:
    write(tmp_path, {"tasks/a.py": OK})
    config, _ = load_config(tmp_path)
    project = ProjectLoader(config).load()
    assert project.errors == [] and project.graph.order == ["a"]
    assert not config.state_dir.exists()  # nothing written


# -- the whole-project cache --------------------------------------------------------------------

@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files written by the test count as settled at once: no racy window to wait out."""
    monkeypatch.setattr(snapshot, "RACY_NS", 0)


def reopen(opened: list[Opened], root: Path) -> tuple[Project, ProjectLoader]:
    item = open_project(opened, root)
    return item.load(), item.loader


@pytest.mark.usefixtures("settled")
def test_an_unchanged_project_comes_whole_from_the_cache(
        tmp_path: Path, opened: list[Opened], monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, many_tasks(20))
    cold, first = reopen(opened, tmp_path)
    assert not first.cached
    forbid_parsing(monkeypatch)
    monkeypatch.setattr(loader, "ProjectBuild", None)  # no resolution either
    warm, second = reopen(opened, tmp_path)
    assert second.cached and second.parsed == 0
    assert warm.tasks == cold.tasks and warm.graph.order == cold.graph.order
    assert warm.closures == cold.closures and warm.errors == cold.errors
    assert warm.modules == cold.modules and "lib.helpers" in warm.modules
    assert warm.tasks["t003"].path == tmp_path / "tasks/t003.py"


@pytest.mark.usefixtures("settled")
def test_the_project_cache_takes_the_stored_pickle_of_every_module(
        tmp_path: Path, opened: list[Opened], monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, many_tasks(5))
    project, _ = reopen(opened, tmp_path)

    def pickled_again(self: codemap.ModuleInfo, protocol: int) -> object:
        raise AssertionError(f"{self.module_name} pickled again")

    monkeypatch.setattr(codemap.ModuleInfo, "__reduce_ex__", pickled_again)
    assert snapshot.dumps_project(project)


@pytest.mark.usefixtures("settled")
def test_the_project_knows_each_tasks_entry_points_after_a_cached_load(
        tmp_path: Path, opened: list[Opened], monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, {
        "tasks/base.py": """
            # /// task
            # abstract = true
            # kind = "collector"
            # ///
            def run(value, scale):
                pass

            def gather(scale=1):
                return scale
            """,
        "tasks/child.py": """
            # /// task
            # extends = "base"
            # ///
            def run(value, *, offset):
                pass

            finish = None
            """,
    })
    cold, _ = reopen(opened, tmp_path)
    monkeypatch.setattr(snapshot.LazyModules, "__getitem__", None)  # modules are not read back
    warm, second = reopen(opened, tmp_path)
    assert second.cached and warm.entries == cold.entries
    entries = warm.entries["child"]
    assert [a.name for a in entries["run"] or ()] == ["value", "offset"]  # the child's
    assert [a.name for a in entries["gather"] or ()] == ["scale"]  # the parent's
    assert entries["finish"] is None  # bound, but not a function
    assert set(warm.entries["base"]) == {"run", "gather"}


def test_paths_in_a_cached_project_come_back_the_same() -> None:
    paths = [Path("/proj/tasks/a.py"), Path("relative/b.py"), Path("/"), Path("."),
             Path("/proj/tasks/a.py").parent, Path("/x") / "y.z", Path("//double/slash")]
    back = pickle.loads(snapshot.dumps_project(paths))
    assert back == paths and [str(p) for p in back] == [str(p) for p in paths]
    assert [type(p) for p in back] == [type(p) for p in paths]
    assert [p.parts for p in back] == [p.parts for p in paths]
    assert {hash(p) for p in back} == {hash(p) for p in paths}
    assert back[0].parent / "c.py" == Path("/proj/tasks/c.py") and back[0].name == "a.py"


@pytest.mark.usefixtures("settled")
def test_what_invalidates_the_cached_project(tmp_path: Path, opened: list[Opened]) -> None:
    write(tmp_path, many_tasks(5))
    reopen(opened, tmp_path)
    assert reopen(opened, tmp_path)[1].cached

    (tmp_path / "lib/helpers.py").write_text("def h(x):\n    return x + 1\n")  # a local module
    project, item = reopen(opened, tmp_path)
    assert not item.cached and item.parsed == 1
    assert reopen(opened, tmp_path)[1].cached

    write(tmp_path, {"tasks/new.py": OK})  # a new task file
    project, item = reopen(opened, tmp_path)
    assert not item.cached and "new" in project.tasks

    write(tmp_path, {"watchrun.toml": "jobs = 3\n"})  # does not shape the project
    project, item = reopen(opened, tmp_path)
    assert item.cached and project.config.jobs == 3

    write(tmp_path, {"watchrun.toml": 'tasks = ["tasks", "more"]\n', "more/x.py": ""})
    project, item = reopen(opened, tmp_path)
    assert not item.cached and item.parsed == 1  # only more/x.py: the rest is cached by content

    (tmp_path / "tasks/new.py").unlink()
    project, item = reopen(opened, tmp_path)
    assert not item.cached and "new" not in project.tasks


@pytest.mark.usefixtures("settled")
def test_a_new_local_module_invalidates_the_cached_project(tmp_path: Path,
                                                           opened: list[Opened]) -> None:
    write(tmp_path, {"tasks/a.py": "# /// task\n# ///\nimport helpers\n\ndef run():\n"
                                   "    return helpers.x\n"})
    reopen(opened, tmp_path)
    project, item = reopen(opened, tmp_path)
    assert item.cached and "helpers" not in project.modules
    write(tmp_path, {"helpers.py": "x = 1\n"})
    project, item = reopen(opened, tmp_path)
    assert not item.cached and "helpers" in project.modules


def test_files_changed_just_before_the_load_are_not_trusted_by_stat(
        tmp_path: Path, opened: list[Opened], monkeypatch: pytest.MonkeyPatch) -> None:
    # within the racy window a rewrite may keep the stat key: the project is not cached then
    monkeypatch.setattr(snapshot, "RACY_NS", 3600 * 10**9)
    write(tmp_path, {"tasks/a.py": OK})
    reopen(opened, tmp_path)
    project, item = reopen(opened, tmp_path)
    assert not item.cached and item.parsed == 0 and project.graph.order == ["a"]


def test_a_damaged_cache_is_ignored(tmp_path: Path, opened: list[Opened],
                                    settled: None) -> None:
    write(tmp_path, {"tasks/a.py": OK})
    first = open_project(opened, tmp_path)
    first.load()
    first.store.kv_put(snapshot.PROJECT_CACHE_KEY, b"\x80\x05garbage")
    first.store.commit()
    project, item = reopen(opened, tmp_path)
    assert not item.cached and project.graph.order == ["a"]


def test_a_read_only_store_is_never_written(tmp_path: Path, opened: list[Opened]) -> None:
    write(tmp_path, {"tasks/a.py": OK})
    load(opened, tmp_path)
    (tmp_path / "tasks/b.py").write_text(OK.lstrip())
    config, _ = load_config(tmp_path)
    store = Store(config.state_dir, readonly=True)
    try:
        reader = ProjectLoader(config, store, FileHasher(store))
        project = reader.load()  # a write would raise ReadOnlyStoreError
        assert project.graph.order == ["a", "b"] and reader.parsed == 1
    finally:
        store.close()


def test_a_file_that_is_not_python_text_is_reported_not_raised(
        tmp_path: Path, opened: list[Opened]) -> None:
    write(tmp_path, {"tasks/fine.py": OK, "lib/__init__.py": "",
                     "tasks/user.py": "# /// task\n# ///\nimport lib.blob\n\ndef run():\n"
                                      "    pass\n"})
    (tmp_path / "tasks/binary.py").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "lib/blob.py").write_bytes(b"y = 1\nx = '\xe9'\n")  # Latin-1, no cookie
    expected = [
        "lib/blob.py:2: error: cannot decode the file as Python source (UTF-8): byte 0xe9 is "
        "not UTF-8",
        "tasks/binary.py:1: error: cannot decode the file as Python source (UTF-8): byte 0xff "
        "is not UTF-8",
    ]
    project = load(opened, tmp_path)
    assert messages(project) == expected
    assert project.broken == {"user"} and project.graph.order == ["fine"]
    (tmp_path / "tasks/other.py").write_text(OK)  # loaded again: the analyses from the store
    assert messages(load(opened, tmp_path)) == expected


@pytest.mark.parametrize("data", [
    b"x = 1\n", "s = '\u00e9\u4e2d'\n".encode(), b"\xef\xbb\xbfx = 1\n", b"x = 1\r\ny = 2\r",
    b"# -*- coding: latin-1 -*-\nx = '\xe9'\n",
    b"#!/bin/sh\n# vim: set fileencoding=cp1252 :\n\x80",
    b"x = '\xe9'\n", b"\xff\xfe\x00", b"# coding: nonsense\n", b"", b"\n\n# coding: latin-1\n\xe9",
])
def test_source_bytes_decode_as_python_reads_them(data: bytes) -> None:
    import importlib.util

    try:
        expected: str | None = importlib.util.decode_source(data)
    except (UnicodeDecodeError, SyntaxError, LookupError):
        expected = None
    assert loader._decode(data) == expected


def test_files_are_read_whole(tmp_path: Path) -> None:
    for size in (0, 10, 65536, 200_001):
        path = tmp_path / f"f{size}.py"
        data = bytes(i % 251 for i in range(size))
        path.write_bytes(data)
        assert loader._read(path) == data
    with pytest.raises(IsADirectoryError):
        loader._read(tmp_path)
    with pytest.raises(FileNotFoundError):
        loader._read(tmp_path / "missing.py")


def test_reload_recomputes_only_the_closures_a_change_can_reach(
        tmp_path: Path, opened: list[Opened]) -> None:
    write(tmp_path, {
        "lib/__init__.py": "",
        "lib/a.py": "def f():\n    return 1\n",
        "lib/b.py": "def g():\n    return 2\n",
        "tasks/uses_a.py": "# /// task\n# ///\nfrom lib.a import f\n\ndef run():\n"
                           "    return f()\n",
        "tasks/uses_b.py": "# /// task\n# ///\nfrom lib.b import g\n\ndef run():\n"
                           "    return g()\n",
    })
    item = open_project(opened, tmp_path)
    before = item.load().closures
    (tmp_path / "lib/a.py").write_text("def f():\n    return 10\n")
    after = item.loader.reload({tmp_path / "lib/a.py"}).closures
    assert after["uses_a"].digest != before["uses_a"].digest
    assert after["uses_b"] is before["uses_b"]  # reused, not recomputed
    # and the reuse changes nothing: a fresh load agrees
    item.store.commit()  # one writer at a time
    assert load(opened, tmp_path).closures == after

    write(tmp_path, {"lib/c.py": "def h():\n    return 3\n",
                     "lib/b.py": "from lib.c import h\n\ndef g():\n    return h()\n"})
    after_c = item.loader.reload({tmp_path / "lib/b.py", tmp_path / "lib/c.py"}).closures
    assert after_c["uses_b"].digest != after["uses_b"].digest
    assert any(part.file == "lib/c.py" for part in after_c["uses_b"].parts)
    item.store.commit()
    assert load(opened, tmp_path).closures == after_c
