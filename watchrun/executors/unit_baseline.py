"""A clean start for every unit (SPEC section 5): what a unit may change in its process and the
next unit must not see. Taken when the worker is ready; put back after each unit, only where it
differs (most units change nothing, and a comparison spares a system call)."""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # see worker.py
import contextlib
import os
import sys

TYPE_CHECKING = False  # the worker starts without `typing` (see worker.py)
if TYPE_CHECKING:
    from typing import Any


class Baseline:
    """The process state every unit starts from: environment, umask, recursion limit, signal
    handlers, sys.path, warning filters. (The working directory is set before each unit.)"""

    def __init__(self) -> None:
        self._environ: dict[Any, Any] = dict(_environ_data())
        self._umask = os.umask(0o022)
        os.umask(self._umask)
        self._recursion = sys.getrecursionlimit()
        self._path = list(sys.path)
        self._handlers = {
            sig: handler
            for sig in _signal.valid_signals()
            if (handler := _signal.getsignal(sig)) is not None
        }
        self._warnings = _warning_filters()

    def include_env(self, name: str, value: str) -> None:
        """Make `name=value` part of the baseline (the worker's own variables, e.g. the
        project root its task modules import from): set once, not unset by every restore
        and set again by the next unit, which made each restore rebuild the environment."""
        if os.environ.get(name) != value:
            os.environ[name] = value
            self._environ = dict(_environ_data())

    def restore(self) -> None:
        data = _environ_data()
        if data != self._environ:
            self._restore_environ()
        os.umask(self._umask)
        if sys.getrecursionlimit() != self._recursion:
            sys.setrecursionlimit(self._recursion)
        if sys.path != self._path:
            sys.path[:] = self._path
        for sig, handler in self._handlers.items():
            if _signal.getsignal(sig) is not handler:
                with contextlib.suppress(OSError, ValueError):
                    _signal.signal(sig, handler)
        filters = _warning_filters()
        if filters is not None and filters != self._warnings:
            import warnings

            warnings.filters[:] = self._warnings or []  # type: ignore[index]
            warnings._filters_mutated()  # type: ignore[attr-defined]

    def _restore_environ(self) -> None:
        # through os.environ, so that the C environment (what subprocesses get) follows
        wanted = {os.fsdecode(k): os.fsdecode(v) for k, v in self._environ.items()}
        for name in [name for name in os.environ if name not in wanted]:
            del os.environ[name]
        for name, value in wanted.items():
            if os.environ.get(name) != value:
                os.environ[name] = value


def _environ_data() -> dict[Any, Any]:
    """os.environ's own dict (encoded keys and values): compared without decoding each one."""
    data: dict[Any, Any] = getattr(os.environ, "_data", None) or dict(os.environ)
    return data


def _warning_filters() -> list[Any] | None:
    warnings = sys.modules.get("warnings")
    return None if warnings is None else list(warnings.filters)
