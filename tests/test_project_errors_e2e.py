"""Every project error of SPEC section 7 through the real CLI: file:line, exit 2, no traceback,
all reported at once."""

from __future__ import annotations

import pytest

from tests.conftest import watchrun, write_project

OK = "# /// task\n# ///\ndef run():\n    return 1\n"

CASES: dict[str, tuple[dict[str, str], str]] = {
    "invalid TOML": ({"tasks/a.py": "# /// task\n# kind = \n# ///\ndef run():\n    pass\n"},
                     "tasks/a.py:2:"),
    "unknown key": ({"tasks/a.py": "# /// task\n# colour = 1\n# ///\ndef run():\n    pass\n"},
                    "tasks/a.py:2:"),
    "unknown kind": ({"tasks/a.py": '# /// task\n# kind = "genrator"\n# ///\ndef run():\n'
                                    "    pass\n"}, "tasks/a.py:2:"),
    "missing parent": ({"tasks/a.py": '# /// task\n# extends = "nope"\n# ///\n'},
                       "tasks/a.py:2:"),
    "missing upstream": ({"tasks/a.py": '# /// task\n# after = ["nope"]\n# ///\n'
                                        "def run(nope):\n    pass\n"}, "tasks/a.py:2:"),
    "cycle in after": ({"tasks/a.py": '# /// task\n# after = ["b"]\n# ///\ndef run(b):\n'
                                      "    pass\n",
                        "tasks/b.py": '# /// task\n# after = ["a"]\n# ///\ndef run(a):\n'
                                      "    pass\n"}, "a -> b -> a"),
    "cycle in extends": ({"tasks/a.py": '# /// task\n# extends = "b"\n# ///\n',
                          "tasks/b.py": '# /// task\n# extends = "a"\n# ///\n'}, "tasks/"),
    "collector outside scope": ({"tasks/a.py": '# /// task\n# kind = "collector"\n# ///\n'
                                               "def run():\n    pass\ndef gather():\n"
                                               "    return 1\n"}, "tasks/a.py:2:"),
    "two generators": ({"tasks/g1.py": '# /// task\n# kind = "generator"\n# ///\n'
                                       "def run():\n    yield 1\n",
                        "tasks/g2.py": '# /// task\n# kind = "generator"\n# ///\n'
                                       "def run():\n    yield 2\n",
                        "tasks/t.py": '# /// task\n# after = ["g1", "g2"]\n# ///\n'
                                      "def run(g1, g2):\n    pass\n"}, "tasks/t.py:2:"),
    "generator not a generator": ({"tasks/g.py": '# /// task\n# kind = "generator"\n# ///\n'
                                                 "def run():\n    return [1]\n"},
                                  "tasks/g.py:4:"),
    "syntax error in task": ({"tasks/a.py": "# /// task\n# ///\ndef run(:\n    pass\n"},
                             "tasks/a.py:3:"),
    "syntax error in helper": ({"lib/__init__.py": "", "lib/h.py": "def f(:\n",
                                "tasks/a.py": "# /// task\n# ///\nfrom lib.h import f\n\n"
                                              "def run():\n    return f()\n"}, "lib/h.py:1:"),
    "required parameter": ({"tasks/a.py": "# /// task\n# ///\ndef run(size):\n    pass\n"},
                           "tasks/a.py:3:"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_project_error_is_reported_with_file_and_line(project, case: str) -> None:  # type: ignore[no-untyped-def]
    files, expected = CASES[case]
    root = project({"tasks/fine.py": OK, **files})
    run = watchrun(root, "build")
    assert run.code == 2, (run.stdout, run.stderr)
    assert expected in run.stderr, run.stderr
    assert "error:" in run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    assert not (root / ".watchrun" / "logs").exists()  # nothing ran


@pytest.mark.parametrize("command", [["build", "--json"], ["status"], ["status", "--json"]],
                         ids=" ".join)
def test_every_command_that_reads_the_project_exits_2_on_an_error(
        project, command: list[str]) -> None:  # type: ignore[no-untyped-def]
    files, expected = CASES["unknown key"]
    root = project({"tasks/fine.py": OK, **files})
    run = watchrun(root, *command)
    assert run.code == 2, (run.stdout, run.stderr)
    said = '"file": "tasks/a.py", "line": 2' if "--json" in command else expected
    assert said in run.stdout + run.stderr
    assert "Traceback" not in run.stderr + run.stdout


def test_all_errors_are_reported_at_once(project) -> None:  # type: ignore[no-untyped-def]
    root = project({
        "tasks/a.py": "# /// task\n# colour = 1\n# ///\ndef run():\n    pass\n",
        "tasks/b.py": "# /// task\n# ///\ndef run(:\n",
        "tasks/c.py": '# /// task\n# after = ["zz"]\n# ///\ndef run(zz):\n    pass\n',
    })
    run = watchrun(root, "build", "--json")
    assert run.code == 2
    errors = [e for e in run.events if e["event"] == "error"]
    assert {(e["file"], e["line"]) for e in errors} >= {("tasks/a.py", 2), ("tasks/b.py", 3),
                                                         ("tasks/c.py", 2)}


def test_unknown_target_suggests_a_name(project) -> None:  # type: ignore[no-untyped-def]
    root = project({"tasks/report.py": OK})
    run = watchrun(root, "build", "reprot")
    assert run.code == 2 and "did you mean 'report'" in run.stderr


def test_bad_config_names_the_file_and_line(project) -> None:  # type: ignore[no-untyped-def]
    root = project({"watchrun.toml": 'jobs = 2\ngrace = "soon"\n', "tasks/a.py": OK})
    run = watchrun(root, "build")
    assert run.code == 2 and "watchrun.toml:2:" in run.stderr


def test_a_missing_project_folder_is_named_and_not_created(tmp_path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "nowhere"
    for command in ("build", "status"):
        run = watchrun(missing, command)
        assert run.code == 2 and f"the project folder {missing} does not exist" in run.stderr
    assert not missing.exists()


def test_a_file_given_as_the_project_folder_is_said_to_be_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    task = write_project(tmp_path, {"tasks/a.py": OK}) / "tasks" / "a.py"
    run = watchrun(task, "build")
    assert run.code == 2, run.stderr
    assert f"the project folder {task} is a file, not a folder" in run.stderr
