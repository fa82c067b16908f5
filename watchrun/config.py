"""The project's settings: `watchrun.toml` at the root, else `[tool.watchrun]` in pyproject.toml.

Every key is optional (SPEC section 1). A mistake in the file is a ProjectError naming the file
and the line of the key; the key then keeps its default so the rest of the settings still apply.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

from watchrun.errors import ProjectError
from watchrun.paths import CONFIG_FILE, PYPROJECT_FILE, STATE_DIR, TASKS_DIR
from watchrun.toml import key_lines, parse_toml, toml_error_line

EXECUTOR_KINDS = ("local", "ray")
DEFAULT_CONNECT_TIMEOUT = 15.0  # seconds a Ray cluster has to answer watchrun's first question


class Config(NamedTuple):
    """The project's settings."""

    root: Path  # absolute
    tasks: tuple[Path, ...]  # absolute task folders
    state_dir: Path  # absolute
    jobs: int  # resolved: never 0
    grace: float  # seconds between SIGINT -> SIGTERM -> SIGKILL
    debounce_ms: int
    ignore: tuple[str, ...]  # extra glob patterns for the watcher
    executor_kind: str  # "local" | "ray"
    executor_address: str
    executor_connect_timeout: float  # seconds a Ray cluster has to answer
    source: Path | None  # the file the settings came from; None: all defaults
    # whether the settings give `jobs` (> 0): when not, the Ray executor runs as many units at
    # a time as its cluster has CPUs, not this machine's count
    jobs_given: bool = False
    # "auto" (the tasks' third-party imports), False, or module names ("auto", "!name")
    preload: str | bool | tuple[str, ...] = "auto"
    # bytes of memory the units run locally may ask for at once (`resources.memory`); None:
    # this machine's RAM
    memory_budget: int | None = None


def default_jobs() -> int:
    return os.cpu_count() or 1


def _under(root: Path, folder: str) -> Path:
    return Path(os.path.normpath(root / folder))


def _settings(root: Path, raw: dict[str, Any], source: Path | None) -> Config:
    """A Config from already validated raw values (missing keys take their defaults)."""
    tasks = raw.get("tasks", TASKS_DIR)
    folders = [tasks] if isinstance(tasks, str) else list(tasks)
    executor = raw.get("executor", {})
    jobs = raw.get("jobs", 0)
    return Config(
        root=root,
        tasks=tuple(_under(root, folder) for folder in folders),
        state_dir=_under(root, raw.get("state_dir", STATE_DIR)),
        jobs=jobs or default_jobs(),
        grace=float(raw.get("grace", 2.0)),
        debounce_ms=raw.get("debounce_ms", 10),
        ignore=tuple(raw.get("ignore", ())),
        executor_kind=executor.get("kind", "local"),
        executor_address=executor.get("address", ""),
        executor_connect_timeout=float(executor.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT)),
        source=source,
        jobs_given=bool(jobs),
        preload=_preload_setting(raw.get("preload", "auto")),
        memory_budget=_memory_setting(raw.get("memory_budget")),
    )


def _memory_setting(value: Any) -> int | None:
    return None if value is None else memory_bytes(value)


def _is_memory(value: object) -> bool:
    if not isinstance(value, (int, str)):
        return False
    try:
        memory_bytes(value)
    except ValueError:
        return False
    return True


# K, M, G, T and their KiB forms count in 1024s (as Slurm and Docker do); KB, MB, GB, TB in 1000s
_MEMORY_UNITS = {"": 1, "B": 1}
for _power, _letter in enumerate("KMGT", start=1):
    _MEMORY_UNITS.update({_letter: 1024 ** _power, f"{_letter}I": 1024 ** _power,
                          f"{_letter}IB": 1024 ** _power, f"{_letter}B": 1000 ** _power})
_MEMORY = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*([A-Za-z]*)\s*")


