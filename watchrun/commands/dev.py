"""`watchrun dev`: build, then watch and rerun. TUI on a terminal, else plain lines or JSON."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

from watchrun.commands.common import error, guarded, unknown_task_message
from watchrun.engine.dev import DevEngine
from watchrun.engine.events import EventBus, Subscriber
from watchrun.executors.base import ExecEvent
from watchrun.executors.spawn import EarlyWorkers
from watchrun.paths import LOGS_DIR
from watchrun.project.loader import ProjectLoader
from watchrun.project.overrides import (
    OverrideError,
    Overrides,
    check_overrides,
    parse_overrides,
)
from watchrun.session import (
    ProjectErrorsFound,
    Session,
    UsageError,
    check_executor,
    choose_executor,
    effective_jobs,
    make_executor,
    open_session,
    preload_source,
)
from watchrun.ui.reader_gone import printing_until_reader_leaves, stop_when_reader_leaves
from watchrun.ui.running import RunningNow

STOP_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}
TUI_OUTPUT = 2  # the descriptor Textual draws on (sys.__stderr__)
TERMINAL_POLL = 0.5  # seconds between two checks that the TUI's terminal is still there
HANGUP_WAIT = 10.0  # seconds, beyond the cancel sequence, before a hung-up TUI ends itself
LOOP_ALIVE = 1.0  # seconds a hung-up TUI's event loop has to show it still runs
APP_CLOSE = 1.0  # seconds the app of a hung-up TUI has to close once the engine stopped


def dev_command(root: Path, targets: list[str], *, no_tui: bool, json_out: bool,
                jobs: int | None, set_params: list[str] | None = None,
                executor: str | None = None, address: str | None = None,
                web_port: int | None = None, early: EarlyWorkers | None = None) -> int:
    """`early`: the warm template the console script started before importing this (see
    session.make_executor)."""
    from watchrun.ui.tui.web import in_web_session

    if jobs is not None and jobs < 0:
        return error(f"-j/--jobs must be 0 (one per CPU) or more, not {jobs}")
    try:
        overrides = parse_overrides(set_params or [])
    except OverrideError as err:
        return error(str(err))
    if web_port is not None:
        # each page's session gets these options again
        options = [f"--set={v}" for v in set_params or []]
        options += [f"--executor={executor}"] if executor else []
        options += [f"--address={address}"] if address else []
        return _serve_web(root, targets, jobs, web_port, options)

    def body() -> int:
        with open_session(root, "watchrun dev", write=True) as session:
            session.config = choose_executor(session.config, executor, address)
            try:
                check_overrides(overrides, session.project.tasks)
            except OverrideError as err:
                return error(str(err))
            for name in targets:
                if name not in session.project.tasks:
                    print(f"watchrun: error: {unknown_task_message(name, session.project.tasks)}",
                          file=sys.stderr)
                    return 2
            use_tui = not (no_tui or json_out) and (sys.stdout.isatty() or in_web_session())
            return asyncio.run(run_dev(session, targets, json_out, use_tui,
                                       effective_jobs(session.config, jobs), overrides,
                                       early=early))

    return guarded(json_out, body)


def _serve_web(root: Path, targets: list[str], jobs: int | None, port: int,
               options: list[str]) -> int:
    """`dev --web`: check the project opens (its errors are told here, not in a blank page),
    then serve the TUI; each page runs its own `watchrun dev`."""
    from watchrun.config import load_config
    from watchrun.ui.tui.web import serve

    def body() -> int:
        if not root.is_dir():
            raise UsageError(f"the project folder {root} does not exist (see -C)")
        config, errors = load_config(root.resolve())
        if errors:
            raise ProjectErrorsFound(errors, config.root)
        return serve(root.resolve(), targets, jobs, port, options)

    return guarded(False, body)


def build_dev_engine(session: Session, targets: list[str], jobs: int, bus: EventBus,
                     overrides: Overrides | None = None, early: EarlyWorkers | None = None
                     ) -> DevEngine:
    """The dev engine over an open session, with its executor (also used by the TUI's tests)."""
    holder: list[DevEngine] = []

    def sink(event: ExecEvent) -> None:
        holder[0].on_exec(event)

    config = session.config
    executor = make_executor(config.executor_kind, sink, jobs, config.grace, session.store,
                             config.executor_address,
                             connect_timeout=config.executor_connect_timeout,
                             preload=preload_source(lambda: holder[0].project, config.preload),
                             memory_budget=config.memory_budget, early=early)
    loader = ProjectLoader(config, session.store, session.hasher, overrides=overrides)
    project = loader.load()
    engine = DevEngine(project, loader, session.store, session.hasher, executor, bus, targets)
    holder.append(engine)
    return engine


async def run_dev(session: Session, targets: list[str], json_out: bool, use_tui: bool,
                  jobs: int, overrides: Overrides | None = None,
                  early: EarlyWorkers | None = None) -> int:
    bus = EventBus()
    engine = build_dev_engine(session, targets, jobs, bus, overrides, early)
    await check_executor(engine.executor)
    config = session.config
    loop = asyncio.get_running_loop()
    for sig, code in STOP_CODES.items():
        loop.add_signal_handler(sig, engine.quit, code)
    try:
        if use_tui:
            return await _with_tui(engine, bus)
        bus.subscribe(printing_until_reader_leaves(
            _printer(json_out, config.state_dir / LOGS_DIR), sys.stdout))
        bus.subscribe(RunningNow(config.state_dir))
        with stop_when_reader_leaves(engine.quit):
            return await engine.run()
    finally:
        for sig in STOP_CODES:
            loop.remove_signal_handler(sig)


def _printer(json_out: bool, log_dir: Path) -> Subscriber:
    if json_out:
        from watchrun.ui.jsonl import JsonLines

        return JsonLines()
    from watchrun.ui.console import PlainConsole

    return PlainConsole(log_dir=log_dir)


async def _with_tui(engine: DevEngine, bus: EventBus) -> int:
    from watchrun.ui.tui.app import WatchrunApp
    from watchrun.ui.tui.records import Records
    from watchrun.ui.tui.web import in_web_session

    app = WatchrunApp(engine, records=Records(engine.config.state_dir))
    bus.subscribe(app.inbox.put)
    bus.subscribe(RunningNow(engine.config.state_dir))
    stopped = threading.Event()  # the engine has stopped: processes ended, state saved
    closed = threading.Event()  # the app has closed
    if os.isatty(TUI_OUTPUT):
        threading.Thread(target=_watch_terminal, name="watchrun-terminal", daemon=True,
                         args=(asyncio.get_running_loop(), engine, stopped, closed)).start()
    elif in_web_session():
        from watchrun.ui.tui.web import watch_server

        threading.Thread(target=watch_server, name="watchrun-web-server", daemon=True,
                         args=(lambda: engine.quit(STOP_CODES[signal.SIGHUP]),
                               asyncio.get_running_loop(), closed,
                               2 * engine.config.grace + HANGUP_WAIT)).start()
    try:
        engine_task = asyncio.create_task(engine.run())
        engine_task.add_done_callback(lambda _: stopped.set())
        # the engine may stop on its own (SIGTERM, SIGHUP): then the app closes too
        engine_task.add_done_callback(lambda _: app.exit())
        result = await app.run_async()
        # in a raw terminal Ctrl-C reaches the app as a key, not as SIGINT
        engine.quit(130 if result == "interrupt" else None)
        return await engine_task
    finally:
        closed.set()


def _watch_terminal(loop: asyncio.AbstractEventLoop, engine: DevEngine,
                    stopped: threading.Event, closed: threading.Event) -> None:
    """A thread that notices the terminal hang up (its window closed, the SSH link lost).

    Textual writes the screen from a thread of its own; a write to a hung-up terminal fails and
    ends that thread, and a later write blocks the event loop for ever, with the project locked
    and the tasks running. The SIGHUP that comes with the hang-up cannot help: its handler runs
    on that loop. So from here the output goes to /dev/null and the engine is asked to stop;
    once it has (or if the loop is stuck), an app that does not close ends the process. Its
    workers then end their process groups (they watch their parent); the store survives an
    abrupt end at any moment."""
    code = STOP_CODES[signal.SIGHUP]
    while not closed.wait(TERMINAL_POLL):
        if os.isatty(TUI_OUTPUT):
            continue
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
        responsive = threading.Event()
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(engine.quit, code)
            loop.call_soon_threadsafe(responsive.set)
        if responsive.wait(LOOP_ALIVE):  # else it is stuck: nothing will stop the engine
            stopped.wait(2 * engine.config.grace + HANGUP_WAIT)
        if not closed.wait(APP_CLOSE):
            os._exit(code)
        return
