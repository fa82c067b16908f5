"""`watchrun dev`: build, then watch and rerun. TUI on a terminal, else plain lines or JSON."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from watchrun.app import Session, effective_jobs, make_executor, open_session
from watchrun.commands.common import guarded, unknown_task_message
from watchrun.engine.dev import DevEngine
from watchrun.engine.events import EventBus, Subscriber
from watchrun.executors.base import ExecEvent
from watchrun.project.loader import ProjectLoader

STOP_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}


def dev_command(root: Path, targets: list[str], *, no_tui: bool, json_out: bool,
                jobs: int | None) -> int:
    def body() -> int:
        with open_session(root, "watchrun dev", write=True) as session:
            for name in targets:
                if name not in session.project.tasks:
                    print(f"watchrun: error: {unknown_task_message(name, session.project.tasks)}",
                          file=sys.stderr)
                    return 2
            use_tui = not (no_tui or json_out) and sys.stdout.isatty()
            return asyncio.run(run_dev(session, targets, json_out, use_tui,
                                       effective_jobs(session.config, jobs)))

    return guarded(json_out, body)


def build_dev_engine(session: Session, targets: list[str], jobs: int, bus: EventBus
                     ) -> DevEngine:
    """The dev engine over an open session, with its executor (also used by the TUI's tests)."""
    holder: list[DevEngine] = []

    def sink(event: ExecEvent) -> None:
        holder[0].on_exec(event)

    config = session.config
    executor = make_executor(config.executor_kind, sink, jobs, config.grace, session.store,
                             config.executor_address)
    loader = ProjectLoader(config, session.store, session.hasher)
    project = loader.load()
    engine = DevEngine(project, loader, session.store, session.hasher, executor, bus, targets)
    holder.append(engine)
    return engine


async def run_dev(session: Session, targets: list[str], json_out: bool, use_tui: bool,
                  jobs: int) -> int:
    bus = EventBus()
    engine = build_dev_engine(session, targets, jobs, bus)
    config = session.config
    loop = asyncio.get_running_loop()
    for sig, code in STOP_CODES.items():
        loop.add_signal_handler(sig, engine.quit, code)
    try:
        if use_tui:
            return await _with_tui(engine, bus)
        bus.subscribe(_printer(json_out, config.state_dir / "logs"))
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

    app = WatchrunApp(engine)
    bus.subscribe(app.inbox.put)
    # replaces run_dev's handler (which run_dev removes on the way out)
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, _hung_up, engine)
    engine_task = asyncio.create_task(engine.run())
    # the engine may stop on its own (SIGTERM, SIGHUP): then the app closes too
    engine_task.add_done_callback(lambda _: app.exit())
    result = await app.run_async()
    # in a raw terminal Ctrl-C reaches the app as a key, not as SIGINT
    engine.quit(130 if result == "interrupt" else None)
    return await engine_task


def _hung_up(engine: DevEngine) -> None:
    """SIGHUP. If the terminal is gone, the TUI's writes fail: the first failure ends Textual's
    output thread, and its shutdown then blocks for ever on the full output queue, holding the
    project's lock. So its output goes nowhere from now on."""
    if not os.isatty(sys.stdout.fileno()):
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (sys.stdout.fileno(), sys.stderr.fileno()):
            os.dup2(devnull, fd)
        os.close(devnull)
    engine.quit(STOP_CODES[signal.SIGHUP])
