"""Starting a local worker process, apart from the executor: `watchrun build` starts its first
workers here before it imports the engine, so that their start-up runs beside the
scheduler's own instead of after it. Only the standard library's
lightest modules: this runs before asyncio is imported.

The executor adopts these workers (`EarlyWorkers`, handed down to it) as if it had just spawned
them; those it never asks for are killed and reaped by `EarlyWorkers.end` before the process
ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import watchrun

TYPE_CHECKING = False
if TYPE_CHECKING:
    from watchrun.executors.template_process import TemplateProcess

# `-c`, not `-m watchrun.executors.worker`: a worker starts without the module runner's imports
WORKER_MAIN = "from watchrun.executors.worker import main; main()"


class Spawned:
    """A worker process just started: our end of its control socket (non-blocking), our end
    of its life pipe, the read end of its stderr, and when it was spawned (perf_counter)."""

    __slots__ = ("life_fd", "popen", "sock", "spawned", "stderr_fd")

    def __init__(self, popen: subprocess.Popen[bytes], sock: socket.socket, life_fd: int,
                 stderr_fd: int, spawned: float) -> None:
        self.popen = popen
        self.sock = sock
        self.life_fd = life_fd
        self.stderr_fd = stderr_fd
        self.spawned = spawned


def worker_env() -> dict[str, str]:
    """This environment, with the directory holding the watchrun package first on PYTHONPATH,
    so that the worker imports the same watchrun whatever the cwd."""
    env = dict(os.environ)
    home = os.path.dirname(os.path.dirname(os.path.abspath(watchrun.__file__)))
    paths = [home, *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def spawn(env: dict[str, str]) -> Spawned:
    """Start a worker in a session (and process group) of its own. The child's ends of its
    pipes are closed here, and ours too if anything fails (too many open files, say)."""
    ours, theirs = worker_pipes()
    try:
        spawned = time.perf_counter()
        popen = popen_worker(env, theirs)
    except BaseException:
        close_all(ours)
        raise
    finally:
        close_all(theirs)
    sock, life_fd, stderr_fd = ours
    assert isinstance(sock, socket.socket)
    return Spawned(popen, sock, int(life_fd), int(stderr_fd), spawned)


# our ends: (control socket, write end of the life pipe, read end of the worker's stderr);
# the worker's: (control socket fd, read end of the life pipe, write end of its stderr)
Ours = tuple[socket.socket, int, int]
Theirs = tuple[int, int, int]


def worker_pipes(kind: int = socket.SOCK_STREAM, blocking: bool = False
                 ) -> tuple[Ours, Theirs]:
    """The descriptors a worker (or the warm template: a SOCK_SEQPACKET channel, read
    blocking) is started with: ours and its own, all to be closed."""
    ours_sock, theirs_sock = socket.socketpair(socket.AF_UNIX, kind)
    theirs_fds = [theirs_sock.detach()]
    ours_fds: list[int] = []
    try:
        ours_sock.setblocking(blocking)
        life_read, life_write = os.pipe()
        theirs_fds.append(life_read)
        ours_fds.append(life_write)
        # stderr through a pipe of our own, not PIPE: on Python < 3.12, Process.wait() waits
        # for its pipes to close too, which a process the task forked can delay for ever
        stderr_read, stderr_write = os.pipe()
        ours_fds.append(stderr_read)
        theirs_fds.append(stderr_write)
    except BaseException:
        ours_sock.close()
        close_all(tuple(ours_fds) + tuple(theirs_fds))
        raise
    return (ours_sock, ours_fds[0], ours_fds[1]), (theirs_fds[0], theirs_fds[1], theirs_fds[2])


def popen_worker(env: dict[str, str], theirs: Theirs, main: str = WORKER_MAIN
                 ) -> subprocess.Popen[bytes]:
    """Exec a worker (or, with its `main`, the warm template) with its descriptors (ours to
    close afterwards)."""
    ctl, life, stderr = theirs
    return subprocess.Popen(
        [sys.executable, "-c", main, str(ctl), str(life), str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        pass_fds=(ctl, life),
        start_new_session=True,
        env=env,
    )


def close_all(fds: tuple[socket.socket | int, ...]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            if isinstance(fd, socket.socket):
                fd.close()
            else:
                os.close(fd)


class EarlyWorkers:
    """The workers (or the warm template) `watchrun build` starts before it imports the
    engine, held until the executor it then makes adopts them (`take`, `take_template`).
    The console script makes one, hands it down to that executor, and calls `end` before the
    process ends: what nothing took is killed and reaped there. A holder nothing was started
    in gives nothing, so an executor made without the console script spawns its own."""

    def __init__(self) -> None:
        self._env: dict[str, str] | None = None  # the environment they were started in
        self._workers: list[Spawned] = []
        self._templates: list[TemplateProcess] = []

    def start(self, count: int, root: str | None = None) -> None:
        """Start what the executor this process will make needs first: the warm template
        where there is one (Linux), importing at once what the last run in the project `root`
        preloaded (see preload_hint.py) or, in a project that has no such hint, what the
        template guesses from its files (preload_guess.py); else `count` workers."""
        env = self._env = worker_env()
        if warm_supported():
            from watchrun.executors.preload_hint import read_hint
            from watchrun.executors.template_process import start_template

            hint = None if root is None else read_hint(root)
            with contextlib.suppress(OSError):  # the executor will try again, and say what failed
                self._templates.append(start_template(env, hint, guess_for=root))
            return
        for _ in range(count):
            try:
                self._workers.append(spawn(env))
            except OSError:  # the executor will try again, and say what failed
                return

    def take(self, env: dict[str, str]) -> Spawned | None:
        """A worker started early in the same environment, if one is left."""
        if self._workers and env == self._env:
            return self._workers.pop(0)
        return None

    def take_template(self, env: dict[str, str]) -> TemplateProcess | None:
        """The template started early, if it was started in the same environment."""
        if self._templates and env == self._env:
            return self._templates.pop()
        return None

    def end(self) -> None:
        """Kill and reap the workers (and the template) started early that nothing took (a
        build with nothing to run, or one that stopped at a project error)."""
        while self._templates:
            self._templates.pop().kill(graceful=False)
        while self._workers:
            spawned = self._workers.pop()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(spawned.popen.pid, signal.SIGKILL)
            spawned.popen.wait()
            spawned.sock.close()
            os.close(spawned.life_fd)
            os.close(spawned.stderr_fd)


def warm_supported() -> bool:
    """Whether workers fork from a warm template here (fork, subreapers, /proc: Linux)."""
    return sys.platform.startswith("linux") and not os.environ.get("WATCHRUN_NO_TEMPLATE")
