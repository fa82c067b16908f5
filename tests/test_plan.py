"""The build plan's rules, without processes: find work, finish a unit, see what comes next
(as ninja's PlanTest does over a fake command runner). Microseconds each."""

from __future__ import annotations

from pathlib import Path

from watchrun.config import load_config
from watchrun.engine.dispatch import task_ranks
from watchrun.engine.plan import Plan, TaskRank, cutoff_waits, stages
from watchrun.engine.readiness import DenseKeys, Readiness
from watchrun.engine.scopes import Consumer, finished_by_consumers
from watchrun.executors.base import UnitKey
from watchrun.project.graph import Graph
from watchrun.project.loader import ProjectLoader

# gen -> a -> b -> total (a collector), as in SPEC section 3's streaming example; `cheap`
# stands alone outside the scope
RANKS = {
    "gen": TaskRank(stage=0, persistent=True),
    "a": TaskRank(stage=1, generator="gen"),
    "b": TaskRank(stage=2, generator="gen"),
    "total": TaskRank(stage=3, persistent=True, generator="gen"),
    "cheap": TaskRank(stage=0),
}


def unit(name: str, *key: int) -> UnitKey:
    return UnitKey(name, tuple(key))


class FakeRunner:
    """Runs what the plan finds, `jobs` at a time, and finishes units when the test says."""

    def __init__(self, plan: Plan[UnitKey, str], jobs: int) -> None:
        self.plan = plan
        self.jobs = jobs
        self.log: list[UnitKey] = []

    def fill(self) -> list[UnitKey]:
        calls = sum(1 for u in self.plan.running if not self.plan.ranks[u.task].persistent)
        found = self.plan.find_work(self.jobs - calls)
        for u in found:
            self.plan.started(u, "job")
        self.log.extend(found)
        return found

    def finish(self, u: UnitKey) -> None:
        assert self.plan.ended(u) is not None


def make(jobs: int = 2, window: int = 8, ranks: dict[str, TaskRank] | None = None
         ) -> tuple[Plan[UnitKey, str], FakeRunner]:
    plan: Plan[UnitKey, str] = Plan(ranks or RANKS, window)
    return plan, FakeRunner(plan, jobs)


def want(plan: Plan[UnitKey, str], *units: UnitKey) -> None:
    for u in units:
        plan.want(u, u)


def test_later_stages_of_earlier_iterations_go_first() -> None:
    plan, runner = make(jobs=2)
    want(plan, *(unit("a", i) for i in range(5)))
    assert runner.fill() == [unit("a", 0), unit("a", 1)]
    runner.finish(unit("a", 0))
    want(plan, unit("b", 0))  # a[0]'s result made b[0] ready: it beats a[2]
    assert runner.fill() == [unit("b", 0)]
    runner.finish(unit("a", 1))
    want(plan, unit("b", 1))
    assert runner.fill() == [unit("b", 1)]
    runner.finish(unit("b", 0))
    assert runner.fill() == [unit("a", 2)]


def test_nested_scopes_order_by_outer_iteration_then_inner() -> None:
    ranks = {**RANKS, "inner": TaskRank(stage=2, generator="gen"),
             "deep": TaskRank(stage=3, generator="gen")}
    plan, runner = make(jobs=10, ranks=ranks)
    want(plan, unit("a", 1), unit("deep", 0, 1), unit("a", 0), unit("deep", 0, 0),
         unit("deep", 1, 0), unit("a", 2))
    assert runner.fill() == [unit("a", 0), unit("deep", 0, 0), unit("deep", 0, 1),
                             unit("a", 1), unit("deep", 1, 0), unit("a", 2)]


def test_priority_beats_iteration_order_and_stage() -> None:
    ranks = {**RANKS, "cheap": TaskRank(priority=5)}
    plan, runner = make(jobs=1, ranks=ranks)
    want(plan, unit("b", 0), unit("a", 1), unit("cheap"))
    assert runner.fill() == [unit("cheap")]
    runner.finish(unit("cheap"))
    assert runner.fill() == [unit("b", 0)]


