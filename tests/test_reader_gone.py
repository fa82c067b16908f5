"""`watchrun build | head` and `watchrun dev --json | head`: a reader that leaves while units
run ends the command as a shell expects of a writer (exit 141), without a traceback, with no
process left and the work finished so far kept. (The reader gone before the first line is in
test_entry.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import cli_env, watchrun, write_project

STEPS = 6


def slow_chain() -> dict[str, str]:
    files = {}
    for i in range(STEPS):
        after = f'# after = {{x = "s{i - 1}"}}\n' if i else ""
        arg = "x" if i else ""
        files[f"tasks/s{i}.py"] = (f"# /// task\n{after}# ///\nimport time\n\n\n"
                                   f"def run({arg}):\n    time.sleep(0.3)\n    return {i}\n")
    return files


def leave_after_first_line(argv: list[str], first: Callable[[str], bool]) -> tuple[int, str]:
    """Run `argv`, read its stdout up to the first line `first` accepts, then close it."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env(), stdin=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stderr is not None
    for line in proc.stdout:
        if first(line):
            break
    proc.stdout.close()
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:  # it hung: end it, and its workers with it
        proc.kill()
        proc.wait()
        raise
    stderr = proc.stderr.read()
    proc.stderr.close()
    return code, stderr


@pytest.mark.parametrize("json_out", [False, True], ids=["lines", "json"])
def test_a_reader_that_leaves_mid_build_ends_it_keeping_what_ran(
        tmp_path: Path, json_out: bool, no_leaks: None) -> None:
    root = write_project(tmp_path, slow_chain())
    argv = [sys.executable, "-m", "watchrun", "-C", str(root), "build"] + (
        ["--json"] if json_out else [])

    code, stderr = leave_after_first_line(
        argv, lambda line: "done s0" in line or '"unit_finished"' in line)

    assert code == 141, stderr
    assert "Traceback" not in stderr and "Broken" not in stderr, stderr
    again = watchrun(root, "build", "--json")
    assert again.code == 0, again.stderr
    events = [json.loads(line) for line in again.stdout.splitlines()]
    ran = [e["task"] for e in events if e["event"] == "unit_started"]
    assert 0 < len(ran) < STEPS and "s0" not in ran, ran  # stopped, not finished; s0 kept


def test_a_reader_that_leaves_dev_ends_it(tmp_path: Path, no_leaks: None) -> None:
    root = write_project(tmp_path, slow_chain())
    argv = [sys.executable, "-m", "watchrun", "-C", str(root), "dev", "--no-tui", "--json"]

    code, stderr = leave_after_first_line(argv, lambda line: '"unit_started"' in line)

    assert code == 141, stderr
    assert "Traceback" not in stderr and "Broken" not in stderr, stderr
