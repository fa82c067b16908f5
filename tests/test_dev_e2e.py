"""`watchrun dev` end to end: a real process, real files, a real watcher, real signals."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import gone, read_pid, wait_for, watchrun, worker_processes
from tests.devproc import DevProcess, started

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(90)]

PROJECT = {
    "watchrun.toml": "jobs = 2\ngrace = 0.3\n",
    "data/in.txt": "one\n",
    "lib/__init__.py": "",
    "lib/fmt.py": "def fmt(s):\n    return f'<{s}>'\n",
    "tasks/load.py": '''
        # /// task
        # inputs = ["data/*.txt"]
        # ///
        def run(inputs):
            return [p.read_text().strip() for p in inputs]
    ''',
    "tasks/base.py": '''
        # /// task
        # abstract = true
        # after = ["load"]
        # [params]
        # sep = ","
        # ///
        def join(items, sep):
            return sep.join(items)

        def run(load, sep):
            return join(load, sep)
    ''',
    "tasks/joined.py": '# /// task\n# extends = "base"\n# ///\n',
    "tasks/spaced.py": '# /// task\n# extends = "base"\n# [params]\n# sep = " "\n# ///\n',
    "tasks/pretty.py": '''
        # /// task
        # after = ["joined"]
        # ///
        from lib.fmt import fmt

        def run(joined):
            return fmt(joined)
    ''',
}


def edit(root: Path, rel: str, old: str, new: str) -> None:
    path = root / rel
    text = path.read_text()
    assert old in text, f"{old!r} not in {rel}"
    path.write_text(text.replace(old, new))


@pytest.fixture
def dev(project) -> Iterator[tuple[Path, DevProcess]]:  # type: ignore[no-untyped-def]
    root: Path = project(PROJECT)
    proc = DevProcess(root)
    first = proc.idle()
    assert started(first) == ["joined", "load", "pretty", "spaced"]
    yield root, proc
    if proc.proc.poll() is None:
        proc.stop()


def test_edit_reruns_the_task_and_its_downstream_only(dev: tuple[Path, DevProcess]) -> None:
    root, proc = dev
    edit(root, "lib/fmt.py", "f'<{s}>'", "f'[{s}]'")
    change = proc.wait(lambda e: e["event"] == "change")
    assert change["paths"] == ["lib/fmt.py"] and change["dirty"] == ["pretty"]
    assert started(proc.idle()) == ["pretty"]
    code = proc.stop()
    assert code == 130
    assert watchrun(root, "show", "pretty").stdout.strip() == "[one]"


def test_comment_only_edit_reruns_nothing(dev: tuple[Path, DevProcess]) -> None:
    root, proc = dev
    edit(root, "tasks/base.py", "def join(items, sep):", "# joins\ndef join(items, sep):")
    change = proc.wait(lambda e: e["event"] == "change")
    assert change["dirty"] == []
    assert started(proc.quiet(0.5)) == []


def test_param_change_in_parent_dirties_only_inheriting_children(
        dev: tuple[Path, DevProcess]) -> None:
    root, proc = dev
    edit(root, "tasks/base.py", '# sep = ","', '# sep = ";"')
    change = proc.wait(lambda e: e["event"] == "change")
    assert change["dirty"] == ["joined", "pretty"]  # spaced sets sep itself
    # one item joins the same with any separator: early cutoff spares pretty
    assert started(proc.idle()) == ["joined"]


def test_data_change_and_new_file_matching_the_glob(dev: tuple[Path, DevProcess]) -> None:
    root, proc = dev
    (root / "data/in.txt").write_text("uno\n")
    assert started(proc.idle()) == ["joined", "load", "pretty", "spaced"]
    (root / "data/more.txt").write_text("dos\n")
    assert "load" in started(proc.idle())
    proc.stop()
    assert watchrun(root, "show", "joined").stdout.strip() == "uno,dos"  # inputs are sorted


def test_touch_reruns_nothing(dev: tuple[Path, DevProcess]) -> None:
    root, proc = dev
    path = root / "data/in.txt"
    path.touch()
    assert started(proc.quiet(0.6)) == []


def test_syntax_error_is_survived_and_its_fix_picked_up(dev: tuple[Path, DevProcess]) -> None:
    root, proc = dev
    good = (root / "tasks/pretty.py").read_text()
    (root / "tasks/pretty.py").write_text(good.replace("def run(joined):", "def run(joined:"))
    error = proc.wait(lambda e: e["event"] == "error")
    assert error["file"] == "tasks/pretty.py" and error["line"] == 6
    edit(root, "tasks/spaced.py", '# sep = " "', '# sep = "_"')  # the rest keeps working
    proc.wait(lambda e: e["event"] == "change" and e["dirty"] == ["spaced"])
    assert started(proc.idle()) == ["spaced"]
    (root / "tasks/pretty.py").write_text(good.replace("fmt(joined)", "fmt(joined) + '!'"))
    assert started(proc.idle()) == ["pretty"]
    proc.stop()
    assert watchrun(root, "show", "pretty").stdout.strip() == "<one>!"


SLOW = {
    "watchrun.toml": "jobs = 2\ngrace = 0.3\n",
    "tasks/steady.py": '''
        # /// task
        # ///
        import time
        from pathlib import Path

        def run():
            Path("steady.started").write_text("")
            while not Path("steady.go").exists():
                time.sleep(0.01)
            return "steady done"
    ''',
    "tasks/stubborn.py": '''
        # /// task
        # [params]
        # version = 1
        # ///
        import signal, subprocess, time
        from pathlib import Path

        def run(version):
            if version == 1:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                child = subprocess.Popen(["sleep", "300"])
                Path("child.pid").write_text(str(child.pid))
                time.sleep(300)
            return version
    ''',
}


def test_cancel_escalates_kills_subprocesses_and_spares_unaffected(project) -> None:  # type: ignore[no-untyped-def]
    root = project(SLOW)
    proc = DevProcess(root)
    try:
        wait_for(lambda: (root / "child.pid").exists() and (root / "steady.started").exists(),
                 what="both tasks to run")
        child = read_pid(root / "child.pid")
        edit(root, "tasks/stubborn.py", "# version = 1", "# version = 2")
        cancelled = proc.wait(lambda e: e["event"] == "unit_cancelled")
        assert cancelled["task"] == "stubborn" and cancelled["signal"] == "SIGTERM"
        wait_for(lambda: gone(child), what="child to die")
        proc.wait(lambda e: e["event"] == "unit_finished" and e["task"] == "stubborn")
        (root / "steady.go").write_text("")
        proc.wait(lambda e: e["event"] == "unit_finished" and e["task"] == "steady")
        assert not [e for e in proc.events if e["event"] == "unit_cancelled" and
                    e["task"] == "steady"]
        assert len([e for e in proc.events if e["event"] == "unit_started" and
                    e["task"] == "steady"]) == 1
    finally:
        assert proc.stop() == 130
    assert watchrun(root, "show", "stubborn").stdout.strip() == "2"


def test_sigterm_and_ctrl_c_leave_nothing_running(project) -> None:  # type: ignore[no-untyped-def]
    root = project(SLOW)
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        for name in ("child.pid", "steady.started"):
            (root / name).unlink(missing_ok=True)
        proc = DevProcess(root)
        wait_for(lambda: (root / "child.pid").exists(), what="the task's child")
        pid = read_pid(root / "child.pid")
        assert proc.stop(sig) == code
        assert not worker_processes()
        wait_for(lambda: gone(pid), what="child to die")  # noqa: B023 - used at once


STORM = {
    "watchrun.toml": "jobs = 2\ngrace = 0.2\n",
    "data/n.txt": "0\n",
    "tasks/count.py": '''
        # /// task
        # inputs = ["data/n.txt"]
        # ///
        import time

        def run(inputs):
            n = int(inputs[0].read_text())
            time.sleep(0.05)
            return n
    ''',
    "tasks/square.py": '''
        # /// task
        # after = ["count"]
        # ///
        import time

        def run(count):
            time.sleep(0.05)
            return count * count
    ''',
}


def test_edit_storm_converges_to_the_last_content(project) -> None:  # type: ignore[no-untyped-def]
    root = project(STORM)
    proc = DevProcess(root)
    proc.idle()
    path = root / "data/n.txt"
    for i in range(1, 61):
        path.write_text(f"{i}\n")
        time.sleep(1 / 60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # settled: idle, then nothing for a while
        if not proc.quiet(1.0) and proc.events[-1]["event"] == "idle":
            break
    assert proc.stop() == 130
    # the user's writes are not the task's own: nothing says so, and the last one counts
    assert not [e for e in proc.events if e["event"] == "error"], proc.events
    assert watchrun(root, "show", "square").stdout.strip() == "3600"
    status = watchrun(root, "status").stdout
    assert all(line.split()[0] == "clean" for line in status.splitlines()), status


def test_editors_that_save_by_rename_are_seen(dev: tuple[Path, DevProcess]) -> None:
    root, proc = dev
    target = root / "lib/fmt.py"
    temp = root / "lib/.fmt.py.swp"  # vim writes a new file, then renames it over the old one
    temp.write_text(target.read_text().replace("f'<{s}>'", "f'({s})'"))
    temp.replace(target)
    assert started(proc.idle()) == ["pretty"]
    with open(target, "r+") as f:  # others truncate and write in place
        text = f.read().replace("f'({s})'", "f'{{{s}}}'")
        f.seek(0)
        f.truncate()
        f.write(text)
    assert started(proc.idle()) == ["pretty"]
    proc.stop()
    assert watchrun(root, "show", "pretty").stdout.strip() == "{one}"
