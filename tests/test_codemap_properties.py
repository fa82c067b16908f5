"""Properties of the code digests over generated programs: cosmetic rewrites never change a digest,
a changed constant always changes the digest of the definition holding it."""

from __future__ import annotations

import ast
import io
import json
import tokenize
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from watchrun.project.codemap import (
    MODULE_PART,
    ChainLink,
    CodeIndex,
    ModuleInfo,
    analyze_module,
)

GLOBALS = ["alpha", "beta", "gamma", "delta", "SIZE", "lib"]
LOCALS = ["x", "y", "row"]
TEXT = st.text(alphabet="ab z'\"\\", max_size=5)
# Python 3.12 added `type_params`; older versions do not know the field
NO_TYPE_PARAMS: dict[str, list[ast.AST]] = (
    {"type_params": []} if "type_params" in ast.FunctionDef._fields else {}
)


def name(value: str) -> ast.Name:
    return ast.Name(value, ast.Load())


def _expressions(depth: int) -> st.SearchStrategy[ast.expr]:
    leaf = st.one_of(
        st.integers(-3, 99).map(ast.Constant),
        TEXT.map(ast.Constant),
        st.sampled_from(GLOBALS + LOCALS).map(name),
    )
    if depth >= 2:
        return leaf
    sub = _expressions(depth + 1)
    return st.one_of(
        leaf,
        st.builds(
            lambda f, args: ast.Call(name(f), args, []),
            st.sampled_from(GLOBALS),
            st.lists(sub, max_size=2),
        ),
        st.builds(
            lambda a, op, b: ast.BinOp(a, op, b),
            sub,
            st.sampled_from([ast.Add(), ast.Mult(), ast.Sub()]),
            sub,
        ),
        st.sampled_from(["f", "g"]).map(
            lambda f: ast.Attribute(ast.Attribute(name("lib"), "x", ast.Load()), f, ast.Load())
        ),
        st.lists(sub, max_size=3).map(lambda items: ast.List(items, ast.Load())),
    )


# built once: Hypothesis is much faster with shared strategy objects
EXPRESSIONS = _expressions(0)
SMALL_EXPRESSIONS = _expressions(1)

# an expression statement; never a bare constant, which would read as a docstring
CALLS = st.builds(
    lambda f, args: ast.Expr(ast.Call(name(f), args, [])),
    st.sampled_from(GLOBALS),
    st.lists(SMALL_EXPRESSIONS, max_size=2),
)


def _body(depth: int) -> st.SearchStrategy[list[ast.stmt]]:
    simple = st.one_of(
        st.builds(
            lambda t, v: ast.Assign([ast.Name(t, ast.Store())], v),
            st.sampled_from(LOCALS),
            EXPRESSIONS,
        ),
        CALLS,
    )
    statement = simple
    if depth < 1:
        statement = st.one_of(
            simple,
            st.builds(lambda test, body: ast.If(test, body, []), SMALL_EXPRESSIONS, _body(1)),
        )
    returns = st.one_of(st.just([]), EXPRESSIONS.map(lambda e: [ast.Return(e)]))
    return st.builds(lambda b, r: b + r, st.lists(statement, min_size=1, max_size=3), returns)


BODY = _body(0)
INNER_BODY = _body(1)


@st.composite
def functions(draw: st.DrawFn) -> ast.FunctionDef:
    params = draw(st.lists(st.sampled_from(LOCALS), unique=True, max_size=2))
    defaults = draw(st.lists(SMALL_EXPRESSIONS, max_size=len(params)))
    decorators = draw(st.lists(st.sampled_from(GLOBALS).map(name), max_size=1))
    return ast.FunctionDef(
        name=draw(st.sampled_from(["run", "helper", "other", "gen"])),
        args=ast.arguments([], [ast.arg(p) for p in params], None, [], [], None, defaults),
        body=draw(BODY),
        decorator_list=decorators,
        returns=None,
        **NO_TYPE_PARAMS,
    )


CLASSES = st.builds(
    lambda name, bases, body: ast.ClassDef(
        name=name, bases=bases, keywords=[], body=body, decorator_list=[], **NO_TYPE_PARAMS
    ),
    st.sampled_from(["Model", "Loader"]),
    st.lists(st.sampled_from(GLOBALS).map(name), max_size=1),
    st.lists(functions(), min_size=1, max_size=2),
)

TOPLEVEL = st.one_of(
    functions(),
    CLASSES,
    st.builds(
        lambda t, v: ast.Assign([ast.Name(t, ast.Store())], v),
        st.sampled_from(GLOBALS[:-1]),
        EXPRESSIONS,
    ),
    CALLS,
    st.builds(lambda test, body: ast.If(test, body, []), SMALL_EXPRESSIONS, INNER_BODY),
)


