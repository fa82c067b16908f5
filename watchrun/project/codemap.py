"""AST code map: what each task's result can depend on, at the level of definitions.

Two layers:
1. `analyze_module(source, ...)` -> `ModuleInfo`: per file, pure function of the file's text
   (so it is cached in the store by content hash and a null build parses nothing).
2. `CodeIndex.task_closure(chain)` -> `CodeClosure`: per task, the definitions reachable from its
   entry points through its inherited namespace and into project-local modules.

Soundness comes first: when the analysis cannot tell, it includes more (a local variable that
shadows a global still counts as a reference; a name bound inside an `if` counts together with
what it may shadow). Precision comes from three distinctions:

- *When* a reference is evaluated. Decorators, defaults, base classes, class bodies and the
  right-hand side of `X = …` run while the module executes ("definition time"), so in a task chain
  they see the namespace as it is at that module's turn; function and lambda bodies run when
  called, normally from `run` after every module of the chain has executed, so they see the final
  namespace. That is what makes a parent's `run` call the child's override of a helper, and the
  parent's helper drop out of that child's closure.
- Terminal attribute chains (`lib.x.f` in `lib.x.f(1)`) are resolved as a whole, so using one
  function of a module does not pull in the rest of it; a module object used as a value
  (`process(lib.x)`, `getattr(lib.x, name)`) pulls in the whole module.
- Project-local modules resolve in their own namespace, memoised per index: a helper used by a
  thousand tasks is resolved once.

Where the analysis has to choose, it chooses to rerun:
- A name bound twice at the top of one module counts with both bindings (`X = [1]` then
  `X += [2]`, `def f` then `f = cache(f)`, or a helper redefined further down); only a plain
  binding after one inside an `if`/`try` replaces it outright.
- A function that calls `globals()`, `locals()`, `vars()`, `eval`, `exec`, `__import__`,
  `import_module` or touches `sys.modules` makes every definition of its namespace count.
  `getattr(module, name)` instead makes the whole *module* count (it is a module object used
  as a value), which is what it can reach.
- Imports count only when reached: an unused `import numpy` reruns nothing when numpy is
  upgraded, and an unused local module's top level does not count.
- Bare constant statements (docstrings anywhere, strings used as comments) compile to nothing
  and are left out, like comments.
"""

from __future__ import annotations

import ast
import gc
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from blake3 import blake3

from watchrun.project.frozen import build as _frozen

ANALYZER_VERSION = 1  # bump when ModuleInfo or hashing changes: invalidates the analysis cache
ENTRY_POINTS = ("run", "gather", "finish")

# An import executed inside some code, as data:
# (name it binds, module bound to that name, attribute taken or None (or "*"), module executed).
# `import a.b` -> ("a", "a", None, "a.b"); `from a.b import c as d` -> ("d", "a.b", "c", "a.b").
ImportRef = tuple[str, str, str | None, str]


class ArgSpec(NamedTuple):
    """One parameter of a top-level function (for checking what `run` asks for). A tuple, as
    the other small values here: a frozen dataclass costs every command milliseconds to define."""

    name: str
    has_default: bool
    kind: str  # "positional" | "keyword_only" | "var_positional" | "var_keyword"


@dataclass(frozen=True)
class Definition:
    """A top-level binding of a module: def, async def, class, `NAME = ...`, or an import."""

    name: str
    kind: str  # "function" | "class" | "assign" | "import"
    line: int
    digest: str  # blake3 hex of the normalised AST (docstrings removed); imports: of the statement
    refs: frozenset[str]  # names it loads, and dotted attribute chains ("lib.x.f") rooted at a name
    dynamic: bool  # uses globals()/eval/exec/getattr(module, …)/vars()/__import__ …
    args: tuple[ArgSpec, ...] = ()  # functions only
    is_generator: bool = False  # functions only: contains yield / yield from (not in nested defs)
    # imports only: absolute dotted module imported and the attribute taken from it, if any:
    # `import a.b as c` -> ("a.b", None); `from a.b import f` -> ("a.b", "f");
    # `import a.b` binds "a" -> ("a", None) and records "a.b" in `also_imports`.
    import_module: str | None = None
    import_attr: str | None = None
    also_imports: tuple[str, ...] = ()
    # Terminal references split by when they are evaluated (see the module docstring); a plain
    # name is a chain of length one. `refs` is their union plus every prefix of every chain.
    deftime_refs: frozenset[str] = frozenset()
    call_refs: frozenset[str] = frozenset()
    # imports executed inside the definition (function-local imports, or the imports of the
    # compound statement that binds the name)
    nested_imports: tuple[ImportRef, ...] = ()
    # bound inside a compound statement (`try: import x except ImportError: x = None`): the name
    # may keep the value it had before this module, so that value counts too
    conditional: bool = False
    is_async: bool = False


