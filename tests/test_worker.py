"""The worker process on its own, driven frame by frame over its socket as the executor does."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from watchrun.engine.driver_state import BuildOptions
from watchrun.executors import protocol as proto
from watchrun.executors import taskmodules
from watchrun.executors.base import Mode
from watchrun.executors.protocol import Msg
from watchrun.executors.unit_baseline import Baseline
from watchrun.executors.worker import FileSnapshot
from watchrun.executors.worker_modules import _keys_after, newest_module
from watchrun.session import default_targets, open_session, run_build
from watchrun.state.hashing import hash_bytes

REPO = Path(__file__).resolve().parents[1]
WAIT = 20.0
TERMINAL = {Msg.DONE, Msg.FAILED, Msg.CANCELLED}


class WorkerProcess:
    """A worker started the way LocalExecutor starts one, without the executor."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        ours, theirs = socket.socketpair()
        life_read, self.life = os.pipe()
        env = dict(env if env is not None else os.environ)
        env["PYTHONPATH"] = str(REPO)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "watchrun.executors.worker",
                str(theirs.fileno()),
                str(life_read),
                str(os.getpid()),
            ],
            pass_fds=(theirs.fileno(), life_read),
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env=env,
        )
        theirs.close()
        os.close(life_read)
        self.sock = ours
        self.sock.settimeout(WAIT)
        kind, fields = self.read()
        assert (kind, fields) == (Msg.READY, (self.proc.pid,))

    def send(self, kind: Msg, *fields: object) -> None:
        self.sock.sendall(proto.encode(kind, *fields))

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            assert chunk, "the worker closed its channel"
            data += chunk
        return data

    def read(self) -> tuple[Msg, tuple[object, ...]]:
        header = self._exactly(proto.HEADER_SIZE)
        return proto.decode(self._exactly(proto.body_size(header)))

    def until_terminal(self) -> list[tuple[Msg, tuple[object, ...]]]:
        messages = [self.read()]
        while messages[-1][0] not in TERMINAL:
            messages.append(self.read())
        return messages

    def run(self, spec: proto.JobSpec) -> list[tuple[Msg, tuple[object, ...]]]:
        self.send(Msg.JOB, *spec.fields())
        return self.until_terminal()

    def interrupt(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)

    def close(self) -> None:
        os.close(self.life)  # as if the parent died: the worker ends its group
        self.proc.wait(WAIT)
        self.sock.close()


@pytest.fixture
def worker() -> Any:
    process = WorkerProcess()
    yield process
    process.close()


def write(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source).lstrip("\n"))
    return path


def spec(
    root: Path,
    chain: list[str],
    mode: str = proto.CALL,
    kwargs: dict[str, Any] | None = None,
    label: str | None = None,
    package: str = "tasks",
) -> proto.JobSpec:
    name = chain[-1]
    return proto.JobSpec(
        label or name,
        name,
        mode,
        str(root),
        [(str(root / "tasks" / f"{n.replace('.', '/')}.py"), package) for n in chain],
        {k: pickle.dumps(v) for k, v in (kwargs or {}).items()},
        str(root / "logs" / f"{label or name}.log"),
        None,
        {},
        name,
        str(root),
        (),
    )


def output(messages: list[tuple[Msg, tuple[object, ...]]]) -> Any:
    kind, fields = messages[-1]
    assert kind is Msg.DONE, fields
    data = fields[0]
    assert isinstance(data, bytes)
    return pickle.loads(data)


def test_mode_values_agree_with_base() -> None:
    assert {m.value for m in Mode} == {
        proto.CALL,
        proto.GENERATE,
        proto.COLLECT,
        proto.INNER_GENERATE,
    }


def test_a_unit_is_started_then_done_with_its_duration(
    tmp_path: Path, worker: WorkerProcess
) -> None:
    write(tmp_path / "tasks" / "t.py", "def run(a):\n    return [a, a]\n")
    messages = worker.run(spec(tmp_path, ["t"], kwargs={"a": 7}))
    assert [kind for kind, _ in messages] == [Msg.STARTED, Msg.DONE]
    assert output(messages) == [7, 7]
    duration = messages[-1][1][1]
    assert isinstance(duration, float) and 0 < duration < WAIT


