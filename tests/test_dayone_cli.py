"""Day one, point 6: the conveniences of the peers, through the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import cli_env, wait_for, watchrun, write_project
from tests.devproc import DevProcess

pytestmark = pytest.mark.usefixtures("no_leaks")

HELLO = "# /// task\n# ///\ndef run():\n    print('hello from a')\n    return 1\n"


def here(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """watchrun run in `cwd`, without -C."""
    return subprocess.run([sys.executable, "-m", "watchrun", *args], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_version(tmp_path: Path) -> None:
    from watchrun import __version__

    run = here(tmp_path, "--version")
    assert run.returncode == 0 and run.stdout.strip() == f"watchrun {__version__}"


def test_the_root_is_found_from_a_subfolder_and_no_project_creates_nothing(
        tmp_path: Path) -> None:
    root = write_project(tmp_path / "proj", {"tasks/a.py": HELLO, "notebooks/readme.txt": ""})
    deep = root / "notebooks"
    built = here(deep, "build")
    assert built.returncode == 0, built.stderr
    assert (root / ".watchrun").is_dir() and not (deep / ".watchrun").exists()
    assert here(root / "tasks", "status").stdout.split() == ["clean", "a"]
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in (["build"], ["status"], ["show", "a"], ["graph"], ["clean"], ["log", "a"],
                 ["-C", str(empty), "build"], ["-C", str(empty), "dev", "--no-tui"]):
        run = here(empty, *args)
        assert run.returncode == 2, (args, run.stdout, run.stderr)
        assert "project" in run.stderr and "Traceback" not in run.stderr
    assert list(empty.iterdir()) == []


def test_log_prints_a_units_output_and_iterations(tmp_path: Path) -> None:
    root = write_project(tmp_path, {
        "tasks/a.py": HELLO,
        "tasks/gen.py": """
            # /// task
            # kind = "generator"
            # ///
            def run():
                for i in range(2):
                    yield i
        """,
        "tasks/each.py": """
            # /// task
            # after = ["gen"]
            # ///
            import sys


            def run(gen):
                print(f"out {gen}")
                print(f"err {gen}", file=sys.stderr)
        """,
    })
    write_project(root, {"tasks/bad.py": "# /// task\n# ///\ndef run():\n"
                                         "    print('trying')\n    raise KeyError('gone')\n"})
    assert watchrun(root, "build").code == 1
    assert watchrun(root, "log", "a").stdout == "hello from a\n"
    bad = watchrun(root, "log", "bad")
    assert bad.code == 0 and bad.stdout == "trying\n"  # what it printed, as it printed it
    assert "bad failed" in bad.stderr and "KeyError: 'gone'" in bad.stderr
    one = watchrun(root, "log", "each", "--iter", "1")
    assert one.code == 0 and one.stdout.splitlines() == ["out 1", "err 1"]
    every = watchrun(root, "log", "each").stdout
    assert every.index("each[0]") < every.index("out 0") < every.index("each[1]") \
        < every.index("out 1")
    assert watchrun(root, "log", "gen").code == 0  # ran, printed nothing
    assert watchrun(root, "log", "nope").code == 2


def test_build_v_streams_task_output_live_labelled_by_unit(tmp_path: Path) -> None:
    go = tmp_path / "go"
    root = write_project(tmp_path / "proj", {"tasks/slow.py": f"""
        # /// task
        # ///
        import os, time


        def run():
            print("waiting for go", flush=True)
            while not os.path.exists({str(go)!r}):
                time.sleep(0.02)
            print("got it")
    """})
    proc = subprocess.Popen([sys.executable, "-m", "watchrun", "-C", str(root), "build", "-v"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env(), stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        seen = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the line comes while the unit still waits
            line = proc.stdout.readline()
            seen.append(line)
            if line.strip() == "[slow] waiting for go":
                break
        else:
            raise AssertionError(f"no live output: {seen}")
        assert proc.poll() is None
        go.write_text("")
        rest = proc.stdout.read()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    assert "[slow] got it" in rest


def test_clean_outputs_stays_inside_the_root_and_off_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    root = write_project(tmp_path / "proj", {
        "tasks/make.py": """
            # /// task
            # outputs = ["out/a.txt", "out/folder", "linked/b.txt"]
            # ///
            import os


            def run(outputs):
                os.makedirs("out/folder", exist_ok=True)
                outputs[0].write_text("a")
                (outputs[1] / "inner.txt").write_text("inner")
                outputs[2].write_text("b")
        """,
        "tasks/other.py": """
            # /// task
            # outputs = ["other.txt"]
            # ///
            def run(outputs):
                outputs[0].write_text("other")
        """,
    })
    os.symlink(outside, root / "linked")  # linked/b.txt lands outside, through a symlink
    (outside / "b.txt").write_text("b")
    assert watchrun(root, "build").code == 0
    run = watchrun(root, "clean", "--outputs", "make")
    assert run.code == 0
    assert not (root / "out/a.txt").exists() and not (root / "out/folder").exists()
    assert (outside / "b.txt").read_text() == "b" and (outside / "keep.txt").exists()
    assert "symlink" in run.stderr
    assert (root / "other.txt").exists()  # not asked for
    assert watchrun(root, "build", "--json").ran() == ["make"]


def test_status_lists_outputs_left_by_tasks_that_no_longer_exist(tmp_path: Path) -> None:
    root = write_project(tmp_path, {
        "tasks/old.py": '# /// task\n# outputs = ["old.csv"]\n# ///\ndef run(outputs):\n'
                        '    outputs[0].write_text("x")\n',
        "tasks/a.py": HELLO,
    })
    assert watchrun(root, "build").code == 0
    (root / "tasks/old.py").unlink()
    status = watchrun(root, "status")
    assert "no longer exist" in status.stdout and "old.csv" in status.stdout, status.stdout
    assert watchrun(root, "clean", "--outputs").code == 0
    assert not (root / "old.csv").exists()


def test_status_does_not_list_the_outputs_of_a_renamed_task(tmp_path: Path) -> None:
    """prod.py renamed prod2.py: the new task declares (and writes) the file the old one
    did; status must not offer to delete it."""
    root = write_project(tmp_path, {
        "tasks/prod.py": '# /// task\n# outputs = ["out/p.txt"]\n# ///\n'
                         "def run(outputs):\n    outputs[0].parent.mkdir(exist_ok=True)\n"
                         '    outputs[0].write_text("p")\n',
    })
    assert watchrun(root, "build").code == 0
    (root / "tasks/prod.py").rename(root / "tasks/prod2.py")
    for built in (False, True):
        status = watchrun(root, "status")
        assert "no longer exist" not in status.stdout, (built, status.stdout)
        assert watchrun(root, "build").code == 0


def test_an_input_glob_matching_nothing_warns_and_gives_a_reason(tmp_path: Path) -> None:
    root = write_project(tmp_path, {"tasks/load.py": """
        # /// task
        # inputs = ["data/*.csv"]
        # ///
        def run(inputs):
            return len(inputs)
    """})
    run = watchrun(root, "build", "--dry-run")
    assert run.code == 0
    assert "tasks/load.py:2" in run.stderr and "'data/*.csv'" in run.stderr
    assert "input matches no file: data/*.csv" in run.stdout
    built = watchrun(root, "build")
    assert built.code == 0 and "matches no file" in built.stderr
    assert "matches no file" in watchrun(root, "status").stderr


def test_an_input_path_that_is_not_there_warns_unless_a_task_writes_it(tmp_path: Path) -> None:
    """A misspelt file name is the commonest case of an input that matches nothing: it
    warns as a glob does. An input that a task of the project writes (not there before its
    first build) does not."""
    root = write_project(tmp_path, {
        "tasks/load.py": """
            # /// task
            # inputs = ["data/raw.csv"]
            # ///
            def run(inputs):
                return len(inputs)
        """,
        "tasks/make.py": """
            # /// task
            # outputs = ["out/made.txt"]
            # ///
            from pathlib import Path

            def run():
                Path("out").mkdir(exist_ok=True)
                Path("out/made.txt").write_text("made")
        """,
        "tasks/read.py": """
            # /// task
            # inputs = ["out/made.txt"]
            # ///
            def run(inputs):
                return len(inputs)
        """,
    })
    built = watchrun(root, "build")
    assert built.code == 0, built.stderr
    assert "tasks/load.py:2: warning: input 'data/raw.csv' of task 'load' does not exist" \
        in built.stderr, built.stderr
    assert "made.txt" not in built.stderr
    assert "input matches no file: data/raw.csv" in built.stdout
    assert "does not exist" in watchrun(root, "status").stderr


def test_log_of_a_scope_whose_units_printed_nothing_says_so(tmp_path: Path) -> None:
    root = write_project(tmp_path, {
        "tasks/gen.py": "# /// task\n# kind = 'generator'\n# ///\ndef run():\n"
                        "    yield from range(3)\n",
        "tasks/quiet.py": "# /// task\n# after = ['gen']\n# ///\ndef run(gen):\n"
                          "    return gen\n",
    })
    assert watchrun(root, "build").code == 0
    log = watchrun(root, "log", "quiet")
    assert log.code == 0 and log.stdout == ""
    assert "none of the 3 units of 'quiet' printed anything" in log.stderr, log.stderr
    assert "--iter N" in log.stderr


def test_accept_of_a_scoped_task_or_a_collector_says_why_not(tmp_path: Path) -> None:
    """Said plainly (it said 'has never produced an output' of a task with 3 results)."""
    root = write_project(tmp_path, {
        "tasks/gen.py": "# /// task\n# kind = 'generator'\n# ///\ndef run():\n"
                        "    yield from range(3)\n",
        "tasks/b.py": "# /// task\n# after = ['gen']\n# ///\ndef run(gen):\n    return gen\n",
        "tasks/c.py": "# /// task\n# kind = 'collector'\n# after = ['b']\n# ///\n"
                      "seen = []\n\ndef run(b):\n    seen.append(b)\n\n"
                      "def gather():\n    return sum(seen)\n",
    })
    assert watchrun(root, "build").code == 0
    scoped = watchrun(root, "accept", "b")
    assert scoped.code == 2 and "it runs once per iteration of 'gen'" in scoped.stderr
    collector = watchrun(root, "accept", "c")
    assert collector.code == 2 and "it is a collector" in collector.stderr
    assert "never produced" not in scoped.stderr + collector.stderr


def test_building_an_abstract_task_names_the_tasks_that_extend_it(tmp_path: Path) -> None:
    root = write_project(tmp_path, {
        "tasks/base.py": "# /// task\n# abstract = true\n# ///\ndef run(n):\n    return n\n",
        "tasks/one.py": "# /// task\n# extends = 'base'\n# [params]\n# n = 1\n# ///\n",
    })
    run = watchrun(root, "build", "base")
    assert run.code == 2 and "Traceback" not in run.stderr
    assert "'base' is abstract" in run.stderr and "(one)" in run.stderr, run.stderr


def test_set_overrides_a_param_for_one_run(tmp_path: Path) -> None:
    root = write_project(tmp_path, {"tasks/fit.py": """
        # /// task
        # [params]
        # rate = 0.1
        # name = "base"
        # ///
        def run(rate, name):
            return f"{name}:{rate}"
    """})
    assert watchrun(root, "build").code == 0
    run = watchrun(root, "build", "--set", "fit.rate=0.5", "--set", "fit.name=tuned")
    assert run.code == 0
    assert "param changed: rate 0.1 -> 0.5 (set on the command line)" in run.stdout, run.stdout
    assert watchrun(root, "show", "fit").stdout == "tuned:0.5"
    # for that run only: the result under the header's values is still the one to use
    assert "would run 0" in watchrun(root, "build", "--dry-run").stdout
    assert watchrun(root, "build", "--set", "fit.rate=0.5", "--set", "fit.name=tuned",
                    "--json").ran() == []
    bad = watchrun(root, "build", "--set", "fit.rat=1")
    assert bad.code == 2 and "no param 'rat'" in bad.stderr and "did you mean 'rate'" in bad.stderr
    assert watchrun(root, "build", "--set", "fitrate").code == 2


def test_an_output_a_set_run_wrote_is_said_to_be_from_that_run(tmp_path: Path) -> None:
    """After `build --set`, the plain build restores the output the header's params make:
    the file is what the --set run wrote, not someone's edit ("output modified" said so)."""
    root = write_project(tmp_path, {"tasks/fit.py": """
        # /// task
        # outputs = ["fit.txt"]
        # [params]
        # rate = 0.1
        # ///
        from pathlib import Path

        def run(rate):
            Path("fit.txt").write_text(f"{rate}")
    """})
    assert watchrun(root, "build").code == 0
    assert watchrun(root, "build", "--set", "fit.rate=0.5").code == 0
    run = watchrun(root, "build")
    assert run.code == 0 and (root / "fit.txt").read_text() == "0.1"
    assert "(output written by its last run: fit.txt; param changed: rate 0.5 -> 0.1 " \
        "(tasks/fit.py:4 (fit)))" in run.stdout, run.stdout
    (root / "fit.txt").write_text("by hand")
    assert "(output modified: fit.txt)" in watchrun(root, "build").stdout


