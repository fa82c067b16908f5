"""The console script's entry: a plain `watchrun build` is read without importing Typer.

`build` is the command scripts and CI run over and over, and Typer's start-up (it builds an
adapter for every parameter) would dominate a null build (CONTRIBUTING.md, "Hot paths"). So
its plain forms are read by `commands.options.prescan`, made from the same option table as the
Typer command (`cli.py`); anything else goes to the Typer app, which owns help and error
messages. `tests/test_entry.py` checks that both read every option of the table alike.
A plain `dev` is read the same way (tests/test_entry_dev.py), so that it too starts the warm
template before the engine is imported.
"""

from __future__ import annotations

import sys

from watchrun.commands.options import BUILD_OPTIONS, DEV_OPTIONS, prescan
from watchrun.stats import report, span

TYPE_CHECKING = False  # on the null-build path: see CONTRIBUTING.md, "Hot paths"
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from watchrun.executors.spawn import EarlyWorkers

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer killed by it
EXIT_INTERRUPTED = 130  # Ctrl-C, as SPEC section 7 says


def parse_build(argv: list[str]) -> tuple[Path | None, list[str], dict[str, Any]] | None:
    """(root, tasks, options) for a plain `[-C DIR] build …` command line, else None. The
    root is None without -C: the build looks for the project from the current folder up."""
    parsed = split_build(argv)
    if parsed is None:
        return None
    from pathlib import Path

    root, tasks, options = parsed
    return (None if root is None else Path(root)), tasks, options


def split_build(argv: list[str]) -> tuple[str | None, list[str], dict[str, Any]] | None:
    """`parse_build` with the root as given: what the null-build check needs, before pathlib
    is even imported."""
    return prescan(argv, "build", BUILD_OPTIONS)


def _may_prove_clean(options: dict[str, Any]) -> bool:
    """Whether the null-build proof could print all this command asks for: the summary or
    the events, nothing forced, the local executor (`-j` and `--fail-fast` change nothing when
    nothing runs)."""
    return not (options["force"] or options["dry_run"] or options["verbose"]
                or options["set_params"] or options["address"] is not None
                ) and options["executor"] in (None, "local")


def main(argv: list[str] | None = None) -> None:
    try:
        _main(sys.argv[1:] if argv is None else argv)
    except BrokenPipeError:  # `watchrun build --json | head`: the reader left, quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        raise SystemExit(EXIT_BROKEN_PIPE) from None
    except KeyboardInterrupt:  # Ctrl-C before a command installed its own handling
        print("watchrun: interrupted", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None


def _main(args: list[str]) -> None:
    parsed = split_build(args)
    if parsed is not None:
        given, tasks, options = parsed
        root = _project_root(given)
        proven = None
        if _may_prove_clean(options):
            with span("null-build proof"):
                from watchrun.nullproof import try_null_build

                verdict = try_null_build(root, tasks, options["json_out"])
            if isinstance(verdict, int):
                report()
                raise SystemExit(verdict)
            proven = verdict
        early = _started_early(root, options, runs_units=not options["dry_run"])
        try:
            with span("import engine"):
                from pathlib import Path

                from watchrun.commands.build import build_command

            # _end() ends the process right after: the store may leave its database open
            code = build_command(Path(root), tasks, early=early, exiting=True, proven=proven,
                                 **options)
        finally:
            early.end()
        report()
        _end(code)
    dev = prescan(args, "dev", DEV_OPTIONS)
    if dev is not None and not (dev[2]["web"] or dev[2]["port"] is not None):
        _dev(*dev)
    from watchrun.cli import main as typer_main

    typer_main(args)


def _dev(given: str | None, tasks: list[str], options: dict[str, Any]) -> None:
    """A plain `watchrun dev` (not --web: each of its pages runs one of these): the warm
    template starts before the engine is imported, as for `build`, so that the first build's
    tasks find their libraries imported sooner."""
    root = _project_root(given)
    early = _started_early(root, options, runs_units=True)
    try:
        from pathlib import Path

        from watchrun.commands.dev import dev_command

        code = dev_command(Path(root), tasks, no_tui=options["no_tui"],
                           json_out=options["json_out"], jobs=options["jobs"],
                           set_params=options["set_params"], executor=options["executor"],
                           address=options["address"], early=early)
    finally:
        early.end()
    raise SystemExit(code)


def _project_root(given: str | None) -> str:
    """The project folder (`-C` as given, else found from here up); none: exit 2, saying why."""
    from watchrun.project.root import locate

    root, problem = locate(given)
    if root is None:
        sys.stderr.write(f"watchrun: error: {problem}\n")
        raise SystemExit(2)
    return root


def _started_early(root: str, options: dict[str, Any], runs_units: bool) -> EarlyWorkers:
    """The workers (or warm template) this command starts before the engine is imported:
    none unless it runs units on the local executor."""
    from watchrun.executors.spawn import EarlyWorkers

    early = EarlyWorkers()
    if runs_units and options["executor"] in (None, "local"):
        early.start(_early_workers(options["jobs"]), root)
    return early


def _early_workers(jobs: int | None) -> int:
    """How many workers to start before the engine is imported: those `-j` asks for (the
    configured number is not known yet), at most one per core, else one."""
    import os

    cores = os.cpu_count() or 1
    if jobs is None:
        return 1
    return cores if jobs <= 0 else min(jobs, cores)


def _end(code: int) -> None:
    """End the process at once: the build is committed, its workers reaped and its output
    written; what the interpreter would do on its way out (free every object of a project of
    thousands of tasks, one by one) is work nobody waits for. Not after a Ray build:
    Ray ends the processes it started from its exit handlers."""
    if "ray" in sys.modules:
        raise SystemExit(code)
    import os

    sys.stdout.flush()  # a BrokenPipeError here is main()'s to handle
    sys.stderr.flush()
    os._exit(code)
