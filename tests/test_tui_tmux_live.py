"""The live view of issue 19 in a real terminal: tmux runs the real CLI at 160x45 and at 80x24,
the test types keys and reads the screen, and checks the worker processes with psutil.

Run with `pytest -m tmux`.
"""

from __future__ import annotations

import re
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO, SESSION_TAG, gone, watchrun, worker_processes, write_project
from tests.tui_sessions import Terminal, open_terminal, poll

pytestmark = [
    pytest.mark.tmux,
    pytest.mark.timeout(120),
    pytest.mark.usefixtures("no_leaks"),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]

# prep runs in an earlier session (a build); frames yields 16 values at once; work takes each
# in 0.3 s and prints as it goes; hold prints until hold.go exists
PROJECT = {
    "watchrun.toml": "jobs = 2\ngrace = 0.3\n",
    "tasks/base.py": '''
        # /// task
        # abstract = true
        # [params]
        # resolution_in_pixels = 640
        # ///
    ''',
    "tasks/prep.py": '''
        # /// task
        # ///
        def run():
            print("prep: done", flush=True)
            return 1
    ''',
    "tasks/frames.py": '''
        # /// task
        # kind = "generator"
        # after = ["prep"]
        # ///
        def run(prep):
            yield from range(16)
    ''',
    "tasks/work.py": '''
        # /// task
        # extends = "base"
        # after = ["frames"]
        # ///
        import time

        def run(frames, resolution_in_pixels):
            print(f"work: item {frames} at {resolution_in_pixels}", flush=True)
            time.sleep(0.3)
            return frames
    ''',
    "tasks/hold.py": '''
        # /// task
        # ///
        import os
        import time
        from pathlib import Path

        def run():
            Path("hold.pid.tmp").write_text(str(os.getpid()))
            os.replace("hold.pid.tmp", "hold.pid")
            n = 0
            while not Path("hold.go").exists():
                n += 1
                print(f"hold: waiting {n}", flush=True)
                time.sleep(0.2)
            return "held"
    ''',
}

ENV = {"PYTHONPATH": str(REPO), "WATCHRUN_TEST_SESSION": SESSION_TAG, "TERM": "xterm-256color"}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = write_project(tmp_path / "proj", PROJECT)
    assert watchrun(root, "build", "prep").code == 0  # an earlier session
    return root


@pytest.fixture
def wide(tmp_path: Path) -> Iterator[Terminal]:
    yield from open_terminal(tmp_path, (160, 45))


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Terminal]:
    yield from open_terminal(tmp_path, (80, 24))


DESCRIBED = re.compile(r"(?:^ ?|│ )[●○◌▶‖✗⊘!] (\S+)  (?:clean|dirty|queued|running|paused|failed|"
                       r"cancelled|broken)  ", re.MULTILINE)


def described(screen: str) -> str | None:
    """The task the detail pane describes."""
    found = DESCRIBED.search(screen)
    return found.group(1) if found else None


def select(term: Terminal, name: str) -> str:
    """Press j (from the top) until the detail pane describes `name`, one key at a time."""
    term.keys("Home")
    top = re.search(r"[●○◌▶‖✗⊘!] (\S+)", term.screen().splitlines()[2])
    assert top is not None
    term.wait(lambda s: described(s) == top.group(1), "the first task to be selected",
              timeout=3)
    for _ in range(12):
        screen = term.screen()
        now = described(screen)
        if now == name:
            return screen
        term.keys("j")
        term.wait(lambda s, now=now: described(s) != now or "▸" in s, "the selection to move",
                  timeout=3)
    raise AssertionError(f"could not select {name}; the screen:\n{term.screen()}")


def quit_cleanly(term: Terminal, root: Path) -> None:
    (root / "hold.go").write_text("")
    term.keys("q")
    assert term.exit_status() == 0
    assert not worker_processes()