def test_status_shows_iteration_counts_and_the_first_line_of_a_failure(tmp_path: Path) -> None:
    root = write_project(tmp_path, {
        "tasks/gen.py": "# /// task\n# kind = \"generator\"\n# ///\ndef run():\n"
                        "    yield from range(5)\n",
        "tasks/each.py": '# /// task\n# after = ["gen"]\n# ///\ndef run(gen):\n'
                         '    if gen == 3:\n        raise ValueError("three is bad")\n'
                         '    return gen\n',
    })
    assert watchrun(root, "build").code == 1
    status = watchrun(root, "status").stdout
    [each] = [line for line in status.splitlines() if " each " in f" {line} "]
    assert "done 4/5" in each and "each[3]: ValueError: three is bad" in each, status
    [gen] = [line for line in status.splitlines() if " gen " in f" {line} "]
    assert "done 5/5" in gen


def test_status_tells_what_a_running_dev_runs(tmp_path: Path) -> None:
    go = tmp_path / "go"
    root = write_project(tmp_path / "proj", {"tasks/slow.py": f"""
        # /// task
        # ///
        import os, time


        def run():
            while not os.path.exists({str(go)!r}):
                time.sleep(0.02)
    """})
    dev = DevProcess(root)
    try:
        dev.wait(lambda e: e["event"] == "unit_started", what="the unit to start")

        def shown() -> bool:
            text = watchrun(root, "status").stdout
            return "watchrun dev is running" in text and "running now: slow" in text

        wait_for(shown, timeout=15, what="status to show the running dev")
        go.write_text("")
        dev.idle()
        wait_for(lambda: "running now: nothing" in watchrun(root, "status").stdout,
                 timeout=15, what="status to show an idle dev")
    finally:
        assert dev.stop() in (0, 130)
    assert "watchrun dev is running" not in watchrun(root, "status").stdout