@dataclass(frozen=True)
class ModuleInfo:
    module_name: str  # dotted name relative to the project root ("tasks.models.train", "lib.x")
    definitions: Mapping[str, Definition]  # the last top-level binding of each name wins
    # digest of every top-level statement that is not a definition (expressions, if/for/with/try
    # blocks …), in order; "" when there are none. Counts for every task of the module.
    toplevel_digest: str
    toplevel_refs: frozenset[str]
    dynamic: bool  # some top-level statement defeats static analysis
    syntax_error: tuple[int, str] | None  # (line, message); then everything else is empty
    toplevel_line: int = 0  # line of the first such statement
    toplevel_deftime_refs: frozenset[str] = frozenset()
    toplevel_call_refs: frozenset[str] = frozenset()
    # imports inside those statements, including `from m import *`
    toplevel_imports: tuple[ImportRef, ...] = ()


@dataclass(frozen=True)
class CodePart:
    """One definition in a task's closure, with where it comes from."""

    qualname: str  # "clean" for the task namespace, "lib.helpers:normalize" for a local module
    file: str  # path relative to the project root, posix
    line: int
    owner: str  # the task (for chain modules) or module name (for local modules) defining it
    digest: str


# qualname of the part standing for a module's top-level statements ("lib.x:<module>" for a local
# module); never a Python identifier, so it cannot collide with a definition
MODULE_PART = "<module>"


@dataclass(frozen=True)
class CodeClosure:
    parts: tuple[CodePart, ...]  # sorted by qualname
    externals: tuple[tuple[str, str], ...]  # (distribution or module, version) of third-party use
    digest: str  # blake3 hex over parts' (qualname, digest), module-level digests and externals


@dataclass(frozen=True)
class ChainLink:
    task: str  # task name
    module_name: str
    file: str  # relative posix path


# ---------------------------------------------------------------------------------------------
# Layer 1: one module
# ---------------------------------------------------------------------------------------------


def analyze_module(source: str, module_name: str, *, is_package: bool = False) -> ModuleInfo:
    """Parse one module. Never raises on bad code: a syntax error is reported in the result.

    `is_package`: the source is a package's `__init__.py`, so `from .x import f` means
    `module_name.x` rather than a sibling of `module_name`.
    """
    # A syntax tree has no reference cycles, so the cyclic collector has nothing to find in the
    # hundreds of thousands of nodes parsing allocates; left on, it costs ~40% of the analysis.
    collecting = gc.isenabled()
    gc.disable()
    try:
        parsed = _parse(source)
        if isinstance(parsed, tuple):
            return ModuleInfo(module_name, {}, "", frozenset(), False, parsed)
        package = module_name if is_package else module_name.rpartition(".")[0]
        return _ModuleBuilder(module_name, package).build(parsed)
    finally:
        if collecting:
            gc.enable()


def _parse(source: str) -> ast.Module | tuple[int, str]:
    try:
        # the parser warns about e.g. invalid escape sequences; that is for the user's Python run
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(source)
    except SyntaxError as exc:
        return (exc.lineno or 1, exc.msg)
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, absurd nesting
        return (1, str(exc) or type(exc).__name__)


def _digest(text: str) -> str:
    return blake3(text.encode()).hexdigest()


_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
_DYNAMIC_CALLS = frozenset({"globals", "locals", "eval", "exec", "__import__", "import_module"})


def _is_bare_constant(node: ast.stmt) -> bool:
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


def _absolute(module: str | None, level: int, package: str) -> str:
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


class _Scan:
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

    def scan(self, root: ast.AST) -> _Scan:
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
            self._references = (deftime, call, _with_prefixes(deftime | call))
        return self._references

    def digest(self) -> str:
        if not self._digest:
            self._digest = _digest("\x1f".join(self.tokens))
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
        module = _absolute(node.module, node.level, self.package)
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
    """The fields before and after `body`, each last to first (see `_Scan._push_fields`)."""
    fields: tuple[str, ...] = cls._fields
    i = fields.index("body")
    return fields[:i][::-1], fields[i + 1 :][::-1]


_AROUND_BODY: dict[type, tuple[tuple[str, ...], tuple[str, ...]]] = {
    cls: _around_body(cls) for cls in _SCOPES
}

# what `_Scan.scan` does not do itself (it handles strings, names read and constants inline)
_HOOKS: dict[type, Callable[[_Scan, Any, list[Any]], bool]] = {
    ast.Name: _Scan._bound_name,
    ast.Attribute: _Scan._attribute,
    ast.Expr: _Scan._expression,
    ast.Call: _Scan._call,
    ast.Global: _Scan._global,
    ast.AugAssign: _Scan._augassign,
    ast.Yield: _Scan._yield,
    ast.YieldFrom: _Scan._yield,
    ast.Import: _Scan._import,
    ast.ImportFrom: _Scan._import_from,
    type(None): _Scan._none,
    _Context: _Scan._state,
    **{cls: _Scan._scope for cls in _SCOPES},
}


