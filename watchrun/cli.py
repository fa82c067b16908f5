"""The command line: parse options, open the project, call the engine, pick a UI.

The options of `build` and `dev` are declared from their tables in `commands/options.py`
(shared with the console script's pre-scan of `build`). Heavy modules (the engine, Textual,
Ray) are imported inside the commands, so `--help` and read-only commands start fast.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from watchrun.commands import options as table

app = typer.Typer(
    name="watchrun",
    help="Run Python task DAGs; rerun exactly what changed.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class State:
    directory: Path | None = None  # -C: None means "search from the current folder up"


def project_root() -> Path:
    """The project root for a command: `-C DIR` as given, else the nearest project folder
    from the current one up. No project: exit 2, having created nothing."""
    from watchrun.project.root import locate

    found, problem = locate(None if State.directory is None else str(State.directory))
    if found is None:
        typer.echo(f"watchrun: error: {problem}", err=True)
        raise typer.Exit(2)
    return Path(found)


def _version(value: bool) -> None:
    if value:
        from watchrun import __version__

        typer.echo(f"watchrun {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    directory: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(*table.DIRECTORY.flags, help=table.DIRECTORY.help),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit", is_eager=True,
                           callback=_version)
    ] = False,
) -> None:
    State.directory = directory


def _enum(option: table.Option) -> type[Enum]:
    return Enum(option.name.title(), {c: c for c in option.choices}, type=str)  # type: ignore[return-value]


_TYPES: dict[str, Any] = {table.FLAG: bool, table.INT: int, table.TEXT: str,
                          table.MULTI: list[str], table.PATH: Path}


def declared(options: tuple[table.Option, ...], arguments: str
             ) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """The signature Typer reads, made from an option table: the command's task names
    (`arguments`: their help), then one parameter per row. The function receives
    each option as the pre-scan gives it (`Option.initial` when not given, a choice as its
    text)."""
    parameters = [inspect.Parameter(
        "tasks", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
        annotation=Annotated[Optional[list[str]], typer.Argument(help=arguments)])]  # noqa: UP045
    choices = {o.name: _enum(o) for o in options if o.kind == table.CHOICE}
    for option in options:
        kind = choices[option.name] if option.name in choices else _TYPES[option.kind]
        parameters.append(inspect.Parameter(
            option.name, inspect.Parameter.KEYWORD_ONLY,
            default=None if option.kind == table.MULTI else option.default,
            annotation=Annotated[kind if option.kind == table.FLAG else Optional[kind],  # noqa: UP045
                                 typer.Option(*option.flags, help=option.help)]))

    def declare(function: Callable[..., None]) -> Callable[..., None]:
        def command(tasks: list[str] | None = None, **given: Any) -> None:
            function(tasks or [], **{o.name: _plain(o, given[o.name]) for o in options})

        command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        command.__doc__ = function.__doc__
        command.__name__ = function.__name__
        return command

    return declare


def _plain(option: table.Option, value: Any) -> Any:
    if value is None:
        return option.initial()
    return value.value if isinstance(value, Enum) else value


@app.command()
@declared(table.BUILD_OPTIONS, "Tasks to build (default: all)")
def build(tasks: list[str], **options: Any) -> None:
    """Run these tasks (default: every non-abstract task) with what they need, skipping clean
    units."""
    from watchrun.commands.build import build_command

    code = build_command(State.directory, tasks, **options)
    from watchrun.stats import report

    report()
    raise typer.Exit(code)


@app.command()
def status(
    tasks: Annotated[Optional[list[str]], typer.Argument()] = None,  # noqa: UP045
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Every task: clean, dirty, failed, cancelled or never-run, with the reasons."""
    from watchrun.commands.inspect import status_command

    raise typer.Exit(status_command(project_root(), tasks or [], json_out))


class GraphFormat(str, Enum):
    text = "text"
    mermaid = "mermaid"
    dot = "dot"


@app.command()
def graph(
    fmt: Annotated[GraphFormat, typer.Option("--format")] = GraphFormat.text,
) -> None:
    """The DAG, with kinds, inheritance, generator scopes and file inputs and outputs."""
    from watchrun.commands.inspect import graph_command

    raise typer.Exit(graph_command(project_root(), fmt.value))


@app.command()
def show(
    task: str,
    iter: Annotated[Optional[list[int]], typer.Option("--iter", help="Iteration index")] = None,  # noqa: UP045
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A task's stored output."""
    from watchrun.commands.show import show_command

    raise typer.Exit(show_command(project_root(), task, tuple(iter or ()), json_out))


@app.command()
def clean(
    tasks: Annotated[Optional[list[str]], typer.Argument()] = None,  # noqa: UP045
    outputs: Annotated[
        bool, typer.Option("--outputs", help="Also delete their declared outputs (only inside "
                                             "the project root, never through a symlink)")
    ] = False,
) -> None:
    """Forget stored results (all, or these tasks)."""
    from watchrun.commands.state import clean_command

    raise typer.Exit(clean_command(project_root(), tasks or [], outputs))


@app.command()
def log(
    task: str,
    iter: Annotated[Optional[list[int]], typer.Option("--iter", help="Iteration index")] = None,  # noqa: UP045
) -> None:
    """A unit's captured stdout and stderr."""
    from watchrun.commands.show import log_command

    raise typer.Exit(log_command(project_root(), task, tuple(iter or ())))


@app.command()
def accept(tasks: list[str]) -> None:
    """Declare the current state of these tasks clean without running them."""
    from watchrun.commands.state import accept_command

    raise typer.Exit(accept_command(project_root(), tasks))


@app.command()
@declared(table.DEV_OPTIONS, "Tasks to build and watch (default: all)")
def dev(tasks: list[str], *, no_tui: bool, json_out: bool, jobs: int | None,
        set_params: list[str], executor: str | None, address: str | None, web: bool,
        port: int | None) -> None:
    """Build, then watch and rerun on every change (a TUI on a terminal)."""
    from watchrun.commands.dev import dev_command

    if port is not None and not web:
        typer.echo("watchrun: error: --port is the port of --web", err=True)
        raise typer.Exit(2)
    if web and (no_tui or json_out):
        typer.echo("watchrun: error: --web serves the TUI: not with --no-tui or --json", err=True)
        raise typer.Exit(2)
    web_port = (8000 if port is None else port) if web else None
    raise typer.Exit(dev_command(project_root(), tasks, no_tui=no_tui, json_out=json_out,
                                 jobs=jobs, set_params=set_params, executor=executor,
                                 address=address, web_port=web_port))


def main(argv: list[str] | None = None) -> None:
    app(args=argv, prog_name="watchrun")
