"""fork_map: the same answers as a plain map, computed in forked children, and the first load
of a big project gives the same project either way."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from tests.conftest import write_project
from watchrun.config import load_config
from watchrun.project import loader, parallel_map
from watchrun.project.loader import ProjectLoader
from watchrun.project.parallel_map import fork_map
from watchrun.project.snapshot import PROJECT_CACHE_KEY
from watchrun.state.hashing import FileHasher
from watchrun.state.store import Store


def square_and_pid(n: int) -> tuple[int, int]:
    return n * n, os.getpid()


def test_results_are_in_order_and_children_did_part_of_the_work() -> None:
    items = list(range(400))
    results = fork_map(square_and_pid, items, processes=3)
    assert [r[0] for r in results] == [n * n for n in items]
    pids = {r[1] for r in results}
    assert os.getpid() in pids and len(pids) == 3  # the parent's share and two children's


def test_a_child_that_fails_has_its_share_done_here() -> None:
    parent = os.getpid()

    def fails_in_children(n: int) -> int:
        if os.getpid() != parent:
            raise RuntimeError("only in a child")
        return n + 1

    assert fork_map(fails_in_children, list(range(300)), processes=2) == \
        [n + 1 for n in range(300)]


def test_no_fork_while_other_threads_run_or_for_few_items() -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert {pid for _, pid in fork_map(square_and_pid, list(range(400)))} == {os.getpid()}
    finally:
        stop.set()
        thread.join()
    assert {pid for _, pid in fork_map(square_and_pid, list(range(20)))} == {os.getpid()}


def big_project(root: Path, tasks: int) -> Path:
    files = {f"tasks/t{i}.py": f'''
        # /// task
        # after = [{f'"t{i - 1}"' if i else ""}]
        # [params]
        # n = {i}
        # ///
        from lib.util import helper


        def run(n{f", t{i - 1}" if i else ""}):
            return helper(n)
    ''' for i in range(tasks)}
    files["lib/__init__.py"] = ""
    files["lib/util.py"] = "def helper(n):\n    return n * 2\n"
    return write_project(root, files)


def test_a_big_project_loads_the_same_with_and_without_helpers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, _ = load_config(big_project(tmp_path, 240))
    forked = ProjectLoader(config)
    with_helpers = forked.load()
    assert forked.parsed == 242  # every task file and lib/util.py, parsed once
    monkeypatch.setattr(loader, "MIN_PER_PROCESS", 10**9)
    monkeypatch.setattr(parallel_map, "MIN_PER_PROCESS", 10**9)
    alone = ProjectLoader(config).load()
    assert with_helpers.errors == alone.errors == []
    assert with_helpers.graph.order == alone.graph.order
    assert {n: c.digest for n, c in with_helpers.closures.items()} == \
        {n: c.digest for n, c in alone.closures.items()}


def test_what_the_helpers_parsed_is_stored_for_the_next_load(tmp_path: Path) -> None:
    config, _ = load_config(big_project(tmp_path, 240))
    store = Store(config.state_dir)
    try:
        first = ProjectLoader(config, store, FileHasher(store))
        project = first.load()
        store.kv_put(PROJECT_CACHE_KEY, b"")  # only the per-file analyses can help now
        again = ProjectLoader(config, store, FileHasher(store))
        assert again.load().closures == project.closures
        assert first.parsed == 242 and again.parsed == 0 and not again.cached
    finally:
        store.close()