def test_a_short_unit_sends_started_and_done_in_one_write(
    tmp_path: Path, worker: WorkerProcess
) -> None:
    # one write: one wake-up of the executor per unit, not two
    write(
        tmp_path / "tasks" / "t.py",
        "import time\ndef run():\n    time.sleep(0.002)\n    return 5\n",
    )
    worker.send(Msg.JOB, *spec(tmp_path, ["t"]).fields())
    data = worker.sock.recv(1 << 16)
    frames = []
    while data:
        end = proto.HEADER_SIZE + proto.body_size(data[: proto.HEADER_SIZE])
        frames.append(proto.decode(data[proto.HEADER_SIZE : end]))
        data = data[end:]
    assert [kind for kind, _ in frames] == [Msg.STARTED, Msg.DONE]
    assert output(frames) == 5


def test_a_unit_that_runs_a_while_sends_started_while_it_runs(
    tmp_path: Path, worker: WorkerProcess
) -> None:
    write(
        tmp_path / "tasks" / "waits.py",
        "import os, time\ndef run():\n    while not os.path.exists('go'):\n"
        "        time.sleep(0.01)\n    return 'went'\n",
    )
    worker.send(Msg.JOB, *spec(tmp_path, ["waits"]).fields())
    assert worker.read() == (Msg.STARTED, ())  # while it waits: nothing else was sent
    (tmp_path / "go").touch()
    assert output([worker.read()]) == "went"


def test_worker_start_imports_nothing_heavy(tmp_path: Path, worker: WorkerProcess) -> None:
    write(
        tmp_path / "tasks" / "mods.py", "import sys\ndef run():\n    return sorted(sys.modules)\n"
    )
    loaded = set(output(worker.run(spec(tmp_path, ["mods"]))))
    heavy = {
        "asyncio",
        "typing",
        "dataclasses",
        "inspect",
        "logging",
        "pathlib",
        "watchrun.executors.base",
        "watchrun.project",
        "textual",
        "rich",
        "typer",
    }
    assert loaded & heavy == set()


def test_traceback_starts_at_the_task_not_in_the_worker(
    tmp_path: Path, worker: WorkerProcess
) -> None:
    task = write(tmp_path / "tasks" / "bad.py", "def run():\n    {}['missing']\n")
    [_, (kind, (error, _))] = worker.run(spec(tmp_path, ["bad"]))
    assert kind is Msg.FAILED
    assert isinstance(error, str)
    lines = error.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[1] == f'  File "{task}", line 2, in run'
    assert lines[-1] == "KeyError: 'missing'"


def test_missing_entry_point_fails_with_a_message(tmp_path: Path, worker: WorkerProcess) -> None:
    task = write(tmp_path / "tasks" / "empty.py", "X = 1\n")
    [_, (kind, (error, _))] = worker.run(spec(tmp_path, ["empty"]))
    assert (kind, error) == (Msg.FAILED, f"task 'empty' defines no run() (in {task} or a parent)")


def test_each_module_of_the_chain_sees_its_own_file_in_one_namespace(
    tmp_path: Path, worker: WorkerProcess
) -> None:
    base = write(tmp_path / "tasks" / "base.py", "BASE_FILE = __file__\nNAME = __name__\n")
    child = write(
        tmp_path / "tasks" / "child.py",
        "CHILD_FILE = __file__\ndef run():\n    return (BASE_FILE, CHILD_FILE, NAME)\n",
    )
    result = output(worker.run(spec(tmp_path, ["base", "child"])))
    assert result == (str(base), str(child), "watchrun.task.child")


def test_relative_imports_use_the_task_package(tmp_path: Path, worker: WorkerProcess) -> None:
    write(tmp_path / "tasks" / "video" / "common.py", "SIZE = 64\n")
    write(
        tmp_path / "tasks" / "video" / "extract.py",
        "from .common import SIZE\ndef run():\n    return SIZE\n",
    )
    job = spec(tmp_path, ["video.extract"], package="tasks.video")
    assert output(worker.run(job)) == 64


