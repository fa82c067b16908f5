"""One pass over one statement: its normalised serialisation (what its digest is made of) and
the names it reads, when it reads them, and the imports it executes."""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable
from typing import Any

from watchrun.project.codemap.model import ImportRef, text_digest

FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
_DYNAMIC_CALLS = frozenset({"globals", "locals", "eval", "exec", "__import__", "import_module"})


def is_bare_constant(node: ast.stmt) -> bool:
    """A docstring, or a string used as a comment: Python compiles it to nothing."""
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)


def _dotted(node: ast.Attribute) -> list[str] | None:
    """["c", "b", "a"] for a chain `a.b.c` rooted at a name; None for `f().b`, `x[0].b` …"""
    parts = [node.attr]
    value = node.value
    while isinstance(value, ast.Attribute):
        parts.append(value.attr)
        value = value.value
    if not isinstance(value, ast.Name):
        return None
    parts.append(value.id)
    return parts


def absolute_module(module: str | None, level: int, package: str) -> str:
    """The absolute name of a (possibly relative) import; "." prefixed if it leaves the root."""
    if level == 0:
        return module or ""
    parts = package.split(".") if package else []
    if level - 1 > len(parts) or (level - 1 == len(parts) and not module):
        return "." * level + (module or "")
    base = parts[: len(parts) - (level - 1)]
    if module:
        base.append(module)
    return ".".join(base)


class _Context:
    """A marker on the walk's stack: from here on, code runs at call time or not, at this depth
    of function nesting."""

    __slots__ = ("body", "depth")

    def __init__(self, body: bool, depth: int) -> None:
        self.body = body
        self.depth = depth


class Scan:
    """One iterative pass over a statement: its normalised serialisation and its references.

    The serialisation is a pre-order walk without positions or contexts (Load/Store follow from
    where a name stands), with docstrings, other bare constant statements and the `kind` of
    string constants (u"") left out: formatting, comments and docstrings never change it. Node
    types, a fixed field order and bracketed lists keep it unambiguous. Iterative, because real
    code has 500-term string concatenations that would overflow Python's recursion limit.
    """

    __slots__ = (
        "_digest",
        "_references",
        "body",
        "call",
        "deftime",
        "depth",
        "dynamic",
        "imports",
        "package",
        "tokens",
        "yields",
    )

    def __init__(self, package: str) -> None:
        self.package = package
        self.tokens: list[str] = []
        self.deftime: set[str] = set()  # references evaluated when the statement runs
        self.call: set[str] = set()  # references in function and lambda bodies
        self.imports: list[ImportRef] = []
        self.dynamic = False
        self.yields = False  # a yield directly in the body of the scanned function
        self.body = False  # walking a function or lambda body
        self.depth = 0  # function nesting, 1 in the body of the scanned function
        self._digest = ""
        self._references: tuple[frozenset[str], frozenset[str], frozenset[str]] | None = None

    def scan(self, root: ast.AST) -> Scan:
        stack: list[Any] = [root]
        pop = stack.pop
        push = stack.append
        append = self.tokens.append
        hooks = _HOOKS
        reversed_fields = _REVERSED_FIELDS
        name_node, constant, load = ast.Name, ast.Constant, ast.Load
        while stack:
            node = pop()
            cls = node.__class__
            # the commonest items inline, first: list items that are strings (the "]" closing
            # every list, too), names read (a name bound goes to its hook) and constants
            if cls is str:
                append(node)
                continue
            if cls is name_node and node.ctx.__class__ is load:
                append("N")
                append(node.id)
                (self.call if self.body else self.deftime).add(node.id)
                continue
            if cls is constant:
                append("K")
                append(repr(node.value))
                continue
            hook = hooks.get(cls)
            if hook is not None and hook(self, node, stack):
                continue
            append(cls.__name__)
            names = reversed_fields.get(cls) or _reversed_fields(cls)
            # `_push_fields`, inlined: this loop is most of the analysis time
            for name in names:
                value: Any = getattr(node, name, None)
                vcls = value.__class__
                if vcls is list:  # bracketed: a bare constant in it leaves no trace
                    append("[")
                    push("]")
                    stack += value[::-1]
                elif vcls is str:
                    append(value)
                elif isinstance(value, ast.AST):
                    if value._fields:
                        append("@")
                        push(value)
                    else:  # operators: leaves
                        append(vcls.__name__)
                else:  # None, numbers (`level`, `is_async`)
                    append(repr(value))
        return self

    def _push_fields(self, node: Any, names: tuple[str, ...], stack: list[Any]) -> None:
        """Emit a node's scalar fields and push its children so that they pop in order.

        Fields are taken last to first: a fixed order per node type keeps the serialisation
        unambiguous, and the children can go straight onto the stack.
        """
        append = self.tokens.append
        push = stack.append
        for name in names:
            value: Any = getattr(node, name, None)
            vcls = value.__class__
            if vcls is list:
                append("[")
                push("]")
                stack += value[::-1]
            elif vcls is str:
                append(value)
            elif value is None:
                append("None")
            elif isinstance(value, ast.AST):
                if value._fields:
                    append("@")
                    push(value)
                else:  # operators: leaves
                    append(vcls.__name__)
            else:
                append(repr(value))

    def references(self) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
        """(definition-time, call-time, all with every prefix of every chain)."""
        if self._references is None:
            deftime, call = frozenset(self.deftime), frozenset(self.call)
            self._references = (deftime, call, with_prefixes(deftime | call))
        return self._references

    def digest(self) -> str:
        if not self._digest:
            self._digest = text_digest("\x1f".join(self.tokens))
        return self._digest

    def _ref(self, chain: str) -> None:
        (self.call if self.body else self.deftime).add(chain)

    # hooks: return True when the node is fully handled

    def _none(self, node: None, stack: list[Any]) -> bool:  # a list item (kw_defaults)
        self.tokens.append("None")
        return True

    def _bound_name(self, node: ast.Name, stack: list[Any]) -> bool:  # stored or deleted
        self.tokens += ("N", node.id)
        return True

    def _state(self, node: _Context, stack: list[Any]) -> bool:
        self.body = node.body
        self.depth = node.depth
        return True

    def _scope(self, node: Any, stack: list[Any]) -> bool:
        """def, async def, lambda, class: the body runs later (but a class body at once), in a
        nested scope."""
        cls = node.__class__
        self.tokens.append(cls.__name__)
        before, after = _AROUND_BODY[cls]
        self._push_fields(node, after, stack)
        stack.append(_Context(self.body, self.depth))  # popped after the body: back out
        if cls is ast.Lambda:
            stack.append(node.body)
        else:
            self.tokens.append("[")
            stack.append("]")
            stack += node.body[::-1]
        stack.append(_Context(self.body or cls is not ast.ClassDef, self.depth + 1))
        self._push_fields(node, before, stack)
        return True

    def _attribute(self, node: ast.Attribute, stack: list[Any]) -> bool:
        parts = _dotted(node)
        if parts is None:
            self.tokens += ("A", node.attr)
            stack.append(node.value)
            return True
        # a chain rooted at a name is recorded whole, not as its prefixes (see the module doc)
        tokens = self.tokens
        for attr in parts[:-1]:
            tokens += ("A", attr)
        tokens += ("N", parts[-1])
        chain = ".".join(reversed(parts))
        self._ref(chain)
        if chain == "sys.modules":  # sys.modules[__name__] is globals() in disguise
            self.dynamic = True
        return True

    def _expression(self, node: ast.Expr, stack: list[Any]) -> bool:
        return node.value.__class__ is ast.Constant  # docstrings and the like: nothing

    def _call(self, node: ast.Call, stack: list[Any]) -> bool:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else None
        if isinstance(func, ast.Attribute) and func.attr == "import_module":
            self.dynamic = True
        elif name in _DYNAMIC_CALLS or (name == "vars" and not node.args):
            # vars(obj) reads obj's attributes: obj is a terminal reference, nothing dynamic
            self.dynamic = True
        return False

    def _global(self, node: ast.Global, stack: list[Any]) -> bool:
        # a function that rebinds a global reads the value it started from
        for name in node.names:
            self._ref(name)
        return False

    def _augassign(self, node: ast.AugAssign, stack: list[Any]) -> bool:
        if isinstance(node.target, ast.Name):  # `x += 1` loads x
            self._ref(node.target.id)
        return False

    def _yield(self, node: ast.expr, stack: list[Any]) -> bool:
        if self.depth == 1:
            self.yields = True
        return False

    def _import(self, node: ast.Import, stack: list[Any]) -> bool:
        for alias in node.names:
            if alias.asname:
                self.imports.append((alias.asname, alias.name, None, alias.name))
            else:
                top = alias.name.partition(".")[0]
                self.imports.append((top, top, None, alias.name))
        return False

    def _import_from(self, node: ast.ImportFrom, stack: list[Any]) -> bool:
        module = absolute_module(node.module, node.level, self.package)
        if module != "__future__":
            for alias in node.names:
                bound = alias.asname or alias.name
                self.imports.append((bound, module, alias.name, module))
        return False


