"""The warm template (issue 15): workers forked from it start with the tasks' libraries
imported, every unit starts from the same clean process state, and what is not fork-safe is
left out. Real `watchrun` processes on small projects; the library preloaded is `psutil`, a
small third-party package the test environment has (watchrun's own workers never import it)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.conftest import wait_for, watchrun, worker_processes, write_project
from tests.devproc import DevProcess
from tests.test_dev_e2e import edit
from watchrun.config import load_config
from watchrun.executors import warm
from watchrun.executors.warm import wanted_modules
from watchrun.executors.warm_forks import WarmTemplates

pytestmark = [
    pytest.mark.usefixtures("no_leaks"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the template is Linux's"),
]

Make = Callable[[dict[str, str]], Path]

# `SEEN` is computed before the task's own import runs: True only if the process had psutil
# already (preloaded by the template it was forked from)
WARM = '''
    # /// task
    # [params]
    # version = 1
    # ///
    import os, sys, time
    from pathlib import Path
    SEEN = "psutil" in sys.modules
    started = time.perf_counter()
    import psutil
    IMPORT_MS = (time.perf_counter() - started) * 1000

    def run(version):
        assert psutil.pid_exists(os.getpid())
        Path(f"seen-{version}").write_text(f"{SEEN} {IMPORT_MS:.3f} {os.getpid()}")
        if version == 1:
            time.sleep(300)
        return version
'''


def seen(root: Path, version: int) -> tuple[bool, float, int]:
    path = root / f"seen-{version}"
    wait_for(lambda: path.exists() and len(path.read_text().split()) == 3, timeout=30,
             what=f"run {version}")
    flag, import_ms, pid = path.read_text().split()
    return flag == "True", float(import_ms), int(pid)


def test_a_worker_forked_after_a_cancel_has_the_library_imported(project: Make) -> None:
    root = project({"watchrun.toml": "jobs = 1\ngrace = 0.3\n", "tasks/warm.py": WARM})
    dev = DevProcess(root)
    try:
        first = seen(root, 1)
        edit(root, "tasks/warm.py", "# version = 1", "# version = 2")
        dev.wait(lambda e: e["event"] == "unit_cancelled", what="the cancel")
        preloaded, import_ms, pid = seen(root, 2)
        assert pid != first[2]  # a new worker: the cancelled one was killed
        assert preloaded, "the replacement worker had to import psutil itself"
        assert import_ms < 5.0
        # it is a fork of the template, not a process started with exec
        template = psutil.Process(pid).parent()
        assert "watchrun.executors.template" in " ".join(template.cmdline())
    finally:
        assert dev.stop() == 130


def test_with_preload_false_workers_import_for_themselves(project: Make) -> None:
    # the same check fails when nothing is preloaded: the test above can tell
    root = project({"watchrun.toml": "preload = false\n",
                    "tasks/warm.py": WARM.replace("# version = 1", "# version = 3")})
    assert watchrun(root, "build").code == 0
    preloaded, _, _ = seen(root, 3)
    assert not preloaded


def test_forked_workers_and_the_template_as_ps_shows_them(project: Make) -> None:
    # tools (and our tests) find workers by their command line: a forked worker shows the
    # worker's, the template does not
    root = project({"watchrun.toml": "jobs = 1\n", "tasks/warm.py": WARM})
    dev = DevProcess(root)
    try:
        _, _, pid = seen(root, 1)
        workers = worker_processes()
        assert pid in [p.pid for p in workers]
        template = psutil.Process(pid).parent()
        assert template.pid not in [p.pid for p in workers]
        assert template.parent().pid == dev.proc.pid
    finally:
        assert dev.stop() == 130
    assert not template.is_running() or template.status() == psutil.STATUS_ZOMBIE


# -- every unit starts clean ----------------------------------------------------------------

LEAKY = {
    "watchrun.toml": "jobs = 1\n",
    "lib/__init__.py": "",
    "lib/registry.py": "ENTRIES = []\n",
    "tasks/dirty.py": '''
        # /// task
        # ///
        import os, signal, sys
        from lib import registry

        def run():
            os.environ["MODE"] = "fast"
            os.environ.pop("HOME", None)
            os.umask(0)
            sys.setrecursionlimit(12345)
            sys.path.append("/nowhere")
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)
            registry.ENTRIES.append("dirty")
            os.chdir("/")
            return os.getpid()
    ''',
    "tasks/observe.py": '''
        # /// task
        # after = ["dirty"]
        # ///
        import os, signal, sys
        from pathlib import Path
        from lib import registry

        def run():
            mask = os.umask(0o022)
            os.umask(mask)
            return {
                "mode": os.environ.get("MODE", "default"),
                "home": "HOME" in os.environ,
                "umask": oct(mask),
                "recursion": sys.getrecursionlimit(),
                "nowhere": "/nowhere" in sys.path,
                "sigusr1": str(signal.getsignal(signal.SIGUSR1)),
                "registry": list(registry.ENTRIES),
                "cwd": os.getcwd() == str(Path(__file__).resolve().parents[1]),
                "pid": os.getpid(),
            }
    ''',
}


def test_a_unit_result_does_not_depend_on_what_ran_before_in_its_worker(
        project: Make, tmp_path: Path) -> None:
    root = project(LEAKY)
    assert watchrun(root, "build").code == 0
    after_dirty = json.loads(watchrun(root, "show", "observe", "--json").stdout)
    dirty_pid = json.loads(watchrun(root, "show", "dirty", "--json").stdout)
    # alone: the same task in a fresh build where nothing ran before it
    assert watchrun(root, "clean", "observe").code == 0
    (root / "tasks/dirty.py").write_text((root / "tasks/dirty.py").read_text().replace(
        "def run():", "def run():\n    return os.getpid()\n\ndef unused():"))
    assert watchrun(root, "build", "observe").code == 0
    alone = json.loads(watchrun(root, "show", "observe", "--json").stdout)
    assert after_dirty["pid"] == dirty_pid, "the two units did not share a worker"
    after_dirty.pop("pid")
    alone.pop("pid")
    assert after_dirty == alone
    assert alone["mode"] == "default" and alone["umask"] == "0o22"


# -- what is preloaded ----------------------------------------------------------------------


def test_the_preload_setting_chooses_the_modules() -> None:
    imported = [("psutil", "psutil 7"), ("pandas.io", "pandas 2.2"), ("pandas", "pandas 2.2")]
    assert wanted_modules(imported, "auto") == [
        ("pandas", "pandas 2.2"), ("pandas.io", "pandas 2.2"), ("psutil", "psutil 7")]
    assert wanted_modules(imported, False) == []
    assert wanted_modules(imported, ["auto", "!pandas", "rich"]) == [("psutil", "psutil 7"),
                                                                    ("rich", "")]


PRELOAD_MIX = {
    "watchrun.toml": "jobs = 1\n",
    "helpers/__init__.py": "",
    "helpers/plots.py": "import json\nimport psutil._common\n",
    "tasks/mix.py": '''
        # /// task
        # ///
        import os
        import textwrap
        import helpers.plots
        import rich.text  # not used by run(): imported at every unit all the same

        def run():
            import typer  # imported inside the function: the task uses a library
            return textwrap.dedent(str(os.getpid()))
    ''',
}


def test_what_the_tasks_import_from_outside_the_project_is_preloaded(project: Make) -> None:
    root = project(PRELOAD_MIX)
    run = watchrun(root, "build", "-v")
    assert run.code == 0, run.stderr
    line = next(x for x in run.stderr.splitlines() if "preloaded in the warm template" in x)
    preloaded = line.split(": ", 2)[-1].split(", ")
    # every third-party import of a task module that uses a library, and the standard
    # library's modules the task reaches that cost an import (textwrap; not os, which every
    # interpreter has); nothing of a helper module run() does not reach (its json, psutil)
    assert preloaded == ["rich", "rich.text", "textwrap", "typer"]


def test_a_bad_preload_setting_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "watchrun.toml").write_text('jobs = 1\npreload = "sometimes"\n')
    config, errors = load_config(tmp_path)
    assert [e.format(tmp_path) for e in errors] == [
        'watchrun.toml:2: error: preload: must be "auto", false, or a list of module names '
        "(\"auto\", \"!name\"), not 'sometimes'"]
    assert config.preload == "auto"
    (tmp_path / "watchrun.toml").write_text('preload = ["auto", "!torch", "numpy.linalg"]\n')
    config, errors = load_config(tmp_path)
    assert errors == [] and config.preload == ("auto", "!torch", "numpy.linalg")


THREADY = {
    "watchrun.toml": 'preload = ["thready", "psutil"]\n',
    "site/thready.py": "import threading, time\n"
                       "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n",
    "tasks/use.py": '''
        # /// task
        # ///
        import os, sys
        def run():
            return ["thready" in sys.modules, "psutil" in sys.modules]
    ''',
}


def test_a_module_that_starts_a_thread_at_import_is_not_preloaded(
        project: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    root = project(THREADY)
    # a library outside the project (the template never imports from the project)
    monkeypatch.setenv("PYTHONPATH", str(root / "site") + os.pathsep + os.environ.get(
        "PYTHONPATH", ""))
    run = watchrun(root, "build", "-v")
    assert run.code == 0, run.stderr
    assert "not preloaded: thready: starts a thread at import" in run.stderr
    assert "preloaded in the warm template" in run.stderr and "psutil" in run.stderr
    # the worker came from a template without it, and with the rest
    assert json.loads(watchrun(root, "show", "use", "--json").stdout) == [False, True]


def test_the_template_never_delays_a_null_build(project: Make) -> None:
    root = project({"tasks/warm.py": WARM.replace("# version = 1", "# version = 4")})
    assert watchrun(root, "build").code == 0
    pid_file = root / "seen-4"
    pid = read_pid_of(pid_file)
    again = watchrun(root, "build")
    assert again.code == 0 and "clean 1" in again.stdout + again.stderr
    assert read_pid_of(pid_file) == pid  # nothing ran


def read_pid_of(path: Path) -> int:
    return int(path.read_text().split()[2])  # written by a build that has ended



# -- a library upgraded while `dev` runs ----------------------------------------------------

def install_fakelib(site: Path, version: str) -> None:
    """What `pip install fakelib==VERSION` leaves in a site-packages folder: the old version
    uninstalled first, its bytecode too (pip removes what its RECORD lists). Left behind, a
    .pyc of `VERSION = '1.0'` stands for `VERSION = '2.0'` written in the same second: same
    size, same mtime in seconds, which is all Python checks."""
    for old in site.glob("fakelib-*.dist-info"):
        for file in old.iterdir():
            file.unlink()
        old.rmdir()
    shutil.rmtree(site / "fakelib" / "__pycache__", ignore_errors=True)
    (site / "fakelib").mkdir(parents=True, exist_ok=True)
    (site / "fakelib/__init__.py").write_text(f"VERSION = {version!r}\n")
    info = site / f"fakelib-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakelib\nVersion: {version}\n")


UPGRADE = {
    "watchrun.toml": "jobs = 1\n",
    "tasks/lib_version.py": '''
        # /// task
        # [params]
        # n = 1
        # ///
        import os
        from pathlib import Path
        import fakelib

        def run(n):
            Path(f"version-{n}").write_text(f"{fakelib.VERSION} {os.getpid()}")
    ''',
}


def test_after_a_library_upgrade_units_run_the_new_version(
        project: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = project(UPGRADE)
    site = tmp_path / "lib" / "site-packages"
    install_fakelib(site, "1.0")
    monkeypatch.setenv("PYTHONPATH", str(site) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    dev = DevProcess(root)
    try:
        wait_for(lambda: (root / "version-1").exists(), timeout=30, what="the first run")
        install_fakelib(site, "2.0")
        edit(root, "tasks/lib_version.py", "# n = 1", "# n = 2")
        wait_for(lambda: (root / "version-2").exists()
                 and len((root / "version-2").read_text().split()) == 2, timeout=30,
                 what="the run after the upgrade")
        assert (root / "version-2").read_text().split()[0] == "2.0"
    finally:
        assert dev.stop() == 130


def test_an_install_is_seen_at_once_by_a_unit_started_when_nothing_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The look at the installed libraries is made at most every INSTALL_CHECK seconds while
    units run. When nothing runs it is made whatever the time since the last one: the upgrade
    test above failed in CI when its edit came within 50 ms of the first unit's start."""
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.setattr(warm, "_SITES", [str(site)])
    templates = WarmTemplates(lambda: [], {}, lambda: False)  # no loop: starts nothing
    install_fakelib(site, "2.0")
    assert not templates.installed_changed()  # a burst of submits: looked at just now
    assert templates.installed_changed(nothing_runs=True)
    assert not templates.installed_changed(nothing_runs=True)  # nothing new since