def test_an_interrupt_while_task_code_runs_cancels_it(
    tmp_path: Path, worker: WorkerProcess
) -> None:
    write(
        tmp_path / "tasks" / "loop.py",
        "import time\ndef run():\n    print('looping', flush=True)\n    while True:\n"
        "        time.sleep(0.01)\n",
    )
    worker.send(Msg.JOB, *spec(tmp_path, ["loop"]).fields())
    assert worker.read()[0] is Msg.STARTED
    log = tmp_path / "logs" / "loop.log"
    deadline = time.monotonic() + WAIT
    while "looping" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    worker.interrupt()
    kind, (error, _) = worker.read()
    assert kind is Msg.CANCELLED
    assert isinstance(error, str) and error.rstrip().endswith("KeyboardInterrupt")


def test_an_interrupt_that_arrives_before_the_job_is_not_lost(
    tmp_path: Path, worker: WorkerProcess
) -> None:
    # The executor may cancel a unit whose frame the worker has not read yet.
    write(tmp_path / "tasks" / "t.py", "def run():\n    return 1\n")
    worker.interrupt()  # pending at the worker before the job's frame is sent
    messages = worker.run(spec(tmp_path, ["t"]))
    assert [kind for kind, _ in messages] == [Msg.STARTED, Msg.CANCELLED]


def test_signal_handlers_set_by_a_task_do_not_outlive_its_unit(
    tmp_path: Path, worker: WorkerProcess
) -> None:
    write(
        tmp_path / "tasks" / "deaf.py",
        "import signal\ndef run():\n    signal.signal(signal.SIGINT, signal.SIG_IGN)\n",
    )
    write(
        tmp_path / "tasks" / "loop.py",
        "import pathlib, time\ndef run():\n    pathlib.Path('in-loop').touch()\n"
        "    while True:\n        time.sleep(0.01)\n",
    )
    assert worker.run(spec(tmp_path, ["deaf"]))[-1][0] is Msg.DONE
    worker.send(Msg.JOB, *spec(tmp_path, ["loop"]).fields())
    deadline = time.monotonic() + WAIT
    while not (tmp_path / "in-loop").exists():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    worker.interrupt()
    assert worker.until_terminal()[-1][0] is Msg.CANCELLED


def test_collect_answers_each_push_and_gathers_on_end(
    tmp_path: Path, worker: WorkerProcess
) -> None:
    write(
        tmp_path / "tasks" / "c.py",
        "total = 0\ndef run(v):\n    global total\n    total += v\ndef gather():\n"
        "    return total\n",
    )
    worker.send(Msg.JOB, *spec(tmp_path, ["c"], mode=proto.COLLECT).fields())
    assert worker.read()[0] is Msg.STARTED
    for value in (1, 2, 3):
        worker.send(Msg.PUSH, {"v": pickle.dumps(value)})
        assert worker.read() == (Msg.PUSHED, ())
    worker.send(Msg.END)
    assert output([worker.read()]) == 6


def test_a_pushed_value_whose_class_its_task_no_longer_defines_fails_naming_both(
    tmp_path: Path, worker: WorkerProcess
) -> None:
    """What a collector's replay pushes may refer to a class its upstream task has since
    dropped: the collector fails with a sentence naming the class and the task."""
    write(tmp_path / "tasks" / "gone.py", "# /// task\n# ///\ndef run():\n    return 1\n")
    write(tmp_path / "tasks" / "c.py", "def run(v):\n    pass\ndef gather():\n    return 0\n")
    stale = b"cwatchrun.task.gone\nFrame\n)R."  # a pickled Frame() of task 'gone'
    worker.send(Msg.JOB, *spec(tmp_path, ["c"], mode=proto.COLLECT).fields())
    assert worker.read()[0] is Msg.STARTED
    worker.send(Msg.PUSH, {"v": stale})
    kind, fields = worker.until_terminal()[-1]
    assert kind is Msg.FAILED
    assert "'Frame'" in fields[0] and "task 'gone' no longer defines" in fields[0], fields
    assert "Traceback" not in fields[0]


def test_pushes_that_arrive_together_are_each_answered_in_order(
    tmp_path: Path, worker: WorkerProcess
) -> None:
    write(
        tmp_path / "tasks" / "c.py",
        "seen = []\ndef run(v):\n    seen.append(v)\ndef gather():\n    return seen\n",
    )
    frames = [proto.encode(Msg.JOB, *spec(tmp_path, ["c"], mode=proto.COLLECT).fields())]
    frames += [proto.encode(Msg.PUSH, {"v": pickle.dumps(i)}) for i in range(200)]
    frames.append(proto.encode(Msg.END))
    worker.sock.sendall(b"".join(frames))  # the worker reads them all at once
    messages = worker.until_terminal()
    assert [kind for kind, _ in messages] == [Msg.STARTED, *[Msg.PUSHED] * 200, Msg.DONE]
    assert output(messages) == list(range(200))


