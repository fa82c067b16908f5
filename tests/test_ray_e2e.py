"""The Ray executor.

- Without Ray: the node side (ray_node.py: a relay around a real watchrun worker process, with
  real signals and files) and the message of `--executor ray` when Ray is not installed.
- With a local Ray cluster (marked `ray`; one cluster per session, loopback only, 2 CPUs): the
  end-to-end tests of the local executor, run again on Ray through the real CLI, plus what is
  particular to Ray (the CLI options, pause, a node that does not see the driver's logs).
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import tests.conftest as conftest
import tests.test_build_e2e as build_e2e
import tests.test_dev_e2e as dev_e2e
import tests.test_generators_e2e as generators_e2e
from tests.conftest import (
    REPO,
    SESSION_TAG,
    cli_env,
    gone,
    read_pid,
    wait_for,
    watchrun,
    worker_processes,
    write_project,
)
from tests.devproc import DevProcess, started
from tests.ray_cluster import RayCluster
from tests.ray_fixtures import on_the_cluster, session_ray_pids
from watchrun.executors import protocol as proto
from watchrun.executors import ray_node

# ---------------------------------------------------------------------------------------------
# The node side, without Ray: a Relay around a real watchrun worker.
# ---------------------------------------------------------------------------------------------


def node_job(
    root: Path,
    name: str,
    source: str,
    *,
    mode: str = proto.CALL,
    kwargs: dict[str, Any] | None = None,
    grace: float = 0.3,
    token: tuple[str, str] = ("", ""),
) -> ray_node.NodeJob:
    """A job for task `name` whose module's source, `source`, is shipped with the job (the
    module's file is not written)."""
    file = root / "tasks" / f"{name}.py"
    code = textwrap.dedent(source).lstrip("\n")
    spec = proto.JobSpec(
        name, name, mode, str(root), [(str(file), "tasks")],
        {k: pickle.dumps(v) for k, v in (kwargs or {}).items()},
        str(root / ".watchrun" / "logs" / f"{name}.log"), None, {}, name, str(root), (), True,
        {str(file): code.encode()},
    )
    return ray_node.NodeJob(spec.fields(), grace, *token)


@pytest.fixture
def child() -> Iterator[ray_node.ChildWorker]:
    worker = ray_node.ChildWorker()
    yield worker
    worker.end()
    assert not worker.alive()


def relay_items(job: ray_node.NodeJob, worker: ray_node.ChildWorker,
                during: Callable[[ray_node.Relay, tuple[Any, ...]], None] | None = None
                ) -> list[tuple[Any, ...]]:
    relay = ray_node.Relay(job, worker)
    items = []
    for item in relay.events():
        items.append(item)
        if during is not None:
            during(relay, item)
    return items


def test_node_runs_the_code_shipped_with_the_job_not_a_file(tmp_path: Path,
                                                           child: ray_node.ChildWorker) -> None:
    job = node_job(tmp_path, "double", "def run(x):\n    return x * 2\n", kwargs={"x": 21})
    assert not (tmp_path / "tasks" / "double.py").exists()
    items = relay_items(job, child)
    assert [i[0] for i in items] == ["started", "end"]
    _, outcome, payload, duration, log, _host = items[-1]
    assert (outcome, pickle.loads(payload)) == ("done", 42)
    assert duration > 0 and log is not None  # no token: the log comes back with the result


def test_node_writes_the_log_where_the_driver_reads_it_when_it_sees_the_token(
        tmp_path: Path, child: ray_node.ChildWorker) -> None:
    token = tmp_path / ".watchrun" / "logs" / ".ray-token"
    token.parent.mkdir(parents=True)
    token.write_text("abc")
    source = "import subprocess\ndef run():\n    print('hi')\n    subprocess.run(['echo', 'sub'])\n"
    shared = relay_items(node_job(tmp_path, "say", source, token=(str(token), "abc")), child)
    assert shared[-1][1] == "done" and shared[-1][4] is None
    assert (tmp_path / ".watchrun/logs/say.log").read_text() == "hi\nsub\n"
    # another run's token: this node does not see that driver's folder; the log travels back
    apart = relay_items(node_job(tmp_path, "say", source, token=(str(token), "xyz")), child)
    assert apart[-1][4] == b"hi\nsub\n"


