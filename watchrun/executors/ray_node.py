"""The node side of the Ray executor: what runs inside a Ray worker process.

Ray runs a unit the way the local executor does, one level down: the Ray task (or actor) starts
a watchrun worker (`python -m watchrun.executors.worker`, the same code as locally) in a session
and process group of its own, relays its frames back to the driver as plain tuples, and signals
its group when the driver cancels, pauses or resumes the unit. So the unit's subprocesses get the
same signals on every node. Between the Ray worker and the watchrun worker sits a guard process
(ray_guard.py): a Ray worker that exits or dies (job ended, force-cancelled, killed) takes the
guard with it, and the watchrun worker, seeing its parent gone, ends its whole group (the worker
itself: ray_child.py).

This module imports neither ray nor anything heavy: the driver wraps its functions with
`ray.remote`, and a Ray worker imports it when it runs one.

Items a relay produces (tuples of plain values, the first element names it):

    ("started", host, pid)      the watchrun worker received the job
    ("yielded", data)           a pickled value (GENERATE, INNER_GENERATE)
    ("pushed",)                 run() consumed a push (COLLECT, INNER_GENERATE)
    ("end", outcome, payload, duration, log, host)

A unit's log starts with the node it runs on, `[watchrun] runs on Ray node 1a2b3c4d (10.0.0.5)`
(the driver ends it with `[watchrun] ran on Ray node …` in the same format): Ray tells the driver
where a task runs only when it returns, and the TUI reads this line to show where a unit runs
while it runs (detail.py).
        outcome "done" (payload: pickled output), "failed" (payload: the traceback),
        "cancelled" (payload: the last signal sent), "died" (payload: the cause);
        log: the unit's log as bytes when the node could not write it where the driver
        reads it (its state directory is not shared), else None.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from watchrun.executors.base import death_cause as base_death_cause
from watchrun.executors.escalation import Escalation
from watchrun.executors.node_template import NodeTemplate, third_party_imports
from watchrun.executors.protocol import Msg
from watchrun.executors.ray_child import REAP_WAIT, ChildWorker, tail
from watchrun.executors.ray_control import (
    BEAT,
    driver_alive_file,
    driver_silent,
    pause_marker,
)
from watchrun.executors.spawn import warm_supported

TICK = 0.05  # seconds between checks of a cancel that arrived as a flag (see run_call)
LOG_LIMIT = 1 << 20  # bytes of a log shipped back to the driver: its tail
RUNS_ON = "[watchrun] runs on Ray node"  # the log's first line, before the node's label
_TERMINAL = {Msg.DONE, Msg.FAILED, Msg.CANCELLED}
_ROOT, _LOG_PATH, _FRESH_LOG, _SOURCES = 3, 6, 12, 13  # indexes of JobSpec.fields()
Item = tuple[Any, ...]


class NodeJob:
    """What the driver sends with each unit: the worker's JOB fields (chain sources included),
    the cancel grace, the token that tells whether this node sees the driver's log folder, and
    for a CALL unit its name among the pause markers (see NodeControl; "" for none)."""

    __slots__ = ("control", "fields", "grace", "heartbeat", "token", "token_path")

    def __init__(
        self, fields: tuple[object, ...], grace: float, token_path: str, token: str,
        control: str = "", heartbeat: str = "",
    ) -> None:
        self.fields = fields
        self.grace = grace
        self.token_path = token_path
        self.token = token
        self.control = control
        # the driver's run, when it sends heartbeats (ray://): a unit whose driver fell silent
        # is cancelled here (see ray_control.py)
        self.heartbeat = heartbeat


# ---------------------------------------------------------------------------------------------
# One job, relayed.
# ---------------------------------------------------------------------------------------------


class Relay:
    """Runs one NodeJob on a ChildWorker and produces its items. Commands reach it as `inputs`
    items (("cancel",), ("pause",), ("resume",), ("push", seq, kwargs), ("end_input", seq))
    or, for a task cancelled by Ray (see run_call), as the `interrupt` event, read every
    TICK."""

    def __init__(self, job: NodeJob, worker: ChildWorker,
                 interrupt: threading.Event | None = None) -> None:
        self.job = job
        self.worker = worker
        self.interrupt = interrupt or threading.Event()
        self.reusable = False  # after events(): the worker may run another unit
        self._host = socket.gethostname()
        self._cancel_signal: signal.Signals | None = None
        self._escalation: Escalation | None = None  # once cancelled: its signals, in turn
        self._paused = False
        self._next_seq = 0
        self._early: dict[int, Item] = {}  # pushes that arrived before their turn
        self._pending: deque[Item] = deque()  # inputs read before the job was sent
        # a CALL unit's pause marker, which this node's NodeControl creates and removes
        self._marker = pause_marker(job.control) if job.control else None
        self._driver = driver_alive_file(job.heartbeat) if job.heartbeat else None
        self._log_copy: str | None = None  # the node-local log, when the driver's is not here

    def events(self) -> Iterator[Item]:
        started = time.monotonic()
        problem = self._prepare()
        if problem is not None:
            yield self._end("failed", problem, started)
            return
        if self._cancelled_before_start():
            yield self._end("cancelled", self._cancel_signal_name(), started)
            return
        self._stop_if_paused_already()
        self._name_the_node_in_the_log()
        self.worker.send(Msg.JOB, *self.job.fields)
        yield ("started", self._host, self.worker.guard.pid)
        while True:
            item = self._next_input()
            if item is None:  # a tick: only the flag and the clock to look at
                continue
            if item[0] == "frame":
                kind, fields = item[1], item[2]
                if kind is Msg.YIELDED:
                    yield ("yielded", fields[0])
                elif kind is Msg.PUSHED:
                    yield ("pushed",)
                elif kind in _TERMINAL:
                    yield self._end(*self._settle(kind, fields), started)
                    return
            elif item[0] == "eof":
                yield self._end(*self._died(), started)
                return
            else:
                self._command(item)

    # -- setting up ------------------------------------------------------------------------------

    def _prepare(self) -> str | None:
        root = str(self.job.fields[_ROOT])
        if not os.path.isdir(root):
            return (
                f"the project root {root} does not exist on Ray node {self._host}: every "
                "node must see the project at the same path (a shared filesystem, see "
                "docs/ray.md)"
            )
        if not _sees_driver_logs(self.job.token_path, self.job.token):
            # the state folder is not shared: log to this node, ship the log back at the end
            fd, self._log_copy = tempfile.mkstemp(prefix="watchrun-", suffix=".log")
            os.close(fd)
            fields = list(self.job.fields)
            fields[_LOG_PATH], fields[_FRESH_LOG] = self._log_copy, True
            self.job = NodeJob(tuple(fields), self.job.grace, "", "", self.job.control,
                               self.job.heartbeat)
        return None

    def _name_the_node_in_the_log(self) -> None:
        """Start the unit's log with the node it runs on (see the module's docstring). The
        worker then appends to the log instead of truncating it. Without Ray (or when the log
        cannot be written: the worker says so) the log is left to the worker."""
        label = _this_node()
        if label is None:
            return
        fields = list(self.job.fields)
        path, fresh = str(fields[_LOG_PATH]), bool(fields[_FRESH_LOG])
        try:
            with open(path, "wb" if fresh else "ab") as f:
                f.write(f"{RUNS_ON} {label}\n".encode())
        except OSError:
            return
        fields[_FRESH_LOG] = False
        self.job = NodeJob(tuple(fields), self.job.grace, self.job.token_path, self.job.token,
                           self.job.control, self.job.heartbeat)

    def _cancelled_before_start(self) -> bool:
        """Whether a cancel came before the job was sent (while Ray placed the unit, or its
        worker started): then the unit must not begin. A worker still starting is ended at
        once, as the local executor does; an idle warm one did nothing and stays reusable."""
        while True:  # what came meanwhile, in order, for the loop to handle after
            try:
                self._pending.append(self.worker.inputs.get_nowait())
            except queue.Empty:
                break
        if not (self.interrupt.is_set() or any(item[0] == "cancel" for item in self._pending)):
            return False
        if self.worker.pid is None:
            self._cancel_signal = signal.SIGKILL
            self.worker.end()
        else:
            self.reusable = self.worker.alive()
        return True

    def _cancel_signal_name(self) -> str:
        """The last signal the cancel sent; SIGINT when it had to send none (as the driver
        says of a unit cancelled before it reached the cluster)."""
        return self._cancel_signal.name if self._cancel_signal is not None else "SIGINT"

    def _next_input(self) -> Item | None:
        if self._marker is not None:
            self._follow_pause_marker(self._marker)
        if self._pending:
            return self._pending.popleft()
        if self._cancel_signal is None and (
                self.interrupt.is_set() or (self._driver is not None
                                            and driver_silent(self._driver))):
            self._cancel()
        timeout = TICK
        if self._escalation is not None:
            now = time.monotonic()
            due = self._escalation.next_signal(now)
            if due is not None:
                self._send_cancel(due)
            left = self._escalation.seconds_left(now)
            if left is not None:
                timeout = min(timeout, max(left, 0.001))
        try:
            return self.worker.inputs.get(timeout=timeout)
        except queue.Empty:
            return None

    def _stop_if_paused_already(self) -> None:
        """A CALL unit paused before it started here is stopped before it gets its job (so it
        does not run a moment first): once its worker said READY, its group is known."""
        if self._marker is None or not os.path.exists(self._marker):
            return
        deadline = time.monotonic() + REAP_WAIT * 6
        while (self.worker.pid is None and self.worker.alive() and time.monotonic() < deadline
               and not self.interrupt.is_set()):
            time.sleep(TICK / 5)
        self._follow_pause_marker(self._marker)

    def _follow_pause_marker(self, marker: str) -> None:
        """Pause or resume as the marker says (a running Ray task takes no calls: its relay
        looks at the marker at every TICK). Not before the worker said READY: its group is
        not known yet."""
        if (self._cancel_signal is None and self.worker.pid is not None
                and os.path.exists(marker) != self._paused):
            self._command(("resume",) if self._paused else ("pause",))

    # -- commands --------------------------------------------------------------------------------

    def _command(self, item: Item) -> None:
        name = item[0]
        if name == "cancel":
            if self._cancel_signal is None:
                self._cancel()
        elif name == "pause" and not self._paused and self._cancel_signal is None:
            self.worker.signal_group(signal.SIGSTOP)
            self._paused = True
        elif name == "resume" and self._paused:
            self.worker.signal_group(signal.SIGCONT)
            self._paused = False
        elif name in ("push", "end_input"):
            self._early[item[1]] = item
            while self._next_seq in self._early:  # in the driver's order, whatever Ray's
                ready = self._early.pop(self._next_seq)
                self._next_seq += 1
                if ready[0] == "push":
                    self.worker.send(Msg.PUSH, ready[2])
                else:
                    self.worker.send(Msg.END)

    def _cancel(self) -> None:
        """Start the cancel sequence (escalation.py): SIGINT now, the next signals from
        _next_input as they fall due."""
        if self.worker.pid is None:
            # the worker has not said READY: the unit has not begun, and a signal to a group
            # not known yet would be lost. End the worker now (it never runs the unit)
            self._send_cancel(signal.SIGKILL)
            return
        now = time.monotonic()
        self._escalation = Escalation(self.job.grace, now)
        first = self._escalation.next_signal(now)
        assert first is not None
        self._send_cancel(first)

    def _send_cancel(self, sig: signal.Signals) -> None:
        self._cancel_signal = sig
        self.worker.signal_group(sig)
        if self._paused:  # a stopped process cannot act on the signal
            self.worker.signal_group(signal.SIGCONT)
            self._paused = False

    # -- the end ---------------------------------------------------------------------------------

    def _settle(self, kind: Msg, fields: tuple[object, ...]) -> tuple[str, object]:
        payload = fields[0]
        if self._cancel_signal is None and not self._paused:
            self.reusable = True
        else:  # signals were sent: the worker may hold a pending one; it is not reused
            self.worker.end()
        if kind is Msg.DONE:
            return "done", payload
        if kind is Msg.CANCELLED and self._cancel_signal is not None:
            return "cancelled", self._cancel_signal.name
        return "failed", payload  # FAILED, or a KeyboardInterrupt the task raised itself

    def _died(self) -> tuple[str, object]:
        returncode = self.worker.end()
        if self._cancel_signal is not None:
            return "cancelled", self._cancel_signal.name
        cause = death_cause(returncode)
        stderr = self.worker.stderr_tail
        if stderr and "Traceback" in stderr:  # it could not even start
            cause = f"{cause}: {stderr}"
        return "died", f"the worker process died ({cause}) on Ray node {self._host}"

    def _end(self, outcome: str, payload: object, started: float) -> Item:
        log = None
        if self._log_copy is not None:
            log = _read_tail(self._log_copy, LOG_LIMIT)
            with contextlib.suppress(OSError):
                os.unlink(self._log_copy)
        return ("end", outcome, payload, time.monotonic() - started, log, self._host)


def _this_node() -> str | None:
    """This node as the driver labels it in logs (ray_nodes.Node.label): its id's first 8
    digits and its IP; None outside a Ray worker."""
    ray = sys.modules.get("ray")  # a Ray worker imported it; anywhere else there is no node
    # not connected: asking for the node would start a Ray of its own
    if ray is None or not ray.is_initialized():
        return None
    try:
        node_id = ray.get_runtime_context().get_node_id()
        address = ray.util.get_node_ip_address()
    except Exception:  # not connected, or a Ray without these: no header
        return None
    if not node_id:
        return None
    return f"{node_id[:8]} ({address})"


def _sees_driver_logs(token_path: str, token: str) -> bool:
    """Whether the driver's log folder is this node's too: it holds the driver's token."""
    if not token_path:
        return False
    try:
        with open(token_path, encoding="utf-8") as f:
            return f.read() == token
    except OSError:
        return False


