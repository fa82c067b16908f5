"""The code map decides which tasks rerun after an edit: these tests edit real code and check
exactly which closures change."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from watchrun.project import frozen_init
from watchrun.project.codemap import (
    MODULE_PART,
    ArgSpec,
    ChainLink,
    CodeClosure,
    CodeIndex,
    CodePart,
    Definition,
    ModuleInfo,
    analyze_module,
)
from watchrun.project.externals import PYTHON_VERSION, version_of
from watchrun.project.header import Header
from watchrun.project.loader import FileAnalysis
from watchrun.project.model import Origin

PYTHON = f"python {sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"


def analyze(source: str, module: str = "tasks.t", *, is_package: bool = False) -> ModuleInfo:
    return analyze_module(textwrap.dedent(source), module, is_package=is_package)


def digests(info: ModuleInfo) -> dict[str, str]:
    out = {name: d.digest for name, d in info.definitions.items()}
    out[MODULE_PART] = info.toplevel_digest
    return out


class Project:
    """Modules by dotted name; a module whose name is in `packages` is a package's __init__."""

    def __init__(self, sources: Mapping[str, str], packages: tuple[str, ...] = ()) -> None:
        self.sources = {name: textwrap.dedent(src) for name, src in sources.items()}
        self.packages = packages

    def edit(self, module: str, source: str) -> Project:
        return Project({**self.sources, module: textwrap.dedent(source)}, self.packages)

    def index(self) -> CodeIndex:
        modules = {
            name: analyze_module(src, name, is_package=name in self.packages)
            for name, src in self.sources.items()
        }
        return CodeIndex(modules, {name: self.file(name) for name in modules}, version_of)

    def file(self, module: str) -> str:
        path = module.replace(".", "/")
        return f"{path}/__init__.py" if module in self.packages else f"{path}.py"

    def chain(self, *modules: str) -> list[ChainLink]:
        return [ChainLink(m.removeprefix("tasks."), m, self.file(m)) for m in modules]

    def closure(self, *chain: str) -> CodeClosure:
        return self.index().task_closure(self.chain(*chain))

    def digest(self, *chain: str) -> str:
        return self.closure(*chain).digest


def names(closure: CodeClosure) -> set[str]:
    return {part.qualname for part in closure.parts}


# --- analysis of one module ------------------------------------------------------------------

ORIGINAL = '''\
# /// task
# after = ["download"]
# ///
"""Load the frames."""
import json
from lib.helpers import clean

SIZE = 64


class Loader:
    """Loads."""

    def load(self, path):
        """Load one."""
        return json.loads(path.read_text())


def normalize(rows, size=SIZE):
    """Normalize rows."""
    return [clean(r) * size for r in rows]


print("loaded")


def run(download, inputs):
    return normalize([Loader().load(p) for p in inputs])
'''

COSMETIC = """\
# /// task
# after = ["download", "other"]    # a changed header is configuration, not code
# ///
'''A different module docstring.'''

import json  # the parser
from lib.helpers import (
    clean,
)

SIZE = (64)
class Loader:
    def load(self,
             path):
        # comment
        return json.loads(
            path.read_text()
        )
def normalize(rows, size = SIZE):
    '''Another docstring,

    on two lines.'''



    return [ clean(r)*size for r in rows ]
print('loaded')
def run(download, inputs):
    "One more docstring."
    return normalize([Loader( ).load(p) for p in inputs])  # trailing comment
"""


def test_comments_docstrings_blank_lines_and_layout_change_no_digest() -> None:
    assert digests(analyze(ORIGINAL)) == digests(analyze(COSMETIC))


def test_strings_used_as_comments_anywhere_change_nothing() -> None:
    plain = "X = 1\n\ndef f(a):\n    y = a + X\n    return y\n\nprint(f(1))\n"
    commented = (
        'X = 1\n"""What X is for."""\n\ndef f(a):\n    y = a + X\n    "a note"\n'
        "    return y\n\n'''Block comment.'''\nprint(f(1))\n"
    )
    assert digests(analyze(plain)) == digests(analyze(commented))