def test_equal_units_keep_the_order_they_became_ready() -> None:
    ranks = {"x": TaskRank(), "y": TaskRank(), "z": TaskRank()}
    plan, runner = make(jobs=3, ranks=ranks)
    want(plan, unit("y"), unit("z"), unit("x"))
    assert runner.fill() == [unit("y"), unit("z"), unit("x")]


def test_persistent_units_take_no_slot_and_never_wait_for_one() -> None:
    plan, runner = make(jobs=1)
    want(plan, unit("cheap"), unit("a", 0), unit("gen"), unit("total"))
    assert runner.fill() == [unit("total"), unit("gen"), unit("cheap")]  # later stage first
    assert runner.fill() == []
    assert plan.ready_count() == 1


def test_queue_places_go_only_to_units_outside_scopes() -> None:
    plan, _ = make()
    want(plan, unit("a", 0), unit("a", 1))
    assert plan.find_work(0, queued=2) == []
    want(plan, unit("cheap"))
    assert plan.find_work(0, queued=2) == [unit("cheap")]
    assert plan.find_work(1, queued=2) == [unit("a", 0)]


def test_a_unit_waits_for_its_stale_predecessor_to_be_cancelled() -> None:
    plan, runner = make(jobs=2)
    want(plan, unit("a", 0))
    runner.fill()
    assert plan.supersede(unit("a", 0))
    want(plan, unit("a", 0), unit("a", 1))
    assert runner.fill() == [unit("a", 1)]  # a[0] again only once the old one ended
    runner.finish(unit("a", 0))
    assert runner.fill() == [unit("a", 0)]


def test_the_window_holds_a_generator_ahead_of_its_consumers() -> None:
    plan, runner = make(jobs=2, window=4)
    want(plan, unit("gen"))
    runner.fill()
    want(plan, unit("a", 0), unit("a", 1), unit("a", 2))
    assert plan.throttled() == ([], [])
    want(plan, unit("a", 3))
    assert plan.throttled() == (["gen"], [])
    assert plan.throttled() == ([], [])  # said once
    runner.fill()  # a[0], a[1] start: 2 wait, at half the window the generator goes on
    assert plan.throttled() == ([], ["gen"])
    assert not plan.held("gen")


def test_the_window_holds_the_generator_whose_yields_make_a_nested_scope(
        tmp_path: Path) -> None:
    """In outer -> inner (an inner generator) -> stage, stage's waiting units count against
    `inner`: holding `outer` (done after its few items) would let `inner` run on unbounded."""
    for name, header in {"outer": 'kind = "generator"',
                         "inner": 'kind = "generator"\n# after = ["outer"]',
                         "stage": 'after = ["inner"]'}.items():
        path = tmp_path / "tasks" / f"{name}.py"
        path.parent.mkdir(exist_ok=True)
        body = "yield 1" if "generator" in header else "return 1"
        path.write_text(f"# /// task\n# {header}\n# ///\ndef run(**kw):\n    {body}\n")
    config, _ = load_config(tmp_path)
    project = ProjectLoader(config).load()
    assert project.errors == []
    ranks = task_ranks(project)
    assert ranks["stage"].generator == "inner" and ranks["inner"].generator == "outer"
    plan, _ = make(jobs=1, window=2, ranks=ranks)
    want(plan, unit("stage", 0, 0), unit("stage", 0, 1))
    assert plan.throttled() == (["inner"], [])


def test_dropping_ready_units_lowers_the_backlog() -> None:
    plan, _ = make(window=2)
    want(plan, unit("a", 0), unit("a", 1))
    assert plan.throttled() == (["gen"], [])
    plan.drop({"a"})
    assert plan.throttled() == ([], ["gen"])
    assert not plan.more_to_do()


def test_units_of_a_task_whose_code_on_disk_is_not_the_plans_wait() -> None:
    """dev: a task file saved with an error holds its units (others go on); the fix lets them
    start, in their order."""
    plan, runner = make(jobs=2)
    want(plan, unit("a", 0), unit("a", 1), unit("cheap"))
    plan.code_held = frozenset({"a"})
    assert runner.fill() == [unit("cheap")]
    assert plan.ready_count() == 2 and plan.more_to_do()
    runner.finish(unit("cheap"))
    plan.code_held = frozenset()
    assert runner.fill() == [unit("a", 0), unit("a", 1)]


