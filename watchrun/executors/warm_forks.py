"""Workers forked by the warm template (template.py, warm.py), for the local executor.

Workers are forked by a template process that has the tasks' libraries imported (`preload`,
Linux). Until the template is ready (its imports done), the workers wait; a template that dies
is replaced (without the module it died importing), and after repeated failures workers are
started with exec. When the modules to preload change, a new template is built in the
background; when installed libraries change, idle workers are ended and forks wait for the new
template.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import time
from collections.abc import Callable, Sequence

from watchrun.executors.base import death_cause
from watchrun.executors.spawn import EarlyWorkers, popen_worker, worker_pipes
from watchrun.executors.warm import TemplateLink, installed_stamp, preload_log, start_template
from watchrun.executors.worker_handle import WorkerHandle
from watchrun.executors.worker_process import SpawnedProcess, TemplateForkedProcess, signal_group

log = logging.getLogger("watchrun.executor")

PRELOAD_PATIENCE = 30.0  # seconds a worker waits for the template's imports, then exec
INSTALL_CHECK = 0.05  # seconds between two looks at the installed libraries
TEMPLATE_ATTEMPTS = 3  # templates in a row that fail: workers start with exec

# what the warm template should preload: (top-level module, version) pairs (see
# warm.wanted_modules); asked again at each worker start, so that a change (a `pip install`
# during `dev`, a task importing a new library) gets a new template
PreloadSource = Callable[[], Sequence[tuple[str, str]]]


class WarmTemplates:
    """The template forks go to, a successor being built, and the workers waiting for them.
    `closing()` tells whether the executor is closing (no new template then). `early`: what
    the console script started before the executor existed (the first template, or workers
    started with exec), taken before anything new is started."""

    def __init__(
        self, preload: PreloadSource | None, env: dict[str, str], closing: Callable[[], bool],
        early: EarlyWorkers | None = None,
    ) -> None:
        self._preload = preload
        self._env = env
        self.early = EarlyWorkers() if early is None else early
        self._closing = closing
        self._template: TemplateLink | None = None
        self._successor: TemplateLink | None = None
        self._retired: list[TemplateLink] = []  # still with workers of theirs
        self._unsafe: set[str] = set()  # modules a template reported unsafe to fork
        self._failures = 0
        self._waiting: list[WorkerHandle] = []  # until the template is ready
        self._forking: dict[int, WorkerHandle] = {}  # token -> worker: asked, no answer yet
        self._forked: dict[int, WorkerHandle] = {}  # pid -> worker: forked, not exited
        self._tokens = itertools.count(1)
        self.stamp = installed_stamp() if preload is not None else ()  # installed libraries
        self._stamp_checked = time.monotonic()
        if preload is not None:
            # the template's imports start now, beside the scheduler's planning, not at the
            # first unit (on the loop's next turn: the caller may still be making the project)
            with contextlib.suppress(RuntimeError):  # no loop running: at the first unit
                asyncio.get_running_loop().call_soon(self._warm_up)

    def usable(self) -> bool:
        """Whether the next worker should be forked (else: exec)."""
        return self._preload is not None and self._failures < TEMPLATE_ATTEMPTS

    def installed_changed(self, nothing_runs: bool = False) -> bool:
        """Whether libraries were installed or upgraded (`pip install` during `dev`). If so
        the template may hold old versions: forks wait for a new one (the caller ends the
        idle workers whose stamp is not `stamp`). Every INSTALL_CHECK seconds at most while
        units run (a burst of submits looks once); when `nothing_runs`, always, so that a
        unit started right after an install (`pip install x && touch task.py`) sees it."""
        if self._preload is None:
            return False
        now = time.monotonic()
        if not nothing_runs and now - self._stamp_checked < INSTALL_CHECK:
            return False
        self._stamp_checked = now
        stamp = installed_stamp()
        if stamp == self.stamp:
            return False
        self.stamp = stamp
        if self._template is not None:
            self._template.wanted = []
            self._template.outdated = True
        return True

    def start(self, worker: WorkerHandle) -> None:
        """Have the template fork the worker: now if it is ready, else once it is."""
        ours, theirs = worker_pipes()
        worker.spawned = time.perf_counter()
        worker.sock, worker.life_fd, worker.stderr_fd = ours
        worker.proc = TemplateForkedProcess(theirs)
        link = self._current()
        if link is not None and link.ready.done() and link is self._template:
            self._send_fork(link, worker)
        else:
            self._waiting.append(worker)
            if link is None:  # no template could be started: exec
                self._fall_back()
            else:
                asyncio.get_running_loop().call_later(PRELOAD_PATIENCE, self._impatient, worker)

    def forget(self, worker: WorkerHandle) -> None:
        """The worker is retired: if it still waits for a template, it never starts."""
        if worker in self._waiting:
            self._waiting.remove(worker)
            assert isinstance(worker.proc, TemplateForkedProcess)
            worker.proc.ended(None)

    def close(self) -> None:
        """End every template (with any worker it still has) and reap it."""
        links = [self._template, self._successor, *self._retired]
        self._template = self._successor = None
        self._retired.clear()
        for link in links:
            if link is not None:
                link.close()

    def _impatient(self, worker: WorkerHandle) -> None:
        """A worker has waited PRELOAD_PATIENCE for the template's imports (one that hangs, on
        a network filesystem, say): it is started with exec instead and imports for itself."""
        if worker in self._waiting and not self._closing():
            log.warning("the warm template is still importing after %.0f s: a worker starts "
                        "without it", PRELOAD_PATIENCE)
            self._waiting.remove(worker)
            waiting, self._waiting = self._waiting, [worker]
            self._fall_back()
            self._waiting = waiting

    def _warm_up(self) -> None:
        if self._template is None and not self._closing() and self._failures == 0:
            self._current()

    def _wanted(self) -> list[tuple[str, str]]:
        assert self._preload is not None
        try:
            wanted = self._preload()
        except Exception:  # the caller's bug: preload nothing rather than fail the build
            log.exception("could not tell which modules to preload")
            wanted = []
        return [(module, version) for module, version in wanted if module not in self._unsafe]

    def _current(self) -> TemplateLink | None:
        """The template forks go to; starts one, or a successor if what should be preloaded
        changed. Until the successor is ready the current one serves, unless a library it
        holds has another version now (a `pip install` meanwhile): a worker forked from it
        would run the old code, so forks wait for the successor."""
        wanted = self._wanted()
        if self._template is None:
            self._template = self._start_template(wanted)
            return self._template
        if self._template.wanted != wanted and (
            self._successor is None or self._successor.wanted != wanted
        ):
            if self._successor is not None:
                self._retire_template(self._successor)
            preload_log.info("the modules to preload changed: a new warm template is starting")
            self._successor = self._start_template(wanted)
        if self._successor is not None and (
            self._template.outdated or _outdated(self._template.wanted, wanted)
        ):
            return self._successor
        return self._template

    def _start_template(self, wanted: list[tuple[str, str]]) -> TemplateLink | None:
        try:
            process = self.early.take_template(self._env) or start_template(self._env)
        except OSError as exc:
            log.warning("the warm template could not be started (%s): workers start cold", exc)
            self._failures = TEMPLATE_ATTEMPTS
            return None
        link = TemplateLink(process, [module for module, _ in wanted], self._on_forked,
                            self._on_exited, self._on_template_gone)
        link.wanted = wanted
        link.ready.add_done_callback(lambda _: self._template_ready(link))
        return link

    def _template_ready(self, link: TemplateLink) -> None:
        if not link.alive or link.restart:
            return  # _on_template_gone deals with it
        self._failures = 0
        if link is self._successor:
            self._successor = None
            if self._template is not None:
                self._retire_template(self._template)
            self._template = link
        if link is self._template:
            waiting, self._waiting = self._waiting, []
            for worker in waiting:
                self._send_fork(link, worker)

    def _retire_template(self, link: TemplateLink) -> None:
        """No new forks from it; ended once its last worker has."""
        if link.forks <= 0 and not any(
            w.proc.link is link
            for w in self._forking.values()
            if isinstance(w.proc, TemplateForkedProcess)
        ):
            link.close()
        else:
            self._retired.append(link)

    def _send_fork(self, link: TemplateLink, worker: WorkerHandle) -> None:
        proc = worker.proc
        assert isinstance(proc, TemplateForkedProcess) and proc.child_fds is not None
        token = next(self._tokens)
        self._forking[token] = worker
        proc.link = link
        if not link.fork(token, list(proc.child_fds)) and not link.alive:
            # gone, and _on_template_gone already ran: do its part
            del self._forking[token]
            self._waiting.append(worker)
            self._fall_back()

    def _on_forked(self, token: int, pid: int) -> None:
        worker = self._forking.pop(token, None)
        if worker is None:
            return
        proc = worker.proc
        assert isinstance(proc, TemplateForkedProcess)
        if not pid:
            worker.stderr_tail += b"the warm template could not fork a worker"
            proc.ended(None)
            return
        worker.pid = pid
        self._forked[pid] = worker
        proc.forked(pid)
        if worker.retiring:  # retired while it was being forked
            worker.signal_group(signal.SIGKILL)

    def _on_exited(self, pid: int, returncode: int) -> None:
        worker = self._forked.pop(pid, None)
        if worker is not None and isinstance(worker.proc, TemplateForkedProcess):
            link = worker.proc.link
            worker.proc.ended(returncode)
            if link in self._retired and link is not None and link.forks <= 0:
                self._retired.remove(link)
                link.close()

    def _on_template_gone(self, link: TemplateLink) -> None:
        """A template ended: its workers with it (those it forked are killed by their guards;
        we kill their groups too). Those it had not forked yet go to the next template."""
        for pid, worker in list(self._forked.items()):
            if isinstance(worker.proc, TemplateForkedProcess) and worker.proc.link is link:
                del self._forked[pid]
                signal_group(pid, signal.SIGKILL)
                worker.proc.ended(-signal.SIGKILL)
        for token, worker in list(self._forking.items()):
            if isinstance(worker.proc, TemplateForkedProcess) and worker.proc.link is link:
                del self._forking[token]
                if worker.retiring or self._closing():
                    worker.proc.ended(None)
                else:
                    self._waiting.append(worker)
        if link in self._retired:
            self._retired.remove(link)
        if link is self._successor:
            self._successor = None
        link.close()
        if link is self._template:
            self._template = None
            if not self._closing():
                self._replace_template(link)

    def _replace_template(self, link: TemplateLink) -> None:
        """The template forks went to ended: start another for the workers waiting, or exec
        them if templates keep failing."""
        if link.restart:  # a module was not fork-safe: the same without it
            self._unsafe.update(module for module, _ in link.skipped[-1:])
        elif link.importing is not None:  # it died importing this one: the same without it
            self._unsafe.add(link.importing)
            preload_log.warning("not preloaded: %s: the warm template died importing it (%s)",
                                link.importing, death_cause(link.process.popen.poll()))
        else:
            self._failures += 1
            tail = link.stderr_tail.decode(errors="replace").strip()
            log.warning("the warm template ended (%s)%s", death_cause(link.process.popen.poll()),
                        f": {tail}" if tail else "")
        if self._waiting:
            if self._failures < TEMPLATE_ATTEMPTS:
                self._current()
            else:
                self._fall_back()

    def _fall_back(self) -> None:
        """No template: the workers waiting for one are started with exec instead."""
        waiting, self._waiting = self._waiting, []
        for worker in waiting:
            proc = worker.proc
            assert isinstance(proc, TemplateForkedProcess) and proc.child_fds is not None
            try:
                popen = popen_worker(self._env, proc.child_fds)
            except OSError as exc:
                worker.stderr_tail += f"{type(exc).__name__}: {exc}".encode()
                proc.ended(None)
                continue
            worker.proc = SpawnedProcess(popen)
            worker.pid = popen.pid
            proc.forked(popen.pid)  # the worker's life goes on, with the new process


def _outdated(held: list[tuple[str, str]], wanted: list[tuple[str, str]]) -> bool:
    """Whether a template that preloaded `held` has a module whose version is not the one
    wanted now (one it lacks is only imported by the worker itself: not stale)."""
    versions = dict(held)
    return any(versions.get(module, version) != version for module, version in wanted)