def test_a_changed_body_changes_only_that_definition() -> None:
    before = digests(analyze(ORIGINAL))
    after = digests(analyze(ORIGINAL.replace("clean(r) * size", "clean(r) * size + 1")))
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"normalize"}


def test_a_changed_method_changes_its_class() -> None:
    before = digests(analyze(ORIGINAL))
    after = digests(analyze(ORIGINAL.replace("json.loads(path", "json.load(path")))
    assert {n for n in before if before[n] != after[n]} == {"Loader"}


def test_refs_cover_body_decorators_defaults_annotations_and_bases() -> None:
    info = analyze(
        """
        @register(KIND)
        def f(x: Frame = DEFAULT) -> Out:
            return lib.x.g(helper(x))

        class C(Base, metaclass=Meta):
            field: Annotated = VALUE
        """
    )
    f = info.definitions["f"].refs
    assert {"register", "KIND", "Frame", "DEFAULT", "Out", "helper", "x"} <= f
    assert {"lib.x.g", "lib.x", "lib"} <= f
    assert {"Base", "Meta", "Annotated", "VALUE"} <= info.definitions["C"].refs


def test_definition_time_and_call_time_references_are_told_apart() -> None:
    f = analyze(
        """
        @deco
        def f(x=DEFAULT):
            return helper(x)
        """
    ).definitions["f"]
    assert {"deco", "DEFAULT"} <= f.deftime_refs
    assert "helper" in f.call_refs and "helper" not in f.deftime_refs


def test_imports_bind_each_name_with_its_absolute_target() -> None:
    info = analyze(
        """
        import os.path
        import numpy as np, json
        from lib.x import f, g as h
        from . import sibling
        from .util import tool
        from ..shared import common
        """,
        "tasks.a.b",
    )
    d = info.definitions
    assert (d["os"].import_module, d["os"].also_imports) == ("os", ("os.path",))
    assert (d["np"].import_module, d["np"].import_attr) == ("numpy", None)
    assert (d["json"].import_module, d["h"].import_module, d["h"].import_attr) == (
        "json",
        "lib.x",
        "g",
    )
    assert (d["sibling"].import_module, d["sibling"].import_attr) == ("tasks.a", "sibling")
    assert d["tool"].import_module == "tasks.a.util"
    assert d["common"].import_module == "tasks.shared"
    assert all(x.kind == "import" for x in d.values())
    assert info.toplevel_digest == ""


def test_relative_imports_in_a_package_init_resolve_inside_the_package() -> None:
    info = analyze("from .x import f\n", "lib", is_package=True)
    assert info.definitions["f"].import_module == "lib.x"


def test_adding_a_name_to_an_import_changes_only_that_name() -> None:
    before = digests(analyze("from lib import a, b\n"))
    after = digests(analyze("from lib import a, b, c\n"))
    assert before["a"] == after["a"] and before["b"] == after["b"] and "c" in after


def test_tuple_unpacking_binds_both_names_to_the_statement() -> None:
    d = analyze("A, (B, *C) = 1, (2, 3)\n").definitions
    assert d["A"].digest == d["B"].digest == d["C"].digest
    assert d["A"].kind == "assign"


def test_augmented_assignment_is_part_of_the_definition() -> None:
    base = "NAMES = ['a']\nNAMES += ['b']\n"
    before = analyze(base).definitions["NAMES"]
    after = analyze(base.replace("'b'", "'c'")).definitions["NAMES"]
    assert before.digest != after.digest
    assert before.line == 1
    assert analyze(base).toplevel_digest == ""


def test_statements_count_as_module_level_code_and_main_guards_do_not() -> None:
    base = "x = 1\nprint(x)\nif __name__ == '__main__':\n    main()\n"
    info = analyze(base)
    assert info.toplevel_digest and "print" in info.toplevel_refs
    assert "main" not in info.toplevel_refs
    assert analyze(base.replace("main()", "other()")).toplevel_digest == info.toplevel_digest
    assert analyze(base.replace("print(x)", "print(x, 1)")).toplevel_digest != info.toplevel_digest
    assert analyze("def f(): pass\n").toplevel_digest == ""


