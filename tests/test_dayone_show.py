"""Day one, points 4 and 5: `show` tells the truth, and reasons name the cause."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cli_env, watchrun, write_project

pytestmark = pytest.mark.usefixtures("no_leaks")

GENERATOR = """
    # /// task
    # kind = "generator"
    # ///
    def run():
        for i in range(3):
            yield {"frame": i, "label": "x" * (200 if i == 2 else 3)}
"""
PER_ITERATION = """
    # /// task
    # after = ["frames"]
    # ///
    def run(frames):
        return frames["frame"] * 10
"""


def show_bytes(root: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "watchrun", "-C", str(root), "show", *args],
                          capture_output=True, env=cli_env(), timeout=60)


@pytest.mark.parametrize("text", ["# Report\n\nall good\n", "no newline at the end",
                                  "tabs\tand ünïcode\r\nand CRLF\r\n"])
def test_a_string_output_is_shown_byte_for_byte(tmp_path: Path, text: str) -> None:
    root = write_project(tmp_path, {"tasks/report.py": f"# /// task\n# ///\ndef run():\n"
                                                       f"    return {text!r}\n"})
    assert watchrun(root, "build").code == 0
    shown = show_bytes(root, "report")
    assert shown.returncode == 0 and shown.stdout == text.encode()


def test_show_lists_a_generators_iterations_and_picks_one(tmp_path: Path) -> None:
    root = write_project(tmp_path, {"tasks/frames.py": GENERATOR,
                                    "tasks/tens.py": PER_ITERATION})
    assert watchrun(root, "build").code == 0
    listed = watchrun(root, "show", "frames")
    assert listed.code == 0
    lines = listed.stdout.splitlines()
    assert "3 iteration" in lines[0]
    assert lines[1].strip() == "[0] {'frame': 0, 'label': 'xxx'}"
    assert len(lines[3]) < 120 and "..." in lines[3]  # a short repr of a long value
    one = watchrun(root, "show", "frames", "--iter", "2")
    assert one.code == 0 and one.stdout.strip() == repr({"frame": 2, "label": "x" * 200})
    per = watchrun(root, "show", "tens")
    assert per.code == 0 and "3 iteration" in per.stdout
    assert [line.strip() for line in per.stdout.splitlines()[1:]] == ["[0] 0", "[1] 10",
                                                                      "[2] 20"]
    assert watchrun(root, "show", "tens", "--iter", "1").stdout.strip() == "10"
    assert json.loads(watchrun(root, "show", "frames", "--json").stdout)[1] == \
        {"frame": 1, "label": "xxx"}
    assert json.loads(watchrun(root, "show", "tens", "--json").stdout) == [
        {"iter": [i], "value": i * 10} for i in range(3)]


def test_out_of_range_and_abstract_get_one_clear_sentence(tmp_path: Path) -> None:
    root = write_project(tmp_path, {
        "tasks/frames.py": GENERATOR, "tasks/tens.py": PER_ITERATION,
        "tasks/base.py": "# /// task\n# abstract = true\n# ///\ndef run():\n    return 1\n",
    })
    assert watchrun(root, "build").code == 0
    for args in (["frames", "--iter", "7"], ["tens", "--iter", "9"]):
        run = watchrun(root, "show", *args)
        assert run.code == 2 and run.stdout == ""
        assert run.stderr.count("\n") == 1 and "3 iteration(s)" in run.stderr, run.stderr
        assert "no iteration" in run.stderr and "watchrun build" not in run.stderr
    abstract = watchrun(root, "show", "base")
    assert abstract.code == 2 and "abstract" in abstract.stderr
    assert abstract.stderr.count("\n") == 1 and "watchrun build" not in abstract.stderr


COLLECTOR = """
    # /// task
    # kind = "collector"
    # after = ["tens"]
    # ///
    seen = []

    def run(tens):
        seen.append(tens)

    def gather():
        return sum(seen)
"""


def test_show_says_why_a_unit_has_no_output(tmp_path: Path) -> None:
    """Never run, failed, cancelled: each says so (a collector whose scope broke was said
    never to have run, after it had gathered)."""
    root = write_project(tmp_path, {"tasks/frames.py": GENERATOR,
                                    "tasks/tens.py": PER_ITERATION, "tasks/total.py": COLLECTOR})
    never = watchrun(root, "show", "total")
    assert never.code == 2 and "has not run" in never.stderr, never.stderr
    assert watchrun(root, "build").code == 0
    assert watchrun(root, "show", "total").stdout.strip() == "30"
    write_project(tmp_path, {"tasks/tens.py": PER_ITERATION.replace(
        'return frames["frame"] * 10',  # a new value for frame 0: total starts on it
        'assert frames["frame"] != 1\n        return frames["frame"] * 10 + 1')})
    assert watchrun(root, "build").code == 1
    cancelled = watchrun(root, "show", "total")
    assert cancelled.code == 2 and cancelled.stderr.count("\n") == 1, cancelled.stderr
    assert "last run was cancelled" in cancelled.stderr and "has not run" not in cancelled.stderr
    failed = watchrun(root, "show", "tens", "--iter", "1")
    assert failed.code == 2 and "failed in its last run" in failed.stderr, failed.stderr


def peak_kib(root: Path, *args: str) -> tuple[int, bytes]:
    """Peak resident memory of a `watchrun show` process (KiB), and what it printed."""
    code = ("import resource, runpy, sys\n"
            f"sys.argv = ['watchrun', '-C', {str(root)!r}, 'show', *{list(args)!r}]\n"
            "try:\n    runpy.run_module('watchrun', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "sys.stdout.flush()\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, env=cli_env(),
                         timeout=120)
    return int(run.stderr.decode().strip().splitlines()[-1]), run.stdout


def test_show_of_a_large_output_needs_about_its_size_in_memory(tmp_path: Path) -> None:
    size = 60 * 1024 * 1024
    root = write_project(tmp_path, {
        "tasks/big.py": f"# /// task\n# ///\ndef run():\n    return 'ab' * {size // 2}\n",
        "tasks/small.py": "# /// task\n# ///\ndef run():\n    return 'ab'\n",
    })
    assert watchrun(root, "build", timeout=120).code == 0
    baseline, _ = peak_kib(root, "small")
    for args in (["big"], ["big", "--json"]):
        peak, out = peak_kib(root, *args)
        assert len(out) >= size
        grown = (peak - baseline) * 1024
        # the value itself, and the pickle's text once while it is read: not several copies
        assert grown < 2.5 * size, f"show {args} grew by {grown / size:.1f}x the output"


def test_reasons_name_the_param_and_the_import(tmp_path: Path) -> None:
    root = write_project(tmp_path, {"tasks/fit.py": """
        # /// task
        # [params]
        # x = 0.0
        # ///
        import subprocess


        def run(x):
            subprocess.run(["true"], check=True)
            return x
    """})
    assert watchrun(root, "build").code == 0
    text = (root / "tasks/fit.py").read_text().replace("x = 0.0", "x = 0")
    (root / "tasks/fit.py").write_text(text)
    dry = watchrun(root, "build", "--dry-run")
    assert "param changed: x 0.0 -> 0" in dry.stdout, dry.stdout
    assert "upstream output changed" not in dry.stdout
    assert watchrun(root, "build").code == 0
    text = text.replace("import subprocess\n", "").replace(
        '    subprocess.run(["true"], check=True)\n', "")
    (root / "tasks/fit.py").write_text(text)
    dry = watchrun(root, "build", "--dry-run")
    assert "import removed: subprocess" in dry.stdout, dry.stdout
    assert "-> None" not in dry.stdout and "package version changed" not in dry.stdout
