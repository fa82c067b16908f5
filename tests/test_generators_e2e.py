"""Generators, collectors and the nearest clean iteration, end to end through the CLI."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import spawn_watchrun, wait_for, watchrun

pytestmark = pytest.mark.usefixtures("no_leaks")

PIPELINE = {
    "watchrun.toml": "jobs = 2\ngrace = 0.3\n",
    "data/0.txt": "9\n",
    "data/1.txt": "0\n",
    "data/2.txt": "2\n",
    "data/3.txt": "1\n",
    "tasks/source.py": '''
        # /// task
        # kind = "generator"
        # inputs = ["data/*.txt"]
        # ///
        from pathlib import Path

        def run(inputs, start):
            with open("starts.log", "a") as f:
                f.write(f"{start}\\n")
            for path in inputs[start:]:
                yield int(path.read_text())
    ''',
    "tasks/work.py": '''
        # /// task
        # after = ["source"]
        # ///
        import time

        def run(source, ctx):
            time.sleep(source * 0.05)  # later items finish first
            with open("work.log", "a") as f:
                f.write(f"{ctx.iter[0]}\\n")
            return source * 10
    ''',
    "tasks/total.py": '''
        # /// task
        # kind = "collector"
        # after = ["work"]
        # ///
        seen = []

        def run(work):
            seen.append(work)
            with open("pushes.log", "a") as f:
                f.write(f"{work}\\n")

        def gather():
            return {"order": list(seen), "sum": sum(seen)}
    ''',
    "tasks/report.py": '''
        # /// task
        # after = ["total"]
        # ///
        def run(total):
            return f"sum={total['sum']}"
    ''',
}


def lines(root: Path, name: str) -> list[str]:
    path = root / name
    return path.read_text().split() if path.exists() else []


@pytest.fixture
def built(project) -> Path:  # type: ignore[no-untyped-def]
    root: Path = project(PIPELINE)
    run = watchrun(root, "build", "--json")
    assert run.code == 0, run.stdout + run.stderr
    return root


def test_scope_runs_each_iteration_and_pushes_in_order(project) -> None:  # type: ignore[no-untyped-def]
    root = project(PIPELINE)
    run = watchrun(root, "build", "--json")
    assert run.code == 0, run.stderr
    assert run.units("iteration") == [("source", (i,)) for i in range(4)]
    assert sorted(run.units("unit_finished")) == sorted(
        [("source", ()), ("total", ()), ("report", ())] + [("work", (i,)) for i in range(4)])
    # pushes happen in iteration order although item 0 (sleeping longest) finished last
    assert run.units("push") == [("total", (i,)) for i in range(4)]
    assert lines(root, "pushes.log") == ["90", "0", "20", "10"]
    assert lines(root, "work.log")[-1] == "0"
    assert run.units("gather") == [("total", ())]
    assert watchrun(root, "show", "report").stdout.strip() == "sum=120"
    assert watchrun(root, "show", "work", "--iter", "2").stdout.strip() == "20"


def test_null_rebuild_runs_nothing_and_replays_from_the_store(built: Path) -> None:
    run = watchrun(built, "build", "--json")
    assert run.ran() == []
    assert len(run.units("iteration")) == 4
    assert lines(built, "starts.log") == ["0"]


def test_one_changed_input_reruns_one_iteration(built: Path) -> None:
    (built / "data/2.txt").write_text("5\n")
    run = watchrun(built, "build", "--json")
    assert run.code == 0
    assert sorted(run.ran()) == ["report", "source", "total", "work[2]"]
    assert watchrun(built, "show", "report").stdout.strip() == "sum=150"


def test_collector_change_replays_without_rerunning_upstream(built: Path) -> None:
    path = built / "tasks/total.py"
    path.write_text(path.read_text().replace('"sum": sum(seen)', '"sum": sum(seen) + 1'))
    run = watchrun(built, "build", "--json")
    assert sorted(run.ran()) == ["report", "total"]
    assert run.units("push") == [("total", (i,)) for i in range(4)]
    assert watchrun(built, "show", "report").stdout.strip() == "sum=121"
    assert lines(built, "starts.log") == ["0"]


def test_per_item_change_does_not_rerun_the_generator(built: Path) -> None:
    path = built / "tasks/work.py"
    path.write_text(path.read_text().replace("return source * 10", "return source * 100"))
    run = watchrun(built, "build", "--json")
    assert "source" not in run.ran()
    assert sorted(run.ran()) == ["report", "total", "work[0]", "work[1]", "work[2]", "work[3]"]
    assert watchrun(built, "show", "report").stdout.strip() == "sum=1200"


BATCHING = {
    "tasks/numbers.py": '''
        # /// task
        # kind = "generator"
        # [params]
        # n = 7
        # ///
        def run(n):
            yield from range(n)
    ''',
    "tasks/batches.py": '''
        # /// task
        # kind = "generator"
        # after = ["numbers"]
        # [params]
        # size = 3
        # ///
        batch = []

        def run(numbers, size):
            batch.append(numbers)
            if len(batch) == size:
                yield list(batch)
                batch.clear()

        def finish():
            if batch:
                yield list(batch)
    ''',
    "tasks/sums.py": '# /// task\n# after = ["batches"]\n# ///\ndef run(batches):\n'
                     "    return sum(batches)\n",
    "tasks/all.py": '''
        # /// task
        # kind = "collector"
        # after = ["sums"]
        # ///
        acc = []

        def run(sums):
            acc.append(sums)

        def gather():
            return acc
    ''',
}


def test_inner_generator_batches_and_finish_yields_the_last_partial_batch(project) -> None:  # type: ignore[no-untyped-def]
    root = project(BATCHING)
    run = watchrun(root, "build", "--json")
    assert run.code == 0, run.stdout + run.stderr
    batches = [k for t, k in run.units("iteration") if t == "batches"]
    assert batches == [(2, 0), (5, 0), (7, 0)]  # (upstream iteration, j); finish -> n = 7
    assert watchrun(root, "show", "all").stdout.strip() == "[3, 12, 6]"
    again = watchrun(root, "build", "--json")
    assert again.ran() == []


RESUMABLE = {
    "watchrun.toml": "grace = 0.3\n",
    "tasks/steps.py": '''
        # /// task
        # kind = "generator"
        # ///
        import time
        from pathlib import Path

        def run(start):
            with open("starts.log", "a") as f:
                f.write(f"{start}\\n")
            for i in range(start, 6):
                if i == 3 and not Path("go").exists():
                    time.sleep(300)  # the test kills watchrun here
                yield i
    ''',
    "tasks/square.py": '''
        # /// task
        # after = ["steps"]
        # ///
        def run(steps):
            with open("square.log", "a") as f:
                f.write(f"{steps}\\n")
            return steps * steps
    ''',
}


def test_kill_9_mid_scope_then_resume_redoes_no_finished_iteration(project) -> None:  # type: ignore[no-untyped-def]
    root = project(RESUMABLE)
    proc = spawn_watchrun(root, "build")
    wait_for(lambda: len(lines(root, "square.log")) == 3, what="three iterations to finish")
    time.sleep(0.2)  # let the scheduler's batched commit land (it commits every 50 ms)
    proc.kill()
    proc.communicate()
    (root / "go").write_text("")
    run = watchrun(root, "build", "--json")
    assert run.code == 0, run.stdout + run.stderr
    assert lines(root, "starts.log") == ["0", "3"]  # resumed at the first incomplete one
    assert sorted(lines(root, "square.log")) == ["0", "1", "2", "3", "4", "5"]
    assert sorted(x for x in run.ran() if x.startswith("square")) == [
        "square[3]", "square[4]", "square[5]"]


RAISING = {
    "tasks/gen.py": '''
        # /// task
        # kind = "generator"
        # ///
        def run():
            yield 1
            yield 2
            raise RuntimeError("sensor lost")
    ''',
    "tasks/double.py": '# /// task\n# after = ["gen"]\n# ///\ndef run(gen):\n'
                       "    return gen * 2\n",
}


def test_generator_that_raises_keeps_finished_iterations(project) -> None:  # type: ignore[no-untyped-def]
    root = project(RAISING)
    run = watchrun(root, "build", "--json")
    assert run.code == 1
    failed = [e for e in run.events if e["event"] == "unit_failed"]
    assert [e["task"] for e in failed] == ["gen"]
    assert "RuntimeError: sensor lost" in failed[0]["error"]
    assert sorted(run.units("unit_finished")) == [("double", (0,)), ("double", (1,))]
    assert watchrun(root, "show", "double", "--iter", "1").stdout.strip() == "4"


def test_status_follows_generator_scopes(built: Path) -> None:
    status = watchrun(built, "status")
    assert all(line.split()[0] == "clean" for line in status.stdout.splitlines()), status.stdout
    (built / "data/1.txt").write_text("7\n")
    lines = {line.split()[1]: line for line in watchrun(built, "status").stdout.splitlines()}
    assert "input changed: data/1.txt" in lines["source"]
    assert "upstream dirty: source" in lines["work"]
    watchrun(built, "build")
    path = built / "tasks/work.py"
    path.write_text(path.read_text().replace("return source * 10", "return source * 11"))
    lines = {line.split()[1]: line for line in watchrun(built, "status").stdout.splitlines()}
    assert lines["source"].split()[0] == "clean"
    assert "4 of 4 units" in lines["work"] and "code changed: run" in lines["work"]
    assert "upstream dirty: work" in lines["total"]


STREAMING = {
    "tasks/first.py": "# /// task\n# ///\ndef run():\n    return 3\n",
    "tasks/gen.py": '''
        # /// task
        # kind = "generator"
        # after = ["first"]
        # ///
        import time

        def run(first):
            for i in range(first):
                time.sleep(0.3)
                yield i
    ''',
    "tasks/total.py": '''
        # /// task
        # kind = "collector"
        # after = ["gen"]
        # ///
        acc = []

        def run(gen):
            acc.append(gen)

        def gather():
            return sum(acc)
    ''',
}


def test_collector_streams_while_its_generator_runs(project) -> None:  # type: ignore[no-untyped-def]
    root = project(STREAMING)
    run = watchrun(root, "build", "--json")
    assert run.code == 0, run.stderr
    kinds = [(e["event"], e.get("task")) for e in run.events]
    first_push = kinds.index(("push", "total"))
    generator_done = kinds.index(("unit_finished", "gen"))
    assert first_push < generator_done  # pushed live, not after the generator ended
    started = next(e for e in run.events if e["event"] == "unit_started" and
                   e["task"] == "total")
    assert "forced" not in " ".join(started["reasons"])


def test_one_job_runs_generator_per_item_and_collector_without_deadlock(project) -> None:  # type: ignore[no-untyped-def]
    root = project({**PIPELINE, "watchrun.toml": "jobs = 1\n"})
    run = watchrun(root, "build", "--json", timeout=60)
    assert run.code == 0, run.stderr
    assert run.units("push") == [("total", (i,)) for i in range(4)]
    assert watchrun(root, "show", "report").stdout.strip() == "sum=120"


def test_a_dry_run_says_which_tasks_of_a_scope_would_run(built: Path) -> None:
    """`--dry-run --force work`: work's iteration units are not listed one by one (as in
    `build`, without -v) but said in one line with their count, and counted in the summary
    as the build counts them."""
    dry = watchrun(built, "build", "--dry-run", "--force", "work")
    assert dry.code == 0, dry.stderr
    assert "would run work  (4 iteration units: forced)" in dry.stdout, dry.stdout
    assert "(4 of them iteration units; -v lists them)" in dry.stdout, dry.stdout
    run = watchrun(built, "build", "--force", "work")
    assert "would run 4," in dry.stdout and "ran 4," in run.stdout, (dry.stdout, run.stdout)


FORTY = {
    "watchrun.toml": "jobs = 2\n",
    "tasks/gen.py": '''
        # /// task
        # kind = "generator"
        # ///
        def run():
            yield from range(40)
    ''',
    "tasks/a.py": '''
        # /// task
        # after = {x = "gen"}
        # ///
        def run(x):
            return x * 2
    ''',
    "tasks/coll.py": '''
        # /// task
        # kind = "collector"
        # after = {y = "a"}
        # ///
        acc = []

        def run(y):
            acc.append(y)

        def gather():
            return sum(acc)
    ''',
}


@pytest.fixture
def forty(project) -> Path:  # type: ignore[no-untyped-def]
    """FORTY built, then `a` edited: all 40 of its units are dirty, below a clean generator
    of more iterations than the read-ahead window (window 8: 16 read ahead of the slowest
    unit of its scope)."""
    root: Path = project(FORTY)
    run = watchrun(root, "build")
    assert run.code == 0, run.stdout + run.stderr
    path = root / "tasks/a.py"
    path.write_text(path.read_text().replace("x * 2", "x * 2 + 2"))
    return root


@pytest.mark.parametrize(("args", "below"), [((), [("coll", ())]), (("--force", "a"), [])])
def test_a_dry_run_below_a_long_clean_generator_says_every_unit_and_ends(
        forty: Path, args: tuple[str, ...], below: list[tuple[str, tuple[int, ...]]]) -> None:
    """A dry run runs nothing, so the units that would run never end: the replay of the
    clean generator must not wait for them, as a build waits for its units to end before it
    reads further (it used to stop after 16 iterations and never exit). `--force a` builds
    `a` alone: nothing below it."""
    dry = watchrun(forty, "build", "--dry-run", *args, timeout=20)
    assert dry.code == 0, dry.stdout + dry.stderr
    assert "would run a  (40 iteration units: " in dry.stdout, dry.stdout
    assert ("would run coll  (upstream dirty: a)" in dry.stdout) == bool(below), dry.stdout
    assert f"would run {40 + len(below)}," in dry.stdout, dry.stdout
    json_run = watchrun(forty, "build", "--dry-run", "--json", *args, timeout=20)
    finished = [e for e in json_run.events if e["event"] == "build_finished"]
    assert json_run.code == 0 and finished and finished[0]["ok"] is True, json_run.stdout
    assert sorted(json_run.units("unit_started")) == sorted(
        [("a", (i,)) for i in range(40)] + below)


def test_status_counts_every_dirty_unit_below_a_long_clean_generator(forty: Path) -> None:
    """`status` resolves the scope as a dry run does: all 40 units, not the read-ahead
    window's 16 (it used to say "16 of 16 units")."""
    status = watchrun(forty, "status", timeout=20)
    assert status.code == 0, status.stderr
    lines = {line.split()[1]: line for line in status.stdout.splitlines()}
    assert lines["a"].split()[0] == "DIRTY", status.stdout
    assert "done 40/40; 40 of 40 units; code changed: run" in lines["a"], status.stdout
    assert "upstream dirty: a" in lines["coll"], status.stdout