def test_names_bound_in_compound_statements_are_conditional_definitions() -> None:
    info = analyze(
        """
        try:
            import numpy as np
        except ImportError:
            np = None
        if FLAG:
            def helper(x, y=1):
                yield x
        """
    )
    np, helper = info.definitions["np"], info.definitions["helper"]
    assert np.kind == "assign" and np.conditional
    assert ("np", "numpy", None, "numpy") in np.nested_imports
    assert helper.conditional and helper.is_generator
    assert [a.name for a in helper.args] == ["x", "y"]
    assert ("np", "numpy", None, "numpy") in info.toplevel_imports


def test_a_plain_definition_after_a_conditional_one_wins() -> None:
    d = analyze("try:\n    import ujson as json\nexcept ImportError:\n    pass\nimport json\n")
    assert d.definitions["json"].kind == "import" and not d.definitions["json"].conditional


@pytest.mark.parametrize(
    "code",
    [
        "globals()['x']",
        "eval(s)",
        "exec(s)",
        "__import__(s)",
        "importlib.import_module(s)",
        "vars()",
        "sys.modules[__name__]",
    ],
)
def test_dynamic_features_are_flagged(code: str) -> None:
    assert analyze(f"def f(s):\n    return {code}\n").definitions["f"].dynamic
    assert analyze(f"{code}\n").dynamic


def test_attribute_lookups_on_objects_are_not_dynamic() -> None:
    assert not analyze("def f(o):\n    return getattr(o, 'x'), vars(o)\n").definitions["f"].dynamic


def test_function_signatures_and_generators() -> None:
    d = analyze(
        """
        def run(a, b=1, /, c=2, *rest, d, e=3, **kw):
            def inner():
                yield 1
            return lambda: (yield)

        def gen(x):
            y = yield x
            yield from y

        async def agen():
            yield 1
        """
    ).definitions
    assert d["run"].args == (
        ArgSpec("a", False, "positional"),
        ArgSpec("b", True, "positional"),
        ArgSpec("c", True, "positional"),
        ArgSpec("rest", False, "var_positional"),
        ArgSpec("d", False, "keyword_only"),
        ArgSpec("e", True, "keyword_only"),
        ArgSpec("kw", False, "var_keyword"),
    )
    assert not d["run"].is_generator
    assert d["gen"].is_generator
    assert d["agen"].is_generator and d["agen"].is_async


def test_syntax_errors_are_reported_with_their_line() -> None:
    info = analyze("x = 1\n\ndef f(:\n    pass\n")
    assert info.syntax_error is not None and info.syntax_error[0] == 3
    assert info.definitions == {} and info.toplevel_digest == ""
    assert analyze_module("x = 1\0", "m").syntax_error is not None


def test_deep_expressions_do_not_overflow() -> None:
    long_sum = "X = " + " + ".join(f"v{i}" for i in range(2000)) + "\n"
    info = analyze_module(long_sum, "m")
    assert {"v0", "v1999"} <= info.definitions["X"].refs


def test_module_info_survives_pickling() -> None:
    info = analyze(ORIGINAL)
    assert pickle.loads(pickle.dumps(info)) == info


# --- closures: inheritance -------------------------------------------------------------------

PARENT = """
def helper():
    return 1

def run():
    return helper()
"""
OVERRIDES_HELPER = """
def helper():
    return 2
"""


def family(parent: str = PARENT) -> Project:
    return Project({"tasks.base": parent, "tasks.a": OVERRIDES_HELPER, "tasks.b": "# no code\n"})


def test_a_changed_parent_helper_reruns_the_child_that_inherits_it_only() -> None:
    before, after = family(), family(PARENT.replace("return 1", "return 10"))
    assert before.digest("tasks.base", "tasks.a") == after.digest("tasks.base", "tasks.a")
    assert before.digest("tasks.base", "tasks.b") != after.digest("tasks.base", "tasks.b")
    assert before.digest("tasks.base") != after.digest("tasks.base")


def test_parts_name_the_ancestor_that_defines_them() -> None:
    a = family().closure("tasks.base", "tasks.a")
    assert {(p.qualname, p.owner, p.file) for p in a.parts} == {
        ("run", "base", "tasks/base.py"),
        ("helper", "a", "tasks/a.py"),
    }
    b = family().closure("tasks.base", "tasks.b")
    assert {(p.qualname, p.owner) for p in b.parts} == {("run", "base"), ("helper", "base")}


