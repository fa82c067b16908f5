"""The `# /// task` header: parsing, exact file lines, every error at once, and properties."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from watchrun.config import load_config
from watchrun.project.header import memory_bytes, parse_header
from watchrun.project.loader import ProjectLoader
from watchrun.toml import key_lines, parse_simple, parse_toml

PATH = Path("/proj/tasks/t.py")


def errors_of(text: str) -> list[str]:
    _, errors = parse_header(text, PATH)
    return [e.format(Path("/proj")) for e in errors]


def test_a_file_without_a_header_is_a_helper_module() -> None:
    assert parse_header("import os\n\ndef helper():\n    pass\n", PATH) == (None, [])
    # the opener must be a whole line of its own
    assert parse_header("x = 1  # /// task\n# ///\n", PATH) == (None, [])
    assert parse_header("# /// tasks\n# ///\n", PATH) == (None, [])


def test_full_header_with_lines() -> None:
    text = '''"""A task."""
import os

# /// task
# kind = "generator"
# extends = "base"
# after = [
#     "video.extract",
#     'download',
# ]
# inputs = "data/*.csv"
# outputs = ["out/frames"]
# abstract = false
#
# [params]
# size = 64
# name = "x"
# ///

def run(extract, download, size):
    yield size
'''
    header, errors = parse_header(text, PATH)
    assert errors == []
    assert header is not None
    assert header.data == {
        "kind": "generator", "extends": "base", "after": ["video.extract", "download"],
        "inputs": "data/*.csv", "outputs": ["out/frames"], "abstract": False,
        "params": {"size": 64, "name": "x"}}
    assert (header.line, header.end_line) == (4, 18)
    assert header.key_lines == {
        "kind": 5, "extends": 6, "after": 7, "inputs": 11, "outputs": 12, "abstract": 13,
        "params": 15, "params.size": 16, "params.name": 17}
    assert header.item_lines == {"after": (8, 9)}


def test_table_forms_and_inline_tables() -> None:
    text = ('# /// task\n# params = {a = 1, b = "two"}\n# [after]\n# frames = "video.extract"\n'
            "# ///\n")
    header, errors = parse_header(text, PATH)
    assert errors == [] and header is not None
    assert header.data == {"params": {"a": 1, "b": "two"},
                           "after": {"frames": "video.extract"}}
    assert header.key_lines == {"params": 2, "params.a": 2, "params.b": 2, "after": 3,
                                "after.frames": 4}
    dotted, _ = parse_header("# /// task\n#\n# params.size = 3\n# ///\n", PATH)
    assert dotted is not None and dotted.key_lines == {"params": 3, "params.size": 3}


def test_empty_header_and_crlf_and_bom() -> None:
    header, errors = parse_header("\ufeff# /// task\r\n# kind = 'collector'\r\n# ///\r\n", PATH)
    assert errors == [] and header is not None
    assert header.data == {"kind": "collector"} and header.key_lines == {"kind": 2}
    empty, errors = parse_header("# /// task\n# ///\n", PATH)
    assert errors == [] and empty is not None and empty.data == {} and empty.end_line == 2


def test_text_inside_a_multiline_string_is_not_a_key() -> None:
    text = '# /// task\n# [params]\n# note = """\n# size = 3\n# """\n# size = 4\n# ///\n'
    header, errors = parse_header(text, PATH)
    assert errors == [] and header is not None
    assert header.key_lines["params.size"] == 6


def test_invalid_toml_points_at_the_file_line() -> None:
    text = "import x\n\n# /// task\n# kind = 'task'\n# size = \n# ///\n"
    assert errors_of(text) == [
        "tasks/t.py:5: error: invalid TOML in the task header: Invalid value (column 8)"]


def test_unterminated_value_at_the_end_of_the_block() -> None:
    text = "# /// task\n# after = [\n#   'a',\n# ///\n"
    (message,) = errors_of(text)
    assert message.startswith("tasks/t.py:3: error: invalid TOML in the task header")


