"""The DAG: order, implicit output -> input edges, generator scopes, and its errors."""

from __future__ import annotations

from pathlib import Path

from tests.test_tasks import header, sources_of
from watchrun.project.graph import Graph, build_graph, output_feeds_input
from watchrun.project.tasks import resolve_tasks


def graph_of(root: Path, files: dict[str, str], broken: tuple[str, ...] = ()
             ) -> tuple[Graph, list[str]]:
    tasks, errors = resolve_tasks(sources_of(root, files), root)
    assert errors == []
    graph, errors = build_graph(tasks, root, broken)
    return graph, [e.format(root) for e in errors]


def test_order_is_topological_with_ties_by_name(tmp_path: Path) -> None:
    graph, errors = graph_of(tmp_path, {
        "tasks/z.py": header(), "tasks/a.py": header("after = ['z']"),
        "tasks/m.py": header(), "tasks/b.py": header("after = ['a', 'm']"),
        "tasks/base.py": header("abstract = true"),
    })
    assert errors == []
    assert graph.order == ["m", "z", "a", "b"]  # abstract tasks are not nodes
    assert graph.upstreams == {"a": {"z": "z"}, "b": {"a": "a", "m": "m"}, "m": {}, "z": {}}
    assert graph.downstreams == {"z": {"a"}, "a": {"b"}, "m": {"b"}}
    assert graph.upstream_closure(["b"]) == {"a", "b", "m", "z"}
    assert graph.upstream_closure(["a"]) == {"a", "z"}
    assert graph.downstream_closure(["z"]) == {"z", "a", "b"}
    assert graph.broken == set()
    assert "base" in graph.tasks


def test_implicit_edges_order_without_passing_values(tmp_path: Path) -> None:
    graph, errors = graph_of(tmp_path, {
        "tasks/fetch.py": header("outputs = ['data/raw.csv', 'data/frames']"),
        "tasks/glob.py": header("inputs = 'data/*.csv'"),
        "tasks/inside.py": header("inputs = ['data/frames/*.png']"),
        "tasks/deep.py": header("inputs = ['data/**/*.png']"),
        "tasks/absolute.py": header(f"inputs = ['{tmp_path}/data/raw.csv']"),
        "tasks/unrelated.py": header("inputs = ['other/*.csv', 'data/*.txt']"),
        "tasks/self.py": header("inputs = ['mine/*']", "outputs = ['mine/x']"),
        "tasks/both.py": header("after = ['fetch']", "inputs = 'data/raw.csv'"),
    })
    assert errors == []
    assert graph.implicit == {
        "glob": {"fetch"}, "inside": {"fetch"}, "deep": {"fetch"}, "absolute": {"fetch"},
        "unrelated": set(), "self": set(), "fetch": set(),
        "both": set(),  # already an explicit upstream
    }
    assert graph.upstreams["glob"] == {}  # no value passed
    assert graph.downstreams["fetch"] == {"glob", "inside", "deep", "absolute", "both"}
    position = graph.order.index
    assert all(position("fetch") < position(t) for t in graph.downstreams["fetch"])
    assert graph.scope["glob"] == ()


def test_the_implicit_edge_rule() -> None:
    assert output_feeds_input("data/a.csv", "data/*.csv")
    assert not output_feeds_input("data/sub/a.csv", "data/*.csv")  # * stays in one segment
    assert output_feeds_input("data/sub/a.csv", "data/**/*.csv")
    assert output_feeds_input("data/a.csv", "data/**/*.csv")  # ** may be no folder at all
    assert output_feeds_input("out/frames", "out/frames/*.png")
    assert output_feeds_input("out/frames", "out/frames/0001.png")
    assert output_feeds_input("out", "out/**/*.png")
    assert output_feeds_input("out", "*/frames/*.png")
    assert not output_feeds_input("out/frames", "out/framesets/*.png")
    assert not output_feeds_input("out/a.txt", "out/b.txt")
    assert not output_feeds_input("out/frames", "out/*.png")  # a folder is not a png


def test_scopes_generator_task_collector_task(tmp_path: Path) -> None:
    graph, errors = graph_of(tmp_path, {
        "tasks/source.py": header(),
        "tasks/frames.py": header("kind = 'generator'", "after = ['source']"),
        "tasks/detect.py": header("after = ['frames', 'source']"),
        "tasks/score.py": header("after = ['detect']"),
        "tasks/collect.py": header("kind = 'collector'", "after = ['score', 'source']"),
        "tasks/report.py": header("after = ['collect', 'source']"),
        "tasks/late.py": header("inputs = 'x'", "after = ['report']"),
    })
    assert errors == []
    assert graph.scope == {"source": (), "frames": (), "detect": ("frames",),
                           "score": ("frames",), "collect": ("frames",), "report": (),
                           "late": ()}


