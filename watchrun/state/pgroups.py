"""Process groups left behind by a watchrun that was killed, and how to end them.

A pid alone does not name a process for long: after a reboot or enough forks it belongs to someone
else. So each group is recorded with its leader's start time, and a living leader is only killed
when its start time still matches. A group whose leader is gone but whose members live on is ours
for sure: Linux does not hand out a pid while a process group of that number still exists.
Start times come from /proc; where there is none, recorded groups are forgotten, not killed.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable

_boot_time: float | None = None
_HAVE_PROC = os.path.isdir("/proc/self")
_ticks_per_second = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _read_boot_time() -> float | None:
    global _boot_time
    if _boot_time is None:
        try:
            with open("/proc/stat", "rb") as f:
                for line in f:
                    if line.startswith(b"btime "):
                        _boot_time = float(line.split()[1])
                        break
        except OSError:
            return None
    return _boot_time


def process_start_time(pid: int) -> float | None:
    """When the process started (unix seconds, to the clock tick), or None if there is no such
    process (or no /proc to ask). Equal values mean the same process, not just the same pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 2 (the command name) is in parentheses and may itself hold spaces and ')'.
    fields = stat[stat.rindex(b")") + 2:].split()
    ticks = int(fields[19])  # field 22 of the whole line: starttime, in ticks since boot
    boot = _read_boot_time()
    if boot is None:
        return None
    return boot + ticks / _ticks_per_second


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists; it is not ours to signal (and will not be killed)
    return True


def _kill_group(pgid: int) -> bool:
    try:
        os.killpg(pgid, signal.SIGCONT)  # a stopped (paused) process would not die before this
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def should_end(pgid: int, start_time: float) -> bool:
    """Whether the recorded group is still the one we started."""
    if not _HAVE_PROC:
        return False  # without start times a reused pid cannot be told apart: leave it alone
    now = process_start_time(pgid)
    if now is not None:
        # The leader's pid is alive: ours only if it is the same process.
        return abs(now - start_time) < 0.5 / _ticks_per_second
    # The leader is gone; surviving members keep the group (and its number) alive.
    return group_alive(pgid)


def end_groups(groups: Iterable[tuple[int, float]]) -> list[int]:
    """End every recorded group that is still ours; return the pgids that were signalled."""
    ended = []
    for pgid, start_time in groups:
        if pgid > 1 and should_end(pgid, start_time) and _kill_group(pgid):
            ended.append(pgid)
    return ended