def memory_bytes(value: int | str) -> int:
    """A `memory` value in bytes: an int, or a string with a unit ("512M", "2G", "1.5GiB").
    ValueError with what is accepted."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        match = _MEMORY.fullmatch(value)
        if match and match[2].upper() in _MEMORY_UNITS:
            return int(float(match[1]) * _MEMORY_UNITS[match[2].upper()])
    raise ValueError(
        f"resources.memory must be a number of bytes or a size with a unit such as \"512M\", "
        f"\"2G\", \"1.5GiB\" (K, M, G, T count in 1024s, KB, MB, GB, TB in 1000s), not "
        f"{_short_repr(value)}")


def _short_repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _preload_setting(value: Any) -> str | bool | tuple[str, ...]:
    return tuple(value) if isinstance(value, list) else value


def _is_module_entry(value: object) -> bool:
    if not isinstance(value, str):
        return False
    name = value[1:] if value.startswith("!") else value
    return value == "auto" or (name != "" and all(p.isidentifier() for p in name.split(".")))


def _is_preload(value: object) -> bool:
    """"auto", false, or a list of module names (with "auto" and "!name" entries)."""
    if value == "auto" or value is False:
        return True
    return isinstance(value, list) and all(_is_module_entry(v) for v in value)


def load_config(root: Path) -> tuple[Config, list[ProjectError]]:
    """Read the settings of the project at `root`. Errors come back as values, never raised."""
    root = Path(os.path.abspath(root))
    toml_path = root / CONFIG_FILE
    if toml_path.is_file():
        return _load_file(root, toml_path, ())
    pyproject = root / PYPROJECT_FILE
    if pyproject.is_file():
        return _load_file(root, pyproject, ("tool", "watchrun"))
    return _settings(root, {}, None), []


def _load_file(root: Path, path: Path, table: tuple[str, ...]) -> tuple[Config, list[ProjectError]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        return _settings(root, {}, None), [ProjectError(path, None, f"cannot read: {err}")]
    document, problem = parse_toml(text)
    if document is None:
        assert problem is not None
        if table and "tool.watchrun" not in text:
            # a broken pyproject.toml without our table is not ours to report
            return _settings(root, {}, None), []
        line, message = toml_error_line(problem, last_line=max(1, len(text.splitlines())))
        return _settings(root, {}, path), [ProjectError(path, line, f"invalid TOML: {message}")]
    raw: Any = document
    for key in table:
        raw = raw.get(key) if isinstance(raw, dict) else None
    if raw is None:
        return _settings(root, {}, None), []
    checker = _Checker(path, text, table)
    if not isinstance(raw, dict):
        checker.error((), "must be a table")
        return _settings(root, {}, path), checker.errors
    return _settings(root, checker.check(raw), path), checker.errors


def setting_line(config: Config, field: str) -> int | None:
    """The line of the settings file that gives this Config field (None: not given there, or
    the file cannot be read now), for a message about that setting."""
    if config.source is None:
        return None
    try:
        text = config.source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    table = ("tool", "watchrun") if config.source.name == PYPROJECT_FILE else ()
    kind, _, name = field.partition("_")
    key = ("executor", name) if kind == "executor" else (field,)
    return key_lines(text).get(table + key)


def suggest(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a choice is close to the name, else ''."""
    import difflib  # only when something is wrong

    close = difflib.get_close_matches(name, sorted(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


# key -> (check, what it must be)
_Rule = tuple[Callable[[Any], bool], str]
_TOP_RULES: dict[str, _Rule] = {
    "tasks": (lambda v: (isinstance(v, str) and v != "") or (_is_str_list(v) and len(v) > 0),
              "a folder name or a non-empty list of folder names"),
    "state_dir": (lambda v: isinstance(v, str) and v != "", "a folder name"),
    "jobs": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0 (0 = number of CPUs)"),
    "grace": (lambda v: _is_number(v) and v >= 0, "a number of seconds >= 0"),
    "debounce_ms": (lambda v: _is_int(v) and v >= 0, "a whole number of milliseconds >= 0"),
    "ignore": (_is_str_list, "a list of glob patterns"),
    "preload": (_is_preload, '"auto", false, or a list of module names ("auto", "!name")'),
    "memory_budget": (_is_memory, 'a number of bytes or a size with a unit such as "512M", '
                                  '"16G" (K, M, G, T count in 1024s, KB, MB, GB, TB in 1000s)'),
}
_EXECUTOR_RULES: dict[str, _Rule] = {
    "kind": (lambda v: v in EXECUTOR_KINDS, "one of " + ", ".join(map(repr, EXECUTOR_KINDS))),
    "address": (lambda v: isinstance(v, str), "a string"),
    "connect_timeout": (lambda v: _is_number(v) and v > 0, "a number of seconds > 0"),
}


class _Checker:
    """Validates the settings table, collecting errors with the line of each offending key."""

    def __init__(self, path: Path, text: str, table: tuple[str, ...]) -> None:
        self.path = path
        self.table = table
        self.errors: list[ProjectError] = []
        self.lines = key_lines(text)

    def line_of(self, key: tuple[str, ...]) -> int | None:
        # the key itself, else the nearest enclosing table that has a line
        full = self.table + key
        for end in range(len(full), 0, -1):
            if full[:end] in self.lines:
                return self.lines[full[:end]]
        return None

    def error(self, key: tuple[str, ...], message: str) -> None:
        where = ".".join(self.table + key) if key else ".".join(self.table)
        prefix = f"{where}: " if where else ""
        self.errors.append(ProjectError(self.path, self.line_of(key), prefix + message))

    def check(self, raw: dict[str, Any]) -> dict[str, Any]:
        good = self._check_table(raw, (), _TOP_RULES, extra=("executor",))
        executor = raw.get("executor")
        if executor is not None:
            if isinstance(executor, dict):
                good["executor"] = self._check_table(executor, ("executor",), _EXECUTOR_RULES)
            else:
                self.error(("executor",), "must be a table with 'kind' and 'address'")
        return good

    def _check_table(self, raw: dict[str, Any], at: tuple[str, ...], rules: dict[str, _Rule],
                     extra: tuple[str, ...] = ()) -> dict[str, Any]:
        good: dict[str, Any] = {}
        allowed = sorted((*rules, *extra))
        for key, value in raw.items():
            if key in extra:
                continue
            rule = rules.get(key)
            if rule is None:
                self.error((*at, key), f"unknown key{suggest(key, allowed)}; "
                                        f"allowed: {', '.join(allowed)}")
            elif not rule[0](value):
                self.error((*at, key), f"must be {rule[1]}, not {value!r}")
            else:
                good[key] = value
        return good
