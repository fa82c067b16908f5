"""The DAG's lane layout: every edge drawn and connected, no line that means a wrong edge,
narrow for realistic projects, deterministic and fast."""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watchrun.ui.tui.layout import (
    CROSS,
    DOWN,
    LEFT,
    NODE,
    RIGHT,
    UP,
    GraphLayout,
    layout,
    order_rows,
    render_row,
)

REPO = Path(__file__).resolve().parents[1]
Edges = list[tuple[str, str]]


def lay(names: list[str], edges: Edges) -> GraphLayout:
    return layout(order_rows(names, edges), edges)


def picture(graph: GraphLayout) -> list[str]:
    return [f"{render_row(row, graph.width)} {row.name}".rstrip() for row in graph.rows]


def lanes(graph: GraphLayout) -> int:
    return (graph.width + 1) // 2


# -- reading a layout back: which edges does the picture show? ---------------------------------


def cell(graph: GraphLayout, r: int, x: int) -> int:
    if r >= len(graph.rows) or x < 0:
        return 0
    cells = graph.rows[r].cells
    return cells[x] if x < len(cells) else 0


def runs(graph: GraphLayout, r: int) -> dict[int, int]:
    """Each character of a horizontal line in row r -> where that line flows to: the node if
    the line reaches it, else the end of the line that goes on down (the lane merged into)."""
    cells = graph.rows[r].cells
    where: dict[int, int] = {}
    x = 0
    while x < len(cells):
        if not cells[x] & RIGHT:
            x += 1
            continue
        start = x
        while cells[x] & RIGHT:
            x += 1
            assert cells[x] & LEFT, f"row {r}: a line that stops short at {x}"
        span = range(start, x + 1)
        nodes = [i for i in span if cells[i] & NODE]
        if nodes:
            assert len(nodes) == 1
            target = nodes[0]
        else:  # a merge: exactly one end turns down
            ends = [i for i in (start, x) if cells[i] & DOWN]
            assert len(ends) == 1, f"row {r}: a line between lanes that goes nowhere"
            target = ends[0]
        for i in span:
            where[i] = target
    return where


def check_consistent(graph: GraphLayout) -> None:
    """A cell that connects to a neighbour is connected back: no dangling strokes."""
    for r, row in enumerate(graph.rows):
        assert row.cells[row.node] & NODE
        for x, c in enumerate(row.cells):
            if c & RIGHT:
                assert cell(graph, r, x + 1) & LEFT, (r, x)
            if c & LEFT:
                assert cell(graph, r, x - 1) & RIGHT, (r, x)
            if c & DOWN:
                assert cell(graph, r + 1, x) & UP, (r, x)
            if c & UP:
                assert r > 0 and cell(graph, r - 1, x) & DOWN, (r, x)
            if c & CROSS:
                assert c & (UP | DOWN | LEFT | RIGHT) == UP | DOWN | LEFT | RIGHT


def drawn_edges(graph: GraphLayout) -> set[tuple[str, str]]:
    """Follow the lines as a reader does: down a lane from a node's marker; into a horizontal
    line only toward where it flows; through crossings straight on."""
    flows = [runs(graph, r) for r in range(len(graph.rows))]
    found: set[tuple[str, str]] = set()
    for r0, row in enumerate(graph.rows):
        if not row.cells[row.node] & DOWN:
            continue
        todo: list[tuple[int, int, str]] = [(r0 + 1, row.node, "down")]
        seen: set[tuple[int, int, str]] = set()
        while todo:
            step = todo.pop()
            if step in seen:
                continue
            seen.add(step)
            r, x, how = step
            c = cell(graph, r, x)
            if c & NODE:
                found.add((row.name, graph.rows[r].name))
                continue
            if how == "down":
                assert c & UP, f"a lane from {row.name} runs into nothing at row {r}"
                if c & DOWN:
                    todo.append((r + 1, x, "down"))
                if c & CROSS:
                    continue
                target = flows[r].get(x)
                if target is not None and target != x:
                    todo.append((r, x + (1 if target > x else -1), "across"))
                continue
            target = flows[r][x]
            if x == target:  # the lane this line merges into: go on down it
                todo.append((r + 1, x, "down"))
            else:
                todo.append((r, x + (1 if target > x else -1), "across"))
    return found


