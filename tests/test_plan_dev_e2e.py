"""The live-session rules of SPEC section 4, end to end through `watchrun dev --no-tui --json`:
a real process, real files, the real watcher."""

from __future__ import annotations

import itertools
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import wait_for, watchrun
from tests.devproc import DevProcess, Event, started

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(120)]

TOML = "jobs = 2\ngrace = 0.3\n"

# waits until the test lets it finish: the unit is running while the test edits things
GATED = '''
    # /// task
    # ///
    import time
    from pathlib import Path

    def run():
        with open("gated.runs", "a") as f:
            f.write("run\\n")
        while not Path("gated.go").exists():
            time.sleep(0.01)
        return "gated done"
'''


def of(events: list[Event], kind: str, task: str) -> list[Event]:
    return [e for e in events if e["event"] == kind and e.get("task") == task]


def wait_started(proc: DevProcess, task: str) -> Event:
    return proc.wait(lambda e: e["event"] == "unit_started" and e["task"] == task,
                     what=f"{task} to start")


def test_task_files_added_while_watching_are_planned_and_run(project) -> None:  # type: ignore[no-untyped-def]
    root: Path = project({"watchrun.toml": TOML,
                          "tasks/first.py": "# /// task\n# ///\ndef run():\n    return 1\n"})
    proc = DevProcess(root)
    assert started(proc.idle()) == ["first"]
    (root / "tasks/second.py").write_text(
        "# /// task\n# after = ['first']\n# ///\ndef run(first):\n    return first + 1\n")
    assert started(proc.idle()) == ["second"]
    # twenty at once, as a `git checkout` writes them
    for i in range(20):
        (root / f"tasks/many_{i:02d}.py").write_text(
            f"# /// task\n# after = ['second']\n# ///\ndef run(second):\n    return second + {i}\n")
    wanted = {f"many_{i:02d}" for i in range(20)}
    seen: set[str] = set()
    deadline = time.monotonic() + 30
    while seen != wanted and time.monotonic() < deadline:
        seen |= {e["task"] for e in proc.idle() if e["event"] == "unit_finished"}
    assert seen == wanted
    proc.stop()
    status = watchrun(root, "status").stdout
    assert status.count("clean") == 22, status


def test_deleted_and_renamed_tasks_are_dropped_and_their_units_cancelled(project) -> None:  # type: ignore[no-untyped-def]
    root: Path = project({"watchrun.toml": TOML, "tasks/gated.py": GATED,
                          "tasks/other.py": "# /// task\n# ///\ndef run():\n    return 2\n"})
    proc = DevProcess(root)
    wait_started(proc, "gated")
    proc.wait(lambda e: e["event"] == "unit_finished" and e["task"] == "other")
    mark = proc.cursor
    # inside run(): its worker has read the file (before that, a rename fails the unit instead)
    wait_for(lambda: (root / "gated.runs").exists(), what="gated to be running")
    (root / "tasks/gated.py").rename(root / "tasks/renamed.py")
    cancelled = proc.wait(lambda e: e["event"] == "unit_cancelled", what="the cancel")
    assert cancelled["task"] == "gated"
    proc.cursor = mark
    wait_started(proc, "renamed")  # the renamed task runs under its new name
    (root / "gated.go").write_text("")
    events = proc.idle()
    assert of(events, "unit_finished", "renamed")
    (root / "gated.go").unlink()
    (root / "tasks/renamed.py").unlink()  # deleted while idle: nothing runs, nothing breaks
    proc.wait(lambda e: e["event"] == "change" and "tasks/renamed.py" in e["paths"],
              timeout=30, what="the deletion")
    (root / "tasks/late.py").write_text("# /// task\n# ///\ndef run():\n    return 3\n")
    proc.wait(lambda e: e["event"] == "unit_finished" and e["task"] == "late", timeout=30,
              what="the new task to run")
    assert all(e["task"] == "late" for e in proc.events if e["event"] == "unit_started"
               and e["time"] > cancelled["time"] and e["task"] != "renamed")
    assert proc.stop() == 130
    assert "Traceback" not in proc.stderr()


SUB_SLOW = """
    # /// task
    # [params]
    # n = 1
    # ///
    import time

    def run(n):
        with open("slow.runs", "a") as f:
            f.write(f"{n}\\n")
        time.sleep(3)
        return n
"""


