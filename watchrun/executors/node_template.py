"""A warm template on a Ray node (see template.py): the watchrun workers a Ray worker process
starts for its units are forked from it, with the third-party modules of the task's code
already imported, instead of being started with exec through a guard (ray_guard.py).

Ray runs the tasks of a driver in the same worker processes one after another, so one template
per Ray worker process serves every unit that process runs. It is a child of the Ray worker and
holds the read end of a life pipe whose write end only the Ray worker has: when the Ray worker
ends, however it ends, the template kills every watchrun worker it forked and everything below
them, whatever they are doing (the guard's job, without needing the worker's interpreter).

Blocking calls and a reader thread: a Ray worker has no event loop of ours.
"""

from __future__ import annotations

import ast
import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterable

from watchrun.executors.protocol import PICKLE_PROTOCOL, dumps, loads
from watchrun.executors.spawn import worker_env
from watchrun.executors.template import MAX_MESSAGE
from watchrun.executors.warm import TemplateProcess, installed_stamp, start_template

_READY_WAIT = 30.0  # seconds a fork waits for the template's imports, then the guard path
_FORK_WAIT = 30.0
_STDLIB = frozenset(sys.stdlib_module_names) | frozenset(sys.builtin_module_names)


class ForkedProcess:
    """A worker forked by the node's template, with the part of Popen's interface that
    ray_node.ChildWorker uses (pid, poll, wait, kill, returncode)."""

    def __init__(self, template: NodeTemplate) -> None:
        self.pid = 0
        self.returncode: int | None = None
        self._template = template
        self._forked = threading.Event()
        self._exited = threading.Event()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._exited.wait(timeout):
            import subprocess

            raise subprocess.TimeoutExpired(["watchrun worker"], timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        if self.pid and self.returncode is None:
            for send in (os.killpg, os.kill):  # it may not lead its own group yet
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    send(self.pid, signal.SIGKILL)

    def _set_pid(self, pid: int) -> None:
        self.pid = pid
        self._forked.set()

    def _set_exit(self, returncode: int) -> None:
        self.returncode = returncode
        self._forked.set()
        self._exited.set()


class NodeTemplate:
    """A template process and the thread that reads what it says."""

    def __init__(self, modules: list[str]) -> None:
        self.modules = set(modules)
        self.stamp = installed_stamp()
        self.process: TemplateProcess = start_template(worker_env())
        self.alive = True
        self.usable = False  # preloaded, and no module made it unsafe to fork
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._tokens = 0
        self._forking: dict[int, ForkedProcess] = {}
        self._forked: dict[int, ForkedProcess] = {}
        self.process.sock.sendall(dumps(("preload", sorted(modules)), PICKLE_PROTOCOL))
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def serves(self, modules: Iterable[str]) -> bool:
        """Whether it is alive, imported these (or more) and no library changed since."""
        return self.alive and self.modules.issuperset(modules) and (
            installed_stamp() == self.stamp)

    def fork(self, fds: tuple[int, int, int]) -> ForkedProcess | None:
        """A worker with these descriptors (the caller closes its copies), or None."""
        if not self._ready.wait(_READY_WAIT) or not self.usable:
            return None
        child = ForkedProcess(self)
        with self._lock:
            self._tokens += 1
            token = self._tokens
            self._forking[token] = child
        try:
            socket.send_fds(self.process.sock, [dumps(("fork", token), PICKLE_PROTOCOL)],
                            list(fds))
        except OSError:
            return None
        if not child._forked.wait(_FORK_WAIT) or not child.pid:
            return None
        return child

    def close(self) -> None:
        self.alive = False
        self.process.kill()

    def _read(self) -> None:
        sock = self.process.sock
        try:
            while data := sock.recv(MAX_MESSAGE):
                self._handle(loads(data))
        except OSError:
            pass
        self._gone()

    def _handle(self, message: tuple[object, ...]) -> None:
        kind = message[0]
        if kind == "preloaded":
            self.usable = not message[4]
            self._ready.set()
        elif kind == "forked":
            token, pid = message[1], message[2]
            assert isinstance(token, int) and isinstance(pid, int)
            with self._lock:
                child = self._forking.pop(token, None)
                if child is not None and pid:
                    self._forked[pid] = child
            if child is not None:
                child._set_pid(pid) if pid else child._set_exit(-signal.SIGKILL)
        elif kind == "exited":
            pid, code = message[1], message[2]
            assert isinstance(pid, int) and isinstance(code, int)
            with self._lock:
                child = self._forked.pop(pid, None)
            if child is not None:
                child._set_exit(code)

    def _gone(self) -> None:
        """Its workers are dead or dying (it killed them; their own guards too)."""
        self.alive = False
        self._ready.set()
        with self._lock:
            children = [*self._forking.values(), *self._forked.values()]
            self._forking.clear()
            self._forked.clear()
        for child in children:
            child.kill()
            child._set_exit(-signal.SIGKILL)

    def _drain_stderr(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self.process.stderr_fd, 65536):
                pass


def third_party_imports(sources: dict[str, bytes] | None, root: str) -> set[str]:
    """The modules the shipped task code imports from outside the standard library and the
    project (absolute imports at any depth; dotted names kept)."""
    found: set[str] = set()
    for file, source in (sources or {}).items():
        try:
            tree = ast.parse(source, file)
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
    return {name for name in found if _third_party(name.partition(".")[0], root)}


def _third_party(top: str, root: str) -> bool:
    if top in _STDLIB or top == "watchrun":
        return False
    return not (os.path.exists(os.path.join(root, top + ".py"))
                or os.path.isdir(os.path.join(root, top)))
