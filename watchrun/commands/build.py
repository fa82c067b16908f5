"""`watchrun build`."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
from collections.abc import Iterator
from pathlib import Path

from watchrun.app import (
    EXIT_PROJECT,
    default_targets,
    effective_jobs,
    exit_code,
    open_session,
    run_build,
)
from watchrun.commands.common import guarded, print_project_errors, unknown_task_message
from watchrun.engine.events import Subscriber
from watchrun.engine.scheduler import BuildOptions


def build_command(root: Path, targets: list[str], *, jobs: int | None, force: bool,
                  dry_run: bool, json_out: bool, fail_fast: bool, verbose: bool,
                  executor: str | None, address: str | None) -> int:
    def body() -> int:
        with open_session(root, "watchrun build", write=not dry_run) as session:
            gc.freeze()  # see collector_paused
            gc.enable()
            project = session.project
            if project.errors:
                print_project_errors(project.errors, project.config.root, json_out)
                return EXIT_PROJECT
            for name in targets:
                if name not in project.tasks:
                    print(f"watchrun: error: {unknown_task_message(name, project.tasks)}",
                          file=sys.stderr)
                    return EXIT_PROJECT
            chosen = targets or default_targets(project)
            log_dir = session.config.state_dir / "logs"
            subscriber: Subscriber
            lines: list[tuple[str, str]] | None = None  # for a proof to replay with --json
            if json_out:
                from watchrun.ui.jsonl import JsonLines

                lines = []
                subscriber = JsonLines(keep=lines)
            elif sys.stdout.isatty() and not dry_run:
                from watchrun.ui.console import LiveConsole

                subscriber = LiveConsole(len(chosen), log_dir, verbose)
            else:
                from watchrun.ui.console import PlainConsole

                subscriber = PlainConsole(verbose=verbose, dry_run=dry_run, log_dir=log_dir)
            options = BuildOptions(force=force, dry_run=dry_run, fail_fast=fail_fast)
            if verbose:
                from watchrun.executors.warm import report_preload

                report_preload()
            kind = executor or session.config.executor_kind
            summary = asyncio.run(run_build(
                session, chosen, options, [subscriber], effective_jobs(session.config, jobs),
                kind, address if address is not None else session.config.executor_address,
                proof_for=None if dry_run else targets, proof_lines=lines))
            return exit_code(summary)

    with collector_paused():
        return guarded(json_out, body)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic collector off while the project loads; once it is loaded, what the load made
    is frozen (left out of every later collection) and the collector runs again for the build.
    Loading a project of thousands of tasks allocates hundreds of thousands of objects that live
    until the build ends, and each collection would walk them again (40-80 ms of a 1,000-task
    build). Only for one-shot commands: `dev` replaces its project on every save."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        else:
            gc.disable()
