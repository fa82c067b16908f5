"""Mapping a pure function over many items on every CPU, with fork().

The first load of a big project parses every task file (a thousand files: a third of a second
here). Each file's analysis depends on its text alone, so the work splits: forked children take
a share each and send back the pickled results, the parent does the first share meanwhile.
fork() (not a process pool) because the children need nothing but the code already loaded, and
start in a millisecond.
"""

from __future__ import annotations

import os
import pickle
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

MIN_PER_PROCESS = 50  # fewer items than this per process: forking costs more than it saves


def fork_map(fn: Callable[[T], R], items: Sequence[T], processes: int | None = None) -> list[R]:
    """[fn(item) for item in items], in parallel where that pays. `fn` must not depend on
    anything it changes in this process (each child's changes are lost with it). Falls back to
    doing it all here when forking is unsafe (other threads run: a child could inherit a lock
    one of them holds) or impossible."""
    count = min(processes or os.cpu_count() or 1, len(items) // MIN_PER_PROCESS)
    if count < 2 or threading.active_count() > 1 or not hasattr(os, "fork"):
        return [fn(item) for item in items]
    shares = [items[i::count] for i in range(count)]
    children: list[tuple[int, int] | None] = []  # (pid, read end of its pipe) per share
    for share in shares[1:]:
        children.append(_fork_child(fn, share))
    results: list[list[R]] = [[fn(item) for item in shares[0]]]
    for share, child in zip(shares[1:], children, strict=True):
        found: list[R] | None = _collect(*child) if child is not None else None
        # a child that could not be forked or did not finish: its share is done here
        results.append(found if found is not None else [fn(item) for item in share])
    merged: list[R] = [None] * len(items)  # type: ignore[list-item]
    for i, share_results in enumerate(results):
        merged[i::count] = share_results
    return merged


def _fork_child(fn: Callable[[T], R], share: Sequence[T]) -> tuple[int, int] | None:
    try:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
    except OSError:
        return None
    if pid == 0:  # the child: compute, send, leave without running any cleanup of the parent's
        code = 0
        try:
            os.close(read_fd)
            data = pickle.dumps([fn(item) for item in share], pickle.HIGHEST_PROTOCOL)
            with open(write_fd, "wb") as out:
                out.write(data)
        except BaseException:  # the parent sees the exit code and does the share itself
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    return pid, read_fd


def _collect(pid: int, read_fd: int) -> list[R] | None:
    with open(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        return None
    result: list[R] = pickle.loads(data)
    return result
