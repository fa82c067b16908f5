"""Task modules' compiled code comes from Python's own bytecode cache when it holds their bytes
(worker_modules.cached_compile): never stale, never where writing bytecode is turned off."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.util import cache_from_source
from pathlib import Path

import pytest

from tests.conftest import cli_env, write_project
from watchrun.executors.worker_modules import cached_compile


@pytest.fixture(autouse=True)
def bytecode_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)


def result(code: object) -> object:
    namespace: dict[str, object] = {}
    exec(code, namespace)  # type: ignore[call-overload]
    return namespace["X"]


def test_the_code_is_cached_beside_the_module_and_read_back(tmp_path: Path) -> None:
    file = str(tmp_path / "t.py")
    source = b"X = 1\n"
    assert result(cached_compile(source, file)) == 1
    pyc = Path(cache_from_source(file))
    assert pyc.exists()
    # a cache entry that holds other code under this source's hash is what is read back:
    # the proof that the cache, not the compiler, answered the second time
    header = pyc.read_bytes()[:16]
    import marshal

    pyc.write_bytes(header + marshal.dumps(compile("X = 'cached'", file, "exec")))
    assert result(cached_compile(source, file)) == "cached"


def test_other_bytes_a_damaged_entry_or_another_path_compile_again(tmp_path: Path) -> None:
    file = str(tmp_path / "t.py")
    cached_compile(b"X = 1\n", file)
    assert result(cached_compile(b"X = 2\n", file)) == 2  # the source changed
    pyc = Path(cache_from_source(file))
    pyc.write_bytes(pyc.read_bytes()[:20])  # truncated
    assert result(cached_compile(b"X = 2\n", file)) == 2
    moved = str(tmp_path / "moved" / "t.py")  # a project moved: its tracebacks name the new path
    os.makedirs(os.path.dirname(cache_from_source(moved)), exist_ok=True)
    Path(cache_from_source(moved)).write_bytes(pyc.read_bytes())
    assert cached_compile(b"X = 2\n", moved).co_filename == moved


def test_nothing_is_written_when_bytecode_is_off(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    file = str(tmp_path / "t.py")
    assert result(cached_compile(b"X = 3\n", file)) == 3
    assert not Path(cache_from_source(file)).exists()


@pytest.mark.usefixtures("no_leaks")
def test_an_edited_task_runs_its_new_code_with_the_cache_on(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", {
        "tasks/t.py": "# /// task\n# ///\ndef run():\n    return 'one'\n"})
    env = {k: v for k, v in cli_env().items() if k != "PYTHONDONTWRITEBYTECODE"}

    def build_and_show() -> str:
        for args in (("build",), ("show", "t")):
            run = subprocess.run([sys.executable, "-m", "watchrun", "-C", str(root), *args],
                                 capture_output=True, text=True, env=env, timeout=60)
            assert run.returncode == 0, run.stderr
        return run.stdout

    assert build_and_show() == "one"
    assert Path(cache_from_source(str(root / "tasks/t.py"))).exists()
    (root / "tasks/t.py").write_text("# /// task\n# ///\ndef run():\n    return 'two'\n")
    assert build_and_show() == "two"