def test_at_160x45_proportions_progress_logs_keys_and_history(project: Path,
                                                              wide: Terminal) -> None:
    root = project
    wide.start([sys.executable, "-m", "watchrun", "-C", str(root), "dev"], ENV)
    wide.wait_text("▶ work")

    # 1. the DAG is as wide as its rows: the detail pane's border is left of the middle
    screen = select(wide, "work")
    border = min(line.index("│") for line in screen.splitlines()[2:10] if "│" in line)
    assert 30 < border < 80, screen
    # the param and where it is set on one line
    assert re.search(r"resolution_in_pixels = 640 +tasks/base\.py:\d+ \(base\)", screen), screen

    # 2. a bar with its track: done █, running ▓, to do ░; count, rate and ETA
    wide.wait(lambda s: re.search(r"iter \d+/16 [█▓]+░+", s) is not None,
              "work's bar with its track")
    wide.wait(lambda s: re.search(r"progress   \d+/16 [█▓░]+ · \d running · [\d.]+/s · ETA",
                                  s) is not None, "its count, rate and ETA")

    # 3. the log follows the running unit: what it printed, live
    wide.wait(lambda s: re.search(r"work: item \d+ at 640", s) is not None, "work's output")
    assert "following" in wide.screen()
    wide.keys("[")
    wide.wait(lambda s: re.search(r"work: log of iteration \[\d+\]", s) is not None,
              "[ to step back")
    wide.keys("]", "]", "]", "]", "]", "]", "]", "]", "]", "]", "]", "]", "]", "]", "]", "]")
    wide.wait_text("work: following the latest unit")

    # last run from the store, of the earlier session's build
    screen = select(wide, "prep")
    assert re.search(r"last run   \d+\.\ds · \d\d:\d\d:\d\d \(", screen), screen

    # 4. feedback for every key
    wide.keys("Space")
    wide.wait_text("prep: nothing running to pause (clean)")
    wide.keys("i")
    wide.wait_text("prep: nothing running to interrupt (clean)")
    wide.keys("/")
    wide.keys("w", "o", "r")
    screen = wide.wait_text("filter 'wor': 1 of 4 tasks (escape clears)")
    assert "prep" not in screen.split("\n", 2)[2].split("│")[0]
    wide.keys("Escape")
    wide.wait_text("filter cleared: 4 tasks")
    wide.wait(lambda s: "● prep" in s, "the whole DAG back")
    select(wide, "frames")
    wide.keys("Enter")
    wide.wait_text("frames: scope folded (1 tasks under it; enter unfolds)")
    wide.wait_text("frames ▸1")
    wide.keys("Enter")
    wide.wait_text("frames: scope unfolded")
    wide.keys("?")
    screen = wide.wait_text("every key")
    for key in ("[ ]", "force a rerun", "filter the tasks", "fold / unfold", "recent runs"):
        assert key in screen, key
    wide.keys("Escape")

    # 5. history: the earlier session's run of prep
    select(wide, "prep")
    wide.keys("h")
    screen = wide.wait_text("Recent runs of prep")
    assert re.search(r"\d\d-\d\d \d\d:\d\d:\d\d .* ok +\(an earlier run\)", screen), screen
    wide.keys("Escape")
    wide.wait(lambda s: "Recent runs" not in s, "the history to close")

    quit_cleanly(wide, root)


def test_at_80x24_state_reason_and_log_show_and_a_paused_clock_stops(project: Path,
                                                                      small: Terminal) -> None:
    root = project
    small.start([sys.executable, "-m", "watchrun", "-C", str(root), "dev", "hold"], ENV)
    small.wait_text("▶ hold")
    poll(lambda: (root / "hold.pid").exists(), "hold to start", timeout=20)
    pid = int((root / "hold.pid").read_text())
    screen = select(small, "hold")
    # without scrolling: its state, why it runs, and its latest output
    small.wait(lambda s: "▶ hold  running" in s and "runs for   never run" in s
               and re.search(r"hold: waiting \d+", s) is not None, "state, reason and log")
    lines = small.screen().splitlines()
    assert len(lines) == 24
    last = max(int(n) for n in re.findall(r"hold: waiting (\d+)", "\n".join(lines)))
    time.sleep(0.6)
    newer = max(int(n) for n in re.findall(r"hold: waiting (\d+)", small.screen()))
    assert newer > last  # the log follows

    # space: stopped (T), and its clock stops with it
    small.keys("Space")
    poll(lambda: psutil.Process(pid).status() == psutil.STATUS_STOPPED, "SIGSTOP")
    screen = small.wait_text("(paused: the clock is stopped)")
    shown = re.search(r"running    (\S+) \(paused", screen)
    assert shown is not None, screen
    time.sleep(2.2)
    again = re.search(r"running    (\S+) \(paused", small.screen())
    assert again is not None and again.group(1) == shown.group(1)
    small.keys("Space")
    poll(lambda: psutil.Process(pid).status() != psutil.STATUS_STOPPED, "SIGCONT")
    small.wait_text("hold: resumed")
    small.keys("[")
    small.wait_text("hold: one unit, no iterations to step through")
    quit_cleanly(small, root)
    assert gone(pid)