def test_nested_generators(tmp_path: Path) -> None:
    graph, errors = graph_of(tmp_path, {
        "tasks/videos.py": header("kind = 'generator'"),
        "tasks/batches.py": header("kind = 'generator'", "after = ['videos']"),
        "tasks/per_batch.py": header("after = ['batches']"),
        "tasks/per_video.py": header("after = ['videos']"),
        "tasks/mixed.py": header("after = ['per_batch', 'per_video']"),
        "tasks/inner_collect.py": header("kind = 'collector'", "after = ['mixed']"),
    })
    assert errors == []
    assert graph.scope["batches"] == ("videos",)  # an inner, persistent generator
    assert graph.scope["per_batch"] == ("videos", "batches")
    assert graph.scope["mixed"] == ("videos", "batches")  # (videos,) is a prefix: fine
    assert graph.scope["inner_collect"] == ("videos", "batches")
    assert graph.broken == set()


def test_implicit_edges_bring_no_scope(tmp_path: Path) -> None:
    graph, errors = graph_of(tmp_path, {
        "tasks/gen.py": header("kind = 'generator'", "outputs = 'out/items'"),
        "tasks/reader.py": header("inputs = 'out/items/*'"),
    })
    assert errors == []
    assert graph.implicit["reader"] == {"gen"} and graph.scope["reader"] == ()


def test_two_generators_is_an_error_at_the_after_entry(tmp_path: Path) -> None:
    graph, errors = graph_of(tmp_path, {
        "tasks/g1.py": header("kind = 'generator'"),
        "tasks/g2.py": header("kind = 'generator'"),
        "tasks/per.py": header("after = ['g1']"),
        "tasks/t.py": header("after = [", "  'per',", "  'g2',", "]"),
        "tasks/down.py": header("after = ['t']"),
        "tasks/fine.py": header("after = ['per']"),
    })
    assert errors == ["tasks/t.py:4: error: task 't' follows two generators, 'g1' and 'g2' "
                      "(a task may be in one generator scope only)"]
    assert graph.broken == {"t", "down"}
    assert graph.order == ["g1", "g2", "per", "fine"]


def test_collector_outside_any_scope_is_an_error_at_its_kind_line(tmp_path: Path) -> None:
    graph, errors = graph_of(tmp_path, {
        "tasks/plain.py": header(),
        "tasks/c.py": header("after = ['plain']", "kind = 'collector'"),
        "tasks/base.py": header("abstract = true", "kind = 'collector'"),
        "tasks/child.py": header("extends = 'base'"),
    })
    assert errors == [
        "tasks/c.py:3: error: collector 'c' is not downstream of any generator",
        # the kind is inherited: the error points at the task's own header
        "tasks/child.py:1: error: collector 'child' is not downstream of any generator",
    ]
    assert graph.broken == {"c", "child"} and graph.order == ["plain"]


def test_missing_and_abstract_upstreams(tmp_path: Path) -> None:
    graph, errors = graph_of(tmp_path, {
        "tasks/download.py": header(),
        "tasks/base.py": header("abstract = true"),
        "tasks/t.py": header("after = [", "'dowload',", "'base',", "]"),
        "tasks/u.py": header("[after]", "x = 'nothing'"),
        "tasks/down.py": header("after = ['t']"),
    })
    assert errors == [
        "tasks/t.py:3: error: after 'dowload': no such task (did you mean 'download'?)",
        "tasks/t.py:4: error: after 'base': 'base' is abstract and never runs",
        "tasks/u.py:3: error: after 'nothing': no such task",
    ]
    assert graph.broken == {"t", "u", "down"}
    assert graph.order == ["download"]


def test_abstract_templates_are_checked_and_their_mistakes_reported_once(
        tmp_path: Path) -> None:
    graph, errors = graph_of(tmp_path, {
        "tasks/base.py": header("abstract = true", "after = ['dowload']"),
        "tasks/one.py": header("extends = 'base'"),
        "tasks/two.py": header("extends = 'base'"),
        "tasks/lonely.py": header("abstract = true", "after = ['nothing']"),
        "tasks/download.py": header(),
    })
    assert errors == [
        "tasks/base.py:3: error: after 'dowload': no such task (did you mean 'download'?)",
        "tasks/lonely.py:3: error: after 'nothing': no such task",
    ]
    assert graph.order == ["download"]
    assert {"one", "two"} <= graph.broken


def test_cycles_are_printed_as_chains_and_the_rest_still_builds(tmp_path: Path) -> None:
    graph, errors = graph_of(tmp_path, {
        "tasks/a.py": header("after = ['b']"),
        "tasks/b.py": header("after = ['c']"),
        "tasks/c.py": header("kind = 'task'", "after = ['a']"),
        "tasks/behind.py": header("after = ['c']"),
        "tasks/me.py": header("after = ['me']"),
        "tasks/x.py": header("inputs = 'y.out'", "outputs = 'x.out'"),
        "tasks/y.py": header("after = ['x']", "outputs = 'y.out'"),
        "tasks/healthy.py": header(),
    })
    assert errors == [
        "tasks/a.py:2: error: after forms a cycle: a -> b -> c -> a",
        "tasks/me.py:2: error: after forms a cycle: me -> me",
        "tasks/x.py:2: error: after forms a cycle: x -> y -> x (x -> y: x's inputs match y's "
        "outputs)",
    ]
    assert graph.broken == {"a", "b", "c", "behind", "me", "x", "y"}
    assert graph.order == ["healthy"]