def test_a_unit_that_prints_nothing_leaves_no_log_file(
    tmp_path: Path, worker: WorkerProcess
) -> None:
    write(tmp_path / "tasks" / "quiet.py", "def run():\n    return 1\n")
    write(
        tmp_path / "tasks" / "loud.py",
        "import subprocess, sys\ndef run(word):\n    print(word)\n"
        "    subprocess.run([sys.executable, '-c', f'print({word!r} * 2)'])\n",
    )
    logs = tmp_path / "logs"
    assert output(worker.run(spec(tmp_path, ["quiet"]))) == 1
    assert not (logs / "quiet.log").exists()
    worker.run(spec(tmp_path, ["loud"], kwargs={"word": "hi"}, label="loud1"))
    worker.run(spec(tmp_path, ["quiet"], label="quiet2"))
    worker.run(spec(tmp_path, ["loud"], kwargs={"word": "ho"}, label="loud2"))
    assert sorted(p.name for p in logs.iterdir()) == ["loud1.log", "loud2.log"]
    assert (logs / "loud1.log").read_text() == "hi\nhihi\n"
    assert (logs / "loud2.log").read_text() == "ho\nhoho\n"


def test_an_existing_log_is_emptied_when_its_unit_runs_again(
    tmp_path: Path, worker: WorkerProcess
) -> None:
    write(tmp_path / "tasks" / "t.py", "def run():\n    return 1\n")
    log = tmp_path / "logs" / "t.log"
    log.parent.mkdir()
    log.write_text("output of the last run\n")
    job = spec(tmp_path, ["t"])
    job.fresh_log = True
    assert output(worker.run(job)) == 1
    assert log.read_text() == ""


@pytest.mark.parametrize("idle_first", [False, True])
def test_a_long_unit_has_its_log_while_it_runs(
    tmp_path: Path, worker: WorkerProcess, idle_first: bool
) -> None:
    write(
        tmp_path / "tasks" / "slow.py",
        "import pathlib, time\ndef run():\n    while not pathlib.Path('go').exists():\n"
        "        time.sleep(0.01)\n    print('done')\n",
    )
    if idle_first:
        # a quiet unit, then more than a second without units: what names logs has gone to
        # sleep, and must wake for the next unit
        write(tmp_path / "tasks" / "quiet.py", "def run():\n    return 1\n")
        assert output(worker.run(spec(tmp_path, ["quiet"]))) == 1
        time.sleep(1.5)
    worker.send(Msg.JOB, *spec(tmp_path, ["slow"]).fields())
    log = tmp_path / "logs" / "slow.log"
    deadline = time.monotonic() + WAIT
    while not log.exists():  # named once it has run a while, output or not
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert log.read_text() == ""
    (tmp_path / "go").touch()
    assert worker.until_terminal()[-1][0] is Msg.DONE
    assert log.read_text() == "done\n"


