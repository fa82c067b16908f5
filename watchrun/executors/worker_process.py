"""A local worker's process as the executor sees it: one it spawned itself (SpawnedProcess) or
one the warm template forked for it (TemplateForkedProcess); and how a group is signalled."""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import logging
import os
import select
import signal
import subprocess

from watchrun.executors.spawn import close_all
from watchrun.executors.warm import TemplateLink

log = logging.getLogger("watchrun.executor")


class SpawnedProcess:
    """A worker process, spawned at once with subprocess.Popen, and reaped through a pidfd
    watched by the loop (Linux) or else by a thread blocked in waitpid. (asyncio's own
    subprocesses start on a later turn of the loop, after whatever the caller of submit() does
    first: the first unit of a build would wait for nothing.)"""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.pid = popen.pid
        self.returncode: int | None = None  # set once reaped: until then the pid is ours
        self._popen = popen
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = self._loop.create_future()
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # not Linux (>= 5.3)
            self._pidfd = -1
            _thread.start_new_thread(self._wait_in_thread, ())
        else:
            self._loop.add_reader(self._pidfd, self._on_exit)

    async def wait(self) -> int | None:
        # shielded: several coroutines wait, and one of them being cancelled stops no other
        return await asyncio.shield(self._exited)

    def _on_exit(self) -> None:
        """The pidfd is readable: the process has exited, waitpid does not block."""
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        _, status = os.waitpid(self.pid, 0)
        self._reaped(status)

    def _wait_in_thread(self) -> None:
        _, status = os.waitpid(self.pid, 0)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            self._loop.call_soon_threadsafe(self._reaped, status)

    def _reaped(self, status: int) -> None:
        # Popen's own returncode too: it would otherwise try to reap the pid again later
        self.returncode = self._popen.returncode = os.waitstatus_to_exitcode(status)
        self._exited.set_result(self.returncode)


class TemplateForkedProcess:
    """A worker process forked by the warm template. Not our child: the template tells its pid
    (`started`) and, once it has reaped it, how it ended. Until the template has forked it, the
    worker's ends of its pipes are kept here, so that another template (or an exec) can start
    it instead."""

    def __init__(self, child_fds: tuple[int, int, int]) -> None:
        loop = asyncio.get_running_loop()
        self.pid = 0  # 0 until forked (and then never a group we may signal)
        self.returncode: int | None = None
        self.child_fds: tuple[int, int, int] | None = child_fds
        self.link: TemplateLink | None = None  # the template asked to fork it
        self.started: asyncio.Future[int] = loop.create_future()  # the pid, 0: never started
        self._exited: asyncio.Future[int | None] = loop.create_future()
        # the process itself, whatever its pid comes to mean: readable once it has exited,
        # which is before the template reaps it and the pid may be given to another process
        self._pidfd = -1

    async def wait(self) -> int | None:
        return await asyncio.shield(self._exited)

    def forked(self, pid: int) -> None:
        self.release_fds()
        self.pid = pid
        with contextlib.suppress(AttributeError, OSError):  # gone already: ended() follows
            self._pidfd = os.pidfd_open(pid)
        if not self.started.done():
            self.started.set_result(pid)

    def exited(self) -> bool:
        """Whether it has exited, though the template may not have said so yet."""
        if self.returncode is not None:
            return True
        if self._pidfd < 0:
            return False
        return bool(select.select([self._pidfd], [], [], 0)[0])

    def ended(self, returncode: int | None) -> None:
        """It exited (or was never started: returncode None)."""
        self.release_fds()
        if not self.started.done():
            self.started.set_result(self.pid)
        self.returncode = returncode if returncode is not None else -signal.SIGKILL
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        if not self._exited.done():
            self._exited.set_result(returncode)

    def release_fds(self) -> None:
        if self.child_fds is not None:
            close_all(self.child_fds)
            self.child_fds = None


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send `sig` to a process group; one that is gone already is not an error."""
    if pgid <= 0:  # a worker not forked yet: 0 would be our own group
        return
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        log.warning("not allowed to send %s to process group %d", sig.name, pgid)
