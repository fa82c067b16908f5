"""The executor's side of the warm template (see template.py): starting it, asking it to fork a
worker, hearing which workers it forked and how they ended.

A template is started with exec (template_process.py), in a session of its own, with two
descriptors: its end of a SOCK_SEQPACKET control socket and the read end of a life pipe whose
write end only watchrun holds. `watchrun build` starts it before the engine is imported
(spawn.py), already importing what the last run preloaded (preload_hint.py), so that the
libraries' import runs beside watchrun's own start instead of after it; the executor adopts it
if it imports nothing the project does not want now.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterable
from typing import Any

from watchrun.executors.protocol import PICKLE_PROTOCOL, dumps, loads
from watchrun.executors.template import MAX_MESSAGE
from watchrun.executors.template_process import TemplateProcess as TemplateProcess
from watchrun.executors.template_process import start_template as start_template

log = logging.getLogger("watchrun.executor")
# what was preloaded and what was left out (and why): on stderr with `build -v`
preload_log = logging.getLogger("watchrun.preload")

SUPPORTED = sys.platform.startswith("linux")  # fork, subreapers and /proc: see README
_STDERR_TAIL = 4000  # bytes of a template's stderr kept to explain its end


class TemplateLink:
    """A running template, on the executor's loop. Callbacks (all on the loop):
    on_forked(token, pid) (pid 0: not forked), on_exited(pid, exit code), on_gone() once
    its channel closes (every worker it forked that was not reported exited is then dead or
    about to be)."""

    def __init__(self, process: TemplateProcess, modules: list[str],
                 on_forked: Callable[[int, int], None], on_exited: Callable[[int, int], None],
                 on_gone: Callable[[TemplateLink], None]) -> None:
        self.process = process
        self.modules = modules
        self.wanted: list[tuple[str, str]] = []  # (module, version) it was started for
        self.outdated = False  # libraries were installed since it imported them
        self.stderr_tail = bytearray()  # what it wrote to stderr (import warnings, a crash)
        self.preloaded: list[str] | None = None  # None until the template answered
        self.skipped: list[tuple[str, str]] = []
        self.restart = False  # a module made it unsafe: a new template without it is needed
        self.importing: str | None = None  # the module it is importing (before "preloaded")
        self.ready = asyncio.get_running_loop().create_future()  # preloaded or gone
        self.alive = True
        self.forks = 0  # workers it forked that have not exited
        self._on_forked = on_forked
        self._on_exited = on_exited
        self._on_gone = on_gone
        self._loop = asyncio.get_running_loop()
        self._draining = False
        self._seconds = 0.0  # its imports so far
        self._answers_due = 0  # "preloaded" messages still to come
        unwanted = _not_wanted(process.asked_for(), modules)
        if unwanted and not self._start_afresh(unwanted):
            self._loop.call_soon(self._on_gone, self)  # as if it had died at once
            return
        self._talk()

    def _talk(self) -> None:
        """Ask for our modules and listen. A template started early (see template_process.py)
        may be importing already: it answers each list asked in turn, and is ready with the
        last, which it then finds mostly imported."""
        process = self.process
        process.sock.setblocking(True)  # small messages: the socket buffer takes them at once
        process.preload(self.modules)
        self._answers_due = len(process.preloads)
        self._loop.add_reader(process.sock.fileno(), self._readable)
        os.set_blocking(process.stderr_fd, False)
        self._loop.add_reader(process.stderr_fd, self._drain_stderr)
        self._draining = True

    def _start_afresh(self, unwanted: list[str]) -> bool:
        """The template, started early, imports modules not wanted now (the last run's, or
        its guess; the `preload` setting changed, or a module is the project's own): a worker
        forked from it would have them. Replace it by a new one (it has forked nothing yet).
        False: none could be started (then this link is gone)."""
        preload_log.info("the warm template started early imports %s, not wanted now: a new "
                         "one is starting", ", ".join(unwanted))
        old = self.process
        if self._draining:
            self._stop_draining()
            self._loop.remove_reader(old.sock.fileno())
        old.kill(graceful=False)
        try:
            self.process = start_template(old.env)
        except OSError as exc:
            self.stderr_tail += f"it could not be started again: {exc}".encode()
            self.alive = False
            if not self.ready.done():
                self.ready.set_result(None)
            return False
        self.importing = None
        self._seconds = 0.0
        return True

    def _drain_stderr(self) -> None:
        """Keep its stderr pipe empty (a full pipe would block its imports) and its tail."""
        try:
            chunk = os.read(self.process.stderr_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._stop_draining()
            return
        self.stderr_tail += chunk
        del self.stderr_tail[:-_STDERR_TAIL]

    def _stop_draining(self) -> None:
        if self._draining:
            self._draining = False
            self._loop.remove_reader(self.process.stderr_fd)

    @property
    def pid(self) -> int:
        return self.process.popen.pid

    def fork(self, token: int, fds: list[int]) -> bool:
        """Ask for a worker with these descriptors (control socket, life pipe, stderr; ours
        are closed by the caller). False: the template is gone."""
        if not self.alive:
            return False
        try:
            socket.send_fds(self.process.sock, [dumps(("fork", token), PICKLE_PROTOCOL)], fds)
        except OSError:
            return False
        return True

    def _readable(self) -> None:
        try:
            data = self.process.sock.recv(MAX_MESSAGE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._closed()
            return
        message = loads(data)
        kind = message[0]
        if kind == "forked":
            if message[2]:
                self.forks += 1
            self._on_forked(message[1], message[2])
        elif kind == "exited":
            self.forks -= 1
            self._on_exited(message[1], message[2])
        elif kind == "importing":
            self.importing = message[1]
        elif kind == "guessed":
            unwanted = _not_wanted(set(message[1]), self.modules)
            if unwanted:
                if self._start_afresh(unwanted):
                    self._talk()
                else:
                    self._on_gone(self)
        elif kind == "preloaded":
            self.importing = None
            self._preloaded(*message[1:])

    def _preloaded(self, loaded: list[str], skipped: list[tuple[str, str]], seconds: float,
                   restart: bool) -> None:
        self._answers_due -= 1
        self._seconds += seconds
        if self._answers_due > 0 and not restart:
            return  # the early list's answer: what this link asked comes next
        seconds = self._seconds
        self.preloaded = loaded
        self.skipped = skipped
        self.restart = restart
        if loaded:
            preload_log.info("preloaded in the warm template (%.2f s): %s", seconds,
                             ", ".join(loaded))
        for module, why in skipped:
            preload_log.info("not preloaded: %s: %s", module, why)
        if not self.ready.done():
            self.ready.set_result(None)

    def _closed(self) -> None:
        if not self.alive:
            return
        self.alive = False
        self._loop.remove_reader(self.process.sock.fileno())
        if not self.ready.done():
            self.ready.set_result(None)
        self._on_gone(self)

    def close(self) -> None:
        """End the template (its remaining workers with it) and reap it. One still importing
        has no worker yet and does not read its socket: it is killed at once."""
        graceful = self.ready.done() and self.preloaded is not None
        self._stop_draining()
        if self.alive:
            self.alive = False
            self._loop.remove_reader(self.process.sock.fileno())
        if not self.ready.done():
            self.ready.set_result(None)
        self.process.kill(graceful=graceful)


def _not_wanted(modules: set[str], wanted: list[str]) -> list[str]:
    """Those of `modules` that preloading `wanted` would not import: neither one of them nor
    the package of one (importing `a.b` imports `a`)."""
    chosen = set(wanted)
    return sorted(module for module in modules if module not in chosen
                  and not any(name.startswith(module + ".") for name in chosen))


# a `pip install` adds and removes entries in these folders: their mtimes tell that installed
# versions may have changed
_SITES = [path for path in sys.path if path.endswith(("site-packages", "dist-packages"))]


def installed_stamp() -> tuple[int, ...]:
    """The mtimes of the site-packages folders (a few stat calls)."""
    stamps = []
    for path in _SITES:
        try:
            stamps.append(os.stat(path).st_mtime_ns)
        except OSError:
            stamps.append(0)
    return tuple(stamps)


def report_preload() -> None:
    """Say on stderr what the warm template preloaded and what it left out (`build -v`)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("watchrun: %(message)s"))
    preload_log.addHandler(handler)
    preload_log.setLevel(logging.INFO)
    preload_log.propagate = False