def check(names: list[str], edges: Edges, graph: GraphLayout | None = None) -> GraphLayout:
    graph = graph or lay(names, edges)
    assert sorted(row.name for row in graph.rows) == sorted(names)
    position = {row.name: i for i, row in enumerate(graph.rows)}
    assert all(position[a] < position[b] for a, b in edges), "not a topological order"
    check_consistent(graph)
    assert drawn_edges(graph) == set(edges)
    return graph


# -- shapes ------------------------------------------------------------------------------------


def random_dag(n: int, seed: int, window: int, prefix: str = "t") -> tuple[list[str], Edges]:
    """n tasks; each has 0-3 upstreams among the `window` tasks before it."""
    rnd = random.Random(seed)
    names = [f"{prefix}{i:03}" for i in range(n)]
    edges: set[tuple[str, str]] = set()
    for i in range(1, n):
        for _ in range(rnd.choice([0, 1, 1, 1, 1, 2, 2, 3])):
            edges.add((names[rnd.randrange(max(0, i - window), i)], names[i]))
    return names, sorted(edges)


def pipeline(groups: int) -> tuple[list[str], Edges]:
    """A realistic project: per group a download, a generator, per-iteration steps, a collector;
    reports that join a few groups; 10 tasks a group."""
    names: list[str] = []
    edges: Edges = []
    for g in range(groups):
        steps = [f"g{g}.{s}" for s in ("fetch", "gen", "clean", "feat", "model", "score",
                                        "collect", "plot")]
        names.extend(steps)
        edges.extend(itertools.pairwise(steps[:6]))
        edges += [(steps[5], steps[6]), (steps[3], steps[6]), (steps[6], steps[7])]
        names.append(f"g{g}.lint")
        names.append(f"g{g}.report")
        edges += [(steps[7], f"g{g}.report"), (steps[0], f"g{g}.report")]
        if g:
            edges.append((f"g{g - 1}.collect", f"g{g}.report"))
    return names, edges


def test_a_chain_is_one_straight_lane() -> None:
    names = ["a", "b", "c", "d"]
    graph = check(names, [("a", "b"), ("b", "c"), ("c", "d")])
    assert picture(graph) == ["● a", "● b", "● c", "● d"]


def test_a_diamond() -> None:
    graph = check(["a", "b", "c", "d"], [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])
    assert picture(graph) == [
        "●   a",
        "├─● b",
        "● │ c",
        "●─┘ d",
    ]


def test_fan_out_of_ten_is_one_lane_that_each_child_taps() -> None:
    kids = [f"c{i}" for i in range(10)]
    graph = check(["p", *kids], [("p", k) for k in kids])
    assert picture(graph) == ["●   p"] + [f"├─● c{i}" for i in range(9)] + ["●   c9"]


def test_fan_in_of_ten_shares_lanes() -> None:
    parents = [f"p{i}" for i in range(10)]
    graph = check([*parents, "c"], [(p, "c") for p in parents])
    assert lanes(graph) <= 4  # without merging it would take ten
    assert picture(graph)[-1].endswith(" c")


def test_fan_in_of_chains_merges_into_one_lane() -> None:
    names = [f"a{i}" for i in range(6)] + [f"b{i}" for i in range(6)] + ["agg"]
    edges = [(f"a{i}", f"b{i}") for i in range(6)] + [(f"b{i}", "agg") for i in range(6)]
    graph = check(names, edges)
    assert lanes(graph) <= 4
    assert sum(1 for line in picture(graph) if "┘" in line) >= 3  # merged on the way down


def test_a_node_with_three_parents_and_a_lane_passing_by() -> None:
    names = ["a", "b", "c", "d", "e"]
    edges = [("a", "d"), ("b", "d"), ("c", "d"), ("a", "e"), ("c", "e")]
    graph = check(names, edges)
    assert picture(graph) == [
        "●     a",
        "│ ●   b",
        "│ │ ● c",
        "├─●─┤ d",
        "●───┘ e",
    ]


