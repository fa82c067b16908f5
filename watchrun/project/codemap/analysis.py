"""Layer 1 of the code map: one module's analysis, a pure function of its text (so the store
caches it by content hash and a null build parses nothing)."""

from __future__ import annotations

import ast
import gc
import warnings
from typing import Any

from blake3 import blake3

from watchrun.project.codemap.model import ArgSpec, Definition, ImportRef, ModuleInfo, text_digest
from watchrun.project.codemap.scan import (
    FUNCTIONS,
    Scan,
    absolute_module,
    is_bare_constant,
    with_prefixes,
)
from watchrun.project.frozen_init import build as _frozen


def analyze_module(source: str, module_name: str, *, is_package: bool = False) -> ModuleInfo:
    """Parse one module. Never raises on bad code: a syntax error is reported in the result.

    `is_package`: the source is a package's `__init__.py`, so `from .x import f` means
    `module_name.x` rather than a sibling of `module_name`.
    """
    # A syntax tree has no reference cycles, so the cyclic collector has nothing to find in the
    # hundreds of thousands of nodes parsing allocates.
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


_NESTED_SCOPES = (ast.Lambda, ast.ClassDef, *FUNCTIONS)


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
    if isinstance(node, (*FUNCTIONS, ast.ClassDef)):
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
        digest=text_digest(old.digest + new.digest),
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
            if not is_bare_constant(stmt):  # the module docstring is not a statement
                self._statement(stmt)
        refs = self.toplevel_deftime | self.toplevel_call
        return _frozen(
            ModuleInfo,
            module_name=self.module_name,
            definitions=self.definitions,
            toplevel_digest=self.toplevel.hexdigest() if self.toplevel_count else "",
            toplevel_refs=with_prefixes(refs),
            dynamic=self.dynamic,
            syntax_error=None,
            toplevel_line=self.toplevel_line,
            toplevel_deftime_refs=frozenset(self.toplevel_deftime),
            toplevel_call_refs=frozenset(self.toplevel_call),
            toplevel_imports=tuple(self.toplevel_imports),
        )

    def _statement(self, stmt: ast.stmt) -> None:
        if isinstance(stmt, (*FUNCTIONS, ast.ClassDef)):
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

    def _scan(self, node: ast.AST) -> Scan:
        return Scan(self.package).scan(node)

    def _from_scan(
        self, name: str, kind: str, stmt: ast.stmt, scan: Scan, **extra: Any
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
                digest=text_digest(key),
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
        module = absolute_module(stmt.module, stmt.level, self.package)
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
            if isinstance(node, FUNCTIONS):
                extra.update(args=_argspecs(node.args), is_generator=_is_generator(node))
                extra["is_async"] = isinstance(node, ast.AsyncFunctionDef)
            self._bind(self._from_scan(name, "assign", stmt, scan, **extra))


def _last_per_name(bound: list[tuple[str, ast.AST]]) -> list[tuple[str, ast.AST]]:
    """One binder per name (a function binding it if any, for its signature)."""
    chosen: dict[str, ast.AST] = {}
    for name, node in bound:
        if name not in chosen or isinstance(node, FUNCTIONS):
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