def imported_modules(modules: Iterable[Any]) -> set[str]:
    """Every absolute module the code-map modules (codemap.ModuleInfo) import: at top level,
    inside top-level statements and inside functions, whether the task's code uses the name or
    not (a module-level import runs at every unit either way). Dotted names are kept:
    `import matplotlib.pyplot` is 0.7 s of matplotlib's 0.9 s."""
    found: set[str] = set()
    for info in modules:
        for definition in info.definitions.values():
            if definition.import_module:
                found.add(definition.import_module)
                found.update(definition.also_imports)
            found.update(ref[3] for ref in definition.nested_imports)
        found.update(ref[3] for ref in info.toplevel_imports)
    return {name for name in found if name and not name.startswith(".")}


def wanted_modules(imported: Iterable[tuple[str, str]], setting: object
                   ) -> list[tuple[str, str]]:
    """The (module, version) pairs a template preloads, from the third-party modules the tasks
    import (module, version of its distribution; packages before their submodules) and the
    `preload` setting: "auto" (those), False (none), or a list of module names where "auto"
    stands for those and "!name" leaves a module (and its submodules) out."""
    versions = dict(sorted(imported))  # "a" sorts before "a.b": a package before its parts
    if setting is False or setting is None:
        return []
    if setting == "auto" or setting is True:
        return list(versions.items())
    chosen: list[str] = []
    excluded: set[str] = set()
    for entry in setting if isinstance(setting, (list, tuple)) else ():
        if entry == "auto":
            chosen.extend(versions)
        elif isinstance(entry, str) and entry.startswith("!"):
            excluded.add(entry[1:])
        elif isinstance(entry, str):
            chosen.append(entry)
    return [(module, versions.get(module, "")) for module in dict.fromkeys(chosen)
            if module not in excluded and module.split(".")[0] not in excluded]