def test_a_line_passing_a_lane_it_does_not_join_crosses_under_it() -> None:
    # rows in this order: y's input line from a passes x's lane, which goes on to z
    edges = [("a", "y"), ("x", "z"), ("a", "z")]
    graph = check(["a", "x", "y", "z"], edges, layout(["a", "x", "y", "z"], edges))
    assert picture(graph) == [
        "●     a",
        "│ ●   x",
        "├─│─● y",
        "●─┘   z",
    ]
    assert graph.rows[2].cells[2] & CROSS


def test_two_inputs_on_one_side_meet_where_the_nearer_lane_goes_on() -> None:
    edges = [("a", "c"), ("b", "c"), ("b", "d"), ("a", "e")]
    order = ["a", "b", "c", "d", "e"]
    graph = check(order, edges, layout(order, edges))
    assert picture(graph) == [
        "●     a",
        "│ ●   b",
        "├─┼─● c",
        "│ ●   d",
        "●     e",
    ]
    assert not graph.rows[2].cells[2] & CROSS  # b's lane joins: it is one of c's inputs


@pytest.mark.parametrize("seed", range(5))
def test_random_dag_of_300_every_edge_is_drawn_and_no_other(seed: int) -> None:
    names, edges = random_dag(300, seed, window=300)
    check(names, edges)


@pytest.mark.parametrize("seed", range(5))
def test_300_tasks_with_local_edges_fit_in_about_30_columns(seed: int) -> None:
    names, edges = random_dag(300, seed, window=10)
    graph = check(names, edges)
    assert graph.width <= 31


def test_a_realistic_pipeline_of_300_tasks_is_narrow() -> None:
    names, edges = pipeline(30)
    assert len(names) == 300
    graph = check(names, edges)
    assert graph.width <= 9


def test_chains_are_kept_together() -> None:
    names, edges = pipeline(3)
    order = order_rows(names, edges)
    for group in range(3):
        i = order.index(f"g{group}.gen")
        assert order[i: i + 4] == [f"g{group}.{s}" for s in ("gen", "clean", "feat", "model")]


def test_nodes_in_a_cycle_are_still_shown_and_nothing_crashes() -> None:
    names = ["a", "b", "c"]
    edges = [("a", "b"), ("b", "c"), ("c", "b")]
    order = order_rows(names, edges)
    assert sorted(order) == names
    graph = layout(order, edges)
    assert [row.name for row in graph.rows] == order
    check_consistent(graph)


def test_unknown_and_self_edges_are_ignored() -> None:
    graph = check(["a", "b"], [("a", "b")], lay(["a", "b"], [("a", "b"), ("a", "a"),
                                                            ("zz", "b")]))
    assert picture(graph) == ["● a", "● b"]


def _layout_in_subprocess(seed: str) -> str:
    code = (
        "import json, sys\n"
        "from tests.test_tui_layout import random_dag, lay, picture\n"
        "names, edges = random_dag(200, 3, window=40)\n"
        "print(json.dumps(picture(lay(names, list(reversed(edges))))))\n"
    )
    env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True, cwd=REPO)
    return done.stdout


def test_deterministic_across_runs_and_hash_seeds() -> None:
    names, edges = random_dag(200, 3, window=40)
    mine = picture(lay(names, list(reversed(edges))))
    assert picture(lay(names, edges)) == mine  # edge order does not matter
    first, second = _layout_in_subprocess("1"), _layout_in_subprocess("2")
    assert first == second
    assert json.loads(first) == mine


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[str], Edges]:
    n = draw(st.integers(1, 25))
    names = [f"n{i}" for i in range(n)]
    edges: set[tuple[str, str]] = set()
    for i in range(1, n):
        ups = draw(st.lists(st.integers(0, i - 1), max_size=4))
        edges.update((names[j], names[i]) for j in ups)
    shuffled = draw(st.permutations(names))  # the order given must not matter for validity
    return list(shuffled), sorted(edges)


@settings(max_examples=300, deadline=None)
@given(dags())
def test_any_small_dag_is_drawn_exactly(dag: tuple[list[str], Edges]) -> None:
    names, edges = dag
    check(names, edges)
