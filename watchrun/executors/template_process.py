"""Starting a warm template process (template.py), apart from the executor that will talk to
it (warm.py): `watchrun build` starts it before it imports the engine (spawn.py), so this keeps
to the standard library's light modules (no asyncio, no logging).

A template started early may be told at once what to import, from the hint the last run left
(preload_hint.py), or else to guess it from the project's files (preload_guess.py): its imports
then run beside the engine's import and the project's loading instead of after them. The
executor that adopts it checks that those modules are among the ones it wants
(warm.TemplateLink).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time

from watchrun.executors.protocol import PICKLE_PROTOCOL, dumps
from watchrun.executors.spawn import close_all, popen_worker, worker_pipes

# what runs in the template process (template.main), and in `ps` is how it is recognised
TEMPLATE_MAIN = "from watchrun.executors.template import main; main()"
_QUIT_WAIT = 2.0  # seconds a template gets to end its workers before it is killed


class TemplateProcess:
    """A template just started: the process, our end of its control socket, our end of its
    life pipe, the read end of its stderr, and the module lists it was asked to preload so far
    (each answered by one "preloaded" message)."""

    def __init__(self, popen: subprocess.Popen[bytes], sock: socket.socket, life_fd: int,
                 stderr_fd: int, env: dict[str, str]) -> None:
        self.popen = popen
        self.sock = sock
        self.life_fd = life_fd
        self.stderr_fd = stderr_fd
        self.env = env
        self.started = time.perf_counter()
        # what it was asked to preload, in order (None: what it guesses, see guess()); it
        # answers each once imported
        self.preloads: list[list[str] | None] = []

    def preload(self, modules: list[str]) -> None:
        """Ask it to import these; a template that is gone says so by closing its socket."""
        self.preloads.append(list(modules))
        self._send(("preload", list(modules)))

    def guess(self, root: str) -> None:
        """Ask it to import what it guesses the project at `root` wants (it tells which)."""
        self.preloads.append(None)
        self._send(("guess", root))

    def asked_for(self) -> set[str]:
        """Every module it was asked to preload by name."""
        return {module for modules in self.preloads if modules for module in modules}

    def _send(self, message: tuple[object, ...]) -> None:
        with contextlib.suppress(OSError):
            self.sock.send(dumps(message, PICKLE_PROTOCOL))

    def kill(self, graceful: bool = True) -> None:
        """End it now and reap it. `graceful`: it ends its workers first (told to quit, and
        EOF on its socket and pipe); else (it never forked anything) SIGKILL at once."""
        if not graceful:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.sock.send(dumps(("quit",), PICKLE_PROTOCOL))
        self.sock.close()
        with contextlib.suppress(OSError):
            os.close(self.life_fd)
        with contextlib.suppress(OSError):
            os.close(self.stderr_fd)
        try:
            self.popen.wait(_QUIT_WAIT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()


def start_template(env: dict[str, str], preload: list[str] | None = None,
                   guess_for: str | None = None) -> TemplateProcess:
    """Start a template process; `preload`: what it imports as soon as it is up, else (if
    given) what it guesses the project at `guess_for` wants; else it waits to be told."""
    (ours, life_write, stderr_read), theirs = worker_pipes(socket.SOCK_SEQPACKET, blocking=True)
    try:
        popen = popen_worker(env, theirs, TEMPLATE_MAIN)
    except BaseException:
        close_all((ours, life_write, stderr_read))
        raise
    finally:
        close_all(theirs)
    process = TemplateProcess(popen, ours, life_write, stderr_read, env)
    if preload is not None:
        if preload:
            process.preload(preload)
    elif guess_for is not None:
        process.guess(guess_for)
    return process