def _read_tail(path: str, limit: int) -> bytes:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            data = tail(f, limit)
    except OSError:
        return b""
    if size > limit:
        data = f"[watchrun: the first {size - limit} bytes of this log were cut]\n".encode() + data
    return data


def death_cause(returncode: int | None) -> str:
    return base_death_cause(returncode, unknown="could not be reaped")


# ---------------------------------------------------------------------------------------------
# What the driver submits.
# ---------------------------------------------------------------------------------------------


class _Warm:
    """The watchrun worker this Ray worker process keeps between CALL units (Ray runs the
    tasks of one driver in the same worker processes one after another), and the template its
    workers are forked from."""

    worker: ChildWorker | None = None
    template: NodeTemplate | None = None
    lock = threading.Lock()  # the unit's thread and the watchdog (see watch_the_driver)
    busy = False  # a unit runs in this process
    watched = ""  # the heartbeat file the watchdog looks at


def watch_the_driver(job: NodeJob) -> None:
    """With heartbeats (ray://), a thread that ends what this Ray worker process keeps warm
    (its idle watchrun worker, its template) once the driver fell silent: a killed driver's
    job lives on for Ray Client's reconnect grace, and would keep them that long. A unit
    running here is its relay's to cancel."""
    if not job.heartbeat or _Warm.watched:
        return
    _Warm.watched = driver_alive_file(job.heartbeat)
    threading.Thread(target=_end_warm_when_silent, args=(_Warm.watched,), daemon=True).start()