def test_opener_without_closer() -> None:
    text = "# /// task\n# kind = 'task'\n\ndef run():\n    pass\n# ///\n"
    header, errors = parse_header(text, PATH)
    assert header is not None and header.data == {}  # still a task, and a broken one
    assert [e.format(Path("/proj")) for e in errors] == [
        "tasks/t.py:1: error: the '# /// task' block is not closed: end it with a '# ///' line "
        "(every line in between must start with '#')"]


def test_every_error_at_once_in_line_order() -> None:
    text = """# /// task
# kind = "generater"
# colour = "red"
#extends = "x"
# after = ["download", 7]
# inputs = [1, 2]
# outputs = 3
# abstract = "yes"
# params = 5
# ///
"""
    assert errors_of(text) == [
        "tasks/t.py:2: error: kind must be one of 'task', 'generator', 'collector', not "
        "'generater' (did you mean 'generator'?)",
        "tasks/t.py:3: error: unknown key 'colour' in the task header; allowed: abstract, "
        "after, extends, inputs, kind, outputs, params, priority, resources, retries, timeout",
        "tasks/t.py:4: error: a header line must be '#' or start with '# ' (a space after '#')",
        "tasks/t.py:5: error: after must be a task name, a list of them or a table of "
        "argument = \"task\", not ['download', 7]",
        "tasks/t.py:6: error: inputs must be a glob or a list of globs (strings), not [1, 2]",
        "tasks/t.py:7: error: outputs must be a path or a list of paths (strings), not 3",
        "tasks/t.py:8: error: abstract must be true or false, not 'yes'",
        "tasks/t.py:9: error: params must be a table ([params] or params = {…}), not 5",
    ]


def test_unknown_key_suggests_the_close_one_and_good_keys_survive() -> None:
    header, errors = parse_header("# /// task\n# afterr = ['a']\n# kind = 'generator'\n# ///\n",
                                  PATH)
    assert header is not None and header.data == {"kind": "generator"}
    assert [e.message for e in errors] == [
        "unknown key 'afterr' in the task header (did you mean 'after'?); allowed: abstract, "
        "after, extends, inputs, kind, outputs, params, priority, resources, retries, timeout"]


def test_after_table_needs_identifiers_and_string_values() -> None:
    assert errors_of("# /// task\n# after = {my-frames = 'a'}\n# ///\n") == [
        "tasks/t.py:2: error: after: argument name 'my-frames' is not a Python identifier"]
    assert errors_of("# /// task\n# extends = ''\n# after = {a = 1}\n# ///\n") == [
        "tasks/t.py:2: error: extends must be the name of a task (a string), not ''",
        "tasks/t.py:3: error: after must be a task name, a list of them or a table of "
        "argument = \"task\", not {'a': 1}",
    ]


def test_after_inputs_and_outputs_take_one_string_too(tmp_path: Path) -> None:
    """As `inputs` and `outputs` did: one upstream without a list, given to run() by its
    last name component."""
    (tmp_path / "tasks/clean").mkdir(parents=True)
    (tmp_path / "tasks/clean/sales.py").write_text("# /// task\n# ///\ndef run():\n    return 2\n")
    (tmp_path / "tasks/report.py").write_text(
        "# /// task\n# after = \"clean.sales\"\n# outputs = \"out.txt\"\n# ///\n"
        "from pathlib import Path\n\ndef run(sales):\n    Path('out.txt').write_text(str(sales))\n")
    config, _ = load_config(tmp_path)
    project = ProjectLoader(config).load()
    assert project.errors == []
    assert project.graph.upstreams["report"] == {"sales": "clean.sales"}
    assert project.tasks["report"].outputs == ("out.txt",)


def test_a_second_header_block() -> None:
    text = "# /// task\n# ///\n\nx = 1\n\n# /// task\n# kind = 'task'\n# ///\n"
    header, errors = parse_header(text, PATH)
    assert header is not None and header.end_line == 2
    assert [e.format(Path("/proj")) for e in errors] == [
        "tasks/t.py:6: error: a second '# /// task' block; a module has one header (the first "
        "is at line 1)"]


# -- properties ---------------------------------------------------------------------------------

