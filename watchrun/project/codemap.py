"""AST code map: what each task's result can depend on, at the level of definitions.

INTERFACE FILE — implementation pending (helper A). Keep these names and signatures.

Two layers:
1. `analyze_module(source, ...)` -> `ModuleInfo`: per file, pure function of the file's text
   (so it is cached in the store by content hash and a null build parses nothing).
2. `CodeIndex.task_closure(chain)` -> `CodeClosure`: per task, the definitions reachable from its
   entry points through its inherited namespace and into project-local modules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

ANALYZER_VERSION = 1  # bump when ModuleInfo or hashing changes: invalidates the analysis cache
ENTRY_POINTS = ("run", "gather", "finish")


@dataclass(frozen=True)
class ArgSpec:
    """One parameter of a top-level function (for checking what `run` asks for)."""

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


def analyze_module(source: str, module_name: str) -> ModuleInfo:
    """Parse one module. Never raises on bad code: a syntax error is reported in the result."""
    raise NotImplementedError


@dataclass(frozen=True)
class CodePart:
    """One definition in a task's closure, with where it comes from."""

    qualname: str  # "clean" for the task namespace, "lib.helpers:normalize" for a local module
    file: str  # path relative to the project root, posix
    line: int
    owner: str  # the task (for chain modules) or module name (for local modules) defining it
    digest: str


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
        raise NotImplementedError

    def task_closure(self, chain: Sequence[ChainLink]) -> CodeClosure:
        """`chain` is root ancestor first, the task itself last (the execution order)."""
        raise NotImplementedError

    def local_modules_reached(self, chain: Sequence[ChainLink]) -> frozenset[str]:
        """Dotted names of the project-local modules the task's closure enters (for watching)."""
        raise NotImplementedError