def test_null_build_nothing_to_do() -> None:
    plan, runner = make()
    assert not plan.more_to_do()
    assert runner.fill() == []


def test_more_to_do_until_the_last_unit_ends() -> None:
    plan, runner = make(jobs=1)
    want(plan, unit("cheap"), unit("a", 0))
    runner.fill()
    assert plan.more_to_do()
    runner.finish(unit("cheap"))
    runner.fill()
    runner.finish(unit("a", 0))
    assert not plan.more_to_do()


# -- replan: what a change does to what runs -----------------------------------------------

CHAIN = {
    "up": TaskRank(stage=0),
    "mid": TaskRank(stage=1),
    "down": TaskRank(stage=2),
    "reader": TaskRank(stage=1),  # reads up's output file (an implicit edge)
    "col": TaskRank(stage=1, persistent=True),
    "free": TaskRank(stage=0),
}
BELOW = {"up": {"mid", "down", "reader", "col"}, "mid": {"down"}}
FILES = {"reader": ["up"]}


def running(*names: str) -> Plan[UnitKey, str]:
    plan: Plan[UnitKey, str] = Plan(CHAIN)
    for name in names:
        plan.started(unit(name), "job")
    return plan


def reset_of(changed: set[str]) -> set[str]:
    reset = set(changed)
    for name in changed:
        reset |= BELOW.get(name, set())
    return reset


def test_replan_cancels_the_changed_tasks_units() -> None:
    plan = running("up", "free")
    replan = plan.replan({"up"}, reset_of({"up"}), FILES)
    assert replan.cancel == [unit("up")] and replan.keep == []
    assert plan.running[unit("up")].superseded
    assert not plan.running[unit("free")].superseded  # independent: runs on


def test_replan_keeps_value_downstreams_running_speculatively() -> None:
    plan = running("mid", "down")
    replan = plan.replan({"up"}, reset_of({"up"}), FILES)
    assert replan.keep == [unit("down"), unit("mid")] and replan.cancel == []
    assert plan.running[unit("mid")].speculative
    assert replan.schedule == ["up", "col", "mid", "reader", "down"]


def test_replan_cancels_readers_of_files_and_persistent_consumers() -> None:
    plan = running("reader", "col")
    replan = plan.replan({"up"}, reset_of({"up"}), FILES)
    assert replan.cancel == [unit("col"), unit("reader")]


def test_replan_of_a_deleted_task_cancels_its_units() -> None:
    plan = running("gone")
    replan = plan.replan({"gone"}, {"gone"}, FILES)
    assert replan.cancel == [unit("gone")] and replan.schedule == []


def test_replan_drops_ready_units_of_reset_tasks_only() -> None:
    plan: Plan[UnitKey, str] = Plan(CHAIN)
    want(plan, unit("mid"), unit("free"))
    plan.replan({"up"}, reset_of({"up"}), FILES)
    assert plan.find_work(5) == [unit("free")]


def test_replan_leaves_units_already_being_cancelled_alone() -> None:
    plan = running("up")
    plan.supersede(unit("up"))
    assert plan.replan({"up"}, {"up"}, FILES).cancel == []


def test_a_speculative_unit_counts_when_its_upstream_value_comes_again() -> None:
    plan = running("mid")
    plan.replan({"up"}, reset_of({"up"}), FILES)
    assert plan.decide(unit("mid"), {"up": "h1"}, {"up": "h1"})  # early cutoff
    assert not plan.running[unit("mid")].speculative
    assert not plan.running[unit("mid")].superseded


def test_a_speculative_unit_is_superseded_when_its_upstream_value_differs() -> None:
    plan = running("mid")
    plan.replan({"up"}, reset_of({"up"}), FILES)
    assert not plan.decide(unit("mid"), {"up": "h1"}, {"up": "h2"})
    assert plan.running[unit("mid")].superseded
    assert plan.active("mid") == []


