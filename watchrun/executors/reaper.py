"""Ending every process a unit started, including those that left its process group.

A unit's subprocesses normally share its process group, and signals sent to the group reach
them. A process that calls setsid() (`start_new_session=True`, a daemon's double fork) leaves
the group, and its parent may exit so that it is no longer anyone's child we know. On Linux two
things keep such a process findable:

- a *child subreaper* (prctl PR_SET_CHILD_SUBREAPER): an orphan below it is re-parented to it
  instead of to init, so every descendant stays in its process tree;
- the tree itself, read from /proc (each process's parent pid): everything below a process can
  be listed and killed, whatever its group or session.

Other systems have neither: there a unit's descendants are ended through its process group only
(see README, "Processes").

Imported by the worker and the template: standard library only, nothing at import but constants.
"""

from __future__ import annotations

import os
import signal
import sys
import time

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_PR_SET_CHILD_SUBREAPER = 36
LINUX = sys.platform.startswith("linux")
# rounds of "list, kill, reap" before giving up on a tree that keeps forking (each round
# kills what it found, so only a process that forks faster than SIGKILL lands survives one)
_ROUNDS = 200


def prctl(option: int, value: int) -> bool:
    """Call prctl(2); False where there is none (not Linux, no libc to ask)."""
    if not LINUX:
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def become_subreaper() -> bool:
    """Orphans below this process are re-parented to it (Linux >= 3.4). Not inherited by fork."""
    return prctl(_PR_SET_CHILD_SUBREAPER, 1)


def die_with_parent(sig: int) -> bool:
    """The kernel sends `sig` to this process when its parent (the thread that forked it)
    ends. Cleared by fork; kept across exec."""
    return prctl(_PR_SET_PDEATHSIG, sig)


def has_children() -> bool:
    """Whether this process has any child, alive or a zombie (one system call, no /proc)."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


# A process as /proc showed it: (pid, start time in clock ticks since boot). The start time
# tells it from a later process that got the same pid after it ended (pids wrap around).
Seen = tuple[int, int]


def _stat(pid: int | str) -> tuple[int, int] | None:
    """(parent pid, start time) of a process, or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:  # ended meanwhile
        return None
    # field 2 (the command name) is in parentheses and may hold spaces and ')'
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[1]), int(fields[19])


def _parents() -> dict[int, list[Seen]]:
    """Parent pid -> its children, for every process /proc shows."""
    children: dict[int, list[Seen]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (found := _stat(name)) is not None:
            children.setdefault(found[0], []).append((int(name), found[1]))
    return children


def descendants(pid: int, skip: frozenset[int] = frozenset()) -> list[Seen]:
    """Every process below `pid` (children first), leaving out the subtrees of `skip`."""
    if not LINUX:
        return []
    tree = _parents()
    found: list[Seen] = []
    stack = [child for child in tree.get(pid, ()) if child[0] not in skip]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(tree.get(current[0], ()))
    return found


def kill_all(processes: list[Seen]) -> None:
    """SIGKILL each process, if it is still the one that was seen: through a pidfd opened
    first and a start time read after, so that a pid reused meanwhile is never signalled."""
    for pid, started in processes:
        try:
            handle = os.pidfd_open(pid)
        except (AttributeError, OSError):  # gone (or no pidfds: Linux < 5.3)
            continue
        try:
            now = _stat(pid)
            if now is not None and now[1] == started:
                signal.pidfd_send_signal(handle, signal.SIGKILL)
        except OSError:  # it ended meanwhile
            pass
        finally:
            os.close(handle)


def reap_any() -> list[tuple[int, int]]:
    """Reap every child that has ended: [(pid, wait status)]."""
    reaped: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append((pid, status))


def end_descendants(deadline: float = 5.0) -> int:
    """Kill every process below this one and reap those that become our children (all of
    them, if this process is a subreaper). For a worker between units: nothing the last unit
    started survives it. Returns how many processes were killed."""
    if not has_children():
        return 0
    if not LINUX:  # no /proc to list them: the group's signal reached those it could
        reap_any()
        return 0
    me = os.getpid()
    killed = 0
    give_up = time.monotonic() + deadline
    for _ in range(_ROUNDS):
        found = descendants(me)
        kill_all(found)
        killed += len(found)
        reap_any()
        if not has_children() or time.monotonic() > give_up:
            break
        if not found:  # children that are not in /proc yet, or zombies about to be reaped
            time.sleep(0.001)
    return killed
