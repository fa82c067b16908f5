"""`watchrun dev --web`: the same Textual app, served to a browser by textual-serve.

textual-serve runs one app process per browser connection: each page that connects starts
`watchrun dev` (the TUI, drawn through Textual's web driver) and ends it when the page closes
or `q` is pressed. That process is the writer of the project, as in a terminal: a second page
opened at the same time is refused by the project's lock, with the usual message.

The server listens on 127.0.0.1 only and has no authentication: anyone who can reach the port
can steer the session. From another machine, forward the port over SSH.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

HOST = "127.0.0.1"
# set in the served process's environment: its stdout is Textual's web driver, not a terminal,
# and it must draw the TUI all the same
WEB_SESSION_ENV = "WATCHRUN_WEB_SESSION"
SERVER_POLL = 0.5  # seconds between two checks that the server is still there
EXIT_SERVER_GONE = 129  # as for a terminal that hung up


def in_web_session() -> bool:
    """Started by `dev --web`'s server for a page (textual-serve sets the driver)."""
    return os.environ.get(WEB_SESSION_ENV) == "1" and "TEXTUAL_DRIVER" in os.environ


def session_command(root: Path, targets: list[str], jobs: int | None,
                    options: Sequence[str] = ()) -> str:
    """The shell line textual-serve runs per connection (it starts it with a shell, which
    `exec` replaces: the session is the server's own child, and notices when it is gone)."""
    argv = [sys.executable, "-m", "watchrun", "-C", os.fspath(root), "dev"]
    if jobs is not None:
        argv += ["-j", str(jobs)]
    argv += list(options)
    argv += ["--", *targets] if targets else []
    return "exec " + shlex.join(argv)


def watch_server(quit: Callable[[], None], loop: asyncio.AbstractEventLoop,
                 closed: threading.Event, wait: float) -> None:
    """A thread of a web session: if the server dies (kill -9, a crash), nothing tells the app
    (Textual's web driver just stops reading), so the session would run on, unseen, holding the
    project's lock. When the parent changes, the output goes to /dev/null (the pipe is gone),
    the engine is asked to stop and, if the app is not closed `wait` seconds later, the
    process ends itself; its workers then end their process groups."""
    server = os.getppid()
    while not closed.wait(SERVER_POLL):
        if os.getppid() == server:
            continue
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(quit)
        if not closed.wait(wait):
            os._exit(EXIT_SERVER_GONE)
        return


def serve(root: Path, targets: list[str], jobs: int | None, port: int,
          options: Sequence[str] = ()) -> int:
    """Serve until Ctrl-C or SIGTERM; 0 then, 2 if the server cannot start."""
    try:
        from textual_serve.server import Server
    except ImportError:
        print("watchrun: error: --web needs textual-serve: pip install 'watchrun[web]'",
              file=sys.stderr)
        return 2
    os.environ[WEB_SESSION_ENV] = "1"  # the sessions inherit the server's environment
    url = f"http://{HOST}:{port}"
    server = Server(session_command(root, targets, jobs, options), host=HOST, port=port,
                    title=f"watchrun dev · {root.name}", public_url=url)
    print(f"watchrun: serving `watchrun dev` on {url} (this machine only, no authentication;"
          f" from another machine: ssh -L {port}:{HOST}:{port} THIS_HOST). Ctrl-C stops.",
          file=sys.stderr, flush=True)
    try:
        server.serve()
    except OSError as err:  # the port is taken, or not ours to bind
        print(f"watchrun: error: cannot listen on {HOST}:{port}: {err.strerror or err}",
              file=sys.stderr)
        return 2
    return 0