def test_graph_shows_scopes_and_files_in_every_format(tmp_path: Path) -> None:
    root = write_project(tmp_path, {
        "tasks/gen.py": "# /// task\n# kind = \"generator\"\n# inputs = [\"raw/*.txt\"]\n"
                        "# ///\ndef run(inputs):\n    yield from inputs\n",
        "tasks/each.py": '# /// task\n# after = ["gen"]\n# ///\ndef run(gen):\n    return gen\n',
        "tasks/sum.py": '# /// task\n# kind = "collector"\n# after = ["each"]\n'
                        '# outputs = ["out/sum.txt"]\n# ///\ndef run(each):\n    pass\n'
                        'def gather(outputs):\n    outputs[0].write_text("")\n',
    })
    text = watchrun(root, "graph").stdout
    assert "scope of gen: each, sum" in text
    assert "inputs: raw/*.txt" in text and "outputs: out/sum.txt" in text
    mermaid = watchrun(root, "graph", "--format", "mermaid").stdout
    assert 'subgraph s0["scope of gen"]' in mermaid and '"raw/*.txt"' in mermaid
    assert "-.->|output|" in mermaid and "-.->|input|" in mermaid
    dot = watchrun(root, "graph", "--format", "dot").stdout
    assert "subgraph cluster_0" in dot and 'label="scope of gen"' in dot
    assert 'label="out/sum.txt"' in dot and 'label="output"' in dot


def test_dev_set_overrides_a_param_across_reloads(tmp_path: Path) -> None:
    root = write_project(tmp_path / "proj", {"tasks/fit.py": """
        # /// task
        # [params]
        # rate = 0.1
        # ///
        def run(rate):
            return f"rate {rate}"
    """})
    assert watchrun(root, "build").code == 0
    dev = DevProcess(root, "--set", "fit.rate=0.5")
    try:
        started = dev.wait(lambda e: e["event"] == "unit_started", what="fit to start")
        assert "param changed: rate 0.1 -> 0.5 (set on the command line)" in started["reasons"]
        dev.idle()
        assert watchrun(root, "show", "fit").stdout == "rate 0.5"
        path = root / "tasks/fit.py"
        path.write_text(path.read_text().replace('f"rate {rate}"', 'f"now {rate}"'))
        dev.wait(lambda e: e["event"] == "unit_finished", what="fit to rerun")
        dev.idle()
        assert watchrun(root, "show", "fit").stdout == "now 0.5"  # still overridden
    finally:
        assert dev.stop() in (0, 130)
