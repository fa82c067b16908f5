"""Opening a project and running a build: the wiring the CLI (and tests) call.

Kept apart from cli.py so that tests can drive a build without a subprocess, and so that the CLI
stays a thin layer of option parsing.
"""

from __future__ import annotations

import _imp
import asyncio
import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from watchrun.config import DEFAULT_CONNECT_TIMEOUT, Config, load_config
from watchrun.engine.events import EventBus, Subscriber
from watchrun.engine.scheduler import BuildOptions, BuildSummary, Scheduler
from watchrun.engine.trace import BuildTrace
from watchrun.errors import ProjectError
from watchrun.executors.base import Executor, Sink
from watchrun.executors.spawn import EarlyWorkers
from watchrun.project.loader import Project, ProjectLoader
from watchrun.project.model import Kind
from watchrun.state.hashing import FileHasher
from watchrun.state.proof import ProvenClean, settings_stats
from watchrun.state.store import LockedError, Store
from watchrun.stats import span
from watchrun.ui.reader_gone import printing_until_reader_leaves, stop_when_reader_leaves
from watchrun.ui.summary import summary_line

EXIT_OK, EXIT_FAILED, EXIT_PROJECT, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A mistake on the command line or in the environment: exit 2 with this message."""


class Session:
    """An open project."""

    def __init__(self, config: Config, store: Store, hasher: FileHasher, project: Project,
                 trace: BuildTrace) -> None:
        self.config = config
        self.store = store
        self.hasher = hasher
        self.project = project
        self.trace = trace  # what a build observes, sealed into the null-build proof


@contextlib.contextmanager
def open_session(root: Path, command: str, *, write: bool, exiting: bool = False
                 ) -> Iterator[Session]:
    """Load config and project, open the store (taking the writer lock when `write`).
    `exiting`: the process ends (os._exit) right after the command, so the store may leave
    its database connection open (see Store.close). Raises ProjectErrorsFound for config
    errors, UsageError for a held lock."""
    if not root.is_dir():
        raise UsageError(f"the project folder {root} does not exist (see -C)")
    resolved = root.resolve()
    with span("settings"):
        settings_seen = settings_stats(os.fspath(resolved))  # before reading: a later edit shows
        config, errors = load_config(resolved)
    if errors:
        raise ProjectErrorsFound(errors, config.root)
    with span("store open"):
        store = Store(config.state_dir, readonly=not write)
    try:
        if write:
            with span("store open"):
                try:
                    store.acquire_lock(command)
                except LockedError as err:
                    raise UsageError(err.message()) from None
                store.reap_stale_pgroups()
        for message in store.messages:
            print(f"watchrun: {message}", file=sys.stderr)
        with span("project load"):
            hasher = FileHasher(store)
            loader = ProjectLoader(config, store, hasher)
            project = loader.load()
        trace = BuildTrace(os.fspath(config.root), os.fspath(config.state_dir), settings_seen)
        trace.project_loaded(map(os.fspath, config.tasks), loader.proven)
        session = Session(config, store, hasher, project, trace)
        yield session
        if write:
            with span("commit"):
                hasher.flush()
                store.commit()
                trace.seal()  # only now: the proof speaks of committed results
    finally:
        if write:
            store.release_lock()
        store.close(exiting=exiting)


class ProjectErrorsFound(Exception):
    def __init__(self, errors: list[ProjectError], root: Path) -> None:
        super().__init__(f"{len(errors)} project error(s)")
        self.errors = errors
        self.root = root


def make_executor(kind: str, sink: Sink, jobs: int, grace: float, store: Store,
                  address: str = "", spare: int = 1,
                  connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                  preload: Callable[[], list[tuple[str, str]]] | None = None,
                  memory_budget: int | None = None,
                  early: EarlyWorkers | None = None) -> Executor:
    """`spare`: warm local workers kept beyond the free slots, for the next persistent unit
    (or the replacement of a cancelled one). `preload`: what the warm template imports (see
    preload_source); None: workers are started with exec. `early`: local workers the console
    script started before the engine was imported, for the executor to adopt."""
    if kind == "ray":
        try:
            ray_executor = importlib.import_module("watchrun.executors.ray")
        except ImportError as err:
            raise UsageError(
                f"--executor ray needs Ray: pip install 'watchrun[ray]' ({err})") from None
        executor: Executor = ray_executor.RayExecutor(sink, jobs=jobs, grace=grace,
                                                      address=address,
                                                      connect_timeout=connect_timeout)
        return executor

    from watchrun.executors.limits import LocalLimits
    from watchrun.executors.local import LocalExecutor

    def on_pgroup(pgid: int, start_time: float | None) -> None:
        if start_time is None:
            store.drop_pgroup(pgid)
        else:
            store.record_pgroup(pgid, start_time)

    return LocalExecutor(sink, jobs=jobs, grace=grace, on_pgroup=on_pgroup, spare=spare,
                         preload=preload, limits=LocalLimits(memory_budget=memory_budget),
                         objects=os.fspath(store.object_folder) if store.writable else None,
                         early=early)


# standard-library modules whose import does something (prints, opens a browser): never
# imported by a template on a task's behalf
NOT_PRELOADED = frozenset({"this", "antigravity", "__main__"})


def _costs_an_import(stdlib_module: str) -> bool:
    """A standard-library module worth preloading: not one every interpreter has from its
    start (built in, or frozen like `os`), nor one of NOT_PRELOADED."""
    return (stdlib_module not in NOT_PRELOADED and stdlib_module not in sys.builtin_module_names
            and not _imp.is_frozen(stdlib_module))


def preload_source(project: Callable[[], Project], setting: object
                   ) -> Callable[[], list[tuple[str, str]]]:
    """The modules the warm template should import for the project as it is now (the `dev`
    project changes): the third-party modules its tasks import, with the versions of their
    distributions, the top-level standard-library modules they reach (a worker's first unit
    would pay for them: `pathlib` with `re` is ~12 ms), and the `preload` setting. Worked out
    again only when the project object is a new one or libraries were installed meanwhile.

    The tasks' code closures say which third-party packages each task uses (cheap: they are
    loaded anyway); only the modules of those tasks are then read for what exactly they import
    (`import matplotlib.pyplot`, imports inside functions), so a project of plain tasks costs
    nothing here (its module maps stay pickled)."""
    from watchrun.executors.preload_hint import remember
    from watchrun.executors.warm import installed_stamp, wanted_modules
    from watchrun.project.externals import version_of

    memo: list[tuple[Project, tuple[int, ...], list[tuple[str, str]]]] = []

    def wanted() -> list[tuple[str, str]]:
        current = project()
        stamp = installed_stamp()
        if memo and memo[0][1] != stamp:
            version_of.cache_clear()
        if not memo or memo[0][0] is not current or memo[0][1] != stamp:
            memo[:] = [(current, stamp, wanted_modules(_imported(current), setting))]
            # for the next build's template, started before its project is loaded
            remember(current.config.state_dir, [module for module, _ in memo[0][2]])
        return memo[0][2]

    return wanted


def _imported(current: Project) -> list[tuple[str, str]]:
    """(module, version) of what the project's tasks import from outside it (see
    preload_source)."""
    from watchrun.executors.warm import imported_modules
    from watchrun.project.externals import PYTHON_VERSION, version_of

    tops: dict[str, str] = {}
    reached: set[str] = set()  # standard-library modules
    users: set[str] = set()
    for name, closure in current.closures.items():
        for top, version in closure.externals:
            if version != PYTHON_VERSION:
                tops[top] = version
                users.add(name)
            else:
                reached.add(top)
    stdlib = {top: PYTHON_VERSION for top in sorted(reached) if _costs_an_import(top)}
    if not tops:
        return list(stdlib.items())
    root = current.config.root
    local = {name.partition(".")[0] for name in current.task_modules.values()}
    modules = [current.modules[current.task_modules[task]] for task in sorted(users)
               if current.task_modules.get(task) in current.modules]
    found = {**stdlib, **tops}
    for name in imported_modules(modules):
        top = name.partition(".")[0]
        if top in local or (root / f"{top}.py").exists() or (root / top).is_dir():
            continue  # the project's own: never preloaded (it changes)
        version = tops.get(top) or version_of(top)
        if version != PYTHON_VERSION:
            found[name] = version
    return list(found.items())


def choose_executor(config: Config, kind: str | None, address: str | None) -> Config:
    """The settings with the command line's `--executor` and `--address` applied. An address
    for the local executor is a mistake, not something to ignore quietly."""
    chosen = kind or config.executor_kind
    if address is not None and chosen != "ray":
        raise UsageError(f"--address {address} is a Ray cluster's address, and this run uses "
                         "the local executor: add --executor ray (or set kind = \"ray\" under "
                         "[executor] in the settings)")
    return config._replace(
        executor_kind=chosen,
        executor_address=config.executor_address if address is None else address)


async def check_executor(executor: Executor) -> None:
    """A cluster that cannot be joined is a usage error (exit 2) found before anything is
    planned, not every unit failing. Only the Ray executor has anything to check."""
    from watchrun.executors.ray_connect import RayConnectError

    preflight = getattr(executor, "preflight", None)
    if preflight is None:
        return
    try:
        await preflight()
    except RayConnectError as err:
        raise UsageError(f"cannot use the Ray cluster: {err}") from None


def effective_jobs(config: Config, override: int | None) -> int:
    """-j, else the settings' jobs, else this machine's CPUs; with the Ray executor, 0 for the
    last (the executor then takes its cluster's CPUs)."""
    unset = override == 0 or (override is None and not config.jobs_given)
    if unset and config.executor_kind == "ray":
        return 0
    jobs = override if override is not None else config.jobs
    return jobs if jobs > 0 else (os.cpu_count() or 1)


async def run_build(session: Session, targets: list[str], options: BuildOptions,
                    subscribers: list[Subscriber], jobs: int, executor_kind: str,
                    address: str, proof_for: list[str] | None = None,
                    proof_lines: list[tuple[str, str]] | None = None,
                    early: EarlyWorkers | None = None, proven: ProvenClean | None = None
                    ) -> BuildSummary:
    """`proof_for`: the targets as given on the command line, to leave a null-build proof
    for them if the build succeeds (see `nullproof`); `proof_lines`: the `--json` lines
    printed meanwhile, which the proof of a null build can replay. `early`: see
    make_executor."""
    bus = EventBus()
    for subscriber in subscribers:  # each of them prints to stdout
        bus.subscribe(printing_until_reader_leaves(subscriber, sys.stdout))
    holder: dict[str, Scheduler] = {}

    def sink(event: object) -> None:
        holder["s"].on_exec(event)  # type: ignore[arg-type]

    # a build cancels nothing of its own: a spare worker is for generators and collectors
    persistent = any(task.kind is not Kind.TASK for task in session.project.tasks.values())
    with span("executor start"):
        executor = make_executor(executor_kind, sink, jobs, session.config.grace, session.store,
                                 address, spare=1 if persistent else 0,
                                 connect_timeout=session.config.executor_connect_timeout,
                                 preload=preload_source(lambda: session.project,
                                                        session.config.preload),
                                 memory_budget=session.config.memory_budget, early=early)
        await check_executor(executor)
    scheduler = Scheduler(session.project, session.store, session.hasher, executor, bus,
                          options)
    holder["s"] = scheduler
    scheduler.proven = proven
    loop = asyncio.get_running_loop()
    stop_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for sig in stop_signals:
        loop.add_signal_handler(sig, scheduler.interrupt, 128 + sig)
    try:
        # no executor.start(): workers are spawned by the first submit, so a build with nothing
        # to run starts no process at all
        with span("build: resolve, plan, run"), stop_when_reader_leaves(scheduler.interrupt):
            summary = await scheduler.build(targets)
        if proof_for is not None and executor_kind == session.config.executor_kind == "local":
            with span("proof prepare"):
                trace_build(session.trace, scheduler, proof_for,
                            None if scheduler.summary.ran else proof_lines)
        return summary
    finally:
        with span("executor close"):
            await executor.close()
        for sig in stop_signals:
            loop.remove_signal_handler(sig)


def trace_build(trace: BuildTrace, scheduler: Scheduler, targets: list[str],
                lines: list[tuple[str, str]] | None) -> None:
    """Hand the trace what the plan observed, once a build succeeded; a dry run or a failed
    build leaves no proof."""
    summary, resolver = scheduler.summary, scheduler.resolver
    if not summary.ok or scheduler.options.dry_run:
        return
    trace.files_observed(resolver.observed, resolver.expansions.values(), resolver.unsteady)
    trace.hashes_known(scheduler.hasher)
    clean = summary.ran + summary.skipped
    values = {name: value for (name, key), value in scheduler.values.items() if not key}
    trace.build_finished(targets, clean, lines, summary_line(True, "ran", 0, clean, 0, 0),
                         values)


def exit_code(summary: BuildSummary) -> int:
    if summary.interrupted:
        return summary.interrupted if summary.interrupted > 1 else EXIT_INTERRUPTED
    return EXIT_OK if summary.ok else EXIT_FAILED


def default_targets(project: Project) -> list[str]:
    return [n for n in project.graph.order if not project.tasks[n].abstract]

