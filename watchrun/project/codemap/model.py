"""The code map's values: what the per-file analysis produces and a task's closure is made of.

Everything here is pickled into the store's caches, so a change of shape bumps ANALYZER_VERSION.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from blake3 import blake3

ANALYZER_VERSION = 1  # bump when ModuleInfo or hashing changes: invalidates the analysis cache
ENTRY_POINTS = ("run", "gather", "finish")

# An import executed inside some code, as data:
# (name it binds, module bound to that name, attribute taken or None (or "*"), module executed).
# `import a.b` -> ("a", "a", None, "a.b"); `from a.b import c as d` -> ("d", "a.b", "c", "a.b").
ImportRef = tuple[str, str, str | None, str]


class ArgSpec(NamedTuple):
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


def text_digest(text: str) -> str:
    return blake3(text.encode()).hexdigest()
