"""Where a unit runs on Ray, while it runs (issue 20 point 12): its log starts with the node
(ray_node.py), and the TUI's detail pane reads it from there, since Ray tells the driver a
task unit's node only when the unit ends.

The pane is driven with real log files, as the app drives it (LogTail, follow, append); the
end-to-end test runs a unit on the real two-node cluster and reads its log while it runs."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.app import App, ComposeResult

from tests.conftest import read_pid, spawn_watchrun, wait_for
from tests.ray_fixtures import TwoNodes, on_two_nodes
from watchrun.engine import events as ev
from watchrun.engine.control import ProjectView, TaskView
from watchrun.ui.tui.detail import FIRST_READ, DetailPane, LogTail
from watchrun.ui.tui.state import Board

NODE = "1a2b3c4d" + "e" * 48
OTHER = "99887766" + "0" * 48
HEADER = "[watchrun] runs on Ray node 1a2b3c4d (10.0.0.5)\n"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class PaneApp(App[None]):
    def compose(self) -> ComposeResult:
        yield DetailPane(id="detail")


def running_board() -> Board:
    view = TaskView(name="train", kind="task", chain=("train",), upstreams=(),
                    downstreams=(), params=(), scope=(), file="tasks/train.py")
    board = Board(ProjectView([view], [], 1), clock=lambda: 0.0)
    board.apply(ev.UnitStarted(task="train", iter=(), reasons=["never run"], time=1.0))
    return board


def node_line(pane: DetailPane) -> str | None:
    for line in str(pane.info.render()).splitlines():
        if line.startswith("node "):
            return line
    return None


class Following:
    """The pane following one log, polled as the app polls it."""

    def __init__(self, pane: DetailPane, board: Board, log: Path) -> None:
        self.pane, self.board = pane, board
        self.tail = LogTail(log)
        pane.follow(self.tail, "log  train")
        pane.show(board, "train", [])

    def poll(self) -> None:
        restart, text = self.tail.read()
        if restart or text:
            self.pane.append(restart, text)


@pytest.mark.anyio
async def test_the_pane_shows_the_node_a_running_unit_s_log_names(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    board = running_board()
    async with PaneApp().run_test(size=(100, 30)) as pilot:
        pane = pilot.app.query_one(DetailPane)
        following = Following(pane, board, log)
        following.poll()
        assert node_line(pane) is None  # no log yet: nothing known
        log.write_text(HEADER + "epoch 1\n")
        following.poll()
        assert node_line(pane) == "node       1a2b3c4d (10.0.0.5)"
        # a long log: its first line is out of what the pane reads of it, still the node
        with log.open("a") as f:
            f.write("x" * 99 + "\n" * (FIRST_READ // 50))
        following.poll()
        assert node_line(pane) == "node       1a2b3c4d (10.0.0.5)"
        # it ends: the event says the node, the driver's last line says it with its address
        with log.open("a") as f:
            f.write("[watchrun] ran on Ray node 1a2b3c4d (10.0.0.5)\n")
        board.apply(ev.UnitFinished(task="train", iter=(), duration=1.0, node=NODE, time=2.0))
        following.poll()
        pane.show(board, "train", [])
        assert node_line(pane) == "node       1a2b3c4d (10.0.0.5)"


@pytest.mark.anyio
async def test_a_new_unit_s_log_replaces_the_node_of_the_last_one(tmp_path: Path) -> None:
    board = running_board()
    board.apply(ev.UnitFinished(task="train", iter=(), duration=1.0, node=OTHER, time=2.0))
    async with PaneApp().run_test(size=(100, 30)) as pilot:
        pane = pilot.app.query_one(DetailPane)
        first = tmp_path / "first.log"
        first.write_text(HEADER)
        Following(pane, board, first).poll()
        # the log shown names another node than the one the last unit ended on: that one
        assert node_line(pane) == "node       99887766"
        board.apply(ev.UnitStarted(task="train", iter=(), reasons=["changed"], time=3.0))
        # a running unit on a node that cannot write the driver's logs: a log without the
        # line (shipped back at the end), so no node is known until it ends
        second = tmp_path / "second.log"
        second.write_text("epoch 1\n")
        following = Following(pane, board, second)
        following.poll()
        assert node_line(pane) is None
        with second.open("a") as f:
            f.write("[watchrun] ran on Ray node 99887766 (10.0.0.6)\n")
        board.apply(ev.UnitFinished(task="train", iter=(), duration=1.0, node=OTHER, time=4.0))
        following.poll()
        pane.show(board, "train", [])
        assert node_line(pane) == "node       99887766 (10.0.0.6)"
        # a local unit's log (no Ray): no node at all
        local = running_board()
        plain = tmp_path / "local.log"
        plain.write_text("hello\n")
        Following(pane, local, plain).poll()
        assert node_line(pane) is None
        # one that draws a progress bar (no newline) names none either
        bar = tmp_path / "bar.log"
        bar.write_text("\r".join(f"{i}%" for i in range(100)))
        Following(pane, local, bar).poll()
        assert node_line(pane) is None


# a unit that waits for the test, so its log can be read while it runs
WAITS = """
# /// task
# resources = {cpus = 2}
# ///
import os, time
from pathlib import Path

def run():
    print("working", flush=True)
    Path("unit.pid").write_text(str(os.getpid()))
    deadline = time.monotonic() + 90
    while not Path("release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return 1
"""
RUNS_ON = re.compile(r"\[watchrun\] runs on Ray node ([0-9a-f]{8}) \(127\.0\.0\.1\)\n")
RAN_ON = re.compile(r"\[watchrun\] ran on Ray node ([0-9a-f]{8}) \(127\.0\.0\.1\)\n")


@on_two_nodes
def test_a_running_unit_s_log_names_its_node_before_it_ends(
        project: Callable[[dict[str, str]], Path], two_nodes: TwoNodes) -> None:
    root = project({"tasks/waits.py": WAITS})
    build = spawn_watchrun(root, "build", "--json", "--executor", "ray",
                           "--address", two_nodes.address)
    try:
        wait_for(lambda: (root / "unit.pid").exists(), timeout=150, what="the unit to run")
        log = root / ".watchrun" / "logs" / "waits.log"
        running = log.read_text()
        header = RUNS_ON.match(running)
        assert header, running  # the first line, while the unit runs
        # cpus = 2 fits only the second node: the line names it
        assert header[1] == two_nodes.node.node_id[:8], (running, two_nodes.node.node_id)
        assert running[header.end():] == "working\n"
        assert build.poll() is None and read_pid(root / "unit.pid") > 0
        (root / "release").touch()
        out, err = build.communicate(timeout=120)
        assert build.returncode == 0, out + err
    finally:
        if build.poll() is None:
            build.kill()
            build.communicate()
    ended = log.read_text()
    # the driver's line at the end, in the same format, names the same node
    assert RUN_AND_END.fullmatch(ended), ended
    assert RAN_ON.findall(ended) == [header[1]]


RUN_AND_END = re.compile(RUNS_ON.pattern + r"working\n" + RAN_ON.pattern)