@pytest.mark.parametrize("to", ["tasks/sub2", "elsewhere"])
def test_a_task_folder_moved_while_its_unit_runs_is_dropped_or_moved(project, to: str) -> None:  # type: ignore[no-untyped-def]
    """`mv tasks/sub tasks/sub2` (or out of tasks/) while sub.slow's unit runs: the watcher
    reports the folders, not the files. The unit used to be said cancelled (waiting for the
    reload of its file) and then nothing came: no change, no build_finished, no idle."""
    root: Path = project({"watchrun.toml": "grace = 1.0\n", "tasks/sub/slow.py": SUB_SLOW})
    proc = DevProcess(root)
    proc.idle(timeout=30)
    slow = root / "tasks/sub/slow.py"
    slow.write_text(slow.read_text().replace("n = 1", "n = 2"))
    wait_started(proc, "sub.slow")
    wait_for(lambda: (root / "slow.runs").read_text().split() == ["1", "2"],
             what="sub.slow's unit to run")
    (root / "tasks/sub").rename(root / to)
    events = proc.idle(timeout=30)
    proc.stop()
    assert of(events, "unit_cancelled", "sub.slow"), events
    assert [e["event"] for e in events][-2:] == ["build_finished", "idle"], events
    if to == "tasks/sub2":  # the moved task runs under its new name
        assert of(events, "unit_finished", "sub2.slow"), events
    else:
        assert started(events) == [], events


@pytest.mark.parametrize("how", ["moved in", "created"])
def test_task_files_in_a_new_folder_are_planned_and_run(project, tmp_path: Path, how: str) -> None:  # type: ignore[no-untyped-def]
    """A folder of task files moved into tasks/, or a file written into a folder just
    created: the watcher sees the folder (not the files in it, or not yet). They used to be
    missed: no change, nothing ran."""
    root: Path = project({"watchrun.toml": TOML,
                          "tasks/first.py": "# /// task\n# ///\ndef run():\n    return 1\n"})
    src = tmp_path / "src/sub"
    src.mkdir(parents=True)
    for name in ("a", "b", "c"):
        (src / f"{name}.py").write_text(f"# /// task\n# ///\ndef run():\n    return '{name}'\n")
    proc = DevProcess(root)
    assert started(proc.idle()) == ["first"]
    if how == "moved in":
        src.rename(root / "tasks/sub")
    else:
        (root / "tasks/sub").mkdir()
        (root / "tasks/sub/a.py").write_text((src / "a.py").read_text())
    events = proc.idle()
    proc.stop()
    assert started(events) == (["sub.a", "sub.b", "sub.c"] if how == "moved in"
                               else ["sub.a"]), events


PRODUCER = {
    "watchrun.toml": TOML,
    "tasks/report.py": '''
        # /// task
        # outputs = ["out/report.txt"]
        # ///
        from pathlib import Path

        def run():
            Path("out").mkdir(exist_ok=True)
            Path("out/report.txt").write_text("the report\\n")
            return "written"
    ''',
}


def test_an_output_deleted_or_modified_by_hand_reruns_its_producer(project) -> None:  # type: ignore[no-untyped-def]
    root: Path = project(PRODUCER)
    proc = DevProcess(root)
    assert started(proc.idle()) == ["report"]
    proc.quiet(0.5)  # the producer's own writes change nothing
    (root / "out/report.txt").unlink()
    events = proc.idle()
    assert started(events) == ["report"]
    assert any("out/report.txt" in r for e in of(events, "unit_started", "report")
               for r in e["reasons"])
    (root / "out/report.txt").write_text("edited by hand\n")
    assert started(proc.idle()) == ["report"]
    assert (root / "out/report.txt").read_text() == "the report\n"
    assert proc.quiet(1.0) == []  # and then it rests
    proc.stop()


READER = {
    "watchrun.toml": TOML,
    "tasks/report.py": '''
        # /// task
        # outputs = ["out/report.txt"]
        # ///
        from pathlib import Path

        TEXT = "the report\\n"

        def run():
            Path("out").mkdir(exist_ok=True)
            Path("out/report.txt").write_text(TEXT)
            return TEXT
    ''',
    "data/notes.txt": "notes\n",
    "tasks/reader.py": '''
        # /// task
        # after = ["report"]
        # inputs = ["out/report.txt", "data/notes.txt"]
        # ///
        from pathlib import Path

        def run(report):
            return Path("out/report.txt").read_text().upper()
    ''',
}