def test_paused_units_are_known_to_the_plan_and_forgotten_when_replaced() -> None:
    plan = running("up", "free")
    plan.running[unit("up")].paused = True
    assert plan.paused_tasks() == {"up"}
    plan.replan({"up"}, {"up"}, FILES)  # a rerun supersedes the paused unit
    assert plan.paused_tasks() == set()


def test_new_ranks_keep_ready_units_of_tasks_that_remain() -> None:
    plan: Plan[UnitKey, str] = Plan(CHAIN)
    want(plan, unit("mid"), unit("free"))
    plan.set_ranks({"free": TaskRank(), "new": TaskRank(priority=1)})
    want(plan, unit("new"))
    assert plan.find_work(5) == [unit("new"), unit("free")]


def test_stages_are_longest_paths_from_the_roots() -> None:
    ups = {"a": [], "b": ["a"], "c": ["a", "b"], "d": []}
    assert stages(ups, ["a", "d", "b", "c"]) == {"a": 0, "d": 0, "b": 1, "c": 2}


def test_speculative_units_nothing_can_decide_are_stale_once_the_rest_is_done() -> None:
    plan = running("mid", "up")
    plan.replan(set(), {"mid"}, FILES)  # mid kept: its upstream reruns
    assert plan.running[unit("mid")].speculative
    assert plan.undecidable() == []  # up still runs: it may bring mid's value
    plan.ended(unit("up"))  # up failed: mid's value never comes
    assert plan.undecidable() == [unit("mid")]
    assert plan.running[unit("mid")].superseded


# -- readiness: which units a value makes ready -------------------------------------------

def scope_graph() -> Graph:
    """table -> gen -> a -> b -> total (collector) -> report; reader reads report's file;
    lookup (outside the scope) feeds a whole."""
    graph = Graph(tasks={})
    graph.upstreams = {"gen": {"table": "table"}, "a": {"gen": "gen", "lookup": "lookup"},
                       "b": {"a": "a"}, "total": {"b": "b"}, "report": {"total": "total"}}
    graph.implicit = {"reader": {"a"}}
    graph.reads_files_of = {"reader": {"a"}}
    graph.downstreams = {"table": {"gen"}, "gen": {"a"}, "lookup": {"a"}, "a": {"b", "reader"},
                         "b": {"total"}, "total": {"report"}}
    graph.scope = {"a": ("gen",), "b": ("gen",), "total": ("gen",), "lookup": (), "table": ()}
    return graph


DEPTH = {"gen": 1, "a": 1, "b": 1}  # how many key components their values carry


def readiness() -> Readiness:
    ready = Readiness(scope_graph(), lambda up: DEPTH.get(up, 0), lambda n: n == "total")
    ready.needed = {"table", "lookup", "gen", "a", "b", "total", "report", "reader"}
    return ready


def test_an_iteration_wakes_its_units_once_their_whole_values_are_known() -> None:
    ready = readiness()
    assert ready.iteration("gen", (0,), "v0") == [("a", (0,))]
    assert ready.upstream_values("a", (0,)) is None  # lookup is not known yet
    assert ready.value_known("lookup", (), "L") == [("a", (0,))]  # every key so far
    assert ready.upstream_values("a", (0,)) == {"gen": "v0", "lookup": "L"}
    assert ready.iteration("gen", (1,), "v1") == [("a", (1,))]


def test_values_flow_depth_first_to_the_consumer_of_the_scope() -> None:
    ready = readiness()
    ready.value_known("lookup", (), "L")
    ready.iteration("gen", (0,), "v0")
    ready.iteration("gen", (1,), "v1")
    assert ready.value_known("a", (1,), "a1") == [("b", (1,))]
    assert ready.value_known("b", (1,), "b1") == [("total", None)]  # the consumer advances
    assert ready.upstream_values("total", (1,), in_scope=True) == {"b": "b1"}
    assert ready.upstream_values("total", (0,), in_scope=True) is None  # pushes wait for 0


def test_a_file_reader_waits_for_every_unit_of_its_producer() -> None:
    ready = readiness()
    ready.value_known("lookup", (), "L")
    ready.iteration("gen", (0,), "v0")
    ready.iteration("gen", (1,), "v1")
    assert ("reader", ()) not in ready.value_known("a", (0,), "a0")
    assert ("reader", ()) not in ready.value_known("a", (1,), "a1")  # more keys may come
    assert ready.generator_done("gen") == [("reader", ())]  # a is complete only now
    assert not ready.complete("b") and ready.complete("a")
    assert ready.upstream_values("reader", ()) == {}


