"""`python -m watchrun.executors.ray_guard CTL PARENT`: starts a watchrun worker for a Ray worker.

Why a process in between: when a Ray worker exits, Ray sends SIGKILL to its direct children
(RAY_kill_child_processes_on_worker_exit, on by default). A watchrun worker killed that way
cannot end its process group, and the unit's subprocesses would outlive it. So the Ray worker's
direct child is this guard, and the watchrun worker is the guard's child: when the guard dies,
however it dies, the worker's own parent-death guards (the life pipe, PR_SET_PDEATHSIG) end the
worker's whole group. The guard dies with the Ray worker (PR_SET_PDEATHSIG with SIGKILL), and
exits when the worker does, the way it did (same exit code, or killed by the same signal).

CTL is the worker's end of the control socket, passed through. PARENT is the Ray worker's pid.
Stdlib only and no subprocess module: the guard must start fast.
"""

from __future__ import annotations

import os
import signal
import sys

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# a signal meant for the Ray worker's group is not for the guard: the unit's group is its own
_IGNORED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no libc: the worker's life pipe still ends it
            pass
    if os.getppid() != parent_pid:  # the Ray worker died before we could ask
        os._exit(1)


def _start_worker(ctl_fd: int) -> int:
    life_read, life_write = os.pipe()  # the write end stays here only: EOF = the guard died
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()  # the unit's process group; signals sent to it do not reach the guard
            # what the guard ignores, and what a Ray worker blocks (SIGINT), is inherited
            # across exec: the unit must get the cancel sequence
            for sig in _IGNORED:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            os.close(life_write)
            os.set_inheritable(ctl_fd, True)
            os.set_inheritable(life_read, True)
            argv = [sys.executable, "-m", "watchrun.executors.worker"]
            os.execv(sys.executable, [*argv, str(ctl_fd), str(life_read), str(os.getppid())])
        finally:
            os._exit(127)
    os.close(life_read)
    os.close(ctl_fd)
    return pid


def _exit_like(status: int) -> None:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def main(argv: list[str]) -> None:
    ctl_fd, parent_pid = int(argv[1]), int(argv[2])
    for sig in _IGNORED:
        signal.signal(sig, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    pid = _start_worker(ctl_fd)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:  # pragma: no cover - reaped by someone else
            os._exit(1)
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            _exit_like(status)


if __name__ == "__main__":
    main(sys.argv)
