"""The `# /// task` block at the top of a task module (PEP 723 style), with file lines kept.

    # /// task
    # kind = "generator"
    # after = ["download"]
    # [params]
    # size = 64
    # ///

The opener is the line `# /// task`, the closer the first line `# ///` after it; every line in
between is `#` or `# ` followed by TOML. A file without an opener is a helper module, not a task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watchrun.config import memory_bytes as memory_bytes  # its home is the settings' module
from watchrun.config import suggest
from watchrun.errors import ProjectError
from watchrun.project.frozen_init import build
from watchrun.toml import key_lines as toml_key_lines
from watchrun.toml import parse_simple, parse_toml, toml_error_line

OPENER = "# /// task"
CLOSER = "# ///"
KINDS = ("task", "generator", "collector")
ALLOWED_KEYS = ("abstract", "after", "extends", "inputs", "kind", "outputs", "params",
                "priority", "resources", "retries", "timeout")
_ALLOWED = frozenset(ALLOWED_KEYS)
# keys whose sub-keys get their own line in Header.key_lines ("params.size", "after.frames")
_TABLE_KEYS = ("params", "after", "resources")


@dataclass(frozen=True)
class Header:
    """A parsed header. `data` holds only the keys that passed validation, as TOML gave them.

    `key_lines` maps "kind", "after", …, "params", "params.<name>" and "after.<arg>" (table form)
    to file lines (1-based). `item_lines["after"]` is the line of each entry of the list form.
    """

    data: dict[str, Any]
    line: int  # the opener
    end_line: int  # the closer (the opener when the block is not closed)
    key_lines: dict[str, int]
    item_lines: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def line_of(self, key: str) -> int:
        """The line of a key, else of its table, else the opener."""
        if key in self.key_lines:
            return self.key_lines[key]
        return self.key_lines.get(key.partition(".")[0], self.line)


def find_opener(text: str, start: int = 0) -> int:
    """Offset of the next line that is exactly the opener (trailing blanks allowed), or -1."""
    at = text.find(OPENER, start)
    while at != -1:
        line_start = at == 0 or text[at - 1] == "\n" or (at == 1 and text[0] == "\ufeff")
        end = text.find("\n", at)
        rest = text[at + len(OPENER): end if end != -1 else len(text)]
        if line_start and not rest.strip():
            return at
        at = text.find(OPENER, at + 1)
    return -1


def parse_header(text: str, path: Path) -> tuple[Header | None, list[ProjectError]]:
    """Find and parse the header of one module. Never raises: problems are ProjectErrors."""
    start = find_opener(text)
    if start == -1:
        return None, []
    opener_line = text.count("\n", 0, start) + 1
    block = _read_block(text, start, opener_line, path)
    errors = block.errors
    if block.closer_line is None:
        return Header({}, opener_line, opener_line, {}), errors
    data, lines, items = _parse_toml(block.content, opener_line, block.closer_line, path, errors)
    second = find_opener(text, block.end_offset)
    if second != -1:
        errors.append(ProjectError(
            path, text.count("\n", 0, second) + 1,
            f"a second '{OPENER}' block; a module has one header (the first is at line "
            f"{opener_line})"))
    header = build(Header, data=data, line=opener_line, end_line=block.closer_line,
                   key_lines=lines, item_lines=items)
    return header, sorted(errors, key=_line_of) if errors else errors


def _line_of(error: ProjectError) -> int:
    return error.line or 0


class _Block:
    __slots__ = ("closer_line", "content", "end_offset", "errors")

    def __init__(self) -> None:
        self.content: list[str] = []  # TOML lines, one per file line
        self.closer_line: int | None = None
        self.end_offset = 0  # just after the closer
        self.errors: list[ProjectError] = []


def _read_block(text: str, start: int, opener_line: int, path: Path) -> _Block:
    block = _Block()
    position = text.find("\n", start)
    number = opener_line
    while position != -1:
        following = text.find("\n", position + 1)
        end = following if following != -1 else len(text)
        raw = text[position + 1: end]
        number += 1
        position = following
        if raw.endswith("\r"):
            raw = raw[:-1]
        if raw.rstrip() == CLOSER:
            block.closer_line = number
            block.end_offset = end
            return block
        if not raw.startswith("#"):
            break
        if raw == "#" or raw.startswith("# "):
            block.content.append(raw[2:])
        else:
            block.content.append("")
            block.errors.append(ProjectError(
                path, number, "a header line must be '#' or start with '# ' (a space after '#')"))
    block.errors.append(ProjectError(
        path, opener_line,
        f"the '{OPENER}' block is not closed: end it with a '{CLOSER}' line "
        "(every line in between must start with '#')"))
    return block


def _parse_toml(content: list[str], opener_line: int, closer_line: int, path: Path,
                errors: list[ProjectError]
                ) -> tuple[dict[str, Any], dict[str, int], dict[str, tuple[int, ...]]]:
    simple = parse_simple(content, first_line=opener_line + 1)  # the common tiny header
    if simple is not None:
        raw, found = simple
    else:
        source = "\n".join(content) + "\n"
        parsed, err = parse_toml(source)
        if parsed is None:
            assert err is not None
            line, message = toml_error_line(err, last_line=max(1, len(content)))
            file_line = opener_line + line if line is not None else opener_line
            errors.append(ProjectError(path, file_line,
                                       f"invalid TOML in the task header: {message}"))
            return {}, {}, {}
        raw, found = parsed, toml_key_lines(source, first_line=opener_line + 1)
    lines: dict[str, int] = {}
    for key_path, line in found.items():  # in file order: the first line of a key wins
        lines.setdefault(key_path[0], line)
        if len(key_path) == 2 and key_path[0] in _TABLE_KEYS:
            lines.setdefault(".".join(key_path), line)
    data = _validate(raw, lines, opener_line, path, errors)
    items: dict[str, tuple[int, ...]] = {}
    if isinstance(data.get("after"), list):
        items["after"] = _item_lines(content, data["after"], lines.get("after", opener_line + 1),
                                     opener_line)
    return data, lines, items


def _item_lines(content: list[str], entries: list[str], key_line: int,
                opener_line: int) -> tuple[int, ...]:
    """The line of each string of a list value, searching forward from the key's line (past the
    previous entry, so that a repeated entry finds its own line)."""
    result = []
    index = key_line - opener_line - 1  # content index of the key's line
    column = 0
    for entry in entries:
        for probe in range(index, len(content)):
            start = column if probe == index else 0
            hits = [h for q in (f'"{entry}"', f"'{entry}'")
                    if (h := content[probe].find(q, start)) != -1]
            if hits:
                index, column = probe, min(hits) + len(entry) + 2
                break
        result.append(opener_line + 1 + index)
    return tuple(result)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _check_kind(value: Any) -> str | None:
    if value in KINDS:
        return None
    hint = suggest(value, KINDS) if isinstance(value, str) else ""
    return f"kind must be one of 'task', 'generator', 'collector', not {_describe(value)}{hint}"


def _check_extends(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return None
    return f"extends must be the name of a task (a string), not {_describe(value)}"


def _check_after(value: Any) -> str | None:
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        bad = [k for k in value if not k.isidentifier()]
        return f"after: argument name {bad[0]!r} is not a Python identifier" if bad else None
    if _is_str_list(value) or (isinstance(value, str) and value):
        return None
    return f'after must be a task name, a list of them or a table of argument = "task", ' \
           f"not {_describe(value)}"


def _check_paths(key: str) -> Callable[[Any], str | None]:
    what = "glob" if key == "inputs" else "path"

    def check(value: Any) -> str | None:
        if isinstance(value, str) or _is_str_list(value):
            return None
        return f"{key} must be a {what} or a list of {what}s (strings), not {_describe(value)}"
    return check


def _check_abstract(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    return f"abstract must be true or false, not {_describe(value)}"


def _check_priority(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return None
    return f"priority must be an integer (higher runs first), not {_describe(value)}"


def _check_params(value: Any) -> str | None:
    if isinstance(value, dict):
        return None
    return f"params must be a table ([params] or params = {{…}}), not {_describe(value)}"


def _check_timeout(value: Any) -> str | None:
    if _is_number(value) and value > 0:
        return None
    return f"timeout must be a number of seconds greater than 0, not {_describe(value)}"


def _check_retries(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return None
    return f"retries must be a whole number, 0 or more, not {_describe(value)}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


RESOURCE_KEYS = ("cpus", "gpus", "memory")
def _check_resource(name: str, value: Any) -> str | None:
    if name == "cpus":
        if _is_number(value) and value > 0:
            return None
        return f"resources.cpus must be a number greater than 0, not {_describe(value)}"
    if name == "gpus":
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return None
        return f"resources.gpus must be a whole number, 0 or more, not {_describe(value)}"
    if name == "memory":
        try:
            memory_bytes(value)
        except ValueError as exc:
            return str(exc)
        return None
    return (f"unknown key {name!r} in resources{suggest(name, RESOURCE_KEYS)}; allowed: "
            f"{', '.join(RESOURCE_KEYS)}")


def _resource_problems(value: Any, lines: dict[str, int], line: int
                       ) -> list[tuple[int, str]]:
    """(line, problem) for each bad entry of `resources`, each at its own line."""
    if not isinstance(value, dict):
        return [(line, "resources must be a table such as resources = {cpus = 2, gpus = 1, "
                       f'memory = "4G"}}, not {_describe(value)}')]
    problems = []
    for name, entry in value.items():
        problem = _check_resource(name, entry)
        if problem is not None:
            problems.append((lines.get(f"resources.{name}", line), problem))
    return problems


# what is wrong with one header value, or None
_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "kind": _check_kind,
    "extends": _check_extends,
    "after": _check_after,
    "inputs": _check_paths("inputs"),
    "outputs": _check_paths("outputs"),
    "abstract": _check_abstract,
    "params": _check_params,
    "priority": _check_priority,
    "timeout": _check_timeout,
    "retries": _check_retries,
}


def _validate(raw: dict[str, Any], lines: dict[str, int], opener_line: int, path: Path,
              errors: list[ProjectError]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in raw.items():
        line = lines.get(key, opener_line)
        if key not in _ALLOWED:
            errors.append(ProjectError(
                path, line, f"unknown key {key!r} in the task header{suggest(key, ALLOWED_KEYS)}; "
                            f"allowed: {', '.join(ALLOWED_KEYS)}"))
            continue
        if key == "resources":
            problems = _resource_problems(value, lines, line)
            errors.extend(ProjectError(path, at, problem) for at, problem in problems)
            if problems:
                continue
            data[key] = value
            continue
        problem = _CHECKS[key](value)
        if problem is not None:
            errors.append(ProjectError(path, line, problem))
            continue
        data[key] = value
        if key in _TABLE_KEYS and isinstance(value, dict):
            for name in value:  # inline tables: sub-keys share the key's line
                lines.setdefault(f"{key}.{name}", line)
    return data