def test_node_cancel_escalates_and_ends_the_task_subprocesses(
        tmp_path: Path, child: ray_node.ChildWorker) -> None:
    source = """
        import signal, subprocess, time
        from pathlib import Path

        def run():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            kid = subprocess.Popen(["sleep", "300"])
            Path("kid.pid").write_text(str(kid.pid))
            time.sleep(300)
    """
    (tmp_path / "tasks").mkdir()

    def interrupt_when_running(relay: ray_node.Relay, item: tuple[Any, ...]) -> None:
        if item[0] == "started":
            read_pid(tmp_path / "kid.pid")
            relay.interrupt.set()  # what ray.cancel does, through run_call's handler

    items = relay_items(node_job(tmp_path, "stubborn", source), child, interrupt_when_running)
    assert items[-1][1:3] == ("cancelled", "SIGTERM")  # SIGINT was ignored
    assert 0.3 <= items[-1][3] < 10
    wait_for(lambda: gone(read_pid(tmp_path / "kid.pid")), what="the task's child to die")
    assert not child.alive()  # a cancelled worker is not reused


MARKS_ITS_START = """
    from pathlib import Path

    def run():
        Path("ran").write_text("")
        return 1
"""


def still_starting(worker: ray_node.ChildWorker) -> None:
    """Hold the worker where it starts: its guard stopped before it could fork the watchrun
    worker (the guard's own interpreter takes tens of ms to start; this comes first)."""
    os.kill(worker.guard.pid, signal.SIGSTOP)
    assert worker.pid is None, "the worker said READY before its guard could be stopped"


def test_node_cancel_before_the_job_is_sent_ends_a_starting_worker_at_once(
        tmp_path: Path, child: ray_node.ChildWorker) -> None:
    still_starting(child)
    interrupt = threading.Event()
    interrupt.set()  # ray.cancel came while the Ray worker was starting the watchrun worker
    relay = ray_node.Relay(node_job(tmp_path, "late", MARKS_ITS_START, grace=5.0), child,
                           interrupt)
    items = list(relay.events())
    assert [i[0] for i in items] == ["end"]
    assert items[-1][1:3] == ("cancelled", "SIGKILL")
    assert items[-1][3] < 5.0  # at once: not after the cancel sequence's grace
    assert not child.alive() and not relay.reusable
    assert not (tmp_path / "ran").exists()


def test_node_cancel_while_the_worker_starts_ends_it_at_once(
        tmp_path: Path, child: ray_node.ChildWorker) -> None:
    """The job is on its way, the worker has not said READY: its group is not known, and a
    SIGINT would be lost. It is ended at once; the unit never runs."""
    still_starting(child)

    def cancel_when_sent(relay: ray_node.Relay, item: tuple[Any, ...]) -> None:
        if item[0] == "started":
            child.inputs.put(("cancel",))

    items = relay_items(node_job(tmp_path, "late", MARKS_ITS_START, grace=5.0), child,
                        cancel_when_sent)
    assert items[-1][1:3] == ("cancelled", "SIGKILL")
    assert items[-1][3] < 5.0
    assert not (tmp_path / "ran").exists()


def test_node_cancel_before_the_job_is_sent_keeps_an_idle_warm_worker(
        tmp_path: Path, child: ray_node.ChildWorker) -> None:
    warm = ray_node.Relay(node_job(tmp_path, "a", "def run():\n    return 1\n"), child)
    assert list(warm.events())[-1][1] == "done" and warm.reusable
    interrupt = threading.Event()
    interrupt.set()
    relay = ray_node.Relay(node_job(tmp_path, "late", MARKS_ITS_START), child, interrupt)
    assert [i[:3] for i in relay.events()] == [("end", "cancelled", "SIGINT")]
    assert relay.reusable and child.alive()  # it was sent nothing: the next unit takes it
    assert not (tmp_path / "ran").exists()


def test_node_worker_is_reused_after_a_normal_end_and_reports_a_death(
        tmp_path: Path, child: ray_node.ChildWorker) -> None:
    first = ray_node.Relay(node_job(tmp_path, "a", "def run():\n    return 1\n"), child)
    assert list(first.events())[-1][1] == "done" and first.reusable
    items = relay_items(node_job(tmp_path, "b", "import os\ndef run():\n    os._exit(3)\n"), child)
    assert items[-1][1:3] == ("died", f"the worker process died (exit code 3) on Ray node "
                                      f"{items[-1][5]}")


def test_node_applies_pushes_in_the_driver_order_whatever_the_arrival(
        tmp_path: Path, child: ray_node.ChildWorker) -> None:
    source = "seen = []\ndef run(v):\n    seen.append(v)\ndef gather():\n    return seen\n"
    job = node_job(tmp_path, "c", source, mode=proto.COLLECT)
    for seq, value in ((1, "b"), (3, None), (0, "a"), (2, "c")):  # as Ray might deliver them
        item = ("end_input", seq) if value is None else ("push", seq, {"v": pickle.dumps(value)})
        child.inputs.put(item)
    items = relay_items(job, child)
    assert [i[0] for i in items] == ["started", "pushed", "pushed", "pushed", "end"]
    assert pickle.loads(items[-1][2]) == ["a", "b", "c"]