def test_generator_done_advances_its_consumers() -> None:
    ready = readiness()
    graph = ready.graph
    graph.downstreams["gen"] = {"a", "total"}
    ready.iteration("gen", (0,), "v0")  # a[0] still to come: its file reader waits
    assert ready.generator_done("gen") == [("total", None)]
    assert "gen" in ready.gen_done


def test_forget_drops_a_tasks_values_and_keys() -> None:
    ready = readiness()
    ready.iteration("gen", (0,), "v0")
    ready.value_known("lookup", (), "L")
    ready.forget({"gen"})
    assert ready.keys == {} and ("gen", (0,)) not in ready.values
    assert ready.values == {("lookup", ()): "L"}


# -- early cutoff before the fact: what a change leaves alone until a new value is known ------

def cutoff_graph() -> Graph:
    """scope_graph with its order: table, lookup, gen, a, b, total, report, reader."""
    graph = scope_graph()
    graph.order = ["table", "lookup", "gen", "a", "b", "total", "report", "reader"]
    return graph


def test_a_changed_plain_task_leaves_its_downstream_until_its_new_value_is_known() -> None:
    # lookup feeds the scope (a) whole: while it reruns, a's units, the generator's scope
    # and the collector `total` go on; table, under `gen`, too
    graph = cutoff_graph()
    assert cutoff_waits({"lookup", "table"}, graph, graph, lambda n: True) == {"lookup",
                                                                              "table"}


def test_units_in_a_scope_and_producers_of_read_files_do_not_wait() -> None:
    graph = cutoff_graph()
    # a: a value per iteration; a is also read as a file by `reader`
    assert cutoff_waits({"a", "b"}, graph, graph, lambda n: True) == set()


def test_a_producer_read_as_a_file_by_a_task_that_also_takes_its_value_does_not_wait() -> None:
    """`a` takes lookup's value and may also read lookup's file (then its `after` edge hides
    the file edge from `implicit`): a rerun of lookup rewrites that file, so its downstream
    is reset at once and resolved against the new file, not kept on the old value."""
    graph = cutoff_graph()
    graph.reads_files_of = {**graph.reads_files_of, "a": {"lookup"}}
    assert cutoff_waits({"lookup"}, graph, graph, lambda n: True) == set()
    graph = cutoff_graph()  # without the file edge, lookup's downstream waits for its value
    assert cutoff_waits({"lookup"}, graph, graph, lambda n: True) == {"lookup"}


def test_a_task_without_a_known_value_resets_its_downstream_at_once() -> None:
    graph = cutoff_graph()
    assert cutoff_waits({"lookup"}, graph, graph, lambda n: n != "lookup") == set()


def test_a_change_that_moved_edges_below_the_task_resets_at_once() -> None:
    before, after = cutoff_graph(), cutoff_graph()
    after.upstreams = {**after.upstreams, "b": {"renamed": "a"}}
    assert cutoff_waits({"lookup"}, before, after, lambda n: True) == set()
    gone = cutoff_graph()
    gone.order = [n for n in gone.order if n != "lookup"]  # deleted, or broken
    assert cutoff_waits({"lookup"}, before, gone, lambda n: True) == set()


# -- releasing finished iterations: a scope of millions of items in bounded memory ------------

def streamed(ready: Readiness, count: int, *, missing: tuple[tuple[str, int], ...] = ()
             ) -> None:
    """`count` iterations of gen, each through a and b, but for the units in `missing`."""
    ready.value_known("lookup", (), "L")
    for i in range(count):
        ready.iteration("gen", (i,), f"v{i}")
        for name in ("a", "b"):
            if (name, i) not in missing:
                ready.value_known(name, (i,), f"{name}{i}")


def consumer(*, live: bool = True, acked: int = 0, ended: bool = False) -> Consumer:
    c = Consumer("total", "gen", {"b": "b"}, {})
    c.live, c.acked, c.ended = live, acked, ended
    return c


