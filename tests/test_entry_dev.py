"""A plain `watchrun dev` is read by the console script's pre-scan as well (`entry._dev`), so
that the warm template starts before the engine is imported, as for `build`. It must reach
`dev_command` with the options Typer would give it, plus the template it started; `--web`
(whose pages each run a plain `dev`) and anything the pre-scan is unsure of go to Typer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import watchrun.commands.dev
from tests.conftest import write_project
from tests.test_entry import samples
from watchrun import entry
from watchrun.cli import main as typer_main
from watchrun.commands import options as table
from watchrun.executors.spawn import EarlyWorkers, warm_supported, worker_env

PLAIN_ROWS = [row for row in table.DEV_OPTIONS if row.name not in ("web", "port")]
LINES = [["dev", *sample, "t"] for row in PLAIN_ROWS for sample in samples(row)]
LINES += [["dev"], ["dev", "a", "b.c"], ["dev", "--", "-odd-name"]]


@pytest.fixture
def in_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = write_project(tmp_path / "proj", {"tasks/a.py": "# /// task\n# ///\ndef run():\n"
                                                            "    return 1\n"})
    monkeypatch.chdir(root)
    return root


def reached(run: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What `dev_command` was called with when `run` ran (it is not run itself)."""
    seen: dict[str, Any] = {}

    def capture(root: Path, targets: list[str], **options: Any) -> int:
        seen.update(root=root, targets=targets, **options)
        return 0

    monkeypatch.setattr(watchrun.commands.dev, "dev_command", capture)
    with pytest.raises(SystemExit) as exit_info:
        run()
    assert exit_info.value.code == 0
    return seen


@pytest.mark.usefixtures("in_project")
@pytest.mark.parametrize("argv", LINES, ids=" ".join)
def test_a_plain_dev_reaches_dev_command_as_through_typer(
        argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    starts: list[int] = []
    monkeypatch.setattr(EarlyWorkers, "start", lambda self, count, root=None: starts.append(count))
    fast = reached(lambda: entry.main(argv), monkeypatch)
    assert isinstance(fast.pop("early"), EarlyWorkers)
    slow = reached(lambda: typer_main(argv), monkeypatch)
    assert slow.pop("web_port") is None
    assert fast == slow
    # the template starts early for the local executor only: Ray's nodes have their own
    assert len(starts) == (0 if any(arg.endswith("ray") for arg in argv) else 1)


@pytest.mark.usefixtures("in_project")
@pytest.mark.parametrize("argv", [["dev", "--web"], ["dev", "--web", "--port", "0"]],
                         ids=" ".join)
def test_web_goes_to_typer(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(entry, "_dev", lambda *parsed: pytest.fail(f"pre-scanned: {parsed}"))
    assert reached(lambda: entry.main(argv), monkeypatch)["web_port"] is not None


@pytest.mark.usefixtures("in_project")
@pytest.mark.parametrize("argv", [["dev", "--port", "1"], ["dev", "-j", "many"], ["dev", "--help"]],
                         ids=" ".join)
def test_what_typer_refuses_or_explains_goes_to_typer(
        argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(entry, "_dev", lambda *parsed: pytest.fail(f"pre-scanned: {parsed}"))
    with pytest.raises(SystemExit) as exit_info:
        entry.main(argv)
    assert exit_info.value.code == (0 if "--help" in argv else 2)


@pytest.mark.skipif(not warm_supported(), reason="no warm template on this platform")
def test_dev_hands_the_template_it_started_to_its_executor(
        in_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    taken: list[object] = []

    def capture(root: Path, targets: list[str], *, early: EarlyWorkers, **options: Any) -> int:
        template = early.take_template(worker_env())
        taken.append(template)
        if template is not None:
            template.kill(graceful=False)
        return 0

    monkeypatch.setattr(watchrun.commands.dev, "dev_command", capture)
    with pytest.raises(SystemExit):
        entry.main(["dev", "--no-tui"])
    assert taken and taken[0] is not None, "dev started no template before the engine"