def test_node_says_when_the_project_root_is_not_there(tmp_path: Path,
                                                      child: ray_node.ChildWorker) -> None:
    job = node_job(tmp_path / "elsewhere", "t", "def run():\n    return 1\n")
    outcome, message = relay_items(job, child)[-1][1:3]
    assert outcome == "failed"
    assert "does not exist on Ray node" in message and "same path" in message


def test_executor_ray_without_ray_says_how_to_install_it(tmp_path: Path) -> None:
    root = write_project(tmp_path / "proj", {"tasks/t.py": "# /// task\n# ///\ndef run():\n"
                                                            "    return 1\n"})
    hide_ray = ("import sys; sys.modules['ray'] = None; from watchrun.cli import main; "
                "main(sys.argv[1:])")
    for args in (["build", "--executor", "ray"], ["dev", "--no-tui"]):
        if args[0] == "dev":
            (root / "watchrun.toml").write_text('[executor]\nkind = "ray"\n')
        proc = subprocess.run([sys.executable, "-c", hide_ray, "-C", str(root), *args],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(REPO)},
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 2, proc.stderr
        assert "pip install 'watchrun[ray]'" in proc.stderr
        assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------
# On a Ray cluster.
# ---------------------------------------------------------------------------------------------



def on_ray(files: dict[str, str], cluster: RayCluster) -> dict[str, str]:
    """The project's files with its watchrun.toml choosing the Ray executor."""
    config = files.get("watchrun.toml", "").rstrip("\n")
    section = f'[executor]\nkind = "ray"\naddress = "{cluster.address}"\n'
    return {**files, "watchrun.toml": f"{config}\n{section}" if config else section}


@pytest.fixture
def project(tmp_path: Path, ray_env: RayCluster) -> Callable[[dict[str, str]], Path]:
    """Replaces conftest's: the same projects, run on the cluster (build and dev)."""

    def make(files: dict[str, str]) -> Path:
        return write_project(tmp_path / "proj", on_ray(files, ray_env))

    return make


@pytest.fixture
def built(request: pytest.FixtureRequest, project: Callable[[dict[str, str]], Path]) -> Path:
    """The `built` fixture of the module the adopted test comes from, on Ray."""
    origin = sys.modules[request.function.__module__]
    files = origin.BASE if origin is build_e2e else origin.PIPELINE
    root = project(files)
    first = watchrun(root, "build", "--json", timeout=120)
    assert first.code == 0, first.stdout + first.stderr
    return root


@pytest.fixture
def dev(project: Callable[[dict[str, str]], Path]) -> Iterator[tuple[Path, DevProcess]]:
    """test_dev_e2e's `dev`, with time for joining Ray."""
    root = project(dev_e2e.PROJECT)
    proc = DevProcess(root)
    assert started(proc.idle(timeout=90)) == ["joined", "load", "pretty", "spaced"]
    yield root, proc
    if proc.proc.poll() is None:
        proc.stop()


PATIENCE = 60.0  # seconds: what the adopted tests wait for at most, instead of 10-15


@pytest.fixture
def patient(monkeypatch: pytest.MonkeyPatch) -> None:
    """The adopted tests wait 10-15 s for a unit to start or end: enough for the local
    executor, not for joining Ray and starting its workers on a busy machine."""

    def wait_for(predicate: Callable[[], bool], timeout: float = PATIENCE,
                 what: str = "condition") -> None:
        conftest.wait_for(predicate, max(timeout, PATIENCE), what)

    def read_pid(path: Path, timeout: float = PATIENCE) -> int:
        return conftest.read_pid(path, max(timeout, PATIENCE))

    wait, idle = DevProcess.wait, DevProcess.idle

    def dev_wait(self: DevProcess, predicate: Callable[[dict[str, Any]], bool],
                 timeout: float = PATIENCE, what: str = "event") -> dict[str, Any]:
        return wait(self, predicate, max(timeout, PATIENCE), what)

    def dev_idle(self: DevProcess, timeout: float = PATIENCE) -> list[dict[str, Any]]:
        return idle(self, max(timeout, PATIENCE))

    for module in (build_e2e, generators_e2e, dev_e2e):
        for name, patched in (("wait_for", wait_for), ("read_pid", read_pid)):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, patched)
    monkeypatch.setattr(DevProcess, "wait", dev_wait)
    monkeypatch.setattr(DevProcess, "idle", dev_idle)