def test_the_keys_of_a_generator_outside_scopes_are_a_count() -> None:
    ready = readiness()
    streamed(ready, 3)
    keys = ready.keys["gen"]
    assert isinstance(keys, DenseKeys) and len(keys) == 3
    assert list(keys) == [(0,), (1,), (2,)] and keys[2] == (2,) and keys[1:] == [(1,), (2,)]
    ready.iteration("gen", (7,), "v7")  # not dense after all (never made so): kept one by one
    assert ready.keys["gen"] == [(0,), (1,), (2,), (7,)]


def test_an_iteration_is_finished_once_the_slowest_consumer_confirmed_its_push() -> None:
    assert finished_by_consumers(10, [consumer(acked=7), consumer(acked=4)]) == 4
    assert finished_by_consumers(10, []) == 10  # a scope with no consumer: its units decide
    # decided clean without running: it pushes nothing again
    assert finished_by_consumers(10, [consumer(live=False, ended=True), consumer(acked=6)]) == 6
    # replayed from the store and deferred, or not started: it pushes the scope from (0,)
    assert finished_by_consumers(10, [consumer(live=False), consumer(acked=6)]) == 0


def test_an_iteration_is_released_once_every_unit_of_it_has_its_value() -> None:
    ready = readiness()
    streamed(ready, 6, missing=(("b", 3),))  # b[3] still runs
    tasks = ["a", "b"]
    assert ready.releasable("gen", 5, tasks) == 3
    dropped = ready.release("gen", 3, tasks)
    assert sorted(dropped) == sorted((n, (i,), f"{p}{i}") for n, p in
                                     (("gen", "v"), ("a", "a"), ("b", "b")) for i in range(3))
    assert ("a", (0,)) not in ready.values and ("a", (3,)) in ready.values
    assert ready.held_iterations("gen") == 3
    assert ready.is_released("b", (2,)) and not ready.is_released("b", (3,))
    # released keys are never woken again (a whole value re-known wakes the rest only)
    assert ready.value_known("lookup", (), "L") == [("a", (3,)), ("a", (4,)), ("a", (5,))]
    ready.value_known("b", (3,), "b3")
    assert ready.releasable("gen", 6, tasks) == 6
    ready.release("gen", 6, tasks)
    assert ready.held_iterations("gen") == 0 and ready.values == {("lookup", ()): "L"}
    assert len(ready.keys["gen"]) == 6 and "gen" not in ready.gen_done


def test_an_iteration_where_a_unit_failed_is_released_once_the_rest_of_it_settled() -> None:
    """A bad item of a sweep: a[2] failed, so b[2] (waiting for it) will never have a value
    either; iteration 2 is settled and the release goes on past it. Where b[2] failed while
    a[2] still runs, iteration 2 waits for a[2]."""
    ready = readiness()
    streamed(ready, 5, missing=(("a", 2), ("b", 2)))
    tasks = ["a", "b"]
    assert ready.releasable("gen", 5, tasks) == 2  # nothing known of iteration 2 yet
    ready.unit_failed("gen", "a", (2,))
    assert ready.releasable("gen", 5, tasks) == 5
    dropped = ready.release("gen", 5, tasks)
    assert ("a", (2,), "") in dropped and ("b", (2,), "") in dropped  # settled, no value
    assert ready.held_iterations("gen") == 0

    ready = readiness()
    streamed(ready, 5, missing=(("a", 2), ("b", 2)))
    ready.unit_failed("gen", "b", (2,))
    assert ready.releasable("gen", 5, tasks) == 2  # a[2] may still give its value
    ready.value_known("a", (2,), "a2")
    assert ready.releasable("gen", 5, tasks) == 5


def test_a_consumer_that_cannot_complete_holds_no_iteration() -> None:
    blocked = consumer(acked=2)
    blocked.blocked = "item[2] failed"
    assert finished_by_consumers(10, [blocked, consumer(acked=6)]) == 6


