"""The warm template: `python -c "from watchrun.executors.template import main; main()" CTL LIFE
PARENT`, the process that local workers are forked from.

Why: a worker started with exec pays Python's start and then the imports of the task's
libraries (pandas: ~0.6 s; scikit-learn: ~2 s) again after every cancel. The template imports
them once (`preload`), and every worker, generator and collector process is a fork of it: it
starts with them already imported, in about a millisecond.

Fork safety: a fork copies only the thread that calls it, so the template stays single-threaded
and clean: it is started with exec (not forked from watchrun, whose event loop, watcher and hashing
threads must not be copied), it never imports project-local modules (they change), and a module
that starts a Python thread at import, or initialises CUDA, is reported and left out: the template
then ends itself and the executor starts a new one without that module.

It is also the guard of the no-survivor guarantees (SPEC section 5), because it never runs task
code and so always holds its own interpreter:

- it is a child subreaper: a process a unit started that left the unit's process group and lost
  its parent comes to it (or to the worker, itself a subreaper, while the worker lives), and it
  kills every such stray as soon as a worker has ended;
- when watchrun dies (even by kill -9), the life pipe reads EOF at once and the template kills
  every worker with SIGKILL, whatever the worker is doing (a long C call holding the GIL too),
  and everything below them, then exits.

Control: a SOCK_SEQPACKET socket (one message per send, descriptors attached). Each message is a
pickled tuple:

    watchrun -> template:  ("preload", [module, ...])   first (more than once: each answered)
                           ("guess", project root)      instead: preload what it guesses the
                                                        project wants (preload_guess.py)
                           ("fork", token)  + 3 descriptors: control socket, life pipe, stderr
                           ("quit",)
    template -> watchrun:  ("guessed", [module, ...])      what a "guess" is preloading
                           ("importing", module)           before each preloaded import
                           ("preloaded", [loaded], [(module, why not)], seconds, restart)
                           ("forked", token, pid)        pid 0: the fork failed
                           ("exited", pid, exit code as subprocess gives it)
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import sys
import time

from watchrun.executors import reaper
from watchrun.executors.protocol import dumps, loads

# what `ps` shows for a forked worker (the template's own argument space, rewritten in place):
# a worker looks the same whether it was forked or started with exec
WORKER_TITLE = "from watchrun.executors.worker import main; main()"
MAX_MESSAGE = 1 << 20
_FDS_PER_FORK = 3


class _State:
    def __init__(self, sock: socket.socket, life_fd: int) -> None:
        self.sock = sock
        self.life_fd = life_fd
        self.workers: set[int] = set()
        self.wake_read, self.wake_write = os.pipe()
        self.stopping = False
        self.guarding = False  # ends its workers when watchrun dies (see _guard)


def _send(state: _State, *message: object) -> None:
    try:
        state.sock.send(dumps(message, 5))
    except OSError:  # watchrun is gone: the life pipe says so too
        state.stopping = True


# -- preloading ---------------------------------------------------------------------------------


def _python_threads() -> int:
    import _thread

    return int(_thread._count())


def _cuda_initialised() -> bool:
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    try:
        return bool(cuda is not None and cuda.is_initialized())
    except Exception:
        return False


def preload(modules: list[str], state: _State | None = None
            ) -> tuple[list[str], list[tuple[str, str]], bool]:
    """Import the modules one by one: (imported, [(skipped, why)], restart). `restart`: a
    module made this process unsafe to fork (a thread, CUDA); the caller starts a new template
    without it."""
    loaded: list[str] = []
    skipped: list[tuple[str, str]] = []
    import importlib

    for name in modules:
        if name in sys.modules:
            loaded.append(name)
            continue
        threads = _python_threads()
        if state is not None:  # if the import kills us, watchrun knows which one did
            _send(state, "importing", name)
        try:
            importlib.import_module(name)
        except BaseException as exc:
            skipped.append((name, f"failed to import ({type(exc).__name__}: {exc})"))
            continue
        if _python_threads() > threads:
            skipped.append((name, "starts a thread at import (not fork-safe)"))
            return loaded, skipped, True
        if _cuda_initialised():
            skipped.append((name, "initialises CUDA at import (not fork-safe)"))
            return loaded, skipped, True
        loaded.append(name)
    return loaded, skipped, False


# -- forking a worker ---------------------------------------------------------------------------


def _retitle(title: str) -> None:
    """Rewrite this process's command line as /proc (and ps) show it, in the space the kernel
    gave the original arguments: the first argument kept, then `title` split at NULs."""
    try:
        import ctypes

        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2 :].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (fields 48, 49)
        size = end - start
        first = ctypes.string_at(start, size).split(b"\0", 1)[0]
        text = first + b"\0" + title.encode()
        if len(text) + 1 > size:
            return
        ctypes.memmove(start, text.ljust(size - 1, b" ") + b"\0", size)
    except (OSError, ValueError, IndexError, ImportError):
        pass  # only what ps shows


def _child(state: _State, fds: list[int], template_pid: int) -> None:
    """In the forked process: become a worker (never returns into the template's loop)."""
    code = 1
    try:
        os.setsid()  # a session and process group of its own, like a worker started with exec
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        state.sock.close()
        for fd in (state.life_fd, state.wake_read, state.wake_write):
            os.close(fd)
        if "" not in sys.path:  # as `python -c` has it (see main)
            sys.path.insert(0, "")
        _retitle("-c\0" + WORKER_TITLE + "\0forked")
        from watchrun.executors import worker

        worker.main_forked(fds[0], fds[1], fds[2], template_pid)
        code = 0
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def _fork(state: _State, token: int, fds: list[int]) -> None:
    pid = 0
    _guard(state)
    for stream in (sys.stdout, sys.stderr):  # nothing buffered here may be written twice
        if stream is not None:
            stream.flush()
    try:
        if len(fds) == _FDS_PER_FORK:
            pid = os.fork()
            if pid == 0:
                _child(state, fds, os.getppid())
    except OSError:
        pid = 0
    finally:
        for fd in fds:
            os.close(fd)
    if pid:
        state.workers.add(pid)
    _send(state, "forked", token, pid)


# -- reaping and ending -------------------------------------------------------------------------


def _reap(state: _State) -> None:
    """Report the workers that ended, then kill the strays they left (their descendants that
    were re-parented to us: we are a subreaper)."""
    ended = False
    for pid in list(state.workers):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, 0
        if done:
            ended = True
            state.workers.discard(pid)
            _send(state, "exited", pid, os.waitstatus_to_exitcode(status))
    if ended or reaper.has_children():
        _end_strays(state)


def _end_strays(state: _State) -> None:
    me = os.getpid()
    skip = frozenset(state.workers)
    for _ in range(50):
        strays = reaper.descendants(me, skip)
        if not strays:
            break
        reaper.kill_all(strays)
        for pid, _ in strays:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def _end_everything(state: _State) -> None:
    """watchrun is gone (or asked): kill every worker's group and every process below us."""
    for pid in state.workers:
        for send in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                send(pid, signal.SIGKILL)
    reaper.end_descendants()
    state.workers.clear()


# -- the loop -----------------------------------------------------------------------------------


class _Stop:
    asked = False  # SIGTERM or SIGHUP came (the kernel's, when watchrun died): end everything


def _on_stop(signum: int, frame: object) -> None:
    # no exception: one raised here could cut the ending of the workers short (the kernel's
    # SIGTERM and the life pipe's EOF come together); the wakeup fd ends select()
    _Stop.asked = True


def _stop_asked() -> bool:
    return _Stop.asked


def _serve(state: _State) -> None:
    worker_imported = False
    while not state.stopping and not _Stop.asked:
        watched: list[int] = [state.sock.fileno(), state.life_fd, state.wake_read]
        # what every worker needs is imported once here, but after the libraries a message
        # already waiting asks for (sent as the template was started): they are what the
        # first units wait for
        ready, _, _ = select.select(watched, [], [], None if worker_imported else 0)
        if not ready and not worker_imported:
            from watchrun.executors import worker  # noqa: F401

            worker_imported = True
            continue
        if _stop_asked():
            return
        if state.life_fd in ready and not os.read(state.life_fd, 512):
            return  # watchrun is gone
        if state.wake_read in ready:
            os.read(state.wake_read, 512)
            _reap(state)
        if state.sock.fileno() in ready and not _handle(state):
            return


def _handle(state: _State) -> bool:
    """One message from watchrun; False: stop serving."""
    try:
        data, fds, _, _ = socket.recv_fds(state.sock, MAX_MESSAGE, _FDS_PER_FORK)
    except OSError:
        return False
    if not data:
        return False
    message = loads(data)
    kind: str = message[0]
    if kind == "fork":
        _fork(state, message[1], fds)
        return True
    for fd in fds:
        os.close(fd)
    if kind == "guess":
        from watchrun.executors.preload_guess import guess

        modules = guess(message[1])
        _send(state, "guessed", modules)
        return _preload_and_answer(state, modules)
    if kind == "preload":
        return _preload_and_answer(state, message[1])
    return kind != "quit"


def _preload_and_answer(state: _State, modules: list[str]) -> bool:
    """False: a module made this process unsafe to fork (it ends; see preload)."""
    started = time.perf_counter()
    loaded, skipped, restart = preload(modules, state)
    _send(state, "preloaded", loaded, skipped, time.perf_counter() - started, restart)
    return not restart


def _guard(state: _State) -> None:
    """Until its first worker, the template has nothing to clean up and is killed outright
    with watchrun (its imports can hold it for seconds); from then on it must end its workers
    first, which the life pipe tells it to do, and SIGTERM from the kernel too (its handler
    runs as soon as select() is interrupted)."""
    if not state.guarding:
        state.guarding = True
        reaper.die_with_parent(signal.SIGTERM)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv if argv is None else argv
    ctl_fd, life_fd, parent_pid = (int(arg) for arg in args[1:4])
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for watchrun to handle
    reaper.die_with_parent(signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)
    # `python -c` puts the current folder first on sys.path: a project-local module named like
    # a library must not be what the template imports
    while "" in sys.path:
        sys.path.remove("")
    reaper.become_subreaper()
    os.set_inheritable(ctl_fd, False)
    os.set_inheritable(life_fd, False)
    state = _State(socket.socket(fileno=ctl_fd), life_fd)
    os.set_blocking(state.wake_write, False)
    signal.set_wakeup_fd(state.wake_write)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wakes select through the pipe
    signal.signal(signal.SIGTERM, _on_stop)
    signal.signal(signal.SIGHUP, _on_stop)
    try:
        _serve(state)
    finally:
        _end_everything(state)
        os._exit(0)


if __name__ == "__main__":
    main()