_REVERSED_FIELDS: dict[type, tuple[str, ...]] = {}


def _reversed_fields(cls: type[ast.AST]) -> tuple[str, ...]:
    fields = _REVERSED_FIELDS.get(cls)
    if fields is None:
        fields = _REVERSED_FIELDS[cls] = cls._fields[::-1]
    return fields


def _around_body(cls: type[ast.AST]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The fields before and after `body`, each last to first (see `Scan._push_fields`)."""
    fields: tuple[str, ...] = cls._fields
    i = fields.index("body")
    return fields[:i][::-1], fields[i + 1 :][::-1]


_AROUND_BODY: dict[type, tuple[tuple[str, ...], tuple[str, ...]]] = {
    cls: _around_body(cls) for cls in _SCOPES
}

# what `Scan.scan` does not do itself (it handles strings, names read and constants inline)
_HOOKS: dict[type, Callable[[Scan, Any, list[Any]], bool]] = {
    ast.Name: Scan._bound_name,
    ast.Attribute: Scan._attribute,
    ast.Expr: Scan._expression,
    ast.Call: Scan._call,
    ast.Global: Scan._global,
    ast.AugAssign: Scan._augassign,
    ast.Yield: Scan._yield,
    ast.YieldFrom: Scan._yield,
    ast.Import: Scan._import,
    ast.ImportFrom: Scan._import_from,
    type(None): Scan._none,
    _Context: Scan._state,
    **{cls: Scan._scope for cls in _SCOPES},
}


def with_prefixes(chains: Iterable[str]) -> frozenset[str]:
    out: set[str] = set()
    for chain in chains:
        out.add(chain)
        while "." in chain:
            chain = chain.rpartition(".")[0]
            out.add(chain)
    return frozenset(out)
