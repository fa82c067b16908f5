"""`watchrun dev --web`: the same Textual app, served to a browser by textual-serve.

textual-serve runs one app process per browser connection: each page that connects starts
`watchrun dev` (the TUI, drawn through Textual's web driver) and ends it when the page closes
or `q` is pressed. That process is the writer of the project, as in a terminal: a second page
opened at the same time is refused by the project's lock, with the usual message.

The server listens on 127.0.0.1 only and has no authentication: anyone who can reach the port
can steer the session. From another machine, forward the port over SSH.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

HOST = "127.0.0.1"
DEFAULT_PORT = 8000
# set in the served process's environment: its stdout is Textual's web driver, not a terminal,
# and it must draw the TUI all the same
WEB_SESSION_ENV = "WATCHRUN_WEB_SESSION"


def in_web_session() -> bool:
    return os.environ.get(WEB_SESSION_ENV) == "1"


def session_command(root: Path, targets: list[str], jobs: int | None) -> str:
    """The shell line textual-serve runs per connection (it starts it with a shell)."""
    argv = [sys.executable, "-m", "watchrun", "-C", os.fspath(root), "dev"]
    if jobs is not None:
        argv += ["-j", str(jobs)]
    argv += ["--", *targets] if targets else []
    return shlex.join(argv)


def serve(root: Path, targets: list[str], jobs: int | None, port: int) -> int:
    """Serve until Ctrl-C or SIGTERM; 0 then, 2 if the server cannot start."""
    try:
        from textual_serve.server import Server
    except ImportError:
        print("watchrun: error: --web needs textual-serve: pip install 'watchrun[web]'",
              file=sys.stderr)
        return 2
    os.environ[WEB_SESSION_ENV] = "1"  # the sessions inherit the server's environment
    url = f"http://{HOST}:{port}"
    server = Server(session_command(root, targets, jobs), host=HOST, port=port,
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