def test_a_producers_own_writes_are_no_change_to_report(project) -> None:  # type: ignore[no-untyped-def]
    """The audit of issue 14 saw `out/report.txt` in the `change` after every rerun of its
    producer (its reader tracks it), so the TUI's header named a file nobody but its
    producer had written: an output its readers have read as it is now is not news. A data
    file touched is still reported (seen, nothing to run), as a comment-only edit is."""
    root: Path = project(READER)
    proc = DevProcess(root)
    assert sorted(started(proc.idle())) == ["reader", "report"]
    edit = root / "tasks/report.py"
    edit.write_text(edit.read_text().replace("the report", "the new report"))
    events = proc.idle()
    assert sorted(started(events)) == ["reader", "report"]
    events += proc.quiet(1.0)  # the watcher reports the output written meanwhile
    changes = [e for e in events if e["event"] == "change"]
    assert [e["paths"] for e in changes] == [["tasks/report.py"]], changes
    assert sorted(started(events)) == ["reader", "report"]  # nothing ran twice
    (root / "data/notes.txt").touch()
    change = proc.wait(lambda e: e["event"] == "change")
    assert change["paths"] == ["data/notes.txt"] and change["dirty"] == []
    assert started(proc.quiet(1.0)) == []
    (root / "data/notes.txt").write_text("other notes\n")
    change = proc.wait(lambda e: e["event"] == "change")
    assert change["paths"] == ["data/notes.txt"] and change["dirty"] == ["reader"]
    assert started(proc.idle()) == ["reader"]
    proc.stop()


def test_a_reader_that_also_takes_its_producers_value_reruns_before_idle(project) -> None:  # type: ignore[no-untyped-def]
    """`reader` takes report's value (`after`) and reads its file (`inputs`). An edit makes
    report write other text but return the same value: the early cutoff on the value must
    not keep reader, whose file changed. It used to: `idle` came with reader stale, and only
    the watcher's report of the file ran it, after that idle."""
    root: Path = project({**PRODUCER, "tasks/reader.py": '''
        # /// task
        # after = ["report"]
        # inputs = ["out/report.txt"]
        # ///
        from pathlib import Path

        def run(report):
            return Path("out/report.txt").read_text().upper()
    '''})
    proc = DevProcess(root)
    assert sorted(started(proc.idle())) == ["reader", "report"]
    edit = root / "tasks/report.py"
    edit.write_text(edit.read_text().replace("the report", "the new report"))
    assert sorted(started(proc.idle())) == ["reader", "report"]
    assert started(proc.quiet(1.0)) == []
    assert watchrun(root, "show", "reader").stdout.strip() == "THE NEW REPORT"
    proc.stop()


def test_a_project_error_cancels_nothing_and_its_fix_lets_the_unit_finish(project) -> None:  # type: ignore[no-untyped-def]
    root: Path = project({"watchrun.toml": TOML, "tasks/gated.py": GATED})
    proc = DevProcess(root)
    wait_started(proc, "gated")
    wait_for(lambda: (root / "gated.runs").exists(), what="gated to run")
    good = (root / "tasks/gated.py").read_text()
    (root / "tasks/gated.py").write_text(good.replace("def run():", "def run(:"))
    error = proc.wait(lambda e: e["event"] == "error", what="the project error")
    assert error["file"] == "tasks/gated.py"
    (root / "tasks/gated.py").write_text(good)  # the fix restores the same signature
    events = proc.quiet(1.0)
    assert not [e for e in events if e["event"] in ("unit_cancelled", "unit_started")], events
    (root / "gated.go").write_text("")
    events = proc.idle()
    assert of(events, "unit_finished", "gated")
    assert (root / "gated.runs").read_text().split() == ["run"]  # never started again
    proc.stop()
    assert watchrun(root, "status").stdout.split()[0] == "clean"


ITEMS = 30
SWEEP = {
    "watchrun.toml": TOML,
    "tasks/gen.py": f"# /// task\n# kind = 'generator'\n# ///\ndef run():\n"
                    f"    yield from range({ITEMS})\n",
    "tasks/item.py": """
        # /// task
        # after = ["gen"]
        # ///
        import time

        def run(gen):
            time.sleep(0.05)
            return gen * 2
    """,
}