def test_a_module_that_kills_the_template_at_import_does_not_stop_the_build(
        project: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    root = project({
        "watchrun.toml": 'preload = ["crasher"]\n',
        "site/crasher.py": "import os\nos._exit(3)\n",
        "tasks/plain.py": "# /// task\n# ///\ndef run():\n    return 7\n",
    })
    monkeypatch.setenv("PYTHONPATH", str(root / "site") + os.pathsep + os.environ.get(
        "PYTHONPATH", ""))
    run = watchrun(root, "build")
    assert run.code == 0, run.stderr
    assert run.stderr.count("not preloaded: crasher: the warm template died importing it") == 1
    assert watchrun(root, "show", "plain").stdout.strip() == "7"


# -- a first build pays the imports once ------------------------------------------------------

def install_slowlib(site: Path, imports_log: Path) -> None:
    """A third-party package (a dist-info says so) slow to import, whose module-level code
    appends this process's pid to `imports_log` each time it runs."""
    (site / "slowlib").mkdir(parents=True, exist_ok=True)
    (site / "slowlib/__init__.py").write_text(
        "import os, time\n"
        f"with open({str(imports_log)!r}, 'a') as f:\n"
        "    f.write(f'{os.getpid()}\\n')\n"
        "time.sleep(0.3)\n"
        "def total(n):\n"
        "    return sum(range(n))\n")
    info = site / "slowlib-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: slowlib\nVersion: 1.0\n")


