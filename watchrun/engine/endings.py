"""Units that end without a value: failures, retries, timeouts, cancels, and stopping the
build; what they block downstream."""

from __future__ import annotations

import time

from watchrun.engine import events as ev
from watchrun.engine.code_on_disk import written_since
from watchrun.engine.driver_state import (
    DriverState,
    Launched,
)
from watchrun.engine.locations import log_path
from watchrun.engine.retries import Ending, Retry
from watchrun.executors.base import (
    EventKind,
    ExecEvent,
    Mode,
    UnitKey,
)
from watchrun.state.store import UnitStatus


class Endings(DriverState):
    """The driver's part that handles units ending without a value."""

    def _cancelled(self, run: Launched, event: ExecEvent, duration: float) -> None:
        self.recorder.state(run.resolution, UnitStatus.CANCELLED, None, duration, None)
        if event.key.task in self._cutoff and not event.key.iter:
            self._new_value_of_waited(event.key.task, None)
        consumer = self.consumers.get(event.key.task)
        self.summary.cancelled += 1
        self.bus.publish(ev.UnitCancelled(task=event.key.task, iter=event.key.iter,
                                          signal=event.signal or "SIGINT", node=run.node))
        if consumer is None or not consumer.blocked:  # else cancelled by us: its scope broke
            self._block_consumers(event.key.task, f"{event.key.format()} was cancelled")

    def _time_out(self, key: UnitKey, run: Launched, seconds: float) -> None:
        state = self.running.get(key)
        if (state is None or state.payload is not run or state.superseded
                or state.finished is not None or run.failure is not None):
            return  # it ended, or is ending for another reason
        run.failure = f"timed out after {seconds:g} s"
        self._timed_out[key] = run
        self.executor.cancel(key)  # its CANCELLED then fails it with run.failure

    def _failed_or_retried(self, run: Launched, event: ExecEvent, error: str,
                           duration: float) -> None:
        """A unit ended without a value: run it again if its task's `retries` allow (task
        units only: a generator's or collector's values have streamed on already)."""
        key = event.key
        timed_out = self._timed_out.pop(key, None) is run
        if not timed_out and self._waits_for_reload(run, key):
            return
        if run.mode is Mode.CALL:
            ending = (Ending.TIMED_OUT if timed_out else Ending.REFUSED if event.refused else
                      Ending.DIED if event.kind is EventKind.DIED else Ending.FAILED)
            retry = self._attempts.after_failure(key, run.task.retries, ending, error,
                                                 self.stopping)
            if retry is not None:
                self._retry(key, run, retry)
                return
            history = self._attempts.history(key, run.task.retries, error)
            self._attempts.forget(key)
            if history is not None:
                error = f"{error.rstrip()}\n{history}"
        self._failed(run, error, duration)

    def _waits_for_reload(self, run: Launched, key: UnitKey, done_after: float | None = None
                          ) -> bool:
        """dev: a task unit that may have run code its signature was not made of, because its
        task's code files were written after the project was last read (the watcher's delay)
        or have an error. A failure then is not the plan's code failing (any write since the
        read counts: the worker may have read the file at any time); a success (`done_after`:
        the seconds it ran, as its worker measured) only if the write came before it started:
        otherwise it read the planned code, and its result is the plan's. Such a unit is said
        to be cancelled and waits for the reload, which decides (the same code runs it
        again). True if so."""
        if run.mode is not Mode.CALL or self.code_read_ns is None:
            return False
        if done_after is None:
            if not (run.task.name in self.plan.code_held or written_since(
                    self.project, run.task.name, self.code_read_ns)):
                return False
        elif not written_since(self.project, run.task.name, self.code_read_ns,
                               time.time_ns() - int(done_after * 1e9)):
            return False
        self.bus.publish(ev.UnitCancelled(task=key.task, iter=key.iter, signal="none",
                                          node=run.node))
        self.plan.code_held = self.plan.code_held | {key.task}
        self.plan.want(key, run.resolution)
        return True

    def _retry(self, key: UnitKey, run: Launched, retry: Retry) -> None:
        path = log_path(self.project.config, key.task, key.iter)
        try:
            with open(path, "a", encoding="utf-8") as log_file:
                log_file.write(f"\n--- watchrun: {retry.log_line()} ---\n")
        except OSError:
            pass  # the event still says it; the next attempt's worker reports a log it cannot open
        self.bus.publish(ev.UnitRetry(task=key.task, iter=key.iter, attempt=retry.attempt,
                                      cause=retry.cause))
        self.plan.want(key, run.resolution)

    def _failed(self, run: Launched, error: str, duration: float) -> None:
        resolution = run.resolution
        self.recorder.state(resolution, UnitStatus.FAILED, None, duration, error)
        scope = self.graph.scope.get(resolution.task, ())
        if scope:  # its iteration can still be released (streaming.py)
            self.readiness.unit_failed(scope[-1], resolution.task, resolution.iter)
        if resolution.task in self._cutoff and not resolution.iter:
            self._new_value_of_waited(resolution.task, None)
        self.summary.failed += 1
        self.bus.publish(ev.UnitFailed(task=resolution.task, iter=resolution.iter,
                                       error=error, node=run.node))
        unit = UnitKey(resolution.task, resolution.iter).format()
        self._block_consumers(resolution.task, f"{unit} failed")
        for down in sorted(self.graph.downstream_closure([resolution.task]) - {resolution.task}):
            if down in self.needed and down not in self.summary.blocked:
                self.summary.blocked.append(down)
        if self.options.fail_fast:
            self._stop()

    def _block_consumers(self, name: str, why: str) -> None:
        """A unit that will never have a value: the consumers of its scope cannot complete."""
        for down in self.graph.downstream_closure([name]):
            c = self.consumers.get(down)
            if c is None or c.blocked:
                continue
            c.blocked = why
            if UnitKey(down) in self.running:
                self.executor.cancel(UnitKey(down))

    # -- stopping ----------------------------------------------------------------------------
    def _stop(self) -> None:
        self.stopping = True
        self.plan.clear()
        for key in list(self.running):
            self.executor.cancel(key)
        self._pump()

    def interrupt(self, code: int = 130) -> None:
        """Ctrl-C (or SIGTERM, SIGHUP): stop scheduling and cancel every running unit."""
        self.summary.interrupted = code
        self._stop()
