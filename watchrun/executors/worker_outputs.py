"""A unit's declared outputs, checked and hashed by the worker that just wrote them.

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


def declared_paths(root: str, chain: list[tuple[str, str]], given: tuple[str, ...] | None
                   ) -> tuple[str, ...]:
    """The unit's declared outputs, absolute: as its job carries them (the driver's own paths),
    or, for a job that does not, from the task's header."""
    if given is not None:
        return given
    from watchrun.executors.taskmodules import declared_output_names

    return tuple(os.path.normpath(os.path.join(root, path))  # an absolute one stays itself
                 for path in declared_output_names(chain))


def missing_output(label: str, root: str, chain: list[tuple[str, str]],
                   paths: tuple[str, ...], given: bool) -> str | None:
    """Why a unit that returned normally still fails: a declared output it did not write.
    When the job carried the outputs, the task's header is read only to say where they are
    declared, once one is missing."""
    from watchrun.executors import taskmodules

    if given and all(os.path.lexists(path) for path in paths):
        return None
    return taskmodules.missing_output(label, root, chain)


def hash_written_outputs(paths: tuple[str, ...]) -> tuple[OutputHash, ...]:
    """The claims for the declared outputs that are regular files. A folder, a missing path or
    one that changed while it was read gets no claim: the driver hashes it itself."""
    if not paths:
        return ()
    from watchrun.state.content_hash import hash_file_content

    claims: list[OutputHash] = []
    for path in paths:
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
