"""`WATCHRUN_STATS=1` and the null build's import budget (CONTRIBUTING.md, "Hot paths"), on the
real CLI in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Run, cli_env, write_project

pytestmark = pytest.mark.usefixtures("no_leaks")

FILES = {
    "data/a.txt": "alpha\n",
    "tasks/read.py": '''
        # /// task
        # inputs = ["data/a.txt"]
        # ///
        def run(inputs):
            return inputs[0].read_text()
    ''',
    "tasks/shout.py": '''
        # /// task
        # after = ["read"]
        # ///
        def run(read):
            return read.upper()
    ''',
}
# What the null-build proof must answer without: the engine, the executors, the CLI framework,
# the TUI, the database, the parsers; and `typing`, which the proof path never needs at run time.
NOT_ON_THE_PROOF_PATH = ("asyncio", "typing", "typer", "click", "textual", "sqlite3", "ast",
                         "tomllib", "blake3", "watchrun.engine", "watchrun.executors",
                         "watchrun.project.loader", "watchrun.state.store")


def build(root: Path, *flags: str, stats: bool = False, python: tuple[str, ...] = ()) -> Run:
    env = cli_env()
    env.pop("WATCHRUN_STATS", None)
    if stats:
        env["WATCHRUN_STATS"] = "1"
    proc = subprocess.run([sys.executable, *python, "-m", "watchrun", "-C", str(root), "build",
                           *flags], capture_output=True, text=True, timeout=60, env=env,
                          stdin=subprocess.DEVNULL)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def phases(stderr: str) -> list[str]:
    lines = stderr.splitlines()
    start = lines.index("watchrun stats (WATCHRUN_STATS=1)")
    return [line[:30].strip() for line in lines[start + 2:]]


def test_stats_say_where_a_build_went_and_change_nothing_else(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", FILES)
    plain = build(root, "--json", "--force")
    timed = build(root, "--json", "--force", stats=True)
    assert plain.code == timed.code == 0
    assert "watchrun stats" not in plain.stderr
    assert [e["event"] for e in timed.events] == [e["event"] for e in plain.events]
    assert timed.ran() == plain.ran() == ["read", "shout"]
    found = phases(timed.stderr)
    for phase in ("import engine", "settings", "store open", "project load", "executor start",
                  "build: resolve, plan, run", "commit", "total since start-up"):
        assert phase in found, (phase, timed.stderr)
    assert "null-build proof" not in found  # --force never asks the proof


def test_a_proven_null_build_reports_only_the_proof(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", FILES)
    assert build(root).code == 0
    again = build(root, stats=True)
    assert again.code == 0 and "ran 0, clean 2" in again.stdout
    assert phases(again.stderr) == ["null-build proof", "total since start-up"]


def test_the_null_build_proof_imports_nothing_heavy(tmp_path: Path) -> None:
    """The import budget of the hot path: a proven null build answers before the engine, the
    CLI framework or the database is imported. `-X importtime` lists every module imported."""
    root = write_project(tmp_path / "p", FILES)
    assert build(root).code == 0
    again = build(root, python=("-X", "importtime"))
    assert again.code == 0 and "ran 0, clean 2" in again.stdout
    imported = {line.rpartition("|")[2].strip() for line in again.stderr.splitlines()
                if line.startswith("import time:")}
    assert "watchrun.nullproof" in imported  # the proof answered, not the engine
    heavy = sorted(name for name in imported
                   if any(name == bad or name.startswith(bad + ".")
                          for bad in NOT_ON_THE_PROOF_PATH))
    assert heavy == []


# What a worker process must start without: a task's first unit waits for it.
NOT_IN_A_WORKER = ("asyncio", "typing", "typer", "click", "textual", "sqlite3", "ast", "tomllib",
                   "blake3", "watchrun.engine", "watchrun.project", "watchrun.state",
                   "watchrun.ui", "watchrun.cli", "watchrun.session")


def test_the_worker_imports_nothing_heavy() -> None:
    """The import budget of worker start: the worker's module, in a fresh interpreter as a
    spawned worker has, brings in none of the engine, the project loader, the store or the
    CLI framework."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c",
                           "import watchrun.executors.worker"],
                          capture_output=True, text=True, timeout=60, env=cli_env())
    assert proc.returncode == 0, proc.stderr
    imported = {line.rpartition("|")[2].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "watchrun.executors.worker" in imported
    heavy = sorted(name for name in imported
                   if any(name == bad or name.startswith(bad + ".") for bad in NOT_IN_A_WORKER))
    assert heavy == []