def test_a_typo_saved_for_a_moment_mid_sweep_fails_no_unit_and_the_sweep_completes(
        project) -> None:  # type: ignore[no-untyped-def]
    """An editor's autosave with a syntax error while a sweep runs: the units that start
    meanwhile would compile the broken file. None of them counts as failed; they wait for the
    fix (the same code as planned) and run then."""
    root: Path = project(SWEEP)
    proc = DevProcess(root)
    proc.wait(lambda e: e["event"] == "unit_finished" and e["task"] == "item",
              what="the sweep to be under way")
    item = root / "tasks/item.py"
    good = item.read_text()
    item.write_text(good.replace("def run(gen):", "def run(gen:"))
    error = proc.wait(lambda e: e["event"] == "error", what="the project error")
    assert error["file"] == "tasks/item.py"
    time.sleep(0.3)  # the broken file stays a while: no unit of `item` may start meanwhile
    item.write_text(good)
    events = proc.idle()
    everything = proc.events
    assert not [e for e in everything if e["event"] == "unit_failed"], everything
    finished = {tuple(e["iter"]) for e in everything
                if e["event"] == "unit_finished" and e["task"] == "item"}
    assert finished == {(i,) for i in range(ITEMS)}, sorted(finished)
    assert events[-1]["event"] == "idle"
    proc.stop()
    assert watchrun(root, "status").stdout.split()[0] == "clean"


def speculative(output: str) -> dict[str, str]:
    return {
        "watchrun.toml": TOML,
        "tasks/up.py": f'''
            # /// task
            # [params]
            # x = 1
            # ///
            import time

            def run(x):
                time.sleep(0.5)
                return {output}
        ''',
        "tasks/down.py": '''
            # /// task
            # after = ["up"]
            # ///
            import time
            from pathlib import Path

            def run(up):
                with open("down.runs", "a") as f:
                    f.write(f"{up}\\n")
                while not Path("down.go").exists():
                    time.sleep(0.01)
                return f"down of {up}"
        ''',
    }


def test_running_downstream_keeps_running_if_its_upstream_reruns_to_the_same_value(project) -> None:  # type: ignore[no-untyped-def]
    root: Path = project(speculative('"always the same"'))
    proc = DevProcess(root)
    wait_started(proc, "down")
    text = (root / "tasks/up.py").read_text()
    (root / "tasks/up.py").write_text(text.replace("# x = 1", "# x = 2"))
    proc.wait(lambda e: e["event"] == "unit_finished" and e["task"] == "up",
              what="up to rerun")
    (root / "down.go").write_text("")
    events = proc.idle()
    assert not of(events, "unit_cancelled", "down"), events
    assert not of(events, "unit_started", "down"), events
    assert of(events, "unit_finished", "down")
    assert (root / "down.runs").read_text().split("\n")[:-1] == ["always the same"]
    proc.stop()
    assert watchrun(root, "show", "down").stdout.strip() == "down of always the same"
    status = watchrun(root, "status").stdout
    assert [line.split()[0] for line in status.splitlines() if line.strip()] == \
        ["clean", "clean"], status


def test_a_running_downstream_is_cancelled_when_its_upstreams_new_value_differs(project) -> None:  # type: ignore[no-untyped-def]
    root: Path = project(speculative("x"))
    proc = DevProcess(root)
    wait_started(proc, "down")
    text = (root / "tasks/up.py").read_text()
    (root / "tasks/up.py").write_text(text.replace("# x = 1", "# x = 2"))
    finished = proc.wait(lambda e: e["event"] == "unit_finished" and e["task"] == "up")
    cancelled = proc.wait(lambda e: e["event"] == "unit_cancelled" and e["task"] == "down")
    assert cancelled["time"] >= finished["time"]  # kept running until the value was known
    wait_started(proc, "down")
    (root / "down.go").write_text("")
    proc.idle()
    proc.stop()
    assert watchrun(root, "show", "down").stdout.strip() == "down of 2"


def test_a_task_that_changes_its_own_inputs_is_reported_once_and_not_looped(project) -> None:  # type: ignore[no-untyped-def]
    root: Path = project({
        "watchrun.toml": TOML,
        "data/log.txt": "",
        "tasks/appender.py": '''
            # /// task
            # inputs = ["data/log.txt"]
            # ///
            def run(inputs):
                with open(inputs[0], "a") as f:
                    f.write("one more line\\n")
                return len(inputs[0].read_text().splitlines())
        ''',
    })
    proc = DevProcess(root)
    events = proc.quiet(4.0)
    errors = [e for e in events if e["event"] == "error"]
    assert len(errors) == 1, events
    assert errors[0]["file"] == "tasks/appender.py" and errors[0]["line"] == 1
    assert "data/log.txt" in errors[0]["message"]
    assert len(of(events, "unit_started", "appender")) <= 2
    assert proc.quiet(1.5) == []
    # something else changing reruns it
    (root / "tasks/appender.py").write_text(
        (root / "tasks/appender.py").read_text().replace("one more", "another"))
    events = proc.quiet(3.0)
    assert 1 <= len(of(events, "unit_started", "appender")) <= 2
    proc.stop()