def _with_prefixes(chains: Iterable[str]) -> frozenset[str]:
    out: set[str] = set()
    for chain in chains:
        out.add(chain)
        while "." in chain:
            chain = chain.rpartition(".")[0]
            out.add(chain)
    return frozenset(out)


def _argspecs(args: ast.arguments) -> tuple[ArgSpec, ...]:
    positional = [*args.posonlyargs, *args.args]
    first_default = len(positional) - len(args.defaults)
    specs = [ArgSpec(a.arg, i >= first_default, "positional") for i, a in enumerate(positional)]
    if args.vararg is not None:
        specs.append(ArgSpec(args.vararg.arg, False, "var_positional"))
    for a, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        specs.append(ArgSpec(a.arg, default is not None, "keyword_only"))
    if args.kwarg is not None:
        specs.append(ArgSpec(args.kwarg.arg, False, "var_keyword"))
    return tuple(specs)


def _is_main_guard(stmt: ast.stmt) -> bool:
    """`if __name__ == "__main__":` without an else: never runs in a task."""
    if not isinstance(stmt, ast.If) or stmt.orelse:
        return False
    test = stmt.test
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return False
    if not isinstance(test.ops[0], ast.Eq):
        return False
    sides = (test.left, test.comparators[0])
    has_name = any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
    has_main = any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides)
    return has_name and has_main


_NESTED_SCOPES = (ast.Lambda, ast.ClassDef, *_FUNCTIONS)


def _binders(stmt: ast.stmt) -> list[tuple[str, ast.AST]]:
    """Module-level names a compound statement may bind, with the node binding each."""
    found: list[tuple[str, ast.AST]] = []
    stack: list[ast.AST] = [stmt]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Store):
                found.append((node.id, node))
            continue
        name = _binder_name(node)
        if name is not None:
            found.append((name, node))
        if isinstance(node, _NESTED_SCOPES):
            continue  # their bodies bind locals; decorators cannot bind module names usefully
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, ast.comprehension):
                stack.append(child)
            else:  # the loop variable is local to the comprehension; a walrus in it is not
                stack.extend([child.iter, *child.ifs])
    return found


def _binder_name(node: ast.AST) -> str | None:
    if isinstance(node, (*_FUNCTIONS, ast.ClassDef)):
        return node.name
    if isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)):
        return node.name
    if isinstance(node, ast.MatchMapping):
        return node.rest
    if isinstance(node, ast.alias):
        return node.asname or (None if node.name == "*" else node.name.partition(".")[0])
    return None


