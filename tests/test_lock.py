"""The single-writer lock, held and fought over by real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import cli_env
from watchrun.state.lock import LockedError, try_lock
from watchrun.state.store import ReadOnlyStoreError, Store


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / ".watchrun"


def spawn_holder(children: list[subprocess.Popen[str]], state_dir: Path, body: str = ""
                 ) -> subprocess.Popen[str]:
    """A watchrun stand-in that takes the lock with `build demo`, runs `body`, says "locked"
    and waits for its stdin to close."""
    code = textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        from watchrun.state.store import Store
        store = Store(Path({str(state_dir)!r}))
        store.acquire_lock("build demo")
    """) + textwrap.dedent(body) + textwrap.dedent("""
        sys.stdout.flush()
        os.write(1, b"locked\\n")  # one write: a body's forked child may print beside it
        sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], text=True, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=cli_env())
    children.append(proc)
    return proc


def read_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"child exited early with code {proc.wait()}"
    return line.strip()


def kill9(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def test_a_second_writer_is_told_who_holds_the_lock(
        state_dir: Path, children: list[subprocess.Popen[str]]) -> None:
    holder = spawn_holder(children, state_dir)
    assert read_line(holder) == "locked"
    with Store(state_dir) as second, pytest.raises(LockedError) as locked:
        second.acquire_lock("build other")
    who = locked.value.holder
    assert who is not None
    assert (who.pid, who.command, who.host) == (holder.pid, "build demo", os.uname().nodename)
    assert locked.value.lock_path == state_dir / "lock"
    message = locked.value.message()
    assert f"pid {holder.pid}" in message and "`build demo`" in message


def test_the_lock_is_free_once_its_holder_is_killed(
        state_dir: Path, children: list[subprocess.Popen[str]]) -> None:
    holder = spawn_holder(children, state_dir)
    assert read_line(holder) == "locked"
    kill9(holder)
    with Store(state_dir) as s:
        s.acquire_lock("build")
        now = s.lock_holder()
        assert now is not None and now.pid == os.getpid()


def test_a_forked_worker_does_not_keep_the_project_locked(
        state_dir: Path, children: list[subprocess.Popen[str]]) -> None:
    # A worker forked by watchrun inherits the lock's descriptor; were it kept, killing
    # watchrun would leave the project locked for as long as the worker lives.
    holder = spawn_holder(children, state_dir, body="""
        sys.stdout.flush()
        worker = os.fork()
        if worker == 0:  # one write per line: the two processes share the pipe
            os.write(1, f"worker {os.getpid()}\\n".encode())
            sys.stdin.read()
            os._exit(0)
        os.write(1, b"watchrun\\n")
    """)
    lines = sorted(read_line(holder) for _ in range(3))  # the two processes race to print
    assert lines[:2] == ["locked", "watchrun"]
    worker = int(lines[2].split()[1])
    kill9(holder)
    try:
        os.kill(worker, 0)  # the worker lives on
        with Store(state_dir) as s:
            s.acquire_lock("build")
    finally:
        os.kill(worker, signal.SIGKILL)


def test_releasing_lets_the_next_writer_in(state_dir: Path) -> None:
    first, second = Store(state_dir), Store(state_dir)
    first.acquire_lock("build one")
    first.acquire_lock("build one")  # taking it again is harmless
    with pytest.raises(LockedError):
        second.acquire_lock("build two")
    first.release_lock()
    second.acquire_lock("build two")
    holder = first.lock_holder()
    assert holder is not None and holder.command == "build two"
    second.close()  # closing releases too
    first.acquire_lock("build three")
    first.close()


def test_release_commits_what_the_writer_did(state_dir: Path) -> None:
    first = Store(state_dir)
    first.acquire_lock("build")
    first.kv_put("k", b"v")
    first.release_lock()
    with Store(state_dir, readonly=True) as reader:
        assert reader.kv_get("k") == b"v"
    first.close()


def test_read_only_stores_read_while_a_writer_holds_the_lock(
        state_dir: Path, children: list[subprocess.Popen[str]]) -> None:
    holder = spawn_holder(children, state_dir, body="""
        store.kv_put("status", b"from the writer")
        store.commit()
    """)
    assert read_line(holder) == "locked"
    with Store(state_dir, readonly=True) as reader:
        assert reader.kv_get("status") == b"from the writer"
        with pytest.raises(ReadOnlyStoreError):
            reader.acquire_lock("status")


def test_a_holder_that_has_not_described_itself_yet_is_unknown(
        state_dir: Path, children: list[subprocess.Popen[str]]) -> None:
    state_dir.mkdir()
    code = textwrap.dedent(f"""
        import fcntl, sys
        f = open({str(state_dir / "lock")!r}, "w")
        fcntl.flock(f, fcntl.LOCK_EX)
        print("locked", flush=True)
        sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], text=True, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    children.append(proc)
    assert read_line(proc) == "locked"
    with Store(state_dir) as s, pytest.raises(LockedError) as locked:
        s.acquire_lock("build")
    assert locked.value.holder is None
    assert "another process" in locked.value.message()


def test_a_brief_look_never_creates_the_lock_and_never_overlaps_a_writer(
        state_dir: Path, children: list[subprocess.Popen[str]]) -> None:
    """`try_lock`, as the null-build check takes it: no lock file, no look (and nothing made);
    looks share the lock with each other but not with a writer in another process."""
    with try_lock(str(state_dir)) as held:
        assert not held
    assert not state_dir.exists()
    with Store(state_dir) as store:
        store.acquire_lock("build")
        store.release_lock()
    with try_lock(str(state_dir), shared=True) as one, \
            try_lock(str(state_dir), shared=True) as two:
        assert one and two
        with Store(state_dir) as store, pytest.raises(LockedError):
            store.acquire_lock("build")
    with try_lock(str(state_dir)) as alone, try_lock(str(state_dir), shared=True) as other:
        assert alone and not other  # exclusive: nobody else looks meanwhile
    holder = spawn_holder(children, state_dir)
    assert read_line(holder) == "locked"
    with try_lock(str(state_dir), shared=True) as held:
        assert not held
    kill9(holder)
    with try_lock(str(state_dir), shared=True) as held:
        assert held  # the kernel released a killed writer's lock
