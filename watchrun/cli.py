"""The command line: parse options, open the project, call the engine, pick a UI.

Heavy modules (the engine, Textual, Ray) are imported inside the commands, so `--help` and
read-only commands start fast.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

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
        typer.Option("-C", "--directory",
                     help="Project root (default: the nearest project folder from here up)"),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit", is_eager=True,
                           callback=_version)
    ] = False,
) -> None:
    State.directory = directory


SET_HELP = "Override a param for this run: TASK.PARAM=VALUE (VALUE in TOML, else a string)"


class ExecutorKind(str, Enum):
    local = "local"
    ray = "ray"


@app.command()
def build(
    tasks: Annotated[
        Optional[list[str]], typer.Argument(help="Tasks to build (default: all)")  # noqa: UP045
    ] = None,
    jobs: Annotated[
        Optional[int], typer.Option("-j", "--jobs", help="Task processes at once")  # noqa: UP045
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Rerun these tasks even if clean")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would run and why")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print events as JSON lines")] = False,
    fail_fast: Annotated[
        bool, typer.Option("--fail-fast", help="Stop at the first failure")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose",
                           help="List every unit, clean ones too, and stream task output live")
    ] = False,
    executor: Annotated[Optional[ExecutorKind], typer.Option("--executor")] = None,  # noqa: UP045
    address: Annotated[Optional[str], typer.Option("--address", help="Ray cluster address")] = None,  # noqa: UP045
    set_params: Annotated[
        Optional[list[str]], typer.Option("--set", help=SET_HELP)  # noqa: UP045
    ] = None,
) -> None:
    """Run these tasks (default: every non-abstract task) with what they need, skipping clean
    units."""
    from watchrun.commands.build import build_command

    code = build_command(State.directory, tasks or [], jobs=jobs, force=force,
                         dry_run=dry_run, json_out=json_out, fail_fast=fail_fast,
                         verbose=verbose, executor=executor.value if executor else None,
                         address=address, set_params=set_params or [])
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
def dev(
    tasks: Annotated[Optional[list[str]], typer.Argument()] = None,  # noqa: UP045
    no_tui: Annotated[
        bool, typer.Option("--no-tui", help="Plain lines instead of the TUI")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print events as JSON lines")] = False,
    jobs: Annotated[Optional[int], typer.Option("-j", "--jobs")] = None,  # noqa: UP045
    set_params: Annotated[
        Optional[list[str]], typer.Option("--set", help=SET_HELP)  # noqa: UP045
    ] = None,
    executor: Annotated[Optional[ExecutorKind], typer.Option("--executor")] = None,  # noqa: UP045
    address: Annotated[Optional[str], typer.Option("--address", help="Ray cluster address")] = None,  # noqa: UP045
    web: Annotated[
        bool, typer.Option("--web", help="Serve the TUI to a browser on 127.0.0.1 (no auth)")
    ] = False,
    port: Annotated[
        Optional[int], typer.Option("--port", help="Port of --web (default 8000)")  # noqa: UP045
    ] = None,
) -> None:
    """Build, then watch and rerun on every change (a TUI on a terminal)."""
    from watchrun.commands.dev import dev_command

    if port is not None and not web:
        typer.echo("watchrun: error: --port is the port of --web", err=True)
        raise typer.Exit(2)
    if web and (no_tui or json_out):
        typer.echo("watchrun: error: --web serves the TUI: not with --no-tui or --json", err=True)
        raise typer.Exit(2)
    web_port = (8000 if port is None else port) if web else None
    raise typer.Exit(dev_command(project_root(), tasks or [], no_tui=no_tui, json_out=json_out,
                                 jobs=jobs, set_params=set_params or [],
                                 executor=executor.value if executor else None,
                                 address=address, web_port=web_port))


def main(argv: list[str] | None = None) -> None:
    app(args=argv, prog_name="watchrun")
