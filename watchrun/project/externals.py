"""Versions of the code a task imports from outside the project.

A task that imports `numpy` depends on the installed numpy, not on its source: an upgrade reruns
it, nothing else about numpy does. Standard-library modules depend on the Python version.

Cheap by design, because it runs on every start: a standard-library name costs a set lookup
(importlib.metadata, a slow import, is only imported for the first other name); a
third-party name first tries the distribution of the same name (the common case: numpy, rich,
blake3), and only a name that does not match its distribution (yaml -> PyYAML) pays for the map of
every installed distribution, built once per process.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib import metadata

PYTHON_VERSION = "python {}.{}.{}".format(*sys.version_info[:3])
_STDLIB = frozenset(sys.stdlib_module_names) | frozenset(sys.builtin_module_names)


@functools.cache
def version_of(top_module: str) -> str:
    """The version a top-level module counts by: "python 3.11.7" for the standard library,
    "numpy 1.26.4" for a distribution (several joined by ", " for a namespace package), ""
    when nothing installed provides the module."""
    if top_module in _STDLIB:
        return PYTHON_VERSION
    from importlib import metadata  # only now: see the module's docstring

    same_name = _same_name_distribution(top_module)
    if same_name is not None:
        return same_name
    providers = sorted(set(_providers().get(top_module, ())))
    versions = [_describe(metadata.distribution(name)) for name in providers]
    return ", ".join(versions)


def _describe(dist: metadata.Distribution) -> str:
    return f"{dist.metadata['Name']} {dist.version}"


def _same_name_distribution(top_module: str) -> str | None:
    from importlib import metadata

    try:
        dist = metadata.distribution(top_module)
    except (metadata.PackageNotFoundError, ValueError):
        return None
    return _describe(dist) if _provides(dist, top_module) else None


def _provides(dist: metadata.Distribution, top_module: str) -> bool:
    top_level = dist.read_text("top_level.txt")
    if top_level is not None:
        return top_module in top_level.split()
    # no top_level.txt (newer build backends): look for "pkg/…", "mod.py", "ext.cpython-….so" in
    # RECORD; plain string tests: `dist.files` would make a path object per file of a package
    record = dist.read_text("RECORD") or ""
    prefixes = (f"{top_module}/", f"{top_module}.")
    return any(line.startswith(prefixes) for line in record.splitlines())


@functools.lru_cache(maxsize=1)
def _providers() -> Mapping[str, Sequence[str]]:
    from importlib import metadata

    return metadata.packages_distributions()
