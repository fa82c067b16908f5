"""Starting a local worker process, apart from the executor: `watchrun build` starts its first
workers here before it imports the engine, so that their start-up (tens of milliseconds of a
core each) runs beside the scheduler's own instead of after it. Only the standard library's
lightest modules: this runs before asyncio is imported.

The executor adopts these workers (`take_early`) as if it had just spawned them; those it never
asks for are killed and reaped by `end_early` before the process ends.
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

# `-c`, not `-m watchrun.executors.worker`: the module runner's imports cost a worker ~1 ms
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
    ours, theirs = socket.socketpair()
    theirs_fds = [theirs.detach()]
    ours_fds: list[int] = []
    try:
        ours.setblocking(False)
        life_read, life_write = os.pipe()
        theirs_fds.append(life_read)
        ours_fds.append(life_write)
        # stderr through a pipe of our own, not PIPE: on Python < 3.12, Process.wait() waits
        # for its pipes to close too, which a process the task forked can delay for ever
        stderr_read, stderr_write = os.pipe()
        ours_fds.append(stderr_read)
        theirs_fds.append(stderr_write)
        spawned = time.perf_counter()
        popen = subprocess.Popen(
            [sys.executable, "-c", WORKER_MAIN, *map(str, theirs_fds[:2]), str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr_write,
            pass_fds=theirs_fds[:2],
            start_new_session=True,
            env=env,
        )
    except BaseException:
        ours.close()
        for fd in ours_fds:
            os.close(fd)
        raise
    finally:
        for fd in theirs_fds:
            os.close(fd)
    return Spawned(popen, ours, life_write, stderr_read, spawned)


_early: list[Spawned] = []
_early_env: dict[str, str] | None = None


def spawn_early(count: int) -> None:
    """Start `count` workers now, for the executor this process will make."""
    global _early_env
    _early_env = worker_env()
    for _ in range(count):
        try:
            _early.append(spawn(_early_env))
        except OSError:  # the executor will try again, and say what failed
            return


def take_early(env: dict[str, str]) -> Spawned | None:
    """A worker started early in the same environment, if one is left."""
    if _early and env == _early_env:
        return _early.pop(0)
    return None


def end_early() -> None:
    """Kill and reap the workers started early that nothing took (a build with nothing to
    run, or one that stopped at a project error)."""
    while _early:
        spawned = _early.pop()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(spawned.popen.pid, signal.SIGKILL)
        spawned.popen.wait()
        spawned.sock.close()
        os.close(spawned.life_fd)
        os.close(spawned.stderr_fd)