def _is_generator(func: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    stack: list[ast.AST] = list(func.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            return True
        if not isinstance(node, _NESTED_SCOPES):
            stack.extend(ast.iter_child_nodes(node))
    return False


def _merge(old: Definition, new: Definition) -> Definition:
    """Two bindings of one name in one module: both count (a later one may read the earlier)."""
    nested = old.nested_imports
    if old.kind == "import" and old.import_module is not None:
        executed = old.also_imports or (old.import_module,)
        nested += tuple((old.name, old.import_module, old.import_attr, m) for m in executed)
    function = new if new.kind == "function" or old.kind != "function" else old
    also = new.also_imports
    if old.kind == new.kind == "import" and old.import_module == new.import_module:
        also = tuple(dict.fromkeys(old.also_imports + new.also_imports))
    return _frozen(
        Definition,
        name=new.name,
        kind=new.kind,
        line=old.line,
        digest=_digest(old.digest + new.digest),
        refs=old.refs | new.refs,
        dynamic=old.dynamic or new.dynamic,
        args=function.args,
        is_generator=function.is_generator,
        import_module=new.import_module,
        import_attr=new.import_attr,
        also_imports=also,
        deftime_refs=old.deftime_refs | new.deftime_refs,
        call_refs=old.call_refs | new.call_refs,
        nested_imports=tuple(dict.fromkeys(nested + new.nested_imports)),
        conditional=old.conditional and new.conditional,
        is_async=function.is_async,
    )


class _ModuleBuilder:
    def __init__(self, module_name: str, package: str) -> None:
        self.module_name = module_name
        self.package = package
        self.definitions: dict[str, Definition] = {}
        self.toplevel = blake3()
        self.toplevel_count = 0
        self.toplevel_line = 0
        self.toplevel_deftime: set[str] = set()
        self.toplevel_call: set[str] = set()
        self.toplevel_imports: list[ImportRef] = []
        self.dynamic = False

    def build(self, tree: ast.Module) -> ModuleInfo:
        for stmt in tree.body:
            if not _is_bare_constant(stmt):  # the module docstring is not a statement
                self._statement(stmt)
        refs = self.toplevel_deftime | self.toplevel_call
        return _frozen(
            ModuleInfo,
            module_name=self.module_name,
            definitions=self.definitions,
            toplevel_digest=self.toplevel.hexdigest() if self.toplevel_count else "",
            toplevel_refs=_with_prefixes(refs),
            dynamic=self.dynamic,
            syntax_error=None,
            toplevel_line=self.toplevel_line,
            toplevel_deftime_refs=frozenset(self.toplevel_deftime),
            toplevel_call_refs=frozenset(self.toplevel_call),
            toplevel_imports=tuple(self.toplevel_imports),
        )

    def _statement(self, stmt: ast.stmt) -> None:
        if isinstance(stmt, (*_FUNCTIONS, ast.ClassDef)):
            self._def(stmt)
        elif isinstance(stmt, ast.Import):
            self._import(stmt)
        elif isinstance(stmt, ast.ImportFrom) and not self._is_special_import(stmt):
            self._import_from(stmt)
        elif not self._assignment(stmt) and not _is_main_guard(stmt):
            self._other(stmt)

    def _bind(self, new: Definition) -> None:
        old = self.definitions.get(new.name)
        if old is None or (old.conditional and not new.conditional):
            self.definitions[new.name] = new  # a plain binding after a conditional one wins
        else:
            self.definitions[new.name] = _merge(old, new)

    def _scan(self, node: ast.AST) -> _Scan:
        return _Scan(self.package).scan(node)

    def _from_scan(
        self, name: str, kind: str, stmt: ast.stmt, scan: _Scan, **extra: Any
    ) -> Definition:
        deftime, call, refs = scan.references()
        return _frozen(
            Definition,
            name=name,
            kind=kind,
            line=stmt.lineno,
            digest=scan.digest(),
            refs=refs,
            dynamic=scan.dynamic,
            deftime_refs=deftime,
            call_refs=call,
            nested_imports=tuple(scan.imports),
            **extra,
        )

    def _def(self, stmt: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        scan = self._scan(stmt)
        if isinstance(stmt, ast.ClassDef):
            self._bind(self._from_scan(stmt.name, "class", stmt, scan))
            return
        definition = self._from_scan(
            stmt.name,
            "function",
            stmt,
            scan,
            args=_argspecs(stmt.args),
            is_generator=scan.yields,
            is_async=isinstance(stmt, ast.AsyncFunctionDef),
        )
        self._bind(definition)

    def _import_definition(self, name: str, stmt: ast.stmt, key: str, **target: Any) -> None:
        self._bind(
            _frozen(
                Definition,
                name=name,
                kind="import",
                line=stmt.lineno,
                digest=_digest(key),
                refs=frozenset(),
                dynamic=False,
                **target,
            )
        )

    def _import(self, stmt: ast.Import) -> None:
        for alias in stmt.names:
            key = f"import\x1f{alias.name}\x1f{alias.asname}"
            if alias.asname:
                self._import_definition(alias.asname, stmt, key, import_module=alias.name)
                continue
            top = alias.name.partition(".")[0]
            also = (alias.name,) if alias.name != top else ()
            self._import_definition(top, stmt, key, import_module=top, also_imports=also)

    def _is_special_import(self, stmt: ast.ImportFrom) -> bool:
        # `from __future__ import …` changes how the whole module compiles, and `*` binds names
        # nobody can list here: both count as module-level statements
        return stmt.module == "__future__" or any(a.name == "*" for a in stmt.names)

    def _import_from(self, stmt: ast.ImportFrom) -> None:
        module = _absolute(stmt.module, stmt.level, self.package)
        for alias in stmt.names:
            key = f"from\x1f{stmt.level}\x1f{stmt.module}\x1f{alias.name}\x1f{alias.asname}"
            bound = alias.asname or alias.name
            self._import_definition(bound, stmt, key, import_module=module, import_attr=alias.name)

    def _assignment(self, stmt: ast.stmt) -> bool:
        """Bind `NAME = …`, `A, B = …`, `NAME: T = …`, `NAME += …`; False for anything else."""
        if isinstance(stmt, ast.Assign):
            names = _target_names(stmt.targets)
        elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)) and isinstance(stmt.target, ast.Name):
            has_value = isinstance(stmt, ast.AugAssign) or stmt.value is not None
            names = [stmt.target.id] if has_value else None
        else:
            names = None
        if not names:
            return False
        scan = self._scan(stmt)
        for name in dict.fromkeys(names):
            self._bind(self._from_scan(name, "assign", stmt, scan))
        return True

    def _other(self, stmt: ast.stmt) -> None:
        scan = self._scan(stmt)
        self.toplevel.update(f"{scan.digest()}\n".encode())
        self.toplevel_count += 1
        if not self.toplevel_line:
            self.toplevel_line = stmt.lineno
        self.toplevel_deftime |= scan.deftime
        self.toplevel_call |= scan.call
        self.toplevel_imports += scan.imports
        self.dynamic = self.dynamic or scan.dynamic
        bound = _binders(stmt)
        if not bound:
            return
        for name, node in _last_per_name(bound):
            extra: dict[str, Any] = {"conditional": True}
            if isinstance(node, _FUNCTIONS):
                extra.update(args=_argspecs(node.args), is_generator=_is_generator(node))
                extra["is_async"] = isinstance(node, ast.AsyncFunctionDef)
            self._bind(self._from_scan(name, "assign", stmt, scan, **extra))


def _last_per_name(bound: list[tuple[str, ast.AST]]) -> list[tuple[str, ast.AST]]:
    """One binder per name (a function binding it if any, for its signature)."""
    chosen: dict[str, ast.AST] = {}
    for name, node in bound:
        if name not in chosen or isinstance(node, _FUNCTIONS):
            chosen[name] = node
    return list(chosen.items())


def _target_names(targets: list[ast.expr]) -> list[str] | None:
    """Names bound by assignment targets made only of names (and tuples/lists/stars of them)."""
    names: list[str] = []
    stack: list[ast.expr] = targets[::-1]
    while stack:
        target = stack.pop()
        if isinstance(target, ast.Name):
            names.append(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            stack.extend(target.elts[::-1])
        elif isinstance(target, ast.Starred):
            stack.append(target.value)
        else:
            return None  # x[0] = …, obj.attr = …: a module-level statement
    return names


# ---------------------------------------------------------------------------------------------
# Layer 2: closures
# ---------------------------------------------------------------------------------------------

# A node of the local-module graph: (module, definition name), (module, MODULE_PART) for its
# top-level statements, (module, _WHOLE) for "every definition of it", or ("", top) for a
# third-party top-level module.
_Node = tuple[str, str]
_WHOLE = "*"
_EMPTY_INFO = ModuleInfo("", {}, "", frozenset(), False, None)


class CodeIndex:
    """Resolves closures over a set of analysed modules.

    modules: every analysed module by dotted name (task modules and project-local helpers).
    files: dotted module name -> relative posix path, for every project-local module.
    version_of: third-party top-level module name -> version string ("" if unknown).
    """

    def __init__(
        self,
        modules: Mapping[str, ModuleInfo],
        files: Mapping[str, str],
        version_of: Callable[[str], str],
    ) -> None:
        self._modules = modules
        self._files = files
        self._version_of = version_of
        self._local: set[str] = set()
        for name in (*modules, *files):
            while name and name not in self._local:
                self._local.add(name)
                name = name.rpartition(".")[0]
        self._versions: dict[str, str] = {}
        self._successors_memo: dict[_Node, frozenset[_Node]] = {}
        self._closure_memo: dict[_Node, frozenset[_Node]] = {}
        self._path_memo: dict[tuple[str, tuple[str, ...]], frozenset[_Node]] = {}
        self._resolve_memo: dict[tuple[str, str], frozenset[_Node]] = {}
        self._import_memo: dict[ImportRef, frozenset[_Node]] = {}
        self._chain_parts: dict[tuple[str, str], _PartEntry | None] = {}
        self._local_parts: dict[_Node, _PartEntry | None] = {}
        self._results: dict[tuple[ChainLink, ...], tuple[CodeClosure, frozenset[str]]] = {}

    def task_closure(self, chain: Sequence[ChainLink]) -> CodeClosure:
        """`chain` is root ancestor first, the task itself last (the execution order)."""
        return self._result(chain)[0]

    def local_modules_reached(self, chain: Sequence[ChainLink]) -> frozenset[str]:
        """Dotted names of the project-local modules the task's closure enters (for watching)."""
        return self._result(chain)[1]

    def task_result(self, chain: Sequence[ChainLink]) -> tuple[CodeClosure, frozenset[str]]:
        """`task_closure` and `local_modules_reached` at once."""
        return self._result(chain)

    def _result(self, chain: Sequence[ChainLink]) -> tuple[CodeClosure, frozenset[str]]:
        key = chain if type(chain) is tuple else tuple(chain)
        result = self._results.get(key)
        if result is None:
            result = self._results[key] = _TaskWalk(self, key).result()
        return result

    # --- the local-module graph, memoised ---

    def info(self, module: str) -> ModuleInfo | None:
        return self._modules.get(module)

    def is_local(self, module: str) -> bool:
        return module in self._local

    def version(self, top: str) -> str:
        version = self._versions.get(top)
        if version is None:
            version = self._versions[top] = self._version_of(top)
        return version

    def closure(self, start: _Node) -> frozenset[_Node]:
        """Every node reachable from `start`, itself included."""
        found = self._closure_memo.get(start)
        if found is not None:
            return found
        seen = {start}
        stack = [start]
        while stack:
            node = stack.pop()
            known = self._closure_memo.get(node) if node is not start else None
            if known is not None:
                seen |= known
                continue
            for successor in self._successors(node):
                if successor not in seen:
                    seen.add(successor)
                    stack.append(successor)
        found = self._closure_memo[start] = frozenset(seen)
        return found

    def _successors(self, node: _Node) -> frozenset[_Node]:
        found = self._successors_memo.get(node)
        if found is None:
            found = self._successors_memo[node] = frozenset(self._expand(node))
        return found

    def _expand(self, node: _Node) -> set[_Node]:
        module, name = node
        info = self._modules.get(module) if module else None
        if info is None:
            return set()
        if name == MODULE_PART:
            return self._expand_toplevel(module, info)
        out: set[_Node] = {(module, MODULE_PART)}
        if name == _WHOLE:
            out.update((module, n) for n in info.definitions)
            return out
        definition = info.definitions.get(name)
        if definition is None:
            return out
        for chain in definition.deftime_refs | definition.call_refs:
            out |= self.resolve_in(module, chain)
            out |= self.through_imports(definition.nested_imports, chain)
        out |= self.executed(definition)
        if definition.dynamic:
            out.add((module, _WHOLE))
        return out

    def _expand_toplevel(self, module: str, info: ModuleInfo) -> set[_Node]:
        out: set[_Node] = set()
        parent = module.rpartition(".")[0]
        while parent:  # importing lib.x runs lib/__init__.py first
            if parent in self._modules:
                out.add((parent, MODULE_PART))
                break
            parent = parent.rpartition(".")[0]
        for chain in info.toplevel_deftime_refs | info.toplevel_call_refs:
            out |= self.resolve_in(module, chain)
        for ref in info.toplevel_imports:
            out |= self.run_import(ref)
        if info.dynamic:
            out.add((module, _WHOLE))
        return out

    def resolve_in(self, module: str, chain: str) -> frozenset[_Node]:
        """What `chain`, evaluated in local module `module`'s namespace, may refer to."""
        key = (module, chain)
        found = self._resolve_memo.get(key)
        if found is None:
            head, _, rest = chain.partition(".")
            tail = tuple(rest.split(".")) if rest else ()
            out: set[_Node] = set()
            info = self._modules.get(module) or _EMPTY_INFO
            definition = info.definitions.get(head)
            if definition is not None:
                out.add((module, head))
                out |= self.through_definition(definition, tail)
            else:
                for star in _stars(info):
                    out |= self.attr_path(star, (head, *tail))
            found = self._resolve_memo[key] = frozenset(out)
        return found

    def through_definition(self, definition: Definition, tail: tuple[str, ...]) -> set[_Node]:
        """Where an attribute chain continues when its head is bound by an import."""
        out: set[_Node] = set()
        if definition.kind != "import" and not definition.nested_imports:
            return out
        if definition.kind == "import" and definition.import_module is not None:
            out |= self.import_path(definition.import_module, definition.import_attr, tail)
        for name, module, attr, _executed in definition.nested_imports:
            if name == definition.name:
                out |= self.import_path(module, attr, tail)
        return out

    def through_imports(self, imports: tuple[ImportRef, ...], chain: str) -> set[_Node]:
        """Resolve `chain` through the function-local imports binding its head."""
        out: set[_Node] = set()
        if imports:
            head, _, rest = chain.partition(".")
            tail = tuple(rest.split(".")) if rest else ()
            for name, module, attr, _executed in imports:
                if name == head:
                    out |= self.import_path(module, attr, tail)
        return out

    def import_path(self, module: str, attr: str | None, tail: tuple[str, ...]) -> frozenset[_Node]:
        return self.attr_path(module, tail if attr is None else (attr, *tail))

    def attr_path(self, module: str, attrs: tuple[str, ...]) -> frozenset[_Node]:
        """What `module.a.b.c` may be: a definition of a local module, a whole local module,
        or a third-party module."""
        key = (module, attrs)
        found = self._path_memo.get(key)
        if found is None:
            self._path_memo[key] = frozenset()  # a cycle of re-exports resolves to nothing more
            found = self._path_memo[key] = frozenset(self._attr_path(module, attrs))
        return found

    def _attr_path(self, module: str, attrs: tuple[str, ...]) -> set[_Node]:
        top = module.partition(".")[0]
        if not top or module.startswith("."):
            return set()  # a relative import above the project root: it fails at run time
        if not self.is_local(top):
            return {("", top)}
        out: set[_Node] = {(module, MODULE_PART)} if module in self._modules else set()
        if not attrs or attrs[0] == "__dict__":
            out.add((module, _WHOLE))
            return out
        first, rest = attrs[0], attrs[1:]
        info = self._modules.get(module) or _EMPTY_INFO
        definition = info.definitions.get(first)
        if definition is not None:
            out.add((module, first))
            out |= self.through_definition(definition, rest)
        submodule = f"{module}.{first}"
        if self.is_local(submodule):
            out |= self.attr_path(submodule, rest)
        elif definition is None:
            for star in _stars(info):
                out |= self.attr_path(star, attrs)
        return out

    def executed(self, definition: Definition) -> set[_Node]:
        """What running the definition's statement (and importing what it imports) enters."""
        out: set[_Node] = set()
        for ref in definition.nested_imports:
            out |= self.run_import(ref)
        if definition.kind == "import" and definition.import_module is not None:
            for module in definition.also_imports or (definition.import_module,):
                out |= self.run_import(("", module, definition.import_attr, module))
        return out

    def run_import(self, ref: ImportRef) -> frozenset[_Node]:
        """Executing an import enters the module (and its packages), or uses a third party."""
        found = self._import_memo.get(ref)
        if found is None:
            found = self._import_memo[ref] = self._run_import(ref)
        return found

    def _run_import(self, ref: ImportRef) -> frozenset[_Node]:
        _name, _module, attr, executed = ref
        found = self.attr_path(executed, ())
        # the whole-module node is for module objects used as values, not for imports
        out = {node for node in found if node[1] != _WHOLE}
        if attr is not None and attr != "*" and self.is_local(f"{executed}.{attr}"):
            out |= {n for n in self.attr_path(f"{executed}.{attr}", ()) if n[1] != _WHOLE}
        return frozenset(out)

    def chain_part(self, link: ChainLink, definition: Definition) -> _PartEntry:
        key = (link.task, definition.name)
        entry = self._chain_parts.get(key)
        if entry is None:
            part = _frozen(CodePart, qualname=definition.name, file=link.file,
                           line=definition.line, owner=link.task, digest=definition.digest)
            entry = self._chain_parts[key] = _entry(part)
        return entry

    def module_part(self, link: ChainLink, info: ModuleInfo) -> _PartEntry | None:
        key = (link.task, MODULE_PART)
        if key not in self._chain_parts:
            digest = _toplevel_digest(info)
            line = _toplevel_line(info)
            part = CodePart(MODULE_PART, link.file, line, link.task, digest) if digest else None
            self._chain_parts[key] = _entry(part) if part is not None else None
        return self._chain_parts[key]

    def local_part(self, node: _Node) -> _PartEntry | None:
        if node not in self._local_parts:
            part = self._make_local_part(node)
            self._local_parts[node] = _entry(part) if part is not None else None
        return self._local_parts[node]

    def _make_local_part(self, node: _Node) -> CodePart | None:
        module, name = node
        info = self._modules.get(module) if module else None
        if info is None or name == _WHOLE:
            return None
        file = self._files.get(module, "")
        if name == MODULE_PART:
            digest = _toplevel_digest(info)
            if not digest:
                return None
            return CodePart(f"{module}:{name}", file, _toplevel_line(info), module, digest)
        definition = info.definitions[name]
        return CodePart(f"{module}:{name}", file, definition.line, module, definition.digest)


# a part with its sort key and its line in the closure digest; the digest leaves out the file
# and line, so moving code around reruns nothing
_PartEntry = tuple[tuple[str, str], str, CodePart]


def _entry(part: CodePart) -> _PartEntry:
    return (part.qualname, part.owner), f"{part.qualname}\x1f{part.owner}\x1f{part.digest}", part


def _stars(info: ModuleInfo) -> list[str]:
    return [ref[3] for ref in info.toplevel_imports if ref[2] == "*"]


def _toplevel_line(info: ModuleInfo) -> int:
    return info.syntax_error[0] if info.syntax_error is not None else info.toplevel_line


def _toplevel_digest(info: ModuleInfo) -> str:
    if info.syntax_error is not None:
        line, message = info.syntax_error
        return _digest(f"syntax error\x1f{line}\x1f{message}")
    return info.toplevel_digest


# (chain level of the module defining it, name, level whose namespace its body sees,
#  whether that is a module executing rather than the finished namespace)
_WalkState = tuple[int, str, int, bool]


class _TaskWalk:
    """One task's closure: its chain namespace walked here, local modules via the index."""

    def __init__(self, index: CodeIndex, chain: tuple[ChainLink, ...]) -> None:
        self.index = index
        self.links = chain
        self.infos = [index.info(link.module_name) or _EMPTY_INFO for link in chain]
        self.namespaces = [info.definitions for info in self.infos]
        self.last = len(chain) - 1
        self.parts: dict[tuple[str, int], Definition] = {}
        self.entries: set[_Node] = set()
        self.seen: set[_WalkState] = set()
        self.todo: list[tuple[int, Definition, int, bool]] = []
        self.all_included = False
        # `from lib.x import *` in a chain module: (its level, lib.x)
        self.stars = [(i, s) for i, info in enumerate(self.infos) if info.toplevel_imports
                      for s in _stars(info)]

    def result(self) -> tuple[CodeClosure, frozenset[str]]:
        for level, info in enumerate(self.infos):
            if info.toplevel_deftime_refs or info.toplevel_call_refs or info.toplevel_imports \
                    or info.dynamic:
                self._toplevel(level)
        for entry in ENTRY_POINTS:
            self._include(entry, self.last, False)
        self._drain()
        return self._assemble()

    def lookup(self, name: str, level: int) -> tuple[int, Definition] | None:
        """The binding of `name` once modules 0..level of the chain have executed."""
        namespaces = self.namespaces
        for i in range(level, -1, -1):
            definition = namespaces[i].get(name)
            if definition is not None:
                return i, definition
        return None

    def _toplevel(self, level: int) -> None:
        info = self.infos[level]
        for chain in info.toplevel_deftime_refs:
            self._resolve(chain, level, True, ())
        for chain in info.toplevel_call_refs:  # lambdas and functions defined in if/try blocks
            self._resolve(chain, level, True, ())
            self._resolve(chain, self.last, False, ())
        for ref in info.toplevel_imports:
            self.entries |= self.index.run_import(ref)
        if info.dynamic:
            self._include_all()

    def _include(self, name: str, level: int, module_time: bool) -> None:
        hit = self.lookup(name, level)
        if hit is not None:
            self._push(hit[0], hit[1], level, module_time)

    def _push(self, owner: int, definition: Definition, level: int, module_time: bool) -> None:
        state = (owner, definition.name, level, module_time)
        if state not in self.seen:
            self.seen.add(state)
            self.todo.append((owner, definition, level, module_time))

    def _drain(self) -> None:
        resolve = self._resolve
        while self.todo:
            owner, definition, level, module_time = self.todo.pop()
            imports = definition.nested_imports
            for chain in definition.call_refs:
                resolve(chain, level, module_time, imports)
            key = (definition.name, owner)
            if key in self.parts:
                continue
            self.parts[key] = definition
            for chain in definition.deftime_refs:
                resolve(chain, owner, True, imports)
            if imports or definition.kind == "import":
                self.entries |= self.index.executed(definition)
            if definition.dynamic:
                self._include_all()

    def _resolve(
        self, chain: str, level: int, module_time: bool, imports: tuple[ImportRef, ...]
    ) -> None:
        head, _, rest = chain.partition(".")
        hit = self.lookup(head, level)
        # while module `level` executes, a name it binds may not be bound yet: then it is the
        # previous module's; a conditional binding may leave the previous value in place
        earlier = module_time
        while hit is not None:
            owner, definition = hit
            self._push(owner, definition, level, module_time)
            if definition.kind == "import" or definition.nested_imports:
                self.entries |= self.index.through_definition(definition, _tail(rest))
            if not ((earlier and owner == level) or definition.conditional) or owner == 0:
                break
            earlier = False
            hit = self.lookup(head, owner - 1)
        for star_level, star in self.stars:
            if star_level <= level:
                self.entries |= self.index.attr_path(star, (head, *_tail(rest)))
        if imports:
            self.entries |= self.index.through_imports(imports, chain)

    def _include_all(self) -> None:
        """Dynamic code: every definition of the finished namespace counts."""
        if self.all_included:
            return
        self.all_included = True
        for name in {name for namespace in self.namespaces for name in namespace}:
            self._include(name, self.last, False)

    def _assemble(self) -> tuple[CodeClosure, frozenset[str]]:
        index = self.index
        closures = [index.closure(entry) for entry in self.entries]
        nodes = closures[0] if len(closures) == 1 else frozenset().union(*closures)
        links = self.links
        entries = [index.chain_part(links[owner], d) for (_, owner), d in self.parts.items()]
        for link, info in zip(links, self.infos, strict=True):
            module_entry = index.module_part(link, info)
            if module_entry is not None:
                entries.append(module_entry)
        externals: list[tuple[str, str]] = []  # one per ("", top) node: no duplicates
        reached: set[str] = set()
        for node in nodes:
            module, name = node
            if not module:
                externals.append((name, index.version(name)))
                continue
            reached.add(module)
            local_entry = index.local_part(node)
            if local_entry is not None:
                entries.append(local_entry)
        entries.sort()  # by (qualname, owner): unique within a closure
        externals.sort()
        lines = [_CLOSURE_HEADER, *[entry[1] for entry in entries],
                 *[f"external\x1f{top}\x1f{version}" for top, version in externals]]
        parts = tuple([entry[2] for entry in entries])
        closure = _frozen(CodeClosure, parts=parts, externals=tuple(externals),
                          digest=_digest("\x1e".join(lines)))
        if not reached:
            return closure, frozenset()
        return closure, frozenset([m for m in reached if index.info(m) is not None])


_CLOSURE_HEADER = f"watchrun codemap {ANALYZER_VERSION}"  # the first line of a closure's digest


def _tail(rest: str) -> tuple[str, ...]:
    return tuple(rest.split(".")) if rest else ()
