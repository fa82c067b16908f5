"""The fast `build` parser of `watchrun.entry` agrees with the Typer app for every command line
it accepts, and leaves everything else to Typer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import watchrun.commands.build
from tests.conftest import REPO, cli_env, write_project
from watchrun.cli import main as typer_main
from watchrun.entry import parse_build

ACCEPTED = [
    ["build"],
    ["build", "a", "b.c"],
    ["-C", "proj", "build", "-j", "3", "x"],
    ["build", "-j2", "x"],
    ["--directory", "proj", "build", "--jobs", "2", "--force"],
    ["--directory=proj", "build", "--jobs=4", "--json"],
    ["build", "--dry-run", "--fail-fast", "-v", "t"],
    ["build", "--verbose", "--executor", "ray", "--address", "auto"],
    ["build", "--executor=local", "--address=ray://h:1", "t1", "t2"],
    ["build", "--", "-odd-name"],
    ["build", "--set", "a.x=1", "--set=b.y=[1, 2]", "t"],
]
DELEGATED = [
    ["build", "--help"],
    ["build", "-h"],
    ["build", "--jobs"],
    ["build", "-j", "many"],
    ["build", "--executor", "slurm"],
    ["build", "--unknown"],
    ["status"],
    ["-C"],
    [],
]


def typer_parse(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str],
                                                                         dict[str, Any]]:
    seen: dict[str, Any] = {}

    def capture(root: Path, tasks: list[str], **options: Any) -> int:
        seen.update(root=root, tasks=tasks, options=options)
        return 0

    monkeypatch.setattr(watchrun.commands.build, "build_command", capture)
    with pytest.raises(SystemExit) as exit_info:
        typer_main(argv)
    assert exit_info.value.code == 0
    return seen["root"], seen["tasks"], seen["options"]


@pytest.mark.parametrize("argv", ACCEPTED, ids=" ".join)
def test_fast_parser_agrees_with_typer(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    fast = parse_build(argv)
    assert fast is not None
    assert fast == typer_parse(argv, monkeypatch)


@pytest.mark.parametrize("argv", DELEGATED, ids=lambda a: " ".join(a) or "(none)")
def test_anything_else_goes_to_typer(argv: list[str]) -> None:
    assert parse_build(argv) is None


def test_the_real_entry_point_gives_typers_messages() -> None:
    run = subprocess.run([sys.executable, "-m", "watchrun", "build", "-j", "many"],
                         capture_output=True, text=True, env=cli_env(), cwd=REPO, timeout=60)
    assert run.returncode == 2 and "Invalid value for '-j'" in run.stderr
    helped = subprocess.run([sys.executable, "-m", "watchrun", "--help"], capture_output=True,
                            text=True, env=cli_env(), cwd=REPO, timeout=60)
    assert helped.returncode == 0 and "build" in helped.stdout


def test_help_does_not_import_textual_or_the_engine() -> None:
    code = ("import sys; from watchrun.entry import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "bad = [m for m in ('textual', 'watchrun.engine.scheduler', 'ray') "
            "if m in sys.modules]\nprint(bad)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=cli_env(), cwd=REPO, timeout=60)
    assert run.stdout.strip().splitlines()[-1] == "[]", run.stdout + run.stderr


@pytest.mark.parametrize("proved", [False, True], ids=["normal build", "null-build proof"])
def test_a_reader_that_leaves_ends_the_build_quietly(tmp_path: Path, proved: bool) -> None:
    """`watchrun build --json | head -1`: exit 141 as a shell expects, no traceback, and the
    project still builds afterwards."""
    write_project(tmp_path, {"tasks/a.py": "# /// task\n# ///\ndef run():\n    return 1\n"})
    argv = [sys.executable, "-m", "watchrun", "-C", str(tmp_path), "build", "--json"]
    if proved:  # a null build with --json leaves a proof that replays its lines
        for _ in range(2):
            subprocess.run(argv, capture_output=True, env=cli_env(), timeout=60, check=True)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=cli_env(), stdin=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    again = subprocess.run(argv, capture_output=True, text=True, env=cli_env(), timeout=60)
    assert again.returncode == 0 and '"build_finished"' in again.stdout