def test_a_released_value_asked_for_again_is_read_back_and_dropped_again() -> None:
    ready = readiness()
    store = {("gen", (0,)): "v0", ("a", (0,)): "a0", ("b", (0,)): "b0"}  # what is committed
    asked: list[tuple[str, tuple[int, ...]]] = []

    def read_back(name: str, key: tuple[int, ...]) -> str | None:
        asked.append((name, key))
        return store.get((name, key))

    ready.read_back = read_back
    streamed(ready, 2)
    ready.release("gen", 1, ["a", "b"])
    assert ready.upstream_values("b", (1,)) == {"a": "a1"}  # held: no read back
    assert ready.upstream_values("total", (0,)) == {"b": "b0"} and asked == [("b", (0,))]
    assert ready.upstream_values("total", (0,)) == {"b": "b0"} and len(asked) == 1  # held now
    assert ready.value("a", (5,)) is None and len(asked) == 1  # never known: nothing to read
    ready.release("gen", 2, ["a", "b"])
    assert ready.values == {("lookup", ()): "L"}  # what was read back is dropped too


def test_a_replan_after_release_resolves_the_reset_tasks_units_again() -> None:
    """dev: b changed after its first iterations were released. Its units are woken again
    for every key, their upstream a read back from the store; a's released units stay done."""
    ready = readiness()
    ready.read_back = lambda name, key: f"stored-{name}{key[0]}"
    streamed(ready, 4)
    ready.release("gen", 3, ["a", "b"])
    ready.forget({"b"})
    assert not ready.is_released("b", (0,)) and ready.is_released("a", (0,))
    assert ready.reach("b", ()) == [("b", (i,)) for i in range(4)]
    assert ready.upstream_values("b", (0,)) == {"a": "stored-a0"}
    assert ready.upstream_values("b", (3,)) == {"a": "a3"}
    ready.value_known("b", (0,), "new-b0")
    # b's new values are released again once finished; a's cursor stays where it was
    assert ready.releasable("gen", 4, ["a", "b"]) == 1
    ready.release("gen", 1, ["a", "b"])
    assert ("b", (0,)) not in ready.values and ready.released["a"] == (3,)


def nested_readiness() -> Readiness:
    """outer -> inner (an inner generator, a consumer of outer's scope) -> s -> sum (a
    collector of inner's scope): s has the keys (i, j) of inner's iterations."""
    graph = Graph(tasks={})
    graph.upstreams = {"inner": {"outer": "outer"}, "s": {"inner": "inner"}, "sum": {"s": "s"}}
    graph.downstreams = {"outer": {"inner"}, "inner": {"s"}, "s": {"sum"}}
    graph.scope = {"inner": ("outer",), "s": ("outer", "inner"), "sum": ("outer", "inner")}
    depth = {"outer": 1, "inner": 2, "s": 2}
    ready = Readiness(graph, lambda up: depth.get(up, 0), lambda n: n in ("inner", "sum"))
    ready.needed = {"outer", "inner", "s", "sum"}
    return ready


def stream_nested(ready: Readiness, per_push: int, pushes: int = 2) -> list[tuple[int, int]]:
    keys = []
    for i in range(pushes):
        ready.iteration("outer", (i,), f"o{i}")
        for j in range(per_push):
            ready.iteration("inner", (i, j), f"v{i}.{j}")
            ready.value_known("s", (i, j), f"s{i}.{j}")
            keys.append((i, j))
    return keys


def test_a_nested_scope_is_released_in_the_order_of_its_keys() -> None:
    """Two pushes of 3 items each: the first 4 iterations of inner's scope are released
    (s's values dropped, read back when asked for); inner's own values stay, it records
    them at its end."""
    ready = nested_readiness()
    ready.read_back = lambda name, key: f"stored-{name}{key}"
    stream_nested(ready, 3)
    assert ready.releasable_scope("inner")
    assert ready.releasable("inner", 4, ["s"], own=False) == 4
    dropped = ready.release("inner", 4, ["s"], own=False)
    assert dropped == [("s", (0, 0), "s0.0"), ("s", (0, 1), "s0.1"), ("s", (0, 2), "s0.2"),
                       ("s", (1, 0), "s1.0")]
    assert ready.is_released("s", (0, 2)) and ready.is_released("s", (1, 0))
    assert not ready.is_released("s", (1, 1)) and not ready.is_released("inner", (0, 0))
    assert ready.values[("inner", (0, 0))] == "v0.0" and ("s", (1, 1)) in ready.values
    assert ready.value("s", (0, 1)) == "stored-s(0, 1)"
    # a value of outer's scope reaches only the keys still held
    assert ready.reach("s", (1,)) == [("s", (1, 1)), ("s", (1, 2))]
    assert ready.releasable("inner", 6, ["s"], own=False) == 6