def adopt(module: Any, *names: str) -> None:
    """Run these end-to-end tests of the local executor here too, on Ray. Each is wrapped:
    marking the original function would mark it in its own module too."""
    prefix = module.__name__.rsplit(".", 1)[-1].removeprefix("test_").removesuffix("_e2e")
    for name in names:
        original = getattr(module, name)

        @functools.wraps(original)
        def adopted(*args: Any, __original: Any = original, **kwargs: Any) -> None:
            __original(*args, **kwargs)

        adopted.__dict__.pop("pytestmark", None)
        test = pytest.mark.usefixtures("patient")(on_the_cluster(adopted))
        globals()[f"test_ray_{prefix}_{name.removeprefix('test_')}"] = test


# skip and rerun, failures, cancel and Ctrl-C of a build, kill -9 of watchrun
adopt(build_e2e,
      "test_first_build_runs_everything_and_the_outputs_are_right",
      "test_null_build_runs_nothing",
      "test_changed_parent_helper_reruns_inheriting_child_only",
      "test_changed_local_module_definition_reruns_only_tasks_reaching_it",
      "test_input_content_change_reruns_downstream_but_touch_does_not",
      "test_failures_keep_going_show_tracebacks_and_exit_1",
      "test_fail_fast_stops_at_the_first_failure",
      "test_ctrl_c_escalates_kills_subprocesses_and_exits_130",
      "test_kill_9_of_watchrun_leaves_no_worker_alive")
# generators, collectors, inner generators, resuming, a generator that raises (and, below, the
# scope test in a form that does not depend on how fast Ray starts its second worker)
adopt(generators_e2e,
      "test_one_changed_input_reruns_one_iteration",
      "test_collector_change_replays_without_rerunning_upstream",
      "test_inner_generator_batches_and_finish_yields_the_last_partial_batch",
      "test_kill_9_mid_scope_then_resume_redoes_no_finished_iteration",
      "test_generator_that_raises_keeps_finished_iterations")
# dev: reruns, cancel of a stale unit with escalation, unaffected units spared
adopt(dev_e2e,
      "test_edit_reruns_the_task_and_its_downstream_only",
      "test_cancel_escalates_kills_subprocesses_and_spares_unaffected")


SMALL = {
    "data/n.txt": "3\n",
    "tasks/count.py": '# /// task\n# inputs = ["data/n.txt"]\n# ///\n'
                      "def run(inputs):\n    print('counting')\n"
                      "    return int(inputs[0].read_text())\n",
    "tasks/squares.py": '# /// task\n# kind = "generator"\n# after = ["count"]\n# ///\n'
                        "def run(count):\n    for i in range(count):\n        yield i * i\n",
    "tasks/total.py": '# /// task\n# kind = "collector"\n# after = ["squares"]\n# ///\n'
                      "seen = []\n\ndef run(squares):\n    seen.append(squares)\n\n"
                      "def gather():\n    return sum(seen)\n",
}


@on_the_cluster
def test_build_options_choose_ray_and_its_results_are_the_local_executors(
        tmp_path: Path, ray_env: RayCluster) -> None:
    root = write_project(tmp_path / "proj", SMALL)  # no [executor]: the options choose Ray
    ray = ("--executor", "ray", "--address", ray_env.address)
    run = watchrun(root, "build", *ray, "--json", timeout=120)
    assert run.code == 0, run.stdout + run.stderr
    assert sorted(run.ran()) == ["count", "squares", "total"]
    assert watchrun(root, "show", "total").stdout.strip() == "5"
    # the node it runs on (written as it starts), the unit's output, then the node it ran on
    # (the session cluster has one)
    assert re.fullmatch(r"\[watchrun\] runs on Ray node ([0-9a-f]{8}) \(127\.0\.0\.1\)\n"
                        r"counting\n\[watchrun\] ran on Ray node \1 \(127\.0\.0\.1\)\n",
                        (root / ".watchrun/logs/count.log").read_text())
    assert not (root / ".watchrun/logs/.ray-token").exists()
    # the same signatures and store: what Ray built is clean for the local executor, and back
    assert watchrun(root, "build", "--json").ran() == []
    (root / "data/n.txt").write_text("4\n")
    assert sorted(watchrun(root, "build", "--json").ran()) == ["count", "squares", "total"]
    again = watchrun(root, "build", *ray, "--json", timeout=120)
    assert again.code == 0 and again.ran() == []
    assert len(again.units("iteration")) == 4  # replayed from the store


