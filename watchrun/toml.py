"""TOML, read in one place: the settings file, task headers and `--param` values.

- `parse_toml`: tomllib (tomli before 3.11), the parser of record for every TOML text.
- `toml_error_line`: the line and message of a tomllib error, for a `file:line` error.
- `key_lines`: the line of every key of a text tomllib accepted (tomllib gives none).
- `parse_simple`: a fast reader for the TOML a task header almost always is, in front of
  tomllib, with the same key rules as `key_lines`:

    kind = "generator"
    after = ["download", 'prepare']
    [params]
    size = 64

  Headers are a few lines of `key = value` and perhaps a `[params]` table, and a project has
  thousands of them, so the header parser tries this reader first. It takes only what it can be
  sure of: bare keys, one-line basic and literal strings without escapes, decimal integers,
  booleans, one-line arrays of such strings, `[table]` headers with a bare name, comments and
  blank lines. Anything else, and anything invalid (a key given twice, a table defined twice),
  is left to tomllib by answering None; the property tests check that both agree on everything
  this reader accepts.

Stdlib only, and below `project` and `config`, which both read TOML through it.
"""

from __future__ import annotations

import re
import sys
from typing import Any


def parse_toml(text: str) -> tuple[dict[str, Any], None] | tuple[None, Exception]:
    """(document, None), or (None, the error) for invalid TOML. tomllib (tomli before 3.11) is
    imported here, on first use: a null build parses no TOML but the settings file. Shared with
    the header parser, so that the choice of parser is made in one place."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]
    try:
        return tomllib.loads(text), None
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as err:  # absurd nesting too
        return None, err


_AT_LINE = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_AT_END = re.compile(r"\s*\(at end of document\)\s*$")


def toml_error_line(err: Exception, *, last_line: int | None = None) -> tuple[int | None, str]:
    """(line, message without the position) of a tomllib error. tomllib only puts the position in
    the message text ("... (at line 3, column 7)"), so it is read from there."""
    message = str(err)
    found = _AT_LINE.search(message)
    if found:
        return int(found.group(1)), f"{message[: found.start()]} (column {found.group(2)})"
    found = _AT_END.search(message)
    if found:
        return last_line, f"{message[: found.start()]} (at the end)"
    return getattr(err, "lineno", None), message


# -- finding the line of a key ------------------------------------------------------------------

_BARE = r"[A-Za-z0-9_-]+"
_PART = rf"(?:{_BARE}|\"[^\"\n]*\"|'[^'\n]*')"
_DOTTED = rf"{_PART}(?:\s*\.\s*{_PART})*"
KEY_RE = re.compile(rf"\s*({_DOTTED})\s*=")
TABLE_RE = re.compile(rf"\s*\[\[?\s*({_DOTTED})\s*\]\]?")
_PART_RE = re.compile(_PART)


def split_dotted(dotted: str) -> tuple[str, ...]:
    return tuple(p.strip("\"'") for p in _PART_RE.findall(dotted))


def key_lines(text: str, first_line: int = 1) -> dict[tuple[str, ...], int]:
    """The line of every key and table header of a TOML text, by full dotted path.

    A cheap line scanner, not a parser: it runs only on text that tomllib accepted, and skips the
    inside of multi-line strings so that text in them is never taken for a key.
    """
    found: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    in_string: str | None = None
    for number, line in enumerate(text.split("\n"), start=first_line):
        if in_string is not None:
            in_string = _open_string_after(line, in_string)
            continue
        header = TABLE_RE.match(line)
        if header:
            table = split_dotted(header.group(1))
            found.setdefault(table, number)
            continue
        key = KEY_RE.match(line)
        if key:
            found.setdefault(table + split_dotted(key.group(1)), number)
        in_string = _open_string_after(line, None)
    return found


def _open_string_after(line: str, quote: str | None) -> str | None:
    """The multi-line string delimiter (\"\"\" or ''') still open at the end of a TOML
    line, given the one open at its start. Strings on one line, escapes and comments are
    skipped: `x = "'''"` opens nothing."""
    i, end = 0, len(line)
    while i < end:
        if quote is not None:  # inside a multi-line string: find where it closes
            close = _closing(line, i, quote)
            if close < 0:
                return quote
            i, quote = close + 3, None
            continue
        char = line[i]
        if char == "#":
            return None
        if line.startswith('"""', i) or line.startswith("'''", i):
            quote, i = line[i:i + 3], i + 3
        elif char in "\"'":  # a one-line string: to its closing quote
            i += 1
            while i < end and line[i] != char:
                i += 2 if char == '"' and line[i] == "\\" else 1
            i += 1
        else:
            i += 1
    return quote


def _closing(line: str, at: int, quote: str) -> int:
    """Where `quote` closes a multi-line string in `line`, from `at` (-1: not on this line)."""
    while True:
        found = line.find(quote, at)
        if found < 0 or quote == "'''":
            return found
        backslashes = len(line[:found]) - len(line[:found].rstrip("\\"))
        if backslashes % 2 == 0:  # not escaped
            return found
        at = found + 1


# -- the fast reader ----------------------------------------------------------------------------

_WS = r"[ \t]*"
# TOML allows any character in a string or a comment but its delimiter, `\` (basic strings) and
# the control characters other than tab
_BASIC = r'"[^"\\\x00-\x08\x0a-\x1f\x7f]*"'
_LITERAL = r"'[^'\x00-\x08\x0a-\x1f\x7f]*'"
_STRING = rf"(?:{_BASIC}|{_LITERAL})"
_END = rf"{_WS}(?:#[^\x00-\x08\x0a-\x1f\x7f]*)?"  # trailing blanks and a comment
# a value, in one group of four: a string, an array of one string (the commonest array),
# something else in brackets (checked later), or a word (true, false, 12 ...)
_VALUE = (rf"({_STRING})|\[{_WS}({_STRING}){_WS},?{_WS}\]|(\[[^\]]*\])"
          rf"|([^ \t#\"'\[][^ \t#]*)")

_ASSIGN = re.compile(rf"{_WS}({_BARE}){_WS}={_WS}(?:{_VALUE}){_END}")
_TABLE = re.compile(rf"{_WS}\[{_WS}({_BARE}){_WS}\]{_END}")
_BLANK = re.compile(_END)
_INTEGER = re.compile(r"[+-]?(?:0|[1-9][0-9]*)")
_ARRAY = re.compile(rf"\[{_WS}(?:{_STRING}(?:{_WS},{_WS}{_STRING})*{_WS},?)?{_WS}\]")
_ARRAY_ITEM = re.compile(_STRING)

_UNSURE = object()  # a value this reader leaves to tomllib

ParsedToml = tuple[dict[str, Any], dict[tuple[str, ...], int]]


def parse_simple(lines: list[str], first_line: int = 1) -> ParsedToml | None:
    """(document, line of every key and table by its path) for TOML lines this reader is sure
    of, numbered from `first_line`; None for anything else (then ask tomllib)."""
    document: dict[str, Any] = {}
    found: dict[tuple[str, ...], int] = {}
    table = document
    path: tuple[str, ...] = ()
    for number, line in enumerate(lines, start=first_line):
        assign = _ASSIGN.fullmatch(line)
        if assign is not None:
            key, string, single, array, word = assign.groups()
            if string is not None:  # the pattern took it whole: a string without escapes
                value: Any = string[1:-1]
            elif single is not None:
                value = [single[1:-1]]
            else:
                value = _array(array) if array is not None else _word(word)
            if value is _UNSURE or key in table:
                return None
            table[key] = value
            key_path = (*path, key)
            found[key_path] = number
            continue
        header = _TABLE.fullmatch(line)
        if header is not None:
            name = header.group(1)
            if name in document:  # defined twice, or a table over a value
                return None
            table = document[name] = {}
            path = (name,)
            found[path] = number
        elif _BLANK.fullmatch(line) is None:
            return None
    return document, found


def _array(text: str) -> Any:
    if _ARRAY.fullmatch(text) is None:
        return _UNSURE
    return [item[1:-1] for item in _ARRAY_ITEM.findall(text)]


def _word(text: str) -> Any:
    if text == "true":
        return True
    if text == "false":
        return False
    return int(text) if _INTEGER.fullmatch(text) else _UNSURE
