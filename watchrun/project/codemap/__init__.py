"""AST code map: what each task's result can depend on, at the level of definitions.

Two layers:
1. `analyze_module(source, ...)` -> `ModuleInfo`: per file, pure function of the file's text
   (so it is cached in the store by content hash and a null build parses nothing).
   `analysis.py`, over the statement scanner in `scan.py`.
2. `CodeIndex.task_closure(chain)` -> `CodeClosure`: per task, the definitions reachable from its
   entry points through its inherited namespace and into project-local modules. `closure.py`.
The values both layers share (and the store pickles) are in `model.py`.

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

from watchrun.project.codemap.analysis import analyze_module
from watchrun.project.codemap.closure import CodeIndex
from watchrun.project.codemap.model import (
    ANALYZER_VERSION,
    ENTRY_POINTS,
    MODULE_PART,
    ArgSpec,
    ChainLink,
    CodeClosure,
    CodePart,
    Definition,
    ImportRef,
    ModuleInfo,
)

__all__ = [
    "ANALYZER_VERSION",
    "ENTRY_POINTS",
    "MODULE_PART",
    "ArgSpec",
    "ChainLink",
    "CodeClosure",
    "CodeIndex",
    "CodePart",
    "Definition",
    "ImportRef",
    "ModuleInfo",
    "analyze_module",
]