def test_a_child_with_no_code_runs_the_nearest_parents_run() -> None:
    project = Project(
        {
            "tasks.root": "def run():\n    return 0\n",
            "tasks.mid": "def run():\n    return helper()\ndef helper():\n    return 1\n",
            "tasks.leaf": "",
        }
    )
    leaf = project.closure("tasks.root", "tasks.mid", "tasks.leaf")
    assert {(p.qualname, p.owner, p.line) for p in leaf.parts} == {
        ("run", "mid", 1),
        ("helper", "mid", 3),
    }


def test_module_time_code_sees_the_namespace_of_its_own_turn() -> None:
    # The parent's X is computed while the parent executes, with the parent's helper, even in a
    # child that overrides helper: so the parent's helper counts for that child.
    parent = "def helper():\n    return 1\nX = helper()\ndef run():\n    return X\n"
    project = Project({"tasks.base": parent, "tasks.a": OVERRIDES_HELPER})
    edited = project.edit("tasks.base", parent.replace("return 1", "return 5"))
    assert project.digest("tasks.base", "tasks.a") != edited.digest("tasks.base", "tasks.a")


def test_a_child_extending_an_inherited_value_depends_on_it() -> None:
    parent = "NAMES = ['a']\ndef run():\n    return NAMES\n"
    project = Project({"tasks.base": parent, "tasks.c": "NAMES = NAMES + ['c']\n"})
    edited = project.edit("tasks.base", parent.replace("'a'", "'z'"))
    assert project.digest("tasks.base", "tasks.c") != edited.digest("tasks.base", "tasks.c")


def test_a_conditional_override_keeps_the_parent_definition_in() -> None:
    project = Project(
        {"tasks.base": PARENT, "tasks.c": "if FAST:\n    def helper():\n        return 3\n"}
    )
    parts = {(p.qualname, p.owner) for p in project.closure("tasks.base", "tasks.c").parts}
    assert {("helper", "base"), ("helper", "c")} <= parts


def test_unreached_definitions_and_moved_code_change_nothing() -> None:
    source = PARENT + "\ndef unused():\n    return 0\n"
    project = Project({"tasks.t": source})
    assert names(project.closure("tasks.t")) == {"run", "helper"}
    edited = project.edit("tasks.t", source.replace("return 0", "return 9"))
    assert project.digest("tasks.t") == edited.digest("tasks.t")
    moved = project.edit("tasks.t", "\n\n" + source.replace("def run", "X = 1\ndef run"))
    assert moved.closure("tasks.t").parts != project.closure("tasks.t").parts  # other lines
    assert moved.digest("tasks.t") == project.digest("tasks.t")
    swapped = "def run():\n    return helper()\ndef helper():\n    return 1\n"
    assert Project({"tasks.t": swapped}).digest("tasks.t") == project.digest("tasks.t")


def test_module_level_statements_count_for_every_task_of_the_module() -> None:
    parent = PARENT + "\nprint('setup')\n"
    before = family(parent)
    after = family(parent.replace("'setup'", "'other setup'"))
    for child in ("tasks.a", "tasks.b"):
        assert before.digest("tasks.base", child) != after.digest("tasks.base", child)
    assert MODULE_PART in names(before.closure("tasks.base", "tasks.a"))


def test_collector_entry_points_gather_and_finish_count() -> None:
    source = "def run(v):\n    pass\ndef gather():\n    return g()\ndef g():\n    return 1\n"
    project = Project({"tasks.t": source})
    assert names(project.closure("tasks.t")) == {"run", "gather", "g"}
    edited = project.edit("tasks.t", source.replace("return 1", "return 2"))
    assert project.digest("tasks.t") != edited.digest("tasks.t")


# --- closures: project-local modules ---------------------------------------------------------

HELPERS = """
import json

def load(path):
    return json.loads(path)

def clean(rows):
    return [strip(r) for r in rows]

def strip(r):
    return r.strip()
"""


def helpers_project(helpers: str = HELPERS) -> Project:
    return Project(
        {
            "lib.helpers": helpers,
            "tasks.loads": "from lib.helpers import load\ndef run():\n    return load('x')\n",
            "tasks.cleans": "from lib import helpers\ndef run():\n    return helpers.clean([])\n",
        }
    )


