"""`watchrun build`."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
from collections.abc import Iterator
from pathlib import Path

from watchrun.commands.common import (
    error,
    guarded,
    print_project_errors,
    target_problem,
    warn_unmatched_inputs,
)
from watchrun.engine.events import Subscriber
from watchrun.engine.scheduler import BuildOptions
from watchrun.executors.spawn import EarlyWorkers
from watchrun.paths import LOGS_DIR
from watchrun.project.loader import with_overrides
from watchrun.project.overrides import (
    OverrideError,
    Overrides,
    check_overrides,
    parse_overrides,
)
from watchrun.project.root import locate
from watchrun.session import (
    EXIT_PROJECT,
    Session,
    choose_executor,
    default_targets,
    effective_jobs,
    exit_code,
    open_session,
    run_build,
)
from watchrun.state.proof import ProvenClean


def build_command(root: Path | None, targets: list[str], *, jobs: int | None, force: bool,
                  dry_run: bool, json_out: bool, fail_fast: bool, verbose: bool,
                  executor: str | None, address: str | None,
                  set_params: list[str] | None = None, early: EarlyWorkers | None = None,
                  exiting: bool = False, proven: ProvenClean | None = None) -> int:
    """`root`: None to look for the project from the current folder up. From the console
    script: `early`, the workers it started before importing the engine (see spawn.py),
    `exiting`, the process ends with os._exit right after (see Store.close), and `proven`,
    what the last build's proof still proves (see nullproof.py)."""
    if jobs is not None and jobs < 0:
        return error(f"-j/--jobs must be 0 (one per CPU) or more, not {jobs}")
    found, problem = locate(None if root is None else str(root))
    if found is None:
        return error(problem)
    try:
        overrides = parse_overrides(set_params or [])
    except OverrideError as err:
        return error(str(err))

    def body() -> int:
        with open_session(Path(found), "watchrun build", write=not dry_run,
                          exiting=exiting) as session:
            gc.freeze()  # see collector_paused
            gc.enable()
            project = session.project
            if project.errors:
                print_project_errors(project.errors, project.config.root, json_out)
                return EXIT_PROJECT
            problem = target_problem(project, targets)
            if problem is not None:
                print(f"watchrun: error: {problem}", file=sys.stderr)
                return EXIT_PROJECT
            if overrides:
                problem = _override(session, overrides)
                if problem is not None:
                    return error(problem)
                project = session.project
            chosen = targets or default_targets(project)
            if not json_out:
                warn_unmatched_inputs(project, project.graph.upstream_closure(chosen))
            lines: list[tuple[str, str]] | None = [] if json_out else None  # for a proof
            subscribers = _subscribers(session, len(chosen), json_out, dry_run, verbose, lines)
            options = BuildOptions(force=force, dry_run=dry_run, fail_fast=fail_fast, follow=True)
            if verbose:
                from watchrun.executors.warm import report_preload

                report_preload()
            settings = choose_executor(session.config, executor, address)
            summary = asyncio.run(run_build(
                session, chosen, options, subscribers, effective_jobs(settings, jobs),
                settings.executor_kind, settings.executor_address,
                proof_for=None if dry_run else targets, proof_lines=lines, early=early,
                proven=_still_proven(session, proven)))
            return exit_code(summary)

    with collector_paused():
        return guarded(json_out, body)


def _still_proven(session: Session, proven: ProvenClean | None) -> ProvenClean | None:
    """What the proof checked before the lock was taken still proves, if no other writer
    ran meanwhile (each one discards the proof: this build found the same file)."""
    if proven is None or session.store.proof_at_lock != proven.proof_key:
        return None
    return proven


def _subscribers(session: Session, targets: int, json_out: bool, dry_run: bool,
                 verbose: bool, lines: list[tuple[str, str]] | None) -> list[Subscriber]:
    """What shows the build: JSON lines (kept in `lines`, for a proof to replay), a live
    display on a terminal, else plain lines; with -v, also the tasks' output as it comes."""
    log_dir = session.config.state_dir / LOGS_DIR
    subscriber: Subscriber
    if json_out:
        from watchrun.ui.jsonl import JsonLines

        return [JsonLines(keep=lines)]
    if sys.stdout.isatty() and not dry_run:
        from watchrun.ui.console import LiveConsole

        subscriber = LiveConsole(targets, log_dir, verbose)
    else:
        from watchrun.ui.console import PlainConsole

        subscriber = PlainConsole(verbose=verbose, dry_run=dry_run, log_dir=log_dir)
    if not verbose or dry_run:
        return [subscriber]
    from watchrun.ui.stream import LiveOutput

    return [subscriber, LiveOutput(log_dir)]


def _override(session: Session, overrides: Overrides) -> str | None:
    """Apply `--set` to the session's project; what is wrong with them, if anything."""
    try:
        check_overrides(overrides, session.project.tasks)
    except OverrideError as err:
        return str(err)
    session.project = with_overrides(session.project, overrides)
    session.trace.spoil()  # a build with --set leaves no null-build proof
    return None


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic collector off while the project loads; once it is loaded, what the load made
    is frozen (left out of every later collection) and the collector runs again for the build.
    Loading a project of thousands of tasks allocates hundreds of thousands of objects that live
    until the build ends, and each collection would walk them again, finding nothing to free.
    Only for one-shot commands: `dev` replaces its project on every save."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        else:
            gc.disable()
