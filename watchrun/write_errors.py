"""The user's message for a unit's output that could not be written under the state folder.

Two places write outputs there: the store (state/objects.py) and the worker that pickles a big
output straight into the object folder (executors/bigpickle.py), and a full disk must read the
same from either. Here, below both, because a worker starts without importing the store
(`tests/test_stats.py::test_the_worker_imports_nothing_heavy`).
"""

from __future__ import annotations

import errno


def describe_write_error(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on device writing its output"
    if exc.errno == errno.EROFS:
        return "the state folder is on a read-only file system: cannot write its output"
    return f"cannot write its output: {exc.strerror or exc}"