def test_a_changed_helper_reruns_exactly_the_tasks_that_reach_it() -> None:
    before = helpers_project()
    after = helpers_project(HELPERS.replace("r.strip()", "r.strip().lower()"))
    assert before.digest("tasks.loads") == after.digest("tasks.loads")
    assert before.digest("tasks.cleans") != after.digest("tasks.cleans")
    assert "lib.helpers:strip" in names(before.closure("tasks.cleans"))
    assert "lib.helpers:strip" not in names(before.closure("tasks.loads"))


def test_local_parts_carry_module_file_and_line() -> None:
    parts = {p.qualname: p for p in helpers_project().closure("tasks.cleans").parts}
    strip = parts["lib.helpers:strip"]
    assert (strip.file, strip.line, strip.owner) == ("lib/helpers.py", 10, "lib.helpers")
    index = helpers_project().index()
    chain = helpers_project().chain("tasks.cleans")
    assert index.local_modules_reached(chain) == {"lib.helpers"}


IMPORT_STYLES = {
    "import lib.x\ndef run():\n    return lib.x.f()\n": {"lib.x:f"},
    "import lib.x as m\ndef run():\n    return m.f()\n": {"lib.x:f"},
    "from lib.x import f\ndef run():\n    return f()\n": {"lib.x:f"},
    "from lib import x\ndef run():\n    return x.f()\n": {"lib.x:f"},
    "from lib.x import f as g\ndef run():\n    return g()\n": {"lib.x:f"},
    "def run():\n    import lib.x\n    return lib.x.f()\n": {"lib.x:f"},
    "def run():\n    from lib.x import f\n    return f()\n": {"lib.x:f"},
    "from lib import f\ndef run():\n    return f()\n": {"lib:f", "lib.x:f"},  # re-export
    "from lib import x\ndef run():\n    return use(x)\n": {"lib.x:f", "lib.x:g"},  # whole module
    "import lib.x\ndef run():\n    return getattr(lib.x, NAME)()\n": {"lib.x:f", "lib.x:g"},
}


@pytest.mark.parametrize(("task", "expected"), IMPORT_STYLES.items())
def test_every_import_style_reaches_the_definition_used(task: str, expected: set[str]) -> None:
    project = Project(
        {
            "lib": "from .x import f\n",
            "lib.x": "def f():\n    return 1\ndef g():\n    return 2\n",
            "tasks.t": task,
        },
        packages=("lib",),
    )
    assert {n for n in names(project.closure("tasks.t")) if ":" in n} == expected


def test_relative_imports_in_tasks_reach_their_sibling_module() -> None:
    project = Project(
        {
            "tasks.video.util": "def size():\n    return 3\n",
            "tasks.video.extract": "from .util import size\ndef run():\n    return size()\n",
        }
    )
    before = project.digest("tasks.video.extract")
    after = project.edit("tasks.video.util", "def size():\n    return 4\n")
    assert "tasks.video.util:size" in names(project.closure("tasks.video.extract"))
    assert after.digest("tasks.video.extract") != before


def test_local_modules_follow_their_own_imports_in_their_own_namespace() -> None:
    project = Project(
        {
            "lib.a": "from lib.b import g\ndef f():\n    return g()\ndef helper():\n    return 0\n",
            "lib.b": "import lib.c\ndef g():\n    return lib.c.h()\n",
            "lib.c": "def h():\n    return 1\n",
            # the task's own `helper` must not stand in for lib.a's
            "tasks.t": "from lib.a import f\ndef helper():\n    pass\ndef run():\n    return f()\n",
        }
    )
    got = names(project.closure("tasks.t"))
    assert {"lib.a:f", "lib.a:g", "lib.b:g", "lib.c:h"} <= got
    assert "lib.a:helper" not in got and "helper" not in got
    edited = project.edit("lib.c", "def h():\n    return 2\n")
    assert edited.digest("tasks.t") != project.digest("tasks.t")


