"""Layer 2 of the code map: per task, the definitions reachable from its entry points through
its inherited namespace and into project-local modules, and the digest over them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from watchrun.project.codemap.model import (
    ANALYZER_VERSION,
    ENTRY_POINTS,
    MODULE_PART,
    ChainLink,
    CodeClosure,
    CodePart,
    Definition,
    ImportRef,
    ModuleInfo,
    text_digest,
)
from watchrun.project.frozen_init import build as _frozen

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
        return text_digest(f"syntax error\x1f{line}\x1f{message}")
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
                          digest=text_digest("\x1e".join(lines)))
        if not reached:
            return closure, frozenset()
        return closure, frozenset([m for m in reached if index.info(m) is not None])


_CLOSURE_HEADER = f"watchrun codemap {ANALYZER_VERSION}"  # the first line of a closure's digest


def _tail(rest: str) -> tuple[str, ...]:
    return tuple(rest.split(".")) if rest else ()