def test_a_run_cancelled_by_an_edit_of_its_input_says_so_when_it_runs_again(project) -> None:  # type: ignore[no-untyped-def]
    """An edit of its input while the unit runs makes it stale: cancelled, and its rerun says
    why, its last run was cancelled and the input changed (it said the reasons of the run
    before it, or "never run")."""
    root: Path = project({
        "watchrun.toml": TOML,
        "data/n.txt": "1\n",
        "tasks/slow.py": '''
            # /// task
            # inputs = ["data/n.txt"]
            # ///
            import time

            def run(inputs):
                time.sleep(1.0)
                return inputs[0].read_text().strip()
        ''',
    })
    proc = DevProcess(root)
    proc.idle(timeout=20)
    (root / "data/n.txt").write_text("2\n")
    wait_started(proc, "slow")
    (root / "data/n.txt").write_text("3\n")
    proc.wait(lambda e: e["event"] == "unit_cancelled" and e["task"] == "slow",
              what="the stale unit to be cancelled")
    again = wait_started(proc, "slow")
    assert again["reasons"] == ["last run cancelled", "input changed: data/n.txt"], again
    events = proc.idle(timeout=20)
    proc.stop()
    assert not [e for e in events if e["event"] == "error"], events
    assert "3" in watchrun(root, "show", "slow").stdout
def test_editors_temporary_files_never_show_in_changes(project) -> None:  # type: ignore[no-untyped-def]
    root: Path = project({"watchrun.toml": TOML,
                          "tasks/one.py": "# /// task\n# ///\ndef run():\n    return 1\n"})
    proc = DevProcess(root)
    proc.idle()
    subprocess.run(["sed", "-i", "s/return 1/return 2/", str(root / "tasks/one.py")],
                   check=True)
    for name in ("4913", ".one.py.swp", "one.py~", "one.py.swx"):
        (root / "tasks" / name).write_text("junk")
        (root / "tasks" / name).unlink()
    events = proc.idle()
    changes = [e for e in events if e["event"] == "change"]
    assert changes and all(e["paths"] == ["tasks/one.py"] for e in changes), changes
    assert started(events) == ["one"]
    proc.stop()


def test_a_speculative_downstream_is_cancelled_when_its_upstream_fails(project) -> None:  # type: ignore[no-untyped-def]
    root: Path = project(speculative('"same" if x == 1 else 1 / 0'))
    proc = DevProcess(root)
    wait_started(proc, "down")
    text = (root / "tasks/up.py").read_text()
    (root / "tasks/up.py").write_text(text.replace("# x = 1", "# x = 2"))
    events = proc.idle()  # nothing waits forever for a value that never comes
    assert of(events, "unit_failed", "up")
    assert of(events, "unit_cancelled", "down")
    proc.stop()


def streaming_below(output: str) -> dict[str, str]:
    """up (outside any scope) -> gen (a generator of 3 items, held until `gen.go` exists) ->
    total (a collector): while gen waits, the collector is live, mid-scope."""
    return {
        "watchrun.toml": TOML,
        "tasks/up.py": f'''
            # /// task
            # [params]
            # x = 1
            # ///
            import time

            def run(x):
                time.sleep(0.5)
                return {output}
        ''',
        "tasks/gen.py": '''
            # /// task
            # kind = "generator"
            # after = ["up"]
            # ///
            import time
            from pathlib import Path

            def run(up):
                yield f"{up}-0"
                while not Path("gen.go").exists():
                    time.sleep(0.01)
                yield f"{up}-1"
        ''',
        "tasks/total.py": '''
            # /// task
            # kind = "collector"
            # after = ["gen"]
            # ///
            seen = []

            def run(gen):
                seen.append(gen)

            def gather():
                return ",".join(seen)
        ''',
    }


def test_a_streaming_scope_goes_on_while_its_upstream_reruns_to_the_same_value(project) -> None:  # type: ignore[no-untyped-def]
    root: Path = project(streaming_below('"same"'))
    proc = DevProcess(root)
    proc.wait(lambda e: e["event"] == "push" and e["task"] == "total", what="the first push")
    text = (root / "tasks/up.py").read_text()
    (root / "tasks/up.py").write_text(text.replace("# x = 1", "# x = 2"))
    proc.wait(lambda e: e["event"] == "unit_finished" and e["task"] == "up", what="up to rerun")
    (root / "gen.go").write_text("")
    events = proc.idle()
    assert not [e for e in events if e["event"] == "unit_cancelled"], events
    assert not of(events, "unit_started", "gen") and not of(events, "unit_started", "total")
    proc.stop()
    assert watchrun(root, "show", "total").stdout.strip() == "same-0,same-1"