def programs() -> st.SearchStrategy[ast.Module]:
    return st.lists(TOPLEVEL, min_size=1, max_size=5).map(lambda body: ast.Module(body, []))


def source_of(tree: ast.Module) -> str:
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n"


# --- cosmetic rewrites -------------------------------------------------------------------------


@dataclass(frozen=True)
class Cosmetics:
    docstrings: bool
    indent: int
    comments: bool
    blank_lines: bool
    requote: bool
    header: tuple[str, ...]


def with_docstrings(tree: ast.Module, text: str) -> ast.Module:
    tree = ast.parse(ast.unparse(tree))  # a copy
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)):
            node.body.insert(0, ast.Expr(ast.Constant(text)))
    return tree


def retokenize(source: str, c: Cosmetics) -> str:
    """Rewrite through the tokenizer: its "compat" output re-spaces every line on its own."""
    out: list[tuple[int, str]] = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        kind, text = tok.type, tok.string
        if kind == tokenize.INDENT:
            text = " " * (len(text) // 4 * c.indent)
        elif kind == tokenize.STRING and c.requote and text[0] in "'\"":
            value = ast.literal_eval(text)
            text = json.dumps(value) if isinstance(value, str) else text
        elif kind == tokenize.NEWLINE and c.comments:
            out.append((tokenize.COMMENT, "# a comment, with 'quotes' and def f(): pass"))
        out.append((kind, text))
        if kind == tokenize.NEWLINE and c.blank_lines:
            out.append((tokenize.NL, "\n"))
    return tokenize.untokenize(out)


def cosmetic(tree: ast.Module, c: Cosmetics) -> str:
    if c.docstrings:
        tree = with_docstrings(tree, "Added.\n\n    With 'lines' and \"quotes\".")
    text = retokenize(source_of(tree), c)
    header = ["# /// task", *c.header, "# ///"] if c.header else []
    return "\n".join([*header, text])


cosmetics = st.builds(
    Cosmetics,
    docstrings=st.booleans(),
    indent=st.sampled_from([1, 2, 4, 8]),
    comments=st.booleans(),
    blank_lines=st.booleans(),
    requote=st.booleans(),
    header=st.permutations(['# after = ["a"]', "# kind = 'task'", "# [params]", "# n = 1"]),
)


def digests(info: ModuleInfo) -> dict[str, str]:
    assert info.syntax_error is None, info.syntax_error
    out = {name: d.digest for name, d in info.definitions.items()}
    out[MODULE_PART] = info.toplevel_digest
    return out


def task_digest(info: ModuleInfo) -> str:
    index = CodeIndex({"tasks.t": info}, {"tasks.t": "tasks/t.py"}, lambda top: "")
    return index.task_closure([ChainLink("t", "tasks.t", "tasks/t.py")]).digest


@settings(max_examples=100, deadline=None)
@given(programs(), cosmetics)
def test_cosmetic_rewrites_change_no_digest(tree: ast.Module, c: Cosmetics) -> None:
    original = analyze_module(source_of(tree), "tasks.t")
    rewritten = analyze_module(cosmetic(tree, c), "tasks.t")
    assert digests(rewritten) == digests(original)
    assert task_digest(rewritten) == task_digest(original)


# --- real changes ------------------------------------------------------------------------------


def owner_of(statement: ast.stmt) -> str:
    """The key in `digests()` holding a top-level statement."""
    if isinstance(statement, (ast.FunctionDef, ast.ClassDef)):
        return statement.name
    if isinstance(statement, ast.Assign):
        target = statement.targets[0]
        assert isinstance(target, ast.Name)
        return target.id
    return MODULE_PART


@settings(max_examples=100, deadline=None)
@given(programs(), st.data())
def test_a_changed_constant_changes_its_definition(tree: ast.Module, data: st.DataObject) -> None:
    tree = ast.parse(source_of(tree))  # what the user wrote: constants as the parser sees them
    before = digests(analyze_module(source_of(tree), "tasks.t"))
    numbers = [
        (statement, node)
        for statement in tree.body
        for node in ast.walk(statement)
        if isinstance(node, ast.Constant) and type(node.value) is int
    ]
    if not numbers:
        return
    statement, node = data.draw(st.sampled_from(numbers))
    node.value += 1
    after = digests(analyze_module(source_of(tree), "tasks.t"))
    assert after[owner_of(statement)] != before[owner_of(statement)]
