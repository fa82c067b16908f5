"""Small faults seen from the command line (issue 17, "smaller"): terminal escapes in a failed
unit's report, a negative job count. The big faults are in test_chaos.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import watchrun, write_project
from tests.devproc import DevProcess

pytestmark = pytest.mark.usefixtures("no_leaks")

ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x1b[31m"


def test_a_failed_units_report_shows_terminal_escapes_without_obeying_them(
        project: Callable[[dict[str, str]], Path]) -> None:
    root = project({
        "tasks/noisy.py": f"""
            # /// task
            # ///
            def run():
                print({ESCAPES!r} + "red text")
                raise RuntimeError({ESCAPES!r} + "bad")
        """,
    })
    run = watchrun(root, "build")
    assert run.code == 1
    assert "\x1b" not in run.stdout and "\x07" not in run.stdout
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mred text" in run.stdout  # the log's tail
    assert "FAILED noisy  RuntimeError: \\x1b]0;pwned" in run.stdout


@pytest.mark.parametrize("args", [("build", "-j", "-1"), ("build", "--jobs=-3"),
                                  ("build", "-j-1"), ("dev", "--no-tui", "-j", "-1")])
def test_a_negative_job_count_is_refused(project: Callable[[dict[str, str]], Path],
                                         args: tuple[str, ...]) -> None:
    root = project({"tasks/a.py": "# /// task\n# ///\ndef run():\n    return 1\n"})
    assert watchrun(root, "build").code == 0  # a null-build proof must not answer either
    run = watchrun(root, *args)
    assert run.code == 2
    assert "-j/--jobs must be 0 (one per CPU) or more" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_null_build_proof_of_another_user_does_not_answer(
        project: Callable[[dict[str, str]], Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The proof is read before anything else: a proof that came with the project must not
    make `build` say "clean" without looking."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "me"))
    root = project({"tasks/a.py": "# /// task\n# ///\ndef run():\n    return 1\n"})
    for _ in range(20):
        assert watchrun(root, "build").code == 0
        if (root / ".watchrun" / "clean.proof").exists():
            break
    assert (root / ".watchrun" / "clean.proof").exists()
    # without the proof's MAC, its checks (same files, same database) would all hold
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "someone-else"))
    other = watchrun(root, "build", "--json")
    assert other.code == 0, other.stderr
    assert "was not written by watchrun for this user" in other.stderr
    assert other.ran() == ["a"]


def test_dev_stops_with_one_message_when_its_project_folder_is_renamed(
        tmp_path: Path) -> None:

    root = write_project(tmp_path / "proj", {"tasks/t.py": "# /// task\n# ///\ndef run():\n"
                                                            "    return 1\n"})
    dev = DevProcess(root)
    try:
        dev.idle(timeout=30)
        moved = tmp_path / "moved"
        root.rename(moved)
        (moved / "tasks" / "t.py").write_text("# /// task\n# ///\ndef run():\n    return 2\n")
        error = dev.wait(lambda e: e["event"] == "error", timeout=30, what="the error")
        code = dev.proc.wait(timeout=30)
        stderr = dev.proc.stderr.read() if dev.proc.stderr else ""
    finally:
        if dev.proc.poll() is None:
            dev.stop()
    assert code == 2
    assert "renamed, moved or deleted" in error["message"]
    assert [e for e in dev.events if e["event"] == "error"] == [error]
    assert "Traceback" not in stderr
    assert not root.exists()  # nothing recreated the old path