def test_a_streaming_scope_is_cancelled_once_its_upstreams_new_value_differs(project) -> None:  # type: ignore[no-untyped-def]
    root: Path = project(streaming_below("x"))
    proc = DevProcess(root)
    proc.wait(lambda e: e["event"] == "push" and e["task"] == "total", what="the first push")
    text = (root / "tasks/up.py").read_text()
    (root / "tasks/up.py").write_text(text.replace("# x = 1", "# x = 2"))
    finished = proc.wait(lambda e: e["event"] == "unit_finished" and e["task"] == "up")
    cancelled = proc.wait(lambda e: e["event"] == "unit_cancelled" and e["task"] == "gen")
    assert cancelled["time"] >= finished["time"]  # kept running until the value was known
    wait_started(proc, "gen")
    (root / "gen.go").write_text("")
    proc.idle()
    proc.stop()
    assert watchrun(root, "show", "total").stdout.strip() == "2-0,2-1"


def test_a_task_waits_for_every_upstream_that_reruns_before_it_starts(project) -> None:  # type: ignore[no-untyped-def]
    """`d` takes `a` (quick) and `b` (slow); an edit of the helper both call reruns both.
    `d` must start once, after both, with both new values. It used to start as soon as `a`
    ended, on new `a` and the `b` from before the change, and then again after `b`."""
    root: Path = project({
        "watchrun.toml": TOML,
        "lib/__init__.py": "",
        "lib/h.py": "def k():\n    return 1\n",
        "tasks/a.py": """
            # /// task
            # ///
            from lib.h import k

            def run():
                return k() + 100
        """,
        "tasks/b.py": """
            # /// task
            # ///
            import time
            from lib.h import k

            def run():
                time.sleep(1.0)
                return k() + 200
        """,
        "tasks/d.py": """
            # /// task
            # after = ["a", "b"]
            # ///
            def run(a, b):
                with open("d.log", "a") as log:
                    log.write(f"{a} {b}\\n")
                return a + b
        """,
    })
    proc = DevProcess(root)
    assert sorted(started(proc.idle())) == ["a", "b", "d"]
    (root / "lib/h.py").write_text("def k():\n    return 7\n")
    assert sorted(started(proc.idle())) == ["a", "b", "d"]
    proc.stop()
    assert (root / "d.log").read_text().splitlines() == ["101 201", "107 207"]


VANISHING_PARENT = {
    "watchrun.toml": TOML,
    "tasks/gen.py": "# /// task\n# kind = 'generator'\n# ///\ndef run():\n"
                    "    yield from range(40)\n",
    "tasks/base.py": """
        # /// task
        # abstract = true
        # after = ["gen"]
        # ///
        import time

        def run(gen):
            time.sleep(0.02)
            return gen + 1
    """,
    "tasks/per.py": "# /// task\n# extends = 'base'\n# [params]\n# v = 1\n# ///\n",
}


def test_a_parent_gone_for_a_moment_loses_none_of_its_childs_rerun(project) -> None:  # type: ignore[no-untyped-def]
    """An editor that truncates a file before writing it, or a `mv` away and back: while
    `per`'s scope reruns, its parent is empty for a moment. That project is not valid (per
    extends no task): nothing is decided on it. The rest of the scope used to be dropped,
    and `idle` came with `per` dirty for good."""
    root: Path = project(VANISHING_PARENT)
    proc = DevProcess(root)
    proc.idle()
    per, base = root / "tasks/per.py", root / "tasks/base.py"
    per.write_text(per.read_text().replace("v = 1", "v = 2"))
    proc.wait(lambda e: e["event"] == "unit_finished" and e["task"] == "per",
              what="the rerun of per to be under way")
    text = base.read_text()
    base.write_text("")
    proc.wait(lambda e: e["event"] == "error", what="the project error")
    base.write_text(text)
    events = proc.idle(timeout=30)
    proc.stop()
    status = watchrun(root, "status").stdout
    assert "clean  per  done 40/40" in status, status
    assert not of(events, "unit_cancelled", "per"), events