def test_known_broken_tasks_taint_their_downstream_without_new_errors(tmp_path: Path) -> None:
    graph, errors = graph_of(tmp_path, {
        "tasks/bad.py": header(),
        "tasks/after_bad.py": header("after = ['bad']"),
        "tasks/after_gone.py": header("after = ['gone']"),
        "tasks/ok.py": header(),
    }, broken=("bad", "gone"))
    assert errors == []
    assert graph.broken == {"bad", "after_bad", "after_gone", "gone"}
    assert graph.order == ["ok"]


def test_all_graph_errors_at_once(tmp_path: Path) -> None:
    graph, errors = graph_of(tmp_path, {
        "tasks/a.py": header("after = ['zz']"),
        "tasks/b.py": header("kind = 'collector'"),
        "tasks/c.py": header("after = ['c']"),
    })
    assert [e.split(": error: ")[0] for e in errors] == ["tasks/a.py:2", "tasks/b.py:2",
                                                        "tasks/c.py:2"]
    assert graph.order == []


# -- the indexed edge search agrees with the plain rule -------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from watchrun.project.graph import _OutputTree  # noqa: E402

_segment = st.sampled_from(["out", "data", "a", "b.csv", "c.png", "frames"])
_glob_segment = st.sampled_from(["out", "data", "a", "*", "*.csv", "*.png", "**", "[ab]*", "?"])


@settings(max_examples=300, deadline=None)
@given(outputs=st.lists(st.lists(_segment, min_size=1, max_size=4), min_size=1, max_size=6),
       pattern=st.lists(_glob_segment, min_size=1, max_size=4))
def test_output_tree_finds_exactly_what_the_rule_says(outputs: list[list[str]],
                                                      pattern: list[str]) -> None:
    tree = _OutputTree()
    paths = ["/".join(o) for o in outputs]
    for index, path in enumerate(paths):
        tree.add(path, f"t{index}")
    glob = "/".join(pattern)
    expected = {f"t{i}" for i, path in enumerate(paths) if output_feeds_input(path, glob)}
    assert tree.reached_by(glob) == expected


def test_an_output_is_declared_by_one_task_only(tmp_path: Path) -> None:
    graph, errors = graph_of(tmp_path, {
        "tasks/a.py": header("outputs = ['out/x.csv', 'out/y.csv']"),
        "tasks/b.py": header(f"outputs = ['{tmp_path}/out/x.csv']"),  # the same, absolute
        "tasks/c.py": header("outputs = ['out/z.csv']"),
        "tasks/d.py": header("after = ['a']"),
    })
    assert errors == [
        "tasks/b.py:2: error: output '" + f"{tmp_path}/out/x.csv' is declared by two tasks: "
        "'a' (tasks/a.py:2) and 'b' (tasks/b.py:2); a file or folder may be declared by one "
        "task only"]
    assert graph.broken == {"a", "b", "d"} and graph.order == ["c"]


def test_an_output_inside_a_folder_another_task_declares_is_an_error(tmp_path: Path) -> None:
    """Each would see the other's writes as changes to its output (every build after a
    change to b reran a: 'output modified: out')."""
    graph, errors = graph_of(tmp_path, {
        "tasks/a.py": header("outputs = ['out']"),
        "tasks/b.py": header("outputs = ['out/sub/x.csv']"),
        "tasks/c.py": header("outputs = ['out.csv', 'other/y.csv']"),  # beside, not inside
    })
    assert errors == [
        "tasks/b.py:2: error: output 'out/sub/x.csv' of 'b' is inside the folder 'out' that "
        "'a' declares (tasks/a.py:2): each would see the other's writes as changes; declare "
        "the folder or the files in it, not both"]
    assert graph.broken == {"a", "b"} and graph.order == ["c"]


def test_a_task_cannot_name_its_own_output_as_an_input(tmp_path: Path) -> None:
    graph, errors = graph_of(tmp_path, {
        "tasks/same.py": header("inputs = ['log.txt']", "outputs = ['log.txt']"),
        "tasks/inside.py": header("inputs = ['out']", "outputs = ['out/model.bin']"),
        "tasks/glob.py": header("inputs = ['data/*.csv']", "outputs = ['data/sum.csv']"),
    })
    assert [e.split(": error: ")[0] for e in errors] == ["tasks/inside.py:2", "tasks/same.py:2"]
    assert "input 'log.txt' is also its own output 'log.txt'" in errors[1]
    assert "input 'out' overlaps its own output 'out/model.bin'" in errors[0]
    assert graph.order == ["glob"]  # a glob skips the task's own output instead
