"""A worker's guards: it dies with its parent (and takes its process group with it), its helper
threads take no signals, and it yields the CPU to the executor that feeds it."""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # see worker.py
import _thread
import contextlib
import os
import sys

TYPE_CHECKING = False  # the worker starts without `typing` (see worker.py)
if TYPE_CHECKING:
    from collections.abc import Callable

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# Delivered by the kernel when the parent dies; its handler kills the whole group. Not SIGKILL:
# that would kill this process at once and its children would survive (see die_with_parent).
_PARENT_DEATH_SIGNAL = _signal.SIGHUP


def end_group() -> None:
    os.killpg(os.getpgrp(), _signal.SIGKILL)


def start_thread(fn: Callable[..., object], *args: object) -> None:
    """Start a helper thread that receives no signals. A signal sent to the process goes to any
    thread that does not block it, and Python runs the handler in the main thread only when that
    thread runs Python code again: a SIGINT that a helper thread took would not interrupt the
    main thread waiting in a read (a collector waiting for input)."""
    asynchronous = _signal.valid_signals() - _FAULTS
    mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, asynchronous)  # inherited by the thread
    try:
        _thread.start_new_thread(fn, args)
    finally:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)


# signals the kernel sends to the thread that caused them: never to be blocked
_FAULTS = {
    _signal.SIGSEGV,
    _signal.SIGBUS,
    _signal.SIGFPE,
    _signal.SIGILL,
    _signal.SIGTRAP,
    _signal.SIGSYS,
    _signal.SIGABRT,
}


def _watch_parent(life_fd: int) -> None:
    """Block on the life pipe; EOF means the parent is gone: end the whole group."""
    try:
        while os.read(life_fd, 512):
            pass
    except OSError:  # a task closed our descriptor: this guard is lost, the signal remains
        return
    end_group()


class _Parent:
    pid = 0


def _on_parent_death(signum: int, frame: object) -> None:
    # the kernel also sends it when the parent's *thread* that spawned us ends: check
    if os.getppid() != _Parent.pid:
        end_group()


def die_with_parent(parent_pid: int, life_fd: int) -> None:
    """Two guards: the life pipe (a thread, works while the GIL can be had) and the kernel's
    parent-death signal (Linux). The signal is a catchable one whose handler kills the group:
    with SIGKILL the worker would die at once, before its thread could end the task's
    subprocesses (the kernel sends it right after closing the parent's descriptors)."""
    _Parent.pid = parent_pid
    start_thread(_watch_parent, life_fd)
    if sys.platform.startswith("linux"):
        _signal.signal(_PARENT_DEATH_SIGNAL, _on_parent_death)
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(_PARENT_DEATH_SIGNAL), 0, 0, 0)
        except (OSError, AttributeError):  # no libc to ask: the life pipe alone
            pass
    if os.getppid() != parent_pid:  # the parent died before we could ask to be told
        end_group()


def batch_scheduling() -> None:
    """Ask Linux to treat this process (and the task's subprocesses) as batch work: same CPU
    share, but waking up does not preempt the running process. Without it, every frame the
    parent sends switches the CPU to the worker at once, and the parent, which feeds all the
    workers, waits behind one of them (on 2 cores: half the throughput)."""
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is not None:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, policy, os.sched_param(0))