def test_a_failed_unit_of_a_nested_scope_settles_its_iteration() -> None:
    ready = nested_readiness()
    stream_nested(ready, 2)
    del ready.values[("s", (0, 1))]
    assert ready.releasable("inner", 4, ["s"], own=False) == 1
    ready.unit_failed("inner", "s", (0, 1))
    assert ready.releasable("inner", 4, ["s"], own=False) == 4
    assert ("s", (0, 1), "") in ready.release("inner", 4, ["s"], own=False)


def test_a_scope_nested_deeper_or_out_of_order_is_never_released() -> None:
    ready = nested_readiness()
    ready.graph.scope["inner"] = ("top", "outer")  # a third level: finish() keys may not sort
    stream_nested(ready, 2)
    assert not ready.releasable_scope("inner")
    ready = nested_readiness()
    stream_nested(ready, 2)
    ready.iteration("inner", (0, 5), "late")
    assert not ready.releasable_scope("inner")


# -- followers: the unit queued behind a running one on its worker (`build`) ------------------

CHAIN_RANKS = {"s0": TaskRank(stage=0), "s1": TaskRank(stage=1), "s2": TaskRank(stage=2),
               "side": TaskRank(stage=1), "big": TaskRank(stage=1, slots=2),
               "mem": TaskRank(stage=1, memory=1 << 30), "coll": TaskRank(stage=1, persistent=True),
               "head": TaskRank(stage=0), "urgent": TaskRank(stage=0, priority=3)}


def test_the_follower_is_the_candidate_first_in_the_streaming_order() -> None:
    plan: Plan[str, str] = Plan(CHAIN_RANKS)
    plan.started(unit("s0"), "s0")
    assert plan.follower(unit("s0"), [unit("side"), unit("s2")]) == unit("s2")  # later stage
    assert plan.follower(unit("s0"), [unit("side")]) == unit("side")
    assert plan.follower(unit("s0"), []) is None


def test_only_a_plain_unit_follows_a_plain_unit() -> None:
    """One taking several slots, memory, a process of its own or an iteration of a scope waits
    for the plan's launch; nothing follows a unit of a scope or a persistent one."""
    plan: Plan[str, str] = Plan({**CHAIN_RANKS, **RANKS})
    plan.started(unit("s0"), "s0")
    for other in (unit("big"), unit("mem"), unit("coll"), unit("a", 0)):
        assert plan.follower(unit("s0"), [other]) is None, other
    assert plan.follower(unit("a", 0), [unit("s1")]) is None
    assert plan.follower(unit("coll"), [unit("s1")]) is None


def test_no_follower_while_a_ready_unit_would_start_before_it() -> None:
    plan: Plan[str, str] = Plan(CHAIN_RANKS)
    plan.started(unit("s0"), "s0")
    plan.want(unit("head"), "head")  # stage 0: s1 (stage 1) goes first, depth first
    assert plan.follower(unit("s0"), [unit("s1")]) == unit("s1")
    plan.want(unit("urgent"), "urgent")  # a higher priority: it takes the slot s0 frees
    assert plan.follower(unit("s0"), [unit("s1")]) is None


def test_no_follower_of_a_task_held_by_the_user_or_by_broken_code() -> None:
    plan: Plan[str, str] = Plan(CHAIN_RANKS)
    plan.started(unit("s0"), "s0")
    plan.code_held = frozenset({"s1"})
    assert plan.follower(unit("s0"), [unit("s1")]) is None
    plan.code_held = frozenset()
    plan.started(unit("s1"), "s1").paused = True
    assert plan.follower(unit("s0"), [unit("s1")]) is None
