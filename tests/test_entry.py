"""The fast `build` pre-scan of `watchrun.entry` agrees with the Typer app for every command line
it accepts, and leaves everything else to Typer. Both are made from the option table of
`watchrun.commands.options`: the command lines below are generated from it, so a new option is
checked the day it is added."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

import watchrun.commands.build
from tests.conftest import REPO, cli_env, write_project
from watchrun.cli import app
from watchrun.cli import main as typer_main
from watchrun.commands import options as table
from watchrun.entry import parse_build


def samples(option: table.Option) -> list[list[str]]:
    """Every way of giving this option that the pre-scan reads: each flag, with each value
    form Click accepts (`--name VALUE`, `--name=VALUE`, `-xVALUE`)."""
    if option.kind == table.FLAG:
        return [[flag] for flag in option.flags]
    values = {table.INT: ["0", "3"], table.TEXT: ["x", "ray://h:1", "--force"],
              table.CHOICE: list(option.choices), table.MULTI: ["a.x=1", "b.y=[1, 2]"],
              table.PATH: ["proj"]}[option.kind]
    found = []
    for flag in option.flags:
        for value in values:
            found.append([flag, value])
            found.append([f"{flag}={value}"] if flag.startswith("--") else [f"{flag}{value}"])
    if option.kind == table.MULTI:  # repeated: every value, in order
        found.append([option.flags[0], values[0], option.flags[0], values[1]])
    return found


TABLE_LINES = [["build", *sample, "t"] for option in table.BUILD_OPTIONS
               for sample in samples(option)]
TABLE_LINES += [[*sample, "build"] for option in table.ROOT_OPTIONS
                for sample in samples(option)]

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


@pytest.mark.parametrize("argv", ACCEPTED + TABLE_LINES, ids=" ".join)
def test_fast_parser_agrees_with_typer(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    fast = parse_build(argv)
    assert fast is not None
    assert fast == typer_parse(argv, monkeypatch)


def test_every_option_of_the_table_is_read_by_both_and_changes_something(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each option given alone reaches `build_command` with another value than its default,
    by either path: an option the pre-scan dropped, or Typer ignored, would fail here."""
    _, _, defaults = typer_parse(["build"], monkeypatch)
    for option in table.BUILD_OPTIONS:
        argv = ["build", *samples(option)[-1]]
        fast = parse_build(argv)
        assert fast is not None, argv
        assert fast[2][option.name] != defaults[option.name], argv
        assert fast == typer_parse(argv, monkeypatch), argv


def test_typer_declares_exactly_the_tables_options() -> None:
    command = typer.main.get_command(app)
    assert isinstance(command, typer.core.TyperGroup)
    for name, rows in (("build", table.BUILD_OPTIONS), ("dev", table.DEV_OPTIONS)):
        declared = {tuple(p.opts) for p in command.commands[name].params if p.opts[0][0] == "-"}
        assert declared == {row.flags for row in rows}, name


# forms Click reads that the pre-scan leaves to Typer: the same values, by the slow path
LEFT_TO_TYPER = [
    (["build", "-vj2", "x"], {"verbose": True, "jobs": 2}),
    (["build", "-j", "-1"], {"jobs": -1}),
    (["build", "-j", "+2"], {"jobs": 2}),
]


@pytest.mark.parametrize(("argv", "expected"), LEFT_TO_TYPER, ids=lambda a: str(a))
def test_what_the_prescan_is_not_sure_of_typer_reads(argv: list[str], expected: dict[str, Any],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_build(argv) is None
    _, _, options = typer_parse(argv, monkeypatch)
    assert {name: options[name] for name in expected} == expected


def test_an_option_unknown_to_the_prescan_gets_typers_message() -> None:
    run = subprocess.run([sys.executable, "-m", "watchrun", "build", "--frobnicate", "x"],
                         capture_output=True, text=True, env=cli_env(), cwd=REPO, timeout=60)
    assert run.returncode == 2 and "No such option: --frobnicate" in run.stderr, run.stderr


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