@on_the_cluster
def test_empty_address_starts_ray_on_this_machine_and_stops_it(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, ray_env: RayCluster,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Ray's files in the test area, under a short path: its sockets' paths must stay short
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path_factory.mktemp("rt", numbered=True)))
    config = '[executor]\nkind = "ray"\naddress = ""\n'
    root = write_project(tmp_path / "proj", {**SMALL, "watchrun.toml": config})
    run = watchrun(root, "build", "--json", timeout=120)
    assert run.code == 0, run.stdout + run.stderr
    assert watchrun(root, "show", "total").stdout.strip() == "5"
    # the session's clusters (this module's, and the two-node one of other modules) stay up
    ours = session_ray_pids()
    wait_for(lambda: not tagged_processes(ours), timeout=30, what="the Ray it started to stop")


def tagged_processes(exclude: set[int]) -> list[str]:
    """Live processes this test session started, directly or not (they carry its tag), but
    for these (the session's Ray cluster)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid in exclude:
            continue
        try:
            if proc.environ().get("WATCHRUN_TEST_SESSION") == SESSION_TAG:
                found.append(" ".join(proc.info["cmdline"] or [])[:100])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@on_the_cluster
def test_pause_stops_a_persistent_unit_and_a_task_unit_on_their_node(tmp_path: Path,
                                                           ray_env: RayCluster) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.ray_cluster", "pause", str(tmp_path), ray_env.address],
        capture_output=True, text=True, timeout=150, env=cli_env(), cwd=REPO,
        stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.splitlines()[-1])
    # a task unit through its node's NodeControl (a marker its relay sees), a generator
    # through its actor: both stopped on their node, both going on once resumed
    assert seen["call_pause"] is True and seen["waiter_ticked_while_paused"] is False
    assert seen["generator_pause"] is True and seen["ticked_while_paused"] is False
    assert seen["resume"] is True and seen["call_resume"] is True and seen["yields"] > 0
    assert seen["ticker"] == ["CANCELLED", "SIGINT"] and seen["waiter"] == ["DONE", None]


@on_the_cluster
def test_dev_sigterm_and_ctrl_c_leave_nothing_running(
        project: Callable[[dict[str, str]], Path]) -> None:
    root = project(dev_e2e.SLOW)
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        for name in ("child.pid", "steady.started"):
            (root / name).unlink(missing_ok=True)
        proc = DevProcess(root)
        wait_for(lambda: (root / "child.pid").exists(), timeout=90, what="the task's child")
        pid = read_pid(root / "child.pid")
        assert proc.stop(sig, timeout=60) == code
        wait_for(lambda: gone(pid), what="the child to die")  # noqa: B023 - used at once
        # the units were cancelled before watchrun exited; idle workers Ray kept for them end
        # when Ray ends the job
        wait_for(lambda: not worker_processes(), what="the workers to end")


@on_the_cluster
def test_scope_pushes_in_iteration_order_whatever_order_units_finish_in(
        project: Callable[[dict[str, str]], Path]) -> None:
    """test_generators_e2e's test_scope_runs_each_iteration_and_pushes_in_order, with item 0
    finishing last for certain: there, it sleeps longest, which on Ray does not make it last
    when the other slot is still starting its Ray worker."""
    work = '''
        # /// task
        # after = ["source"]
        # ///
        import time
        from pathlib import Path

        def run(source, ctx):
            if ctx.iter[0] == 0:
                while not Path("work3.done").exists():
                    time.sleep(0.01)
            with open("work.log", "a") as f:
                f.write(f"{ctx.iter[0]}\\n")
            if ctx.iter[0] == 3:
                Path("work3.done").write_text("")
            return source * 10
    '''
    root = project({**generators_e2e.PIPELINE, "tasks/work.py": work})
    run = watchrun(root, "build", "--json", timeout=120)
    assert run.code == 0, run.stdout + run.stderr
    assert run.units("iteration") == [("source", (i,)) for i in range(4)]
    assert sorted(run.units("unit_finished")) == sorted(
        [("source", ()), ("total", ()), ("report", ())] + [("work", (i,)) for i in range(4)])
    assert generators_e2e.lines(root, "work.log")[-1] == "0"
    assert run.units("push") == [("total", (i,)) for i in range(4)]
    assert generators_e2e.lines(root, "pushes.log") == ["90", "0", "20", "10"]
    assert run.units("gather") == [("total", ())]
    assert watchrun(root, "show", "report").stdout.strip() == "sum=120"
    assert watchrun(root, "show", "work", "--iter", "2").stdout.strip() == "20"
