"""The options of the command line, in one table per command.

Typer is the command line of record: `cli.py` declares each command's options from these rows
(flags, type, default, help), and Typer gives the help, the error messages and the completion.
`watchrun build` is what scripts and CI run over and over, so the console script first tries
`prescan`, a parser made from the same rows that runs before Typer is imported; whatever it is
not sure of (another command, `--help`, an unknown option, a value that does not convert, a
form Click reads in its own way such as `-vj2`) goes to Typer. Adding an option is one row here
and one parameter of the command's function.

On the null-build path: the standard library's basics only (CONTRIBUTING.md, "Hot paths").
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# the kinds of value an option takes
FLAG = "flag"  # no value: True when given
INT = "int"  # a whole number, 0 or more (a negative one is left to Typer, which names it)
TEXT = "text"
CHOICE = "choice"  # one of `choices`
MULTI = "multi"  # text, repeatable: every value in order
PATH = "path"  # a folder, not empty

VALUED = (INT, TEXT, CHOICE, MULTI, PATH)


class Option:
    """One row of a table: `name` is the parameter the command's function receives."""

    __slots__ = ("choices", "default", "flags", "help", "kind", "name")

    def __init__(self, name: str, flags: tuple[str, ...], kind: str, help: str = "",
                 choices: tuple[str, ...] = ()) -> None:
        self.name = name
        self.flags = flags
        self.kind = kind
        self.help = help
        self.choices = choices
        self.default: object = False if kind == FLAG else None

    def initial(self) -> object:
        """The value the command receives when the option is not given."""
        return [] if self.kind == MULTI else self.default

    def convert(self, text: str) -> object | None:
        """The value of `text`, or None when the pre-scan should leave it to Typer."""
        if self.kind == INT:
            return int(text) if text.isascii() and text.isdigit() else None
        if self.kind == CHOICE:
            return text if text in self.choices else None
        if self.kind == PATH:
            return text or None
        return text


SET_HELP = "Override a param for this run: TASK.PARAM=VALUE (VALUE in TOML, else a string)"
EXECUTORS = ("local", "ray")

DIRECTORY = Option("directory", ("-C", "--directory"), PATH,
                   "Project root (default: the nearest project folder from here up)")
JOBS = Option("jobs", ("-j", "--jobs"), INT, "Task processes at once")
JSON = Option("json_out", ("--json",), FLAG, "Print events as JSON lines")
EXECUTOR = Option("executor", ("--executor",), CHOICE, "Where units run", EXECUTORS)
ADDRESS = Option("address", ("--address",), TEXT, "Ray cluster address")
SET = Option("set_params", ("--set",), MULTI, SET_HELP)

ROOT_OPTIONS = (DIRECTORY,)
BUILD_OPTIONS = (
    JOBS,
    Option("force", ("--force",), FLAG, "Rerun these tasks even if clean"),
    Option("dry_run", ("--dry-run",), FLAG, "Say what would run and why"),
    JSON,
    Option("fail_fast", ("--fail-fast",), FLAG, "Stop at the first failure"),
    Option("verbose", ("-v", "--verbose"), FLAG,
           "List every unit, clean ones too, and stream task output live"),
    EXECUTOR,
    ADDRESS,
    SET,
)
DEV_OPTIONS = (
    Option("no_tui", ("--no-tui",), FLAG, "Plain lines instead of the TUI"),
    JSON,
    JOBS,
    SET,
    EXECUTOR,
    ADDRESS,
    Option("web", ("--web",), FLAG, "Serve the TUI to a browser on 127.0.0.1 (no auth)"),
    Option("port", ("--port",), INT, "Port of --web (default 8000)"),
)


def prescan(argv: list[str], command: str, table: tuple[Option, ...]
            ) -> tuple[str | None, list[str], dict[str, Any]] | None:
    """(the -C folder as given or None, the arguments, the options) of a plain
    `[-C DIR] COMMAND …` command line, read as Click reads it; None for anything else."""
    root: dict[str, Any] = {}
    rest = _options(argv, ROOT_OPTIONS, root, stop_at_argument=True)
    if rest is None or not rest or rest[0] != command:
        return None
    options = {option.name: option.initial() for option in table}
    arguments: list[str] = []
    tail = _options(rest[1:], table, options, arguments=arguments)
    if tail is None:
        return None
    return root.get(DIRECTORY.name), arguments, options


def _options(argv: list[str], table: tuple[Option, ...], into: dict[str, Any], *,
             stop_at_argument: bool = False, arguments: list[str] | None = None
             ) -> list[str] | None:
    """Read `argv` into `into` (and `arguments`); what is left after the first argument when
    `stop_at_argument`; None at anything the pre-scan leaves to Typer."""
    by_flag = {flag: option for option in table for flag in option.flags}
    rest = list(argv)
    while rest:
        arg = rest[0]
        if arg == "--" and arguments is not None:
            arguments.extend(rest[1:])
            return []
        if not arg.startswith("-") or arg == "-":
            if stop_at_argument or arguments is None:
                return rest
            arguments.append(rest.pop(0))
            continue
        rest.pop(0)
        flag, eq, attached = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if flag not in by_flag and not arg.startswith("--") and arg[:2] in by_flag:
            flag, eq, attached = arg[:2], "=", arg[2:]  # `-j2`, as Click reads a short option
        option = by_flag.get(flag)
        if option is None or (option.kind == FLAG and eq):
            return None
        if option.kind == FLAG:
            into[option.name] = True
            continue
        if not eq:
            if not rest:
                return None
            attached = rest.pop(0)
        value = option.convert(attached)
        if value is None:
            return None
        if option.kind == MULTI:
            into[option.name] = [*into[option.name], value]
        else:
            into[option.name] = value
    return rest