def toml_string(value: str) -> str:
    escaped = []
    for char in value:
        if char in '"\\':
            escaped.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    return "[" + ", ".join(toml_value(v) for v in value) + "]"


names = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)
task_names = st.lists(names, min_size=1, max_size=3).map(".".join)
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), st.booleans(), text)
param_values = st.one_of(scalars, st.lists(scalars, max_size=4))
headers = st.fixed_dictionaries({}, optional={
    "kind": st.sampled_from(["task", "generator", "collector"]),
    "extends": task_names,
    "after": st.one_of(st.lists(task_names, max_size=3),
                       st.dictionaries(names, task_names, max_size=3)),
    "inputs": st.one_of(text, st.lists(text, max_size=3)),
    "outputs": st.one_of(text, st.lists(text, max_size=3)),
    "abstract": st.booleans(),
    "params": st.dictionaries(names, param_values, max_size=5),
})


def render(data: dict[str, Any], order: list[str], blanks: list[int]
           ) -> tuple[str, dict[str, int]]:
    """The header block for `data`, and the file line where each key should be found."""
    lines = ["# /// task"]
    expected: dict[str, int] = {}

    def emit(line: str) -> int:
        if blanks and blanks[len(lines) % len(blanks)] == 0:
            lines.append("#")
        lines.append("# " + line)
        return len(lines)

    tables = [k for k in order if isinstance(data[k], dict)]
    for key in order:
        if key not in tables:
            expected[key] = emit(f"{key} = {toml_value(data[key])}")
    for key in tables:
        expected[key] = emit(f"[{key}]")
        for name, value in data[key].items():
            expected[f"{key}.{name}"] = emit(f"{name} = {toml_value(value)}")
    lines.append("# ///")
    return "\n".join(lines) + "\n", expected


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


@settings(max_examples=300, deadline=None)
@given(headers, st.randoms(use_true_random=False), st.lists(st.integers(0, 3), max_size=6),
       st.text(max_size=30).filter(lambda t: "# /// task" not in t))
def test_rendered_headers_parse_back(data: dict[str, Any], rnd: Any, blanks: list[int],
                                     before: str) -> None:
    order = list(data)
    rnd.shuffle(order)
    block, expected = render(data, order, blanks)
    prefix = "x = 1\n" + before.replace("\r", "") + "\n"  # arbitrary code before the header
    shift = prefix.count("\n")
    header, errors = parse_header(prefix + block, PATH)
    assert errors == []
    assert header is not None
    assert header.data == data
    assert header.line == shift + 1
    assert header.key_lines == {k: line + shift for k, line in expected.items()}
    if isinstance(data.get("after"), list):
        first = expected["after"] + shift
        assert header.item_lines["after"] == tuple(first for _ in data["after"])


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_random_text_never_raises(source: str) -> None:
    header, errors = parse_header(source, PATH)
    assert header is not None or errors == []


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=40).map(lambda t: "# " + t),
                          st.sampled_from(["#", "# ///", "x = 1", "#bad", "# /// task",
                                           "# [params]", "# a = [", "# ]"])),
                max_size=12),
       st.booleans())
def test_random_blocks_only_ever_give_project_errors(lines: list[str], close: bool) -> None:
    source = "\n".join(["# /// task", *lines, *(["# ///"] if close else [])])
    header, errors = parse_header(source, PATH)
    assert header is not None and header.line == 1
    for error in errors:
        assert error.file == PATH and error.line is not None and error.line >= 1


# -- the simple reader: a fast path that must agree with tomllib ----------------------------

def test_common_headers_take_the_simple_reader() -> None:
    lines = ['kind = "generator"', "after = ['a.b', \"c\",]  # upstreams", "", "# a comment",
             "abstract = false", "[params]", "size = 64", "  offset\t= -3", "name = 'x # y'"]
    found = parse_simple(lines, first_line=5)
    assert found == ({"kind": "generator", "after": ["a.b", "c"], "abstract": False,
                      "params": {"size": 64, "offset": -3, "name": "x # y"}},
                     {("kind",): 5, ("after",): 6, ("abstract",): 9, ("params",): 10,
                      ("params", "size"): 11, ("params", "offset"): 12,
                      ("params", "name"): 13})


