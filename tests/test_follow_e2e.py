"""`watchrun build` on chains of tasks, where each step runs behind the one before on its worker
(followers, engine/followers.py): the real CLI, real workers and files. What a user sees must be
what a build without followers gives: every step that must run runs once, in order, with its
reasons; a step whose input did not change is cut off; a failure
stops the chain there; two chains at -j2 both complete."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from tests.conftest import read_pid, spawn_watchrun, wait_for, watchrun, worker_processes


def chain(name: str, steps: int, source: str, body: str = "") -> dict[str, str]:
    """Step i reads step i-1's output (step 0 reads `source`) and writes its first word plus
    its own name; `body` runs first in every step (e.g. to fail one)."""
    files = {}
    for i in range(steps):
        read = source if i == 0 else f"out/{name}{i - 1}.txt"
        files[f"tasks/{name}{i}.py"] = (
            f'# /// task\n# inputs = ["{read}"]\n# outputs = ["out/{name}{i}.txt"]\n# ///\n'
            "from pathlib import Path\n\n\ndef run():\n"
            f"    {body or 'pass'}\n"
            f"    first = Path('{read}').read_text().split()[0]\n"
            f"    Path('out/{name}{i}.txt').write_text(first + ' {i}\\n')\n")
    return files


def test_a_chain_reruns_step_by_step_after_an_edit_and_is_clean_after(
        project: Callable[[dict[str, str]], Path]) -> None:
    root = project({**chain("s", 6, "src.txt"), "src.txt": "one\n", "out/.keep": ""})
    first = watchrun(root, "build", "--json", "-j1")
    assert first.code == 0, first.stderr
    assert first.ran() == [f"s{i}" for i in range(6)]
    (root / "src.txt").write_text("two\n")
    second = watchrun(root, "build", "--json", "-j1")
    assert second.code == 0, second.stderr
    assert second.ran() == [f"s{i}" for i in range(6)]
    ends = [e["event"] for e in second.events if e["event"].startswith("unit_")]
    assert ends == ["unit_started", "unit_finished"] * 6, ends
    reasons = [e["reasons"] for e in second.events if e["event"] == "unit_started"]
    assert reasons[1] == ["input changed: out/s0.txt"], reasons
    assert (root / "out" / "s5.txt").read_text() == "two 5\n"
    third = watchrun(root, "build", "--json")
    assert third.code == 0 and third.ran() == []


def test_a_step_whose_input_did_not_change_is_cut_off_and_an_older_one_says_why_it_runs(
        project: Callable[[dict[str, str]], Path]) -> None:
    """s0 keeps the first word of src.txt: a second line changes s0's signature (it runs) but
    not what it writes, so s1 and s2 are clean. Back to a first word seen two builds ago, s1's
    input has a stored result whose outputs are no longer on disk: it runs, saying so, as
    it would without followers."""
    root = project({**chain("s", 3, "src.txt"), "src.txt": "one\n", "out/.keep": ""})
    assert watchrun(root, "build", "-j1").code == 0
    (root / "src.txt").write_text("one\nand a second line\n")
    cut = watchrun(root, "build", "--json", "-j1")
    assert cut.code == 0, cut.stderr
    assert cut.ran() == ["s0"]
    assert sorted(t for t, _ in cut.units("unit_skipped")) == ["s1", "s2"]
    (root / "src.txt").write_text("two\n")
    assert watchrun(root, "build", "-j1").code == 0
    (root / "src.txt").write_text("one\n")
    back = watchrun(root, "build", "--json", "-j1")
    assert back.code == 0 and back.ran() == ["s0", "s1", "s2"]
    reasons = [e["reasons"] for e in back.events if e["event"] == "unit_started"]
    # its file is what its last run (on "two") wrote: watchrun's, not someone's edit
    assert reasons[1] == ["output written by its last run: out/s1.txt",
                          "input changed: out/s0.txt"], reasons
    assert (root / "out" / "s2.txt").read_text() == "one 2\n"


def test_a_failing_step_stops_its_chain_and_the_other_chain_completes(
        project: Callable[[dict[str, str]], Path]) -> None:
    fail = "import os\n    if Path('src.txt').read_text() == 'bad\\n' and os.path.basename(" \
           "__file__) == 'a2.py':\n        raise ValueError('a2 says no')"
    root = project({**chain("a", 5, "src.txt", fail), **chain("b", 5, "src.txt"),
                    "src.txt": "good\n", "out/.keep": ""})
    assert watchrun(root, "build", "-j2").code == 0
    (root / "src.txt").write_text("bad\n")
    run = watchrun(root, "build", "--json", "-j2")
    assert run.code == 1
    assert [t for t, _ in run.units("unit_failed")] == ["a2"]
    assert "a3" not in run.ran() and "a4" not in run.ran()
    assert sorted(t for t in run.ran() if t.startswith("b")) == [f"b{i}" for i in range(5)]
    assert (root / "out" / "b4.txt").read_text() == "bad 4\n"
    assert (root / "out" / "a4.txt").read_text() == "good 4\n"  # as the last success left it
    finished = [e for e in run.events if e["event"] == "build_finished"]
    assert finished and finished[0]["failed"] == 1


def test_ctrl_c_in_a_chain_cancels_the_running_step_and_its_follower_never_starts(
        project: Callable[[dict[str, str]], Path]) -> None:
    """Ctrl-C while s2 runs (s3 waits behind it on its worker): s2 is cancelled, s3 never
    starts, no worker is left, and the next build goes on from s2."""
    slow = ("import os, time\n    if Path('src.txt').read_text() == 'slow\\n' and "
            "os.path.basename(__file__) == 's2.py' and not Path('s2.started').exists():\n"
            "        Path('s2.started').write_text(str(os.getpid()))\n"
            "        time.sleep(60)")
    root = project({**chain("s", 5, "src.txt", slow), "src.txt": "fast\n", "out/.keep": "",
                    "watchrun.toml": "grace = 0.5\n"})
    assert watchrun(root, "build", "-j1").code == 0
    (root / "src.txt").write_text("slow\n")
    proc = spawn_watchrun(root, "build", "--json", "-j1")
    try:
        read_pid(root / "s2.started", timeout=20)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    started = [line for line in out.splitlines() if '"unit_started"' in line]
    assert [s for s in ("s3", "s4") if any(f'"{s}"' in line for line in started)] == []
    assert any('"s2"' in line for line in out.splitlines() if '"unit_cancelled"' in line)
    assert (root / "out" / "s3.txt").read_text() == "fast 3\n"  # as the last build left it
    wait_for(lambda: not worker_processes(), what="workers to end")
    again = watchrun(root, "build", "--json", "-j1")  # s2 does not sleep a second time
    assert again.code == 0, again.stderr
    assert again.ran() == ["s2", "s3", "s4"]  # what s0 and s1 finished stays done
    assert (root / "out" / "s4.txt").read_text() == "slow 4\n"


def test_a_follower_that_fails_is_retried_and_one_that_times_out_is_failed(
        project: Callable[[dict[str, str]], Path]) -> None:
    """A step that ran behind its leader is a launched unit like any other: its `retries` run
    it again, its `timeout` cancels and fails it."""
    flaky = ("import os, time\n    if os.path.basename(__file__) == 's1.py' and "
             "not Path('s1.failed').exists():\n"
             "        Path('s1.failed').write_text('once')\n"
             "        raise RuntimeError('s1 fails once')\n"
             "    if os.path.basename(__file__) == 's3.py':\n"
             "        time.sleep(60)")
    files = chain("s", 4, "src.txt", flaky)
    files["tasks/s1.py"] = files["tasks/s1.py"].replace("# ///\n", "# retries = 1\n# ///\n", 1)
    files["tasks/s3.py"] = files["tasks/s3.py"].replace("# ///\n", "# timeout = 1\n# ///\n", 1)
    root = project({**files, "src.txt": "one\n", "out/.keep": "", "watchrun.toml": "grace = 0.5\n"})
    run = watchrun(root, "build", "--json", "-j1", timeout=60)
    assert run.code == 1, run.stderr
    assert run.ran() == ["s0", "s1", "s1", "s2", "s3"]
    assert [t for t, _ in run.units("unit_retry")] == ["s1"]
    failed = [e for e in run.events if e["event"] == "unit_failed"]
    assert [e["task"] for e in failed] == ["s3"] and "timed out" in failed[0]["error"]
    assert (root / "out" / "s2.txt").read_text() == "one 2\n"
    wait_for(lambda: not worker_processes(), what="workers to end")
