"""A Job (base.py, the scheduler's) as it crosses to a worker: a protocol.JobSpec, whose
fields() tuple is what the JOB frame carries. The one place a Job becomes plain values."""

from __future__ import annotations

import os
from pathlib import Path

from watchrun.executors import protocol as proto
from watchrun.executors.base import Job, Mode, UnitKey


def job_spec(job: Job, objects: str | None = None, credit: int | None = None
             ) -> proto.JobSpec:
    """The plain-value form of a job. `objects`: the store's object folder, where the worker
    pickles a big output (bigpickle.py); None: outputs travel as bytes in the frames.
    `credit`: the yields it may send unread (yield_credit.py; None: no limit)."""
    key = job.key
    ctx = job.ctx
    iteration = ctx.get("iter", key.iter)
    assert isinstance(iteration, (tuple, list))
    root = _root_text(job.root)
    ctx_root = ctx.get("root", root)
    return proto.JobSpec(
        job_label(key),
        key.task,
        _MODE_VALUES[job.mode],
        root,
        _absolute_chain(job.chain),
        job.kwargs,
        _absolute(job.log_path),
        job.start,
        job.gather_kwargs,
        str(ctx.get("name", key.task)),  # ctx_name
        root if ctx_root == root else _absolute(str(ctx_root)),  # ctx_root
        tuple(iteration),  # ctx_iter
        job.fresh_log,
        None,  # sources: read by the worker from the files
        objects,
        job.outputs,
        None if job.follows is None else job.follows.fields(),
        credit,
    )


def job_frame(job: Job, objects: str | None = None, credit: int | None = None) -> bytes:
    """The JOB frame that hands the job to a local worker."""
    return proto.encode(proto.Msg.JOB, *job_spec(job, objects, credit).fields())


# The scheduler hands the same objects for every unit of a task (the project's root Path, a
# task's chain list), so their absolute forms are kept, keyed by identity (the object is kept
# too, so its id cannot be reused).

_MODE_VALUES = {mode: mode.value for mode in Mode}


class _LastRoot:
    path: object = None
    text = ""


def _root_text(root: Path) -> str:
    if root is not _LastRoot.path:
        _LastRoot.text = _absolute(root)
        _LastRoot.path = root
    return _LastRoot.text


def job_label(key: UnitKey) -> str:
    """key.format(), the common cases without its generator."""
    if not key.iter:
        return key.task
    if len(key.iter) == 1:
        return f"{key.task}[{key.iter[0]}]"
    return key.format()


_CHAINS: dict[int, tuple[list[tuple[Path, str]], list[tuple[str, str]]]] = {}


def _absolute_chain(chain: list[tuple[Path, str]]) -> list[tuple[str, str]]:
    known = _CHAINS.get(id(chain))
    if known is not None and known[0] is chain:
        return known[1]
    absolute = [(_absolute(path), package) for path, package in chain]
    if len(_CHAINS) >= 4096:  # each reload of a project brings new lists: forget the old
        _CHAINS.clear()
    _CHAINS[id(chain)] = (chain, absolute)
    return absolute


def _absolute(path: str | os.PathLike[str]) -> str:
    text = path if isinstance(path, str) else os.fspath(path)
    # the worker changes directory: relative paths would mean something else there. (A leading
    # slash is what os.path.isabs looks for on POSIX, the only system this executor runs on.)
    return text if text[:1] == "/" else os.path.abspath(text)