UPSTREAM_GONE = {
    "watchrun.toml": TOML,
    "data/sales.csv": "1\n2\n",
    "tasks/sales.py": "# /// task\n# inputs = ['data/sales.csv']\n# ///\n"
                      "def run(inputs):\n    return sum(map(int, inputs[0].read_text().split()))\n",
    "tasks/weather.py": "# /// task\n# [params]\n# decimals = 1\n# ///\n"
                        "def run(decimals):\n    return round(21.456, decimals)\n",
    "tasks/stats.py": "# /// task\n# after = ['sales', 'weather']\n# ///\n"
                      "def run(sales, weather):\n    return f'{sales} {weather}'\n",
    "tasks/report.py": "# /// task\n# after = ['stats']\n# ///\n"
                       "def run(stats):\n    return 'report: ' + stats\n",
}


def test_an_upstream_file_deleted_holds_its_downstream_only(project) -> None:  # type: ignore[no-untyped-def]
    """`rm tasks/stats.py`: report, which takes its value, is broken by that. Only the tasks
    that need stats wait for it; the others go on with changes of their inputs and params.
    The whole session used to freeze: an input change gave no event at all, a param change
    a `change` with nothing dirty, and nothing ran until the file came back."""
    root: Path = project(UPSTREAM_GONE)
    proc = DevProcess(root)
    proc.idle()
    stats = root / "tasks/stats.py"
    text = stats.read_text()
    stats.unlink()
    error = proc.wait(lambda e: e["event"] == "error", what="the project error")
    assert error["file"] == "tasks/report.py" and "stats" in error["message"], error
    with open(root / "data/sales.csv", "a") as f:
        f.write("3\n")
    proc.wait(lambda e: e["event"] == "unit_finished" and e["task"] == "sales",
              what="sales to rerun on its input")
    weather = root / "tasks/weather.py"
    weather.write_text(weather.read_text().replace("decimals = 1", "decimals = 2"))
    proc.wait(lambda e: e["event"] == "unit_finished" and e["task"] == "weather",
              what="weather to rerun on its param")
    waited = proc.quiet(0.5)
    assert not of(waited, "unit_started", "stats") and not of(waited, "unit_started", "report")
    stats.write_text(text)  # back: what waited for it runs, with the values of now
    events = proc.idle()
    proc.stop()
    assert started(events) == ["report", "stats"], events
    assert watchrun(root, "show", "report").stdout.strip() == "report: 6 21.46"


def slow_and_last(seconds: float) -> dict[str, str]:
    """`slow` (param n; it notes each n it runs with in runs.txt, then sleeps) and `last`,
    which takes its value."""
    return {
        "watchrun.toml": TOML,
        "tasks/slow.py": f"""
            # /// task
            # [params]
            # n = 1
            # ///
            import time

            def run(n):
                with open("runs.txt", "a") as log:
                    log.write(f"{{n}}\\n")
                time.sleep({seconds})
                return n
        """,
        "tasks/last.py": "# /// task\n# after = ['slow']\n# ///\ndef run(slow):\n"
                         "    return slow * 10\n",
    }


def test_a_task_file_gone_for_a_moment_cancels_nothing(project) -> None:  # type: ignore[no-untyped-def]
    """`mv tasks/slow.py` away and back while its unit runs: the project in between is not
    valid (`last` takes slow's value), so slow's unit goes on and is not run again."""
    root: Path = project(slow_and_last(1.5))
    proc = DevProcess(root)
    proc.idle()
    slow = root / "tasks/slow.py"
    slow.write_text(slow.read_text().replace("n = 1", "n = 2"))
    wait_for(lambda: (root / "runs.txt").read_text().split() == ["1", "2"],
             what="slow's unit to run")
    slow.rename(root / "slow.py.away")
    proc.wait(lambda e: e["event"] == "error", what="the project error")
    (root / "slow.py.away").rename(slow)
    events = proc.idle(timeout=30)
    proc.stop()
    assert not of(events, "unit_cancelled", "slow"), events
    assert (root / "runs.txt").read_text().split() == ["1", "2"]
    assert watchrun(root, "show", "last").stdout.strip() == "20"


