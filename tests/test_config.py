"""Project settings: watchrun.toml, [tool.watchrun] in pyproject.toml, defaults, and errors that
name the file and the line of the offending key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from watchrun.config import Config, load_config, setting_line
from watchrun.toml import key_lines


def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.write_text(text)
    return path


def messages(root: Path) -> list[str]:
    _, errors = load_config(root)
    return [e.format(root) for e in errors]


def test_defaults_without_any_file(tmp_path: Path) -> None:
    config, errors = load_config(tmp_path)
    assert errors == []
    assert config == Config(
        root=tmp_path, tasks=(tmp_path / "tasks",), state_dir=tmp_path / ".watchrun",
        jobs=os.cpu_count() or 1, grace=2.0, debounce_ms=10, ignore=(), executor_kind="local",
        executor_address="", executor_connect_timeout=15.0, source=None, jobs_given=False)


def test_every_key_of_watchrun_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "watchrun.toml", """
tasks = ["pipelines", "more/tasks"]
state_dir = "build/state"
jobs = 3
grace = 0.5
debounce_ms = 50
ignore = ["*.tmp", "scratch/**"]
[executor]
kind = "ray"
address = "auto"
connect_timeout = 2.5
""")
    config, errors = load_config(tmp_path)
    assert errors == []
    assert config.tasks == (tmp_path / "pipelines", tmp_path / "more" / "tasks")
    assert config.state_dir == tmp_path / "build" / "state"
    assert (config.jobs, config.grace, config.debounce_ms) == (3, 0.5, 50)
    assert config.jobs_given
    assert config.ignore == ("*.tmp", "scratch/**")
    assert (config.executor_kind, config.executor_address) == ("ray", "auto")
    assert config.executor_connect_timeout == 2.5
    assert config.source == path


def test_root_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config, _ = load_config(Path("."))
    assert config.root == tmp_path and config.root.is_absolute()


def test_single_folder_and_absolute_state_dir(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    write(tmp_path, "watchrun.toml", f'tasks = "jobs"\nstate_dir = "{elsewhere}"\n')
    config, errors = load_config(tmp_path)
    assert errors == []
    assert config.tasks == (tmp_path / "jobs",)
    assert config.state_dir == elsewhere


def test_pyproject_table_is_used_when_there_is_no_watchrun_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "pyproject.toml", """
[project]
name = "x"

[tool.watchrun]
jobs = 2

[tool.watchrun.executor]
kind = "ray"
""")
    config, errors = load_config(tmp_path)
    assert errors == []
    assert (config.jobs, config.executor_kind, config.source) == (2, "ray", path)


def test_watchrun_toml_wins_over_pyproject(tmp_path: Path) -> None:
    write(tmp_path, "pyproject.toml", "[tool.watchrun]\njobs = 2\n")
    write(tmp_path, "watchrun.toml", "jobs = 5\n")
    config, _ = load_config(tmp_path)
    assert config.jobs == 5


def test_pyproject_without_our_table_means_defaults(tmp_path: Path) -> None:
    write(tmp_path, "pyproject.toml", "[project]\nname = 'x'\n")
    config, errors = load_config(tmp_path)
    assert errors == [] and config.source is None and config.jobs == (os.cpu_count() or 1)


def test_broken_pyproject_of_another_tool_is_not_our_error(tmp_path: Path) -> None:
    write(tmp_path, "pyproject.toml", "[project\nname = 'x'\n")
    assert messages(tmp_path) == []


def test_broken_pyproject_with_our_table_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "pyproject.toml", "[tool.watchrun]\njobs = \n")
    assert messages(tmp_path) == ["pyproject.toml:2: error: invalid TOML: Invalid value "
                                  "(column 8)"]


def test_toml_syntax_error_names_its_line(tmp_path: Path) -> None:
    write(tmp_path, "watchrun.toml", 'jobs = 2\n\ntasks = "a\n')
    config, errors = load_config(tmp_path)
    assert [e.line for e in errors] == [3]
    assert errors[0].format(tmp_path).startswith("watchrun.toml:3: error: invalid TOML:")
    assert config.jobs == (os.cpu_count() or 1)  # all defaults


def test_a_toml_error_at_the_end_names_the_last_line(tmp_path: Path) -> None:
    """tomllib says "at end of document" with no line: the message names the file's last
    line, where the value is missing."""
    write(tmp_path, "watchrun.toml", "grace = 1\njobs = [")
    assert messages(tmp_path) == ["watchrun.toml:2: error: invalid TOML: Invalid value "
                                  "(at the end)"]


def test_the_line_of_a_setting(tmp_path: Path) -> None:
    write(tmp_path, "watchrun.toml", "jobs = 2\n\n[executor]\nkind = 'local'\n")
    config, _ = load_config(tmp_path)
    assert setting_line(config, "jobs") == 1
    assert setting_line(config, "executor_kind") == 4
    assert setting_line(config, "grace") is None  # not in the file: its default
    write(tmp_path, "pyproject.toml", "[project]\nname = 'x'\n[tool.watchrun]\ngrace = 3\n")
    (tmp_path / "watchrun.toml").unlink()
    config, _ = load_config(tmp_path)
    assert setting_line(config, "grace") == 4


def test_every_bad_key_is_reported_with_its_line_and_the_rest_applies(tmp_path: Path) -> None:
    write(tmp_path, "watchrun.toml", """jobs = -1
