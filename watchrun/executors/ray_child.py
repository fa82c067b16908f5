"""The watchrun worker a Ray worker process starts for a unit (see ray_node.py): a session and
process group of its own, behind a guard (ray_guard.py) or forked from the node's template
(node_template.py), and the threads that carry its frames both ways.

Imports neither ray nor anything heavy: it runs inside Ray worker processes.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from typing import Any

from watchrun.executors import protocol as proto
from watchrun.executors.node_template import ForkedProcess, NodeTemplate
from watchrun.executors.protocol import Msg
from watchrun.executors.spawn import worker_env

REAP_WAIT = 5.0  # seconds to wait for a killed worker to be reaped
Item = tuple[Any, ...]




class ChildWorker:
    """A watchrun worker (`python -m watchrun.executors.worker`) in a session of its own,
    started through a guard process (see ray_guard.py). A reader thread turns its frames into
    `inputs` items ("frame", kind, fields), then ("eof",); a writer thread sends what `send`
    queues, so the relay never blocks on the channel (a worker busy in a unit does not read its
    pushes, and must not wait for us while it writes its yields)."""

    def __init__(self, template: NodeTemplate | None = None) -> None:
        self.inputs: queue.Queue[Item] = queue.Queue()
        self.pid: int | None = None  # the watchrun worker's, from its READY frame
        self.stderr_tail = ""  # after end(): the end of what the worker wrote to stderr
        self._outbox: queue.Queue[bytes | None] = queue.Queue()
        self._life_fd: int | None = None  # ours, when forked from the node's template
        ours, theirs = socket.socketpair()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the worker
        self.guard: subprocess.Popen[bytes] | ForkedProcess
        forked = self._fork(template, theirs) if template is not None else None
        try:
            if forked is not None:
                self.guard = forked
            else:
                self.guard = self._spawn_guard(theirs)
        except BaseException:
            ours.close()
            self._stderr.close()
            raise
        finally:
            theirs.close()
        self._sock = ours
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._write, daemon=True).start()

    def _fork(self, template: NodeTemplate, theirs: socket.socket) -> ForkedProcess | None:
        """The worker, forked from the node's template (None: it could not)."""
        life_read, life_write = os.pipe()
        try:
            forked = template.fork((theirs.fileno(), life_read, self._stderr.fileno()))
        finally:
            os.close(life_read)
        if forked is None:
            os.close(life_write)
            return None
        self._life_fd = life_write
        return forked

    def _spawn_guard(self, theirs: socket.socket) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "watchrun.executors.ray_guard",
                    str(theirs.fileno()),
                    str(os.getpid()),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                pass_fds=(theirs.fileno(),),
                env=worker_env(),  # the watchrun imported here: installed, or a py_module
            )

    def alive(self) -> bool:
        return self.guard.poll() is None

    def send(self, kind: Msg, *fields: object) -> None:
        self._outbox.put(proto.encode(kind, *fields))

    def signal_group(self, sig: signal.Signals) -> None:
        """Signal the unit's process group. Before the worker said READY its group is not
        known: then only SIGKILL does something, to the guard (the worker ends its group)."""
        if self.guard.returncode is not None:
            return  # the guard is reaped: the worker is gone, its pid may be reused
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.pid is not None:
                os.killpg(self.pid, sig)
            elif sig is signal.SIGKILL:
                self.guard.kill()

    def end(self) -> int | None:
        """Kill the whole group, reap the guard (which exits as the worker did), close the
        channel. Returns the worker's exit status (as the guard mirrors it)."""
        if self._stderr.closed:  # ended already
            return self.guard.returncode
        self.signal_group(signal.SIGKILL)
        try:
            returncode = self.guard.wait(REAP_WAIT)
        except subprocess.TimeoutExpired:  # pragma: no cover - the worker is unkillable
            self.guard.kill()
            returncode = self.guard.wait()
        if self.pid is not None:  # members the worker forked may remain in its group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        self._outbox.put(None)
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self.stderr_tail = tail(self._stderr, 2000).decode(errors="replace").strip()
        self._stderr.close()
        if self._life_fd is not None:
            os.close(self._life_fd)
            self._life_fd = None
        return returncode

    def _read(self) -> None:
        reader = proto.FrameReader(self._sock.fileno())
        try:
            while True:
                kind, fields = reader.read()
                if kind is Msg.READY:
                    self.pid = int(fields[0])  # type: ignore[call-overload]
                    continue
                self.inputs.put(("frame", kind, fields))
        except (EOFError, OSError, ValueError):
            pass
        finally:
            self.inputs.put(("eof",))

    def _write(self) -> None:
        while (frame := self._outbox.get()) is not None:
            try:
                proto.write_all(self._sock.fileno(), frame)
            except (OSError, ValueError):  # the worker is gone: the reader reports it
                return


def tail(f: Any, limit: int) -> bytes:
    try:
        f.seek(0, os.SEEK_END)
        f.seek(max(f.tell() - limit, 0))
        data: bytes = f.read()
    except (OSError, ValueError):
        return b""
    return data
