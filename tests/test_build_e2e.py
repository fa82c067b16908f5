"""`watchrun build` end to end: the real CLI on small projects in temporary folders."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import gone, read_pid, spawn_watchrun, wait_for, watchrun, worker_processes

pytestmark = pytest.mark.usefixtures("no_leaks")

BASE = {
    "watchrun.toml": 'jobs = 2\ngrace = 0.3\n',
    "data/a.txt": "alpha\n",
    "lib/__init__.py": "",
    "lib/text.py": '''
        def shout(s):
            return s.upper()

        def whisper(s):
            return s.lower()
    ''',
    "tasks/read.py": '''
        # /// task
        # inputs = ["data/a.txt"]
        # ///
        def run(inputs):
            return inputs[0].read_text().strip()
    ''',
    "tasks/base.py": '''
        # /// task
        # abstract = true
        # after = ["read"]
        # [params]
        # suffix = "!"
        # times = 1
        # ///
        def decorate(s, suffix):
            return s + suffix

        def run(read, suffix, times):
            return decorate(read, suffix) * times
    ''',
    "tasks/loud.py": '''
        # /// task
        # extends = "base"
        # ///
        from lib.text import shout

        def decorate(s, suffix):
            return shout(s) + suffix
    ''',
    "tasks/plain.py": '''
        # /// task
        # extends = "base"
        # [params]
        # times = 2
        # ///
    ''',
    "tasks/quiet.py": '''
        # /// task
        # after = ["read"]
        # ///
        from lib.text import whisper

        def run(read):
            return whisper(read)
    ''',
    "tasks/report.py": '''
        # /// task
        # after = ["loud", "plain"]
        # outputs = ["out/report.txt"]
        # ///
        from pathlib import Path

        def run(loud, plain):
            Path("out").mkdir(exist_ok=True)
            Path("out/report.txt").write_text(loud + " " + plain)
            return len(loud + plain)
    ''',
}


def edit(root: Path, rel: str, old: str, new: str) -> None:
    path = root / rel
    text = path.read_text()
    assert old in text, f"{old!r} not in {rel}"
    path.write_text(text.replace(old, new))


@pytest.fixture
def built(project) -> Path:  # type: ignore[no-untyped-def]
    root: Path = project(BASE)
    first = watchrun(root, "build", "--json")
    assert first.code == 0, first.stderr
    assert sorted(first.ran()) == ["loud", "plain", "quiet", "read", "report"]
    return root


def test_first_build_runs_everything_and_the_outputs_are_right(built: Path) -> None:
    assert (built / "out/report.txt").read_text() == "ALPHA! alpha!alpha!"
    shown = watchrun(built, "show", "loud")
    assert shown.code == 0 and shown.stdout.strip() == "ALPHA!"


def test_null_build_runs_nothing(built: Path) -> None:
    again = watchrun(built, "build", "--json")
    assert again.code == 0
    assert again.ran() == []
    assert len(again.units("unit_skipped")) == 5
    finished = next(e for e in again.events if e["event"] == "build_finished")
    assert finished["ok"] is True and finished["ran"] == 0 and finished["skipped"] == 5


def test_comment_docstring_and_reformatting_rerun_nothing(built: Path) -> None:
    edit(built, "tasks/base.py", "def decorate(s, suffix):",
         '# a comment\n\ndef decorate(  s,suffix ):\n    """Docstring."""\n')
    edit(built, "lib/text.py", "return s.upper()", "return s.upper()  # loud")
    assert watchrun(built, "build", "--json").ran() == []


def test_changed_parent_helper_reruns_inheriting_child_only(built: Path) -> None:
    edit(built, "tasks/base.py", "return s + suffix", "return s + suffix + suffix")
    run = watchrun(built, "build", "--json")
    assert run.code == 0
    # plain inherits decorate; loud overrides it; report depends on plain's new output
    assert sorted(run.ran()) == ["plain", "report"]
    started = next(e for e in run.events if e["event"] == "unit_started")
    assert any("code changed: decorate" in r and "tasks/base.py" in r
               for r in started["reasons"]), started["reasons"]


def test_changed_local_module_definition_reruns_only_tasks_reaching_it(built: Path) -> None:
    edit(built, "lib/text.py", "return s.lower()", "return s.lower().strip()")
    assert sorted(watchrun(built, "build", "--json").ran()) == ["quiet"]


def test_param_change_in_parent_reruns_children_that_inherit_it(built: Path) -> None:
    edit(built, "tasks/base.py", "# times = 1", "# times = 3")
    run = watchrun(built, "build", "--json")
    # plain sets times = 2 itself; loud inherits times from base
    assert sorted(run.ran()) == ["loud", "report"]
    started = {e["task"]: e["reasons"] for e in run.events if e["event"] == "unit_started"}
    assert any("param changed: times" in r and "1 -> 3" in r for r in started["loud"])


def test_input_content_change_reruns_downstream_but_touch_does_not(built: Path) -> None:
    path = built / "data/a.txt"
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert watchrun(built, "build", "--json").ran() == []
    path.write_text("beta\n")
    run = watchrun(built, "build", "--json")
    assert sorted(run.ran()) == ["loud", "plain", "quiet", "read", "report"]
    assert (built / "out/report.txt").read_text() == "BETA! beta!beta!"


def test_early_cutoff_keeps_downstream_clean(built: Path) -> None:
    # same output from read: its downstream stays clean
    (built / "data/a.txt").write_text("alpha\n\n")
    assert watchrun(built, "build", "--json").ran() == ["read"]


def test_missing_output_reruns_with_a_reason(built: Path) -> None:
    (built / "out/report.txt").unlink()
    run = watchrun(built, "build", "--json")
    assert run.ran() == ["report"]
    started = next(e for e in run.events if e["event"] == "unit_started")
    assert started["reasons"] == ["output missing: out/report.txt"]
    assert (built / "out/report.txt").exists()


def test_dry_run_prints_reasons_and_runs_nothing(built: Path) -> None:
    edit(built, "tasks/quiet.py", "return whisper(read)", "return whisper(read) + '?'")
    dry = watchrun(built, "build", "--dry-run")
    assert dry.code == 0
    assert "would run quiet" in dry.stdout and "code changed: run" in dry.stdout
    assert watchrun(built, "build", "--json").ran() == ["quiet"]


def test_dry_run_lists_what_runs_below_a_dirty_task_too(built: Path) -> None:
    """A changed param of `plain` reruns it and `report` below it: the dry run says both (it
    said only `plain`, whose value it cannot know without running it) and counts what the
    build then runs."""
    edit(built, "tasks/plain.py", "# times = 2", "# times = 5")
    dry = watchrun(built, "build", "--dry-run", "--json")
    assert dry.code == 0, dry.stderr
    started = {e["task"]: e["reasons"] for e in dry.events if e["event"] == "unit_started"}
    assert started["report"] == ["upstream dirty: plain"] and "plain" in started
    finished = dry.events[-1]
    run = watchrun(built, "build", "--json")
    assert finished["ran"] == len(run.ran()) and sorted(started) == sorted(run.ran())


def test_status_reports_states_and_reasons(built: Path) -> None:
    edit(built, "tasks/plain.py", "# times = 2", "# times = 5")
    status = watchrun(built, "status")
    assert status.code == 0
    lines = {line.split()[1]: line for line in status.stdout.splitlines()}
    assert lines["read"].split()[0] == "clean"
    assert lines["plain"].split()[0] == "DIRTY" and "param changed: times" in lines["plain"]
    assert "upstream dirty: plain" in lines["report"]


def test_force_reruns_the_named_task(built: Path) -> None:
    run = watchrun(built, "build", "quiet", "--force", "--json")
    assert run.ran() == ["quiet"]
    started = next(e for e in run.events if e["event"] == "unit_started")
    assert started["reasons"] == ["forced"]


def test_clean_then_build_reruns(built: Path) -> None:
    assert watchrun(built, "clean", "quiet").code == 0
    assert watchrun(built, "build", "--json").ran() == ["quiet"]


def test_accept_declares_a_change_clean(built: Path) -> None:
    edit(built, "tasks/quiet.py", "return whisper(read)", "return whisper(read)  # same")
    edit(built, "lib/text.py", "return s.lower()", "return str.lower(s)")
    assert watchrun(built, "accept", "quiet").code == 0
    assert watchrun(built, "build", "--json").ran() == []
    assert watchrun(built, "show", "quiet").stdout.strip() == "alpha"


def test_graph_formats(built: Path) -> None:
    text = watchrun(built, "graph").stdout
    assert "loud (extends base)" in text and "report  <- loud, plain" in text
    mermaid = watchrun(built, "graph", "--format", "mermaid").stdout
    assert mermaid.startswith("graph TD") and "-->|read|" in mermaid
    dot = watchrun(built, "graph", "--format", "dot").stdout
    assert dot.startswith("digraph watchrun {") and 'label="extends"' in dot


FAILING = {
    "tasks/ok.py": "# /// task\n# ///\ndef run():\n    return 1\n",
    "tasks/boom.py": '''
        # /// task
        # ///
        def helper():
            raise ValueError("bad value 42")

        def run():
            print("about to fail")
            helper()
    ''',
    "tasks/after_boom.py": '# /// task\n# after = ["boom"]\n# ///\ndef run(boom):\n    return 2\n',
    "tasks/unpicklable.py": "# /// task\n# ///\ndef run():\n    return lambda: 1\n",
    "tasks/dies.py": "# /// task\n# ///\nimport os\n\ndef run():\n    os._exit(3)\n",
}


def test_failures_keep_going_show_tracebacks_and_exit_1(project) -> None:  # type: ignore[no-untyped-def]
    root = project(FAILING)
    run = watchrun(root, "build")
    assert run.code == 1
    assert "ValueError: bad value 42" in run.stdout
    assert 'tasks/boom.py", line 4, in helper' in run.stdout  # the full traceback
    assert "about to fail" in run.stdout  # the tail of the log
    assert "not picklable" in run.stdout
    assert "exit code 3" in run.stdout
    assert "Traceback" not in run.stderr
    events = watchrun(root, "build", "--json")
    assert "after_boom" not in events.ran()
    assert ("ok", ()) in events.units("unit_skipped")  # it succeeded the first time
    status = watchrun(root, "status").stdout
    assert "FAILED" in status.split("boom")[0].splitlines()[-1]


def test_fail_fast_stops_at_the_first_failure(project) -> None:  # type: ignore[no-untyped-def]
    root = project({**FAILING, "watchrun.toml": "jobs = 1\n"})
    run = watchrun(root, "build", "--fail-fast", "--json")
    assert run.code == 1
    assert len(run.units("unit_failed")) == 1


SLOW = {
    "watchrun.toml": "jobs = 2\ngrace = 0.3\n",
    "tasks/stubborn.py": '''
        # /// task
        # ///
        import signal, subprocess, time
        from pathlib import Path

        def run():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            child = subprocess.Popen(["sleep", "300"])
            Path("child.pid").write_text(str(child.pid))
            time.sleep(300)
    ''',
}


def test_ctrl_c_escalates_kills_subprocesses_and_exits_130(project) -> None:  # type: ignore[no-untyped-def]
    root = project(SLOW)
    proc = spawn_watchrun(root, "build", "--json")
    try:
        child = read_pid(root / "child.pid")
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    cancelled = [line for line in out.splitlines() if "unit_cancelled" in line]
    assert cancelled and '"signal": "SIGTERM"' in cancelled[0]  # SIGINT was ignored
    wait_for(lambda: gone(child), what="the child to die")


def test_kill_9_of_watchrun_leaves_no_worker_alive(project) -> None:  # type: ignore[no-untyped-def]
    root = project(SLOW)
    proc = spawn_watchrun(root, "build")
    try:
        child = read_pid(root / "child.pid")
        assert worker_processes()
    finally:
        proc.kill()
        proc.communicate()
    wait_for(lambda: not worker_processes(), what="workers to end")
    wait_for(lambda: gone(child), what="the child to die")


def test_second_writer_is_refused_and_status_still_works(project) -> None:  # type: ignore[no-untyped-def]
    root = project(SLOW)
    proc = spawn_watchrun(root, "build")
    try:
        read_pid(root / "child.pid")
        second = watchrun(root, "build")
        assert second.code == 2
        assert f"pid {proc.pid}" in second.stderr and "watchrun build" in second.stderr
        status = watchrun(root, "status")
        assert status.code == 0 and "stubborn" in status.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)


def test_a_reverted_change_shows_the_current_output(project) -> None:  # type: ignore[no-untyped-def]
    root = project({"n.txt": "1\n", "tasks/read.py": '# /// task\n# inputs = ["n.txt"]\n# ///\n'
                    "def run(inputs):\n    return int(inputs[0].read_text())\n"})
    for content, ran in (("1\n", ["read"]), ("2\n", ["read"]), ("1\n", [])):
        (root / "n.txt").write_text(content)
        assert watchrun(root, "build", "--json").ran() == ran
        assert watchrun(root, "show", "read").stdout.strip() == content.strip()
    (root / "n.txt").write_text("2\n")  # its result is stored too: nothing runs
    assert watchrun(root, "build", "--json").ran() == []
    assert watchrun(root, "show", "read").stdout.strip() == "2"


RACY = {
    "data/in.txt": "first\n",
    "tasks/slow.py": '''
        # /// task
        # inputs = ["data/in.txt"]
        # ///
        import time
        from pathlib import Path

        def run(inputs):
            text = inputs[0].read_text()
            Path("read.flag").write_text("")
            while not Path("go.flag").exists():
                time.sleep(0.01)
            return text.strip()
    ''',
}


def test_an_input_changed_while_the_unit_ran_is_not_recorded_clean(project) -> None:  # type: ignore[no-untyped-def]
    root = project(RACY)
    proc = spawn_watchrun(root, "build", "--json")
    try:
        wait_for(lambda: (root / "read.flag").exists(), what="the task to read its input")
        (root / "data/in.txt").write_text("second\n")  # changed after it was read
        (root / "go.flag").write_text("")
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    status = watchrun(root, "status").stdout
    assert "input changed while it ran" in status, status
    (root / "read.flag").unlink()
    again = watchrun(root, "build", "--json")
    assert again.ran() == ["slow"]
    assert watchrun(root, "show", "slow").stdout.strip() == "second"
    assert watchrun(root, "build", "--json").ran() == []


def test_a_chain_deeper_than_the_recursion_limit_builds_and_skips(project) -> None:  # type: ignore[no-untyped-def]
    depth = 1200  # Python's default recursion limit is 1000
    files = {"watchrun.toml": "jobs = 2\n"}
    for i in range(depth):
        after = f'# after = ["s{i - 1}"]\n' if i else ""
        arg = f"s{i - 1}" if i else ""
        files[f"tasks/s{i}.py"] = (f"# /// task\n{after}# ///\ndef run({arg}):\n"
                                   f"    return {arg + ' + 1' if i else '0'}\n")
    root = project(files)
    first = watchrun(root, "build", timeout=120)
    assert first.code == 0, first.stderr[-2000:]
    again = watchrun(root, "build", "--json", timeout=120)
    assert again.code == 0, again.stderr[-2000:]
    assert again.ran() == [] and len(again.units("unit_skipped")) == depth
    assert watchrun(root, "show", f"s{depth - 1}").stdout.strip() == str(depth - 1)