SLOW_TASK = '''
    # /// task
    # ///
    import os, sys
    PRELOADED = "slowlib" in sys.modules
    import slowlib

    def run():
        return [slowlib.total({n}), PRELOADED, os.getpid()]
'''


def slow_project(project: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 tasks: int = 6) -> tuple[Path, Path]:
    imports_log = tmp_path / "slowlib-imports"
    site = tmp_path / "lib" / "site-packages"
    install_slowlib(site, imports_log)
    monkeypatch.setenv("PYTHONPATH", str(site) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    files = {f"tasks/t{n}.py": SLOW_TASK.format(n=n) for n in range(tasks)}
    return project(files), imports_log


def results(root: Path, tasks: int) -> list[list[object]]:
    return [json.loads(watchrun(root, "show", f"t{n}", "--json").stdout) for n in range(tasks)]


def test_a_first_build_runs_a_librarys_import_once_whatever_the_workers(
        project: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, imports_log = slow_project(project, tmp_path, monkeypatch)
    # a build with no state yet (the modules to preload come from the project), then after
    # `clean` (the template starts importing what the last run preloaded, before the project
    # is loaded): each time the library's module-level code runs once, in the template, and
    # every unit, on either worker, finds it imported
    for attempt in ("first", "after clean"):
        imports_log.unlink(missing_ok=True)
        run = watchrun(root, "build", "-j2", "--json")
        assert run.code == 0, run.stderr
        assert len(run.units("unit_finished")) == 6
        importers = imports_log.read_text().split()
        assert len(importers) == 1, f"{attempt}: slowlib imported by {importers}"
        found = results(root, 6)
        assert [r[0] for r in found] == [sum(range(n)) for n in range(6)]
        assert all(r[1] for r in found), f"{attempt}: a unit had to import slowlib itself"
        assert int(importers[0]) not in {r[2] for r in found}  # not a worker: the template
        assert watchrun(root, "clean").code == 0


def test_a_template_started_from_the_last_runs_modules_is_dropped_if_they_are_no_longer_wanted(
        project: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = slow_project(project, tmp_path, monkeypatch, tasks=2)
    assert watchrun(root, "build", "-j2").code == 0
    assert all(r[1] for r in results(root, 2))
    # now preloading is off: the template the next build starts early imports slowlib (the
    # last run's modules), and must not be the one the workers come from
    (root / "watchrun.toml").write_text("preload = false\n")
    assert watchrun(root, "clean").code == 0
    run = watchrun(root, "build", "-j2", "-v")
    assert run.code == 0, run.stderr
    assert not any(r[1] for r in results(root, 2))
    assert "imports slowlib, not wanted now" in run.stderr


def test_a_template_that_guessed_more_than_the_project_wants_is_not_the_workers_source(
        project: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a first build: the template guesses from the task files' imports, an abstract task's
    # too (its children usually inherit them); here nothing extends it, so the code map
    # preloads nothing, and the workers must not come from the template that guessed slowlib
    root, _ = slow_project(project, tmp_path, monkeypatch, tasks=1)
    write_project(root, {"tasks/base.py": """
        # /// task
        # abstract = true
        # ///
        import slowlib

        def run():
            return slowlib.total(3)
    """})
    (root / "tasks/t0.py").write_text(
        (root / "tasks/t0.py").read_text().replace("import slowlib", "").replace(
            "slowlib.total(0)", "0"))
    run = watchrun(root, "build", "-v")
    assert run.code == 0, run.stderr
    assert results(root, 1)[0][1] is False, "the worker came from the template that guessed"
    assert "imports slowlib, not wanted now" in run.stderr


def test_the_hint_of_what_to_preload_is_only_read_if_this_user_wrote_it(tmp_path: Path) -> None:
    from watchrun.executors.preload_hint import HINT_FILE, read_hint, remember

    state = tmp_path / ".watchrun"
    state.mkdir()
    assert read_hint(str(tmp_path)) is None
    remember(state, ["pandas", "sklearn.ensemble"])
    assert read_hint(str(tmp_path)) == ["pandas", "sklearn.ensemble"]
    # a hint that came with the project (not authenticated by this user's key): ignored
    hint = state / HINT_FILE
    hint.write_bytes(hint.read_bytes().replace(b"sklearn.ensemble", b"antigravity\n"))
    assert read_hint(str(tmp_path)) is None


def test_the_templates_guess_names_modules_as_the_code_map_does(tmp_path: Path) -> None:
    from watchrun.executors.preload_guess import guess

    write_project(tmp_path, {
        "watchrun.toml": 'preload = ["auto", "!numpy", "rich"]\n',
        "lib/__init__.py": "",
        "tasks/helper.py": "import psutil\n",  # not a task: what it imports is not guessed
        "tasks/a.py": """
            # /// task
            # ///
            from __future__ import annotations
            import os, json as j
            import pandas.io.formats, numpy as np  # the numpy excluded by the setting
            from sklearn.ensemble import RandomForestClassifier
            from lib import thing
            from . import sibling
            import caf\u00e9

            def run():
                import typer  # inside a function: left to the code map
        """,
    })
    assert guess(str(tmp_path)) == ["rich", "pandas", "pandas.io.formats", "sklearn.ensemble"]
    (tmp_path / "watchrun.toml").write_text("preload = false\n")
    assert guess(str(tmp_path)) == []