def test_anything_else_is_left_to_tomllib() -> None:
    for line in ['a = "tab\\there"', "a = 1.5", "a = 1_000", "a = 007", "a.b = 1", '"a" = 1',
                 "a = {b = 1}", "a = [1, 2]", "a = [", "[a.b]", "[[a]]", "a = 2024-01-01",
                 "a = '''x'''", 'a = "x" "y"', "a = \"x\x01\"", "a = True", "a =", "a = 1\r"]:
        assert parse_simple([line]) is None, line
    assert parse_simple(["a = 1", "a = 2"]) is None  # invalid: tomllib says why
    assert parse_simple(["[t]", "[t]"]) is None
    assert parse_simple(["t = 1", "[t]"]) is None


def test_a_header_the_simple_reader_declines_still_parses() -> None:
    header, errors = parse_header('# /// task\n# inputs = "a\\u0041\\tb"\n# ///\n', PATH)
    assert errors == [] and header is not None and header.data == {"inputs": "aA\tb"}


def _fragments() -> st.SearchStrategy[str]:
    """TOML lines near the simple reader's edge: mostly what it reads, some of what it must
    decline (valid or not)."""
    chars = st.text(alphabet="ab #,]['\"\\\t\x01\x7fé=.{}", max_size=6)
    keys = st.sampled_from(["a", "kind", "params", "x-1", "_", "1", '"q"', "a.b", "a b", ""])
    words = st.sampled_from(["true", "false", "True", "0", "00", "-0", "+7", "12", "1_0", "1.5",
                             "1e3", "inf", "0x1f", "2024-01-01", "-", ""])
    strings = st.one_of(chars.map(lambda t: f'"{t}"'), chars.map(lambda t: f"'{t}'"), chars)
    values = st.one_of(strings, words, _arrays(st.one_of(strings, words)),
                       st.sampled_from(["{b = 1}", "'''x'''", '"""x"""']))
    spaces = st.sampled_from(["", " ", "\t", "  "])
    tails = st.sampled_from(["", " ", "# c", "  # c ]", " x", "\t#é", "#\x01"])
    equals = st.sampled_from([" = ", "=", " =", "\t=\t"])
    edge = st.one_of(
        st.builds(lambda w, k, e, v, t: f"{w}{k}{e}{v}{t}", spaces, keys, equals, values, tails),
        st.builds(lambda w, k, t: f"{w}[{k}]{t}", spaces,
                  st.sampled_from(["params", " after ", "a.b", "[a]", "x", ""]), tails),
        st.sampled_from(["", "#", "# note", "  ", "#\x01", "]", "x"]))
    return st.one_of(_simple_lines(), _simple_lines(), _simple_lines(), edge)


def _simple_lines() -> st.SearchStrategy[str]:
    """Lines the reader takes: they must come out as tomllib has them, key lines included."""
    spaces = st.sampled_from(["", " ", "\t", "  "])
    equals = st.sampled_from([" = ", "=", " =", "\t=\t"])
    controls = "".join(map(chr, range(32))) + "\x7f"  # not allowed in a TOML string
    text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters=controls),
                   max_size=8)
    plain = st.one_of(text.filter(lambda t: '"' not in t and "\\" not in t).map(
        lambda t: f'"{t}"'), text.filter(lambda t: "'" not in t).map(lambda t: f"'{t}'"))
    simple_values = st.one_of(plain, _arrays(plain), st.sampled_from(["true", "false"]),
                              st.integers(-(2**70), 2**70).map(str))
    return st.one_of(
        st.builds(lambda w, k, e, v, t: f"{w}{k}{e}{v}{t}", spaces,
                  st.from_regex(r"[A-Za-z0-9_-]{1,6}", fullmatch=True), equals, simple_values,
                  st.sampled_from(["", " ", " # c", "\t#é ]"])),
        st.sampled_from(["[params]", " [ after ] ", "[x]  # t", "", "# note"]))