def _end_warm_when_silent(path: str) -> None:
    while True:
        time.sleep(BEAT)
        if not driver_silent(path):
            continue
        with _Warm.lock:
            if _Warm.busy:
                continue
            worker, _Warm.worker = _Warm.worker, None
            template, _Warm.template = _Warm.template, None
        if worker is not None:
            worker.end()
        if template is not None:
            template.close()


def node_template(job: NodeJob) -> NodeTemplate | None:
    """The template for this job's workers: the one this Ray worker process has if it
    imported what the job's code imports, else a new one importing that too. Only from the
    main thread: a template ends with the thread that started it (PR_SET_PDEATHSIG)."""
    if not warm_supported() or threading.current_thread() is not threading.main_thread():
        return None
    sources = job.fields[_SOURCES]
    modules = third_party_imports(sources if isinstance(sources, dict) else None,
                                  str(job.fields[_ROOT]))
    current = _Warm.template
    if current is not None and current.serves(modules):
        return current
    if current is not None:  # ends its workers too (an idle one is replaced)
        modules |= current.modules if current.alive else set()
        current.close()
    try:
        _Warm.template = NodeTemplate(sorted(modules))
    except OSError:
        _Warm.template = None
    return _Warm.template


def run_call(job: NodeJob) -> Item:
    """A CALL unit, as a Ray task; returns its ("end", …) item.

    `ray.cancel(ref)` reaches a running task as a simulated SIGINT in this, the main thread
    (Ray calls `_thread.interrupt_main`): while the unit runs, a handler of ours turns it into
    the relay's `interrupt` event, and the relay sends SIGINT, SIGTERM and SIGKILL to the
    unit's group in turn, then returns how it ended."""
    # set by the handler, read by the relay: also a cancel that comes before the relay exists
    # (while this Ray worker starts the unit's watchrun worker)
    interrupt = threading.Event()

    def on_interrupt(signum: int, frame: object) -> None:
        interrupt.set()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    watch_the_driver(job)
    relay: Relay | None = None
    try:
        with _Warm.lock:
            _Warm.busy = True
            template = node_template(job)
            worker, _Warm.worker = _Warm.worker, None
        if worker is not None and not worker.alive():  # it died while idle (or its template)
            worker.end()
            worker = None
        if worker is None:
            worker = ChildWorker(template)
        relay = Relay(job, worker, interrupt)
        last: Item = ()
        for item in relay.events():
            last = item
        return last
    finally:
        with _Warm.lock:
            if relay is not None and relay.reusable:
                _Warm.worker = relay.worker
            _Warm.busy = False
        signal.signal(signal.SIGINT, previous)


