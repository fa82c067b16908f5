"""What a build leaves behind: results, unit states with the manifests that explain the next
build's reasons, generator iterations; committed in batches.

The driver (`engine.scheduler`) tells the recorder what happened; the plan never sees the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from watchrun.engine.resolve import Resolution, Resolver
from watchrun.engine.scopes import Key, encode_iteration
from watchrun.project.model import Task
from watchrun.state.hashing import FileHasher
from watchrun.state.store import ResultRecord, StateFull, Store, UnitState, UnitStatus

COMMIT_EVERY = 0.05  # seconds: results are committed in batches, never later than this
RETRY_FULL = 1.0  # seconds between two commits tried while the disk is full
# ...and never more than this many bytes of results in one transaction: what a full disk (or
# a crash) can take from a build is bounded, and a disk that fills mid-build keeps what fitted
COMMIT_BYTES = 1 << 20


class Recorder:
    def __init__(self, store: Store, hasher: FileHasher, resolver: Resolver,
                 dry_run: bool = False) -> None:
        self.store = store
        self.hasher = hasher
        self.resolver = resolver
        self.dry_run = dry_run  # a dry run records nothing
        self._manifest_ids: dict[str, str] = {}  # static identity -> stored manifest id
        self._commit_handle: asyncio.TimerHandle | None = None
        self._state_full = False  # the last commit failed for want of space (said once)
        # called after each commit: what is committed can be dropped from memory
        self.committed: Callable[[], None] | None = None

    def ran(self, task: Task, resolution: Resolution, output: str, outputs: dict[str, str],
            duration: float) -> dict[str, str | None] | None:
        """Record a unit that ran. Race-safe completion: if its tracked inputs are not the
        ones it started with, it is not recorded as clean; then the inputs as it left them
        are returned (None when clean)."""
        changed: dict[str, str | None] | None = None
        if task.inputs:
            now = self.resolver.hash_inputs(task)
            if now != resolution.inputs:
                changed = now
                self.resolver.forget_static(task.name)
        if changed is None:
            record = ResultRecord(resolution.task, resolution.signature, output, outputs,
                                  duration, time.time())
            self.store.record_result(record)
            self.resolver.note_result(record)
        self.state(resolution, UnitStatus.OK if changed is None else UnitStatus.STALE, output,
                   duration, None)
        return changed

    def found_clean(self, resolution: Resolution, result: ResultRecord) -> None:
        """A unit found clean under a signature other than its last one (a change was
        reverted, or another build's result matched): record it as the latest state, so that
        `show` and the next reasons refer to what is current."""
        if self.dry_run:
            return
        if self.resolver.last_signature(resolution.task, resolution.iter) != \
                resolution.signature:
            self.state(resolution, UnitStatus.OK, result.output, result.duration, None)

    def state(self, resolution: Resolution, status: UnitStatus, output: str | None,
              duration: float, error: str | None) -> None:
        if resolution.iter:  # every iteration of a task shares one manifest: store it once
            manifest_id = self._manifest_ids.get(resolution.static)
            if manifest_id is None:
                manifest_id, blob = resolution.unit_manifest(with_upstream=False)
                self.store.put_manifest(manifest_id, blob)
                self._manifest_ids[resolution.static] = manifest_id
        else:
            manifest_id, blob = resolution.unit_manifest()
            self.store.put_manifest(manifest_id, blob)
        state = UnitState(resolution.task, resolution.iter, resolution.signature, status,
                          manifest_id, output, duration, error, time.time())
        self.store.set_unit_state(state)
        self.resolver.note_state(state)

    def iteration(self, name: str, signature: str, index: int, key: Key, value: str) -> None:
        self.store.record_iteration(name, signature, index, encode_iteration(key, value))

    def generator_complete(self, name: str, signature: str, count: int) -> None:
        self.store.mark_generator_complete(name, signature, count)

    def soon(self) -> None:
        """Commit within COMMIT_EVERY seconds (one commit for every result meanwhile), or now
        when the results waiting make COMMIT_BYTES."""
        if self.store.uncommitted_bytes >= COMMIT_BYTES and not self._state_full:
            self.flush()
            return
        if self._commit_handle is None:
            loop = asyncio.get_running_loop()
            self._commit_handle = loop.call_later(COMMIT_EVERY, self.flush)

    def flush(self) -> str | None:
        """Commit what was recorded. A disk too full for it is not an end: the store keeps
        the rows, the commit is tried again every RETRY_FULL seconds (and at exit). Returns
        the message to show the first time that happens, else None."""
        if self._commit_handle is not None:
            self._commit_handle.cancel()
            self._commit_handle = None
        if self.dry_run:
            return None
        self.hasher.flush()
        try:
            self.store.commit()
        except StateFull as full:
            first = not self._state_full
            self._state_full = True
            with contextlib.suppress(RuntimeError):  # no loop: the caller's commit says it
                loop = asyncio.get_running_loop()
                self._commit_handle = loop.call_later(RETRY_FULL, self.flush)
            return f"{full}; results are kept in memory and saved when space allows" \
                if first else None
        self._state_full = False
        if self.committed is not None:
            self.committed()
        return None