def test_a_local_modules_top_level_counts_once_it_is_used() -> None:
    helpers = HELPERS + "\nREGISTRY.setup()\n"
    project = helpers_project(helpers)
    edited = helpers_project(helpers.replace("setup()", "setup(1)"))
    assert project.digest("tasks.loads") != edited.digest("tasks.loads")
    unused = Project(
        {"lib.helpers": helpers, "tasks.t": "import lib.helpers\ndef run():\n    pass\n"}
    )
    edited_unused = unused.edit("lib.helpers", helpers.replace("setup()", "setup(1)"))
    assert unused.digest("tasks.t") == edited_unused.digest("tasks.t")


def test_a_package_init_runs_before_its_submodule() -> None:
    project = Project(
        {
            "lib": "CONFIG.load()\n",
            "lib.x": "def f():\n    pass\n",
            "tasks.t": "from lib.x import f\ndef run():\n    f()\n",
        },
        packages=("lib",),
    )
    assert "lib:<module>" in names(project.closure("tasks.t"))


def test_mutually_recursive_modules_terminate() -> None:
    project = Project(
        {
            "lib.a": "import lib.b\ndef f(n):\n    return lib.b.g(n - 1)\n",
            "lib.b": "import lib.a\ndef g(n):\n    return lib.a.f(n) if n else 0\n",
            "lib.c": "from lib.d import x\n",
            "lib.d": "from lib.c import x\n",  # a re-export cycle: fails at run time
            "tasks.t": "from lib.a import f\nfrom lib.c import x\ndef run():\n    return f(3), x\n",
        }
    )
    assert {"lib.a:f", "lib.b:g"} <= names(project.closure("tasks.t"))


def test_a_long_call_chain_resolves_without_recursion() -> None:
    n = 3000
    lib = "".join(f"def f{i}():\n    return f{i + 1}()\n" for i in range(n))
    lib += f"def f{n}():\n    pass\n"
    task = "from lib.chain import f0\ndef run():\n    f0()\n"
    project = Project({"lib.chain": lib, "tasks.t": task})
    assert f"lib.chain:f{n}" in names(project.closure("tasks.t"))


def test_star_imports_of_local_modules_resolve_names() -> None:
    project = Project(
        {
            "lib.x": "def f():\n    return 1\ndef g():\n    return 2\n",
            "tasks.t": "from lib.x import *\ndef run():\n    return f()\n",
        }
    )
    got = names(project.closure("tasks.t"))
    assert "lib.x:f" in got and "lib.x:g" not in got


def test_conditional_imports_reach_every_alternative() -> None:
    project = Project(
        {
            "lib.fast": "def f():\n    return 1\n",
            "lib.slow": "def f():\n    return 2\n",
            "tasks.t": "try:\n    from lib.fast import f\nexcept ImportError:\n"
            "    from lib.slow import f\ndef run():\n    return f()\n",
        }
    )
    assert {"lib.fast:f", "lib.slow:f"} <= names(project.closure("tasks.t"))


# --- closures: dynamic code and third parties ------------------------------------------------


def test_dynamic_lookup_makes_every_definition_count() -> None:
    source = (
        "def pick(name):\n    return globals()[name]\n"
        "def run():\n    return pick('other')()\n"
        "def other():\n    return 1\n"
    )
    project = Project({"tasks.t": source})
    assert "other" in names(project.closure("tasks.t"))
    edited = project.edit("tasks.t", source.replace("return 1", "return 2"))
    assert project.digest("tasks.t") != edited.digest("tasks.t")


def test_dynamic_local_modules_count_whole() -> None:
    project = Project(
        {
            "lib.reg": "def get(n):\n    return globals()[n]\n"
            "def a():\n    pass\ndef b():\n    pass\n",
            "tasks.t": "from lib.reg import get\ndef run():\n    return get('a')\n",
        }
    )
    assert {"lib.reg:a", "lib.reg:b"} <= names(project.closure("tasks.t"))


def test_third_party_imports_count_by_installed_version() -> None:
    project = Project(
        {
            "tasks.t": "import rich\nimport blake3\nimport json\n"
            "def run():\n    return rich.print(json.dumps(1))\n"
        }
    )
    closure = project.closure("tasks.t")
    assert dict(closure.externals) == {"rich": version_of("rich"), "json": PYTHON}
    assert version_of("rich").startswith("rich ") and PYTHON_VERSION == PYTHON
    assert {"rich", "json", "run"} == names(closure)  # the unused blake3 import does not count