class ScopeActor:
    """A persistent unit (GENERATE, COLLECT, INNER_GENERATE) as a Ray actor: `run` streams the
    unit's items; the other methods, in a concurrency group of their own so they are served
    while `run` streams, hand pushes and commands to it. One actor per unit, killed after."""

    def __init__(self, job: NodeJob | None = None) -> None:
        # Forked from this actor's own node template, as a call's worker is: the template
        # must be started here, on the main thread (it ends with the thread that started it,
        # and `run` runs on a thread of a concurrency group). The job says what to preload;
        # without it, a worker started through the guard. Starting now overlaps with the
        # driver's first calls.
        template = node_template(job) if job is not None else None
        self._worker = ChildWorker(template)

    def run(self, job: NodeJob) -> Iterator[Item]:
        watch_the_driver(job)
        try:
            yield from Relay(job, self._worker).events()
        finally:
            self._worker.end()

    def push(self, seq: int, kwargs: dict[str, bytes]) -> None:
        self._worker.inputs.put(("push", seq, kwargs))

    def end_input(self, seq: int) -> None:
        self._worker.inputs.put(("end_input", seq))

    def cancel(self) -> None:
        self._worker.inputs.put(("cancel",))

    def pause(self) -> None:
        self._worker.inputs.put(("pause",))

    def resume(self) -> None:
        self._worker.inputs.put(("resume",))