def _arrays(items: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(lambda values, sep, end: "[" + sep.join(values) + end + "]",
                     st.lists(items, max_size=3), st.sampled_from([", ", ",", " , "]),
                     st.sampled_from(["", ",", " "]))


@settings(max_examples=600, deadline=None)
@given(st.one_of(st.lists(_simple_lines(), max_size=6), st.lists(_fragments(), max_size=6)),
       st.integers(1, 40))
def test_the_simple_reader_agrees_with_tomllib(lines: list[str], first: int) -> None:
    found = parse_simple(lines, first_line=first)
    if found is None:
        return
    source = "\n".join(lines) + "\n"
    document, _ = parse_toml(source)
    # repr, not ==: True == 1 in Python, and the order of the keys counts too
    assert document is not None and repr(found[0]) == repr(document)
    assert found[1] == key_lines(source, first_line=first)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_fragments().map(lambda t: "# " + t), st.sampled_from(["#", "#x"])),
                max_size=8))
def test_a_header_parses_the_same_without_the_simple_reader(lines: list[str]) -> None:
    source = "\n".join(["x = 1", "# /// task", *lines, "# ///", "y = 2"]) + "\n"
    fast = parse_header(source, PATH)
    with mock.patch("watchrun.project.header.parse_simple", return_value=None):
        slow = parse_header(source, PATH)
    assert repr(fast) == repr(slow)


def test_timeout_retries_and_resources_are_read() -> None:
    header, errors = parse_header(
        "# /// task\n# timeout = 600\n# retries = 2\n"
        "# resources = {cpus = 0.5, gpus = 1, memory = '1.5GiB'}\n# ///\n", PATH)
    assert errors == []
    assert header is not None
    assert header.data == {"timeout": 600, "retries": 2,
                           "resources": {"cpus": 0.5, "gpus": 1, "memory": "1.5GiB"}}


def test_bad_timeout_retries_and_resources_name_the_key_at_its_line() -> None:
    text = """\
# /// task
# timeout = 0
# retries = -1
# [resources]
# cpus = -2
# gpus = 1.5
# memory = "2X"
# mem = 3
# ///
"""
    assert errors_of(text) == [
        "tasks/t.py:2: error: timeout must be a number of seconds greater than 0, not 0",
        "tasks/t.py:3: error: retries must be a whole number, 0 or more, not -1",
        "tasks/t.py:5: error: resources.cpus must be a number greater than 0, not -2",
        "tasks/t.py:6: error: resources.gpus must be a whole number, 0 or more, not 1.5",
        'tasks/t.py:7: error: resources.memory must be a number of bytes or a size with a unit '
        'such as "512M", "2G", "1.5GiB" (K, M, G, T count in 1024s, KB, MB, GB, TB in 1000s), '
        "not '2X'",
        "tasks/t.py:8: error: unknown key 'mem' in resources (did you mean 'memory'?); allowed: "
        "cpus, gpus, memory",
    ]
    assert errors_of("# /// task\n# timeout = '10m'\n# retries = true\n# resources = 4\n"
                     "# ///\n") == [
        "tasks/t.py:2: error: timeout must be a number of seconds greater than 0, not '10m'",
        "tasks/t.py:3: error: retries must be a whole number, 0 or more, not True",
        "tasks/t.py:4: error: resources must be a table such as resources = {cpus = 2, gpus = 1, "
        "memory = \"4G\"}, not 4",
    ]


def test_memory_units() -> None:
    assert memory_bytes(1000) == 1000
    assert memory_bytes("512M") == 512 * 2**20
    assert memory_bytes("2G") == 2 * 2**30
    assert memory_bytes("2g") == 2 * 2**30
    assert memory_bytes("1.5GiB") == 3 * 2**29
    assert memory_bytes("2Gi") == 2 * 2**30
    assert memory_bytes("2GB") == 2 * 10**9
    assert memory_bytes("100") == 100
    assert memory_bytes("64 KiB") == 64 * 1024
    for bad in ("-1G", "G", "2 X", "", -5, True, 1.5):
        try:
            memory_bytes(bad)  # type: ignore[arg-type]
        except ValueError as exc:
            assert "resources.memory" in str(exc)
        else:
            raise AssertionError(f"{bad!r} was accepted")