def test_an_edited_task_module_is_recompiled_even_with_the_same_stat(
    tmp_path: Path, worker: WorkerProcess
) -> None:
    # Same size and, forced here, the same mtime: what a coarse filesystem clock gives for two
    # quick saves. The recent mtime makes the worker compare the bytes too.
    task = write(tmp_path / "tasks" / "t.py", "def run():\n    return 'AAA'\n")
    assert output(worker.run(spec(tmp_path, ["t"]))) == "AAA"
    stat = task.stat()
    task.write_text("def run():\n    return 'BBB'\n")
    os.utime(task, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert output(worker.run(spec(tmp_path, ["t"]))) == "BBB"


def test_an_edited_helper_is_reimported_despite_its_fresh_pyc(tmp_path: Path) -> None:
    # With bytecode writing on, the first import leaves a .pyc that Python trusts as long as
    # the source's mtime (in whole seconds) and size match: an edit in the same second that
    # keeps the size would load the old code.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    helper = write(tmp_path / "lib" / "helpers.py", "def value():\n    return 'old'\n")
    write(
        tmp_path / "tasks" / "t.py",
        "from lib import helpers\ndef run():\n    return helpers.value()\n",
    )
    worker = WorkerProcess(env)
    try:
        assert output(worker.run(spec(tmp_path, ["t"]))) == "old"
        assert Path(importlib.util.cache_from_source(str(helper))).exists()
        stat = helper.stat()
        helper.write_text("def value():\n    return 'new'\n")
        os.utime(helper, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert output(worker.run(spec(tmp_path, ["t"]))) == "new"
    finally:
        worker.close()


def test_closing_the_life_pipe_ends_the_worker_and_the_unit_subprocesses(tmp_path: Path) -> None:
    write(
        tmp_path / "tasks" / "spawns.py",
        """
        import os, subprocess, time
        def run():
            child = subprocess.Popen(["sleep", "60"])
            with open("child.pid", "w") as f:
                f.write(str(child.pid))
            os.rename("child.pid", "child.ready")
            while True:
                time.sleep(0.01)
        """,
    )
    worker = WorkerProcess()
    worker.send(Msg.JOB, *spec(tmp_path, ["spawns"]).fields())
    ready = tmp_path / "child.ready"
    deadline = time.monotonic() + WAIT
    while not ready.exists():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    sleeper = int(ready.read_text())
    worker.close()
    assert worker.proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while True:
        try:
            if psutil.Process(sleeper).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        assert time.monotonic() < deadline, "the unit's subprocess survived"
        time.sleep(0.01)


def test_file_snapshot_compares_bytes_while_the_stat_is_not_trustworthy(tmp_path: Path) -> None:
    path = tmp_path / "f.py"
    path.write_text("one")
    snapshot = FileSnapshot(str(path))
    assert not snapshot.changed()
    stat = path.stat()
    path.write_text("two")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert snapshot.changed()


def test_file_snapshot_of_an_old_file_trusts_the_stat(tmp_path: Path) -> None:
    path = tmp_path / "f.py"
    path.write_text("one")
    os.utime(path, (1_000_000_000, 1_000_000_000))
    snapshot = FileSnapshot(str(path))
    assert snapshot.content is None  # nothing kept: the stat alone decides
    path.write_text("three")
    assert snapshot.changed()


def test_a_generator_task_that_returns_a_list_fails_and_says_why(
    tmp_path: Path, worker: WorkerProcess
) -> None:
    write(tmp_path / "tasks" / "g.py", "def run():\n    return [1, 2]\n")
    [_, (kind, (error, _))] = worker.run(spec(tmp_path, ["g"], mode=proto.GENERATE))
    assert (kind, error) == (
        Msg.FAILED,
        "task 'g' must yield its values; it returned a list instead of a generator",
    )


def test_a_syntax_error_in_a_task_module_names_file_and_line(
    tmp_path: Path, worker: WorkerProcess
) -> None:
    task = write(tmp_path / "tasks" / "s.py", "def run():\n    return (\n")
    [_, (kind, (error, _))] = worker.run(spec(tmp_path, ["s"]))
    assert kind is Msg.FAILED
    assert isinstance(error, str)
    assert f'File "{task}", line 2' in error
    assert "SyntaxError" in error


def test_a_log_that_cannot_be_opened_fails_the_unit_not_the_worker(
    tmp_path: Path, worker: WorkerProcess
) -> None:
    write(tmp_path / "tasks" / "t.py", "def run():\n    return 1\n")
    blocked = spec(tmp_path, ["t"])
    blocked.log_path = str(tmp_path / "tasks" / "t.py" / "t.log")  # under a file
    [_, (kind, (error, _))] = worker.run(blocked)
    assert kind is Msg.FAILED
    assert isinstance(error, str) and error.startswith(f"cannot open the log {blocked.log_path}")
    assert output(worker.run(spec(tmp_path, ["t"]))) == 1


# -- big pickles as files (issue 17 point 15) ---------------------------------------------------


def test_a_big_output_is_pickled_into_a_temporary_file_and_only_its_path_and_digest_sent(
    tmp_path: Path, worker: WorkerProcess
) -> None:
    objects = tmp_path / "state" / "objects"  # not there yet: the worker makes it
    write(tmp_path / "tasks" / "big.py", "def run(n):\n    return [b'x' * n, 'end']\n")
    job = spec(tmp_path, ["big"], kwargs={"n": 300_000})
    job.objects = str(objects)
    kind, fields = worker.run(job)[-1]
    assert kind is Msg.DONE
    data = fields[0]
    assert isinstance(data, tuple)
    path, digest = data
    assert Path(path).parent == objects and Path(path).name.startswith(".tmp-")
    pickled = Path(path).read_bytes()
    # the same bytes (so the same name) as the pickle a Ray node sends in its frame
    assert pickled == pickle.dumps([b"x" * 300_000, "end"], proto.PICKLE_PROTOCOL)
    assert digest == hash_bytes(pickled)


def test_a_small_output_still_travels_in_the_frame(tmp_path: Path, worker: WorkerProcess) -> None:
    write(tmp_path / "tasks" / "small.py", "def run():\n    return b'x' * 1000\n")
    job = spec(tmp_path, ["small"])
    job.objects = str(tmp_path / "objects")
    assert output(worker.run(job)) == b"x" * 1000
    assert not (tmp_path / "objects").exists()


def test_a_big_value_that_cannot_be_pickled_leaves_no_temporary_file(
    tmp_path: Path, worker: WorkerProcess
) -> None:
    objects = tmp_path / "objects"
    objects.mkdir()
    write(tmp_path / "tasks" / "half.py", "def run():\n    return [b'x' * 300_000, lambda: 1]\n")
    job = spec(tmp_path, ["half"])
    job.objects = str(objects)
    kind, fields = worker.run(job)[-1]
    assert kind is Msg.FAILED and "is not picklable" in str(fields[0])
    assert list(objects.iterdir()) == []


def test_a_big_output_that_cannot_be_written_fails_its_unit_with_the_cause(
    tmp_path: Path, worker: WorkerProcess
) -> None:
    (tmp_path / "state").write_text("a file where the state folder should be")
    write(tmp_path / "tasks" / "big.py", "def run():\n    return b'x' * 300_000\n")
    job = spec(tmp_path, ["big"])
    job.objects = str(tmp_path / "state" / "objects")
    kind, fields = worker.run(job)[-1]
    assert kind is Msg.FAILED
    assert str(fields[0]) == "cannot write its output: Not a directory"  # as the store says it


# -- the outputs a unit wrote, hashed where they were written (issue 14) --------------------------


def test_done_carries_the_hash_and_stat_key_of_each_declared_output_it_wrote(
    tmp_path: Path, worker: WorkerProcess
) -> None:
    write(
        tmp_path / "tasks" / "out.py",
        '''
        # /// task
        # outputs = ["out/a.txt", "out/folder"]
        # ///
        import os
        def run():
            os.makedirs("out/folder", exist_ok=True)
            with open("out/a.txt", "w") as f:
                f.write("written")
            with open("out/folder/b.txt", "w") as f:
                f.write("below")
        ''',
    )
    kind, fields = worker.run(spec(tmp_path, ["out"]))[-1]
    assert kind is Msg.DONE, fields
    written = tmp_path / "out" / "a.txt"
    st = written.stat()
    # a folder gets no claim: the driver hashes it itself
    assert fields[2] == ((str(written), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns,
                          hash_bytes(b"written")),)


def test_a_unit_without_declared_outputs_claims_nothing(
    tmp_path: Path, worker: WorkerProcess
) -> None:
    write(tmp_path / "tasks" / "plain.py", "def run():\n    return 1\n")
    kind, fields = worker.run(spec(tmp_path, ["plain"]))[-1]
    assert kind is Msg.DONE and fields[2] == ()


def test_a_build_reads_back_none_of_the_outputs_its_workers_hashed(
    project: Callable[[dict[str, str]], Path], no_leaks: None
) -> None:
    """A budget: the driver hashed every declared output once more after its unit (the largest
    single part of its time per unit in a full build); now the worker's claims serve, also as
    the next task's input. Outputs are written as the driver would see them either way."""
    files = {
        f"tasks/t{i}.py": (
            f'# /// task\n# outputs = ["out/t{i}.txt"]\n'
            + (f'# inputs = ["out/t{i - 1}.txt"]\n' if i else "")
            + f"# ///\ndef run():\n    open('out/t{i}.txt', 'w').write('{i}')\n"
        )
        for i in range(6)
    }
    files["tasks/__init__.py"] = ""
    root = project(files)
    (root / "out").mkdir()

    async def build() -> tuple[int, int, dict[str, str | None]]:
        with open_session(root, "build", write=True) as session:
            loading = session.hasher.files_read  # the task modules, read to load the project
            summary = await run_build(session, default_targets(session.project), BuildOptions(),
                                      [], 2, "local", "")
            assert summary.ok, summary
            session.store.commit()
            _, results = session.store.last_units()
            [stored] = [r for r in results if r.task == "t5"]
            return summary.ran, session.hasher.files_read - loading, dict(stored.outputs)

    ran, read, outputs = asyncio.run(build())
    assert ran == 6
    assert read == 0
    assert outputs == {"out/t5.txt": hash_bytes(b"5")}


def test_the_modules_a_unit_imported_are_found_without_looking_at_older_ones() -> None:
    """A budget: record_new looks at the modules imported since the marker taken before the
    unit. The marker was the newest module, often the previous task's own, which the next
    unit drops: then every module of the worker was looked at, at every unit."""
    previous = taskmodules.PREFIX + "previous_task"
    new_names = [taskmodules.PREFIX + "next_task", "a_helper_the_unit_imported"]
    sys.modules[previous] = types.ModuleType(previous)
    try:
        marker = newest_module()
        del sys.modules[previous]  # as the next unit, of another task, does
        for name in new_names:
            sys.modules[name] = types.ModuleType(name)
        assert list(_keys_after(marker)) == new_names[::-1]
    finally:
        for name in (previous, *new_names):
            sys.modules.pop(name, None)


def test_the_workers_own_variable_stays_and_a_units_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(taskmodules.ROOT_ENV, raising=False)
    monkeypatch.delenv("SET_BY_A_UNIT", raising=False)
    baseline = Baseline()
    baseline.include_env(taskmodules.ROOT_ENV, "/project")
    os.environ["SET_BY_A_UNIT"] = "1"
    baseline.restore()
    assert "SET_BY_A_UNIT" not in os.environ
    assert os.environ[taskmodules.ROOT_ENV] == "/project"
    monkeypatch.delenv(taskmodules.ROOT_ENV)


OUTPUT_TASK = '''
# /// task
# outputs = ["out/a.txt"]
# ///
import os
def run(write=True):
    if write:
        os.makedirs("out", exist_ok=True)
        with open("out/a.txt", "w") as f:
            f.write("written")
'''


def test_a_job_that_carries_its_outputs_is_checked_without_reading_the_task_header(
    tmp_path: Path, worker: WorkerProcess
) -> None:
    """The driver sends the declared outputs with the job: the worker neither reads the task
    file again nor imports the header parser (TOML, dataclasses) to find them."""
    write(tmp_path / "tasks" / "out.py", OUTPUT_TASK)
    modules = "import sys\ndef run():\n    return sorted(sys.modules)\n"
    write(tmp_path / "tasks" / "mods.py", modules)
    job = spec(tmp_path, ["out"])
    job.outputs = (str(tmp_path / "out" / "a.txt"),)
    kind, fields = worker.run(job)[-1]
    assert kind is Msg.DONE, fields
    [claim] = fields[2]  # type: ignore[misc]
    assert claim[0] == str(tmp_path / "out" / "a.txt") and claim[5] == hash_bytes(b"written")
    loaded = set(output(worker.run(spec(tmp_path, ["mods"]))))
    assert {"watchrun.project.header", "dataclasses", "tokenize"} & loaded == set()


def test_a_carried_output_the_unit_did_not_write_fails_it_naming_the_header(
    tmp_path: Path, worker: WorkerProcess
) -> None:
    write(tmp_path / "tasks" / "out.py", OUTPUT_TASK)
    job = spec(tmp_path, ["out"], kwargs={"write": False})
    job.outputs = (str(tmp_path / "out" / "a.txt"),)
    kind, fields = worker.run(job)[-1]
    assert kind is Msg.FAILED
    assert fields[0] == ("task 'out' finished without writing its declared output 'out/a.txt' "
                         "(outputs at tasks/out.py:2)")
