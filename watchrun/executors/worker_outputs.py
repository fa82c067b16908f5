"""A unit's declared outputs, hashed by the worker that just wrote them.

The worker has the files in its page cache and the workers of a build hash in parallel, where the
driver, on its single loop, would read every output back once more. What the worker sends with
DONE is a claim, not a fact: (absolute path, stat key, blake3) per regular file, taken with the
stat before and after reading agreeing. The driver uses a claim only while the file's stat key is
still the one claimed (`FileHasher.hash_files_claimed`); anything written since is hashed again.
"""

from __future__ import annotations

import os
import stat as statmod

# (absolute path, size, mtime_ns, inode, ctime_ns, blake3 hex): plain values, as frames carry
OutputHash = tuple[str, int, int, int, int, str]


def hash_written_outputs(root: str, chain: list[tuple[str, str]]) -> tuple[OutputHash, ...]:
    """The claims for the task's declared outputs that are regular files. A folder, a missing
    path or one that changed while it was read gets no claim: the driver hashes it itself."""
    from watchrun.executors.taskmodules import declared_output_names

    outputs = declared_output_names(chain)
    if not outputs:
        return ()
    from watchrun.state.content_hash import hash_file_content

    claims: list[OutputHash] = []
    for declared in outputs:
        path = os.path.normpath(os.path.join(root, declared))  # an absolute one stays itself
        try:
            before = os.stat(path)
            if not statmod.S_ISREG(before.st_mode):
                continue
            digest = hash_file_content(path, before.st_size)
            after = os.stat(path)
        except OSError:
            continue  # the driver's own look says what it is
        key = (before.st_size, before.st_mtime_ns, before.st_ino, before.st_ctime_ns)
        if key == (after.st_size, after.st_mtime_ns, after.st_ino, after.st_ctime_ns):
            claims.append((path, *key, digest))
    return tuple(claims)