def test_an_edit_undone_while_its_unit_runs_ends_on_the_skip(project) -> None:  # type: ignore[no-untyped-def]
    """An edit starts `c`; undone while it runs, its signature is the stored one again.
    The stale run is cancelled and c is clean: said in that order, so that the last word
    on c is `unit_skipped` (it was `unit_cancelled`, after the skip)."""
    root: Path = project({
        "watchrun.toml": TOML,
        "tasks/c.py": """
            # /// task
            # [params]
            # n = 1
            # ///
            import time

            def run(n):
                time.sleep(2)
                return n
        """,
    })
    proc = DevProcess(root)
    proc.idle(timeout=30)
    path = root / "tasks/c.py"
    original = path.read_text()
    path.write_text(original.replace("n = 1", "n = 777"))
    wait_started(proc, "c")
    path.write_text(original)
    events = proc.idle(timeout=30)
    proc.stop()
    said = [e["event"] for e in events if e.get("task") == "c"]
    assert said == ["unit_cancelled", "unit_skipped"], said


def test_every_change_is_followed_by_idle_and_only_a_build_by_build_finished(project) -> None:  # type: ignore[no-untyped-def]
    """A script that saves and waits for `idle` must not hang on a save that reruns nothing
    (a comment): `idle` follows every change once nothing runs or waits. `build_finished`
    ends a `build_started`, and comes with none else."""
    root: Path = project({"watchrun.toml": TOML,
                          "tasks/one.py": "# /// task\n# ///\ndef run():\n    return 1\n"})
    proc = DevProcess(root)
    proc.idle()
    path = root / "tasks/one.py"
    path.write_text(path.read_text() + "# a comment\n")
    events = proc.idle()
    assert [e["event"] for e in events] == ["change", "idle"], events
    path.write_text(path.read_text().replace("return 1", "return 2"))
    events = proc.idle()
    kinds = [e["event"] for e in events]
    assert kinds[0] == "change" and kinds[-2:] == ["build_finished", "idle"], kinds
    assert kinds.count("build_started") == 1
    proc.stop()


def test_jobs_saved_while_watching_applies_and_other_settings_say_when(project) -> None:  # type: ignore[no-untyped-def]
    """`jobs = 1` saved in watchrun.toml: the next units run one at a time (three ran at
    once before). A setting read only as dev starts (`grace`) is said to wait for that."""
    root: Path = project({
        "watchrun.toml": "jobs = 3\n",
        **{f"tasks/t{i}.py": f"""
            # /// task
            # [params]
            # n = 1
            # ///
            import time

            def run(n):
                with open("spans.log", "a") as log:
                    log.write(f"{{time.time()}} ")
                    time.sleep(0.3)
                    log.write(f"{{time.time()}}\\n")
                return n + {i}
        """ for i in range(3)},
    })
    proc = DevProcess(root)
    proc.idle(timeout=30)
    (root / "watchrun.toml").write_text("jobs = 1\ngrace = 5\n")
    notice = proc.wait(lambda e: e["event"] == "error", what="the settings notice")
    assert notice["file"] == "watchrun.toml" and "grace changed" in notice["message"], notice
    assert notice["line"] == 2, notice  # where grace is set
    proc.idle()
    (root / "spans.log").unlink()
    for i in range(3):
        path = root / f"tasks/t{i}.py"
        path.write_text(path.read_text().replace("n = 1", "n = 2"))
    assert sorted(started(proc.idle(timeout=30))) == ["t0", "t1", "t2"]
    proc.stop()
    spans = sorted(tuple(map(float, line.split()))
                   for line in (root / "spans.log").read_text().splitlines())
    assert len(spans) == 3
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), spans


def test_a_task_whose_file_stays_away_past_its_units_end_waits_for_it(project) -> None:  # type: ignore[no-untyped-def]
    """`slow`'s file is moved away while its unit runs, and comes back after the unit's end.
    That end cannot count (the plan's code is not there to check it against): the unit waits
    for the file and runs once when it is back. It used to be started and cancelled again
    about every 20 ms meanwhile: each change of another file let it go again."""
    root: Path = project(slow_and_last(1.0))
    proc = DevProcess(root)
    proc.idle()
    slow = root / "tasks/slow.py"
    slow.write_text(slow.read_text().replace("n = 1", "n = 2"))
    wait_started(proc, "slow")
    wait_for(lambda: (root / "runs.txt").read_text().split() == ["1", "2"],
             what="slow's unit to run")
    slow.rename(root / "slow.py.away")
    away: list[Event] = []
    for i in range(20):  # other files change meanwhile (here: dev's own --json log)
        (root / "notes.txt").write_text(str(i))
        away += proc.quiet(0.12)
    assert len(of(away, "unit_started", "slow")) == 0, away
    (root / "slow.py.away").rename(slow)
    events = proc.idle(timeout=30)
    proc.stop()
    assert len(of(events, "unit_started", "slow")) == 1, events
    assert watchrun(root, "show", "last").stdout.strip() == "20"