HALF_FAILED = {
    **FORTY,
    "tasks/a.py": '''
        # /// task
        # after = {x = "gen"}
        # ///
        def run(x):
            if x >= 30:
                raise ValueError(x)
            return x * 2
    ''',
    "tasks/b.py": '''
        # /// task
        # after = {y = "a"}
        # ///
        def run(y):
            return y + 1
    ''',
    "tasks/coll.py": FORTY["tasks/coll.py"].replace('{y = "a"}', '{y = "b"}'),
}


def test_status_and_dry_run_say_the_units_below_the_ones_that_would_run(project) -> None:  # type: ignore[no-untyped-def]
    """a[30..39] failed, so b ran for 0..29 only: the 10 units of b below the failed ones
    would run with them (an interrupted rebuild leaves a scope the same way). `status` and
    the dry run used to call b clean, having found its 30 units that ran clean, and say
    nothing of the others."""
    root: Path = project(HALF_FAILED)
    assert watchrun(root, "build").code == 1
    lines = {line.split()[1]: line for line in watchrun(root, "status").stdout.splitlines()}
    assert lines["b"].split()[0] == "DIRTY", lines
    assert "10 of 40 units; upstream dirty: a" in lines["b"], lines
    assert "upstream dirty: b" in lines["coll"], lines
    dry = watchrun(root, "build", "--dry-run", "--json")
    assert dry.code == 0, dry.stdout + dry.stderr
    assert sorted(dry.units("unit_started")) == sorted(
        [("a", (i,)) for i in range(30, 40)] + [("b", (i,)) for i in range(30, 40)]
        + [("coll", ())])
    reasons = {e["task"]: e["reasons"] for e in dry.events if e["event"] == "unit_started"}
    assert reasons["b"] == ["upstream dirty: a"] and reasons["coll"] == ["upstream dirty: b"]
