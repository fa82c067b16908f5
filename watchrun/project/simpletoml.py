"""A fast reader for the TOML a task header almost always is, with the line of every key.

    kind = "generator"
    after = ["download", 'prepare']
    [params]
    size = 64

Headers are a few lines of `key = value` and perhaps a `[params]` table, yet tomllib (and the
key-line scan after it) costs ~30 us a header: a third of the analysis of a small task file.
This reader takes only what it can be sure of: bare keys, one-line basic and literal strings
without escapes, decimal integers, booleans, one-line arrays of such strings, `[table]` headers
with a bare name, comments and blank lines. Anything else, and anything invalid (a key given
twice, a table defined twice), is left to tomllib by answering None: tomllib stays the parser of
record, and the property tests check that both agree on everything this reader accepts.
"""

from __future__ import annotations

import re
from typing import Any

_WS = r"[ \t]*"
# TOML allows any character in a string or a comment but its delimiter, `\` (basic strings) and
# the control characters other than tab
_BASIC = r'"[^"\\\x00-\x08\x0a-\x1f\x7f]*"'
_LITERAL = r"'[^'\x00-\x08\x0a-\x1f\x7f]*'"
_STRING = rf"(?:{_BASIC}|{_LITERAL})"
_END = rf"{_WS}(?:#[^\x00-\x08\x0a-\x1f\x7f]*)?"  # trailing blanks and a comment
_KEY = r"[A-Za-z0-9_-]+"
# a value, in one group of four: a string, an array of one string (the commonest array),
# something else in brackets (checked later), or a word (true, false, 12 ...)
_VALUE = (rf"({_STRING})|\[{_WS}({_STRING}){_WS},?{_WS}\]|(\[[^\]]*\])"
          rf"|([^ \t#\"'\[][^ \t#]*)")

_ASSIGN = re.compile(rf"{_WS}({_KEY}){_WS}={_WS}(?:{_VALUE}){_END}")
_TABLE = re.compile(rf"{_WS}\[{_WS}({_KEY}){_WS}\]{_END}")
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