grace = "soon"
jbos = 3
debounce_ms = 1.5
ignore = "x"
state_dir = "state"
[executor]
kind = "slurm"
adress = "x"
""")
    config, errors = load_config(tmp_path)
    formatted = [e.format(tmp_path) for e in errors]
    assert formatted == [
        "watchrun.toml:1: error: jobs: must be a whole number >= 0 (0 = number of CPUs), not -1",
        "watchrun.toml:2: error: grace: must be a number of seconds >= 0, not 'soon'",
        "watchrun.toml:3: error: jbos: unknown key (did you mean 'jobs'?); allowed: "
        "debounce_ms, executor, grace, ignore, jobs, memory_budget, preload, state_dir, tasks",
        "watchrun.toml:4: error: debounce_ms: must be a whole number of milliseconds >= 0, "
        "not 1.5",
        "watchrun.toml:5: error: ignore: must be a list of glob patterns, not 'x'",
        "watchrun.toml:8: error: executor.kind: must be one of 'local', 'ray', not 'slurm'",
        "watchrun.toml:9: error: executor.adress: unknown key (did you mean 'address'?); "
        "allowed: address, connect_timeout, kind",
    ]
    # the bad keys keep their defaults, the good one applies
    assert config.jobs == (os.cpu_count() or 1) and config.grace == 2.0
    assert config.state_dir == tmp_path / "state" and config.executor_kind == "local"


def test_errors_in_pyproject_point_into_the_table(tmp_path: Path) -> None:
    write(tmp_path, "pyproject.toml", """[project]
name = "x"
jobs = "not ours"

[tool.watchrun]
tasks = []
executor = {kind = "cloud"}
""")
    assert messages(tmp_path) == [
        "pyproject.toml:6: error: tool.watchrun.tasks: must be a folder name or a non-empty "
        "list of folder names, not []",
        "pyproject.toml:7: error: tool.watchrun.executor.kind: must be one of 'local', 'ray', "
        "not 'cloud'",
    ]


def test_dotted_keys_and_booleans_are_not_numbers(tmp_path: Path) -> None:
    write(tmp_path, "watchrun.toml", 'jobs = true\nexecutor.kind = "lokal"\n')
    assert messages(tmp_path) == [
        "watchrun.toml:1: error: jobs: must be a whole number >= 0 (0 = number of CPUs), "
        "not True",
        "watchrun.toml:2: error: executor.kind: must be one of 'local', 'ray', not 'lokal'",
    ]


def test_executor_must_be_a_table(tmp_path: Path) -> None:
    write(tmp_path, "watchrun.toml", '\nexecutor = "ray"\n')
    assert messages(tmp_path) == [
        "watchrun.toml:2: error: executor: must be a table with 'kind' and 'address'"]


def test_jobs_zero_means_the_number_of_cpus(tmp_path: Path) -> None:
    write(tmp_path, "watchrun.toml", "jobs = 0\ngrace = 0\n")
    config, errors = load_config(tmp_path)
    assert errors == [] and config.jobs == (os.cpu_count() or 1) and config.grace == 0.0


def test_key_lines_are_not_hidden_by_quotes_inside_one_line_strings() -> None:
    # a one-line string holding ''' or """ opens no multi-line string (found by Hypothesis)
    text = 'a = "\'\'\'"\nb = \'"""\'\n[params]\nc = """x\n[not_a_table]\n"""\nd = 1 # """\ne = 2\n'
    assert key_lines(text) == {("a",): 1, ("b",): 2, ("params",): 3, ("params", "c"): 4,
                               ("params", "d"): 7, ("params", "e"): 8}


def test_connect_timeout_must_be_a_positive_number_of_seconds(tmp_path: Path) -> None:
    write(tmp_path, "watchrun.toml", '[executor]\nkind = "ray"\nconnect_timeout = 0\n')
    assert messages(tmp_path) == [
        "watchrun.toml:3: error: executor.connect_timeout: must be a number of seconds > 0, "
        "not 0"]


def test_jobs_default_to_the_ray_clusters_cpus_unless_given(tmp_path: Path) -> None:
    from watchrun.session import choose_executor, effective_jobs

    config, _ = load_config(tmp_path)
    ray = choose_executor(config, "ray", None)
    assert effective_jobs(config, None) == (os.cpu_count() or 1)
    assert effective_jobs(ray, None) == 0  # 0: the Ray executor asks its cluster
    assert effective_jobs(ray, 0) == 0
    assert effective_jobs(ray, 3) == 3
    write(tmp_path, "watchrun.toml", "jobs = 5\n")
    given, _ = load_config(tmp_path)
    assert effective_jobs(choose_executor(given, "ray", None), None) == 5