def test_third_party_imports_inside_functions_count_too() -> None:
    project = Project(
        {"tasks.t": "def run():\n    import rich.text\n    return rich.text.Text()\n"}
    )
    assert project.closure("tasks.t").externals == (("rich", version_of("rich")),)


def test_a_different_installed_version_changes_the_closure() -> None:
    project = Project({"tasks.t": "import numpy as np\ndef run():\n    return np.zeros(3)\n"})
    modules = {"tasks.t": analyze_module(project.sources["tasks.t"], "tasks.t")}
    files = {"tasks.t": "tasks/t.py"}
    chain = project.chain("tasks.t")
    old = CodeIndex(modules, files, lambda top: "numpy 1.26.4").task_closure(chain)
    new = CodeIndex(modules, files, lambda top: "numpy 2.0.0").task_closure(chain)
    assert old.externals == (("numpy", "numpy 1.26.4"),)
    assert old.digest != new.digest


def test_a_local_module_shadows_an_installed_one() -> None:
    project = Project(
        {
            "rich": "def print(x):\n    return x\n",
            "tasks.t": "import rich\ndef run():\n    rich.print(1)\n",
        }
    )
    closure = project.closure("tasks.t")
    assert closure.externals == () and "rich:print" in names(closure)


def test_syntax_errors_in_a_chain_module_still_give_a_closure() -> None:
    project = Project({"tasks.t": "def run(:\n"})
    closure = project.closure("tasks.t")
    assert [(p.qualname, p.line) for p in closure.parts] == [(MODULE_PART, 1)]
    assert project.edit("tasks.t", "\ndef run(:\n").digest("tasks.t") != closure.digest


def test_frozen_builds_what_the_class_would() -> None:
    cases: list[tuple[type[Any], dict[str, Any]]] = [
        (Definition, {"name": "f", "kind": "function", "line": 3, "digest": "d",
                      "refs": frozenset({"x"}), "dynamic": False, "is_generator": True}),
        (Definition, {"name": "P", "kind": "import", "line": 1, "digest": "e",
                      "refs": frozenset(), "dynamic": False, "import_module": "pathlib",
                      "import_attr": "Path"}),
        (CodePart, {"qualname": "run", "file": "tasks/a.py", "line": 8, "owner": "a",
                    "digest": "f"}),
        (CodeClosure, {"parts": (), "externals": (("json", "python 3"),), "digest": "g"}),
        (ChainLink, {"task": "a", "module_name": "tasks.a", "file": "tasks/a.py"}),
        (Origin, {"task": "a", "file": Path("/p/tasks/a.py"), "line": 2}),
        (Header, {"data": {"kind": "task"}, "line": 1, "end_line": 3, "key_lines": {"kind": 2},
                  "item_lines": {}}),
        (FileAnalysis, {"header": None, "header_errors": ((2, "bad"),),
                        "module": analyze_module("x = 1\n", "lib.x")}),
    ]
    for cls, fields in cases:
        made = frozen_init.build(cls, **fields)
        assert made == cls(**fields) and repr(made) == repr(cls(**fields))
        if cls not in (Header, FileAnalysis):  # those hold dicts: no hash either way
            assert hash(made) == hash(cls(**fields))
        assert pickle.loads(pickle.dumps(made)) == made
        with pytest.raises(dataclasses.FrozenInstanceError):
            made.digest = "changed"
    info = analyze_module("import os\n\ndef run():\n    return os.sep\n", "tasks.a")
    assert pickle.loads(pickle.dumps(info)) == info


def test_standard_library_versions_need_no_package_metadata() -> None:
    # importlib.metadata is a 15-20 ms import: a project that only uses the standard library
    # (a first load computes every closure) should not pay for it
    script = ("import sys; from watchrun.project.externals import version_of, PYTHON_VERSION; "
              "assert version_of('json') == PYTHON_VERSION; "
              "print('importlib.metadata' in sys.modules)")
    found = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           check=True)
    assert found.stdout.strip() == "False"
