"""The plan's rule for units that take several `jobs` slots (`resources = {cpus = N}`), without
processes, like tests/test_plan.py: the local executor's free_slots() counts the same way
(tests/test_limits_e2e.py)."""

from __future__ import annotations

from watchrun.engine.plan import Plan, TaskRank
from watchrun.executors.base import UnitKey, cpu_slots

RANKS = {
    "small": TaskRank(),
    "wide": TaskRank(slots=2),
    "huge": TaskRank(slots=5),
    "gen": TaskRank(persistent=True),
}


def unit(name: str, *key: int) -> UnitKey:
    return UnitKey(name, tuple(key))


def start(plan: Plan[UnitKey, str], found: list[UnitKey]) -> list[UnitKey]:
    for u in found:
        plan.started(u, "job")
    return found


def test_cpus_become_whole_slots() -> None:
    assert [cpu_slots(c) for c in (None, 0, 0.5, 1, 1.5, 2, 4)] == [1, 1, 1, 1, 2, 2, 4]


def test_a_two_cpu_unit_takes_two_slots() -> None:
    plan: Plan[UnitKey, str] = Plan(RANKS)
    for u in (unit("wide", 0), unit("small", 1), unit("small", 2)):
        plan.want(u, u)
    assert start(plan, plan.find_work(3)) == [unit("wide", 0), unit("small", 1)]
    assert plan.calls_slots() == 3


def test_a_wide_unit_waits_for_its_slots_and_nothing_overtakes_it() -> None:
    plan: Plan[UnitKey, str] = Plan(RANKS)
    plan.want(unit("small", 0), unit("small", 0))
    start(plan, plan.find_work(1))
    plan.want(unit("wide", 1), unit("wide", 1))
    plan.want(unit("small", 2), unit("small", 2))
    assert plan.find_work(1) == []  # one slot free: the wide unit waits, and the small too
    assert plan.find_work(1, queued=1) == []  # nor is the wide unit queued behind a worker
    plan.ended(unit("small", 0))
    assert start(plan, plan.find_work(2)) == [unit("wide", 1)]
    assert plan.calls_slots() == 2


def test_a_unit_asking_more_cpus_than_jobs_runs_alone_rather_than_never() -> None:
    plan: Plan[UnitKey, str] = Plan(RANKS)
    plan.want(unit("small", 0), unit("small", 0))
    plan.want(unit("gen"), unit("gen"))
    start(plan, plan.find_work(2))  # gen (persistent, outside `jobs`) and small[0]
    plan.want(unit("huge", 1), unit("huge", 1))
    plan.want(unit("small", 2), unit("small", 2))
    assert plan.find_work(1) == []  # another task unit runs: it waits
    plan.ended(unit("small", 0))
    # only the generator runs: the huge unit starts, alone among the task units
    assert start(plan, plan.find_work(2)) == [unit("huge", 1)]
    assert plan.calls_slots() == 5
    plan.ended(unit("huge", 1))
    assert plan.find_work(2) == [unit("small", 2)]


LIMITED = {
    "fit": TaskRank(memory=600),
    "gpu": TaskRank(gpus=1),
    "small": TaskRank(),
    "gen": TaskRank(persistent=True, memory=300),
}


def test_units_wait_while_the_memory_budget_is_used() -> None:
    plan: Plan[UnitKey, str] = Plan(LIMITED)
    plan.limits = (1000, 0)
    for u in (unit("fit", 0), unit("fit", 1), unit("small", 2)):
        plan.want(u, u)
    # the second would pass the budget: it waits, and nothing overtakes it
    assert start(plan, plan.find_work(4)) == [unit("fit", 0)]
    plan.ended(unit("fit", 0))
    assert start(plan, plan.find_work(4)) == [unit("fit", 1), unit("small", 2)]


def test_a_persistent_units_memory_counts_too() -> None:
    plan: Plan[UnitKey, str] = Plan(LIMITED)
    plan.limits = (1000, 0)
    plan.want(unit("gen"), unit("gen"))
    plan.want(unit("fit", 0), unit("fit", 0))
    plan.want(unit("fit", 1), unit("fit", 1))
    assert start(plan, plan.find_work(4)) == [unit("gen"), unit("fit", 0)]


def test_units_wait_for_a_free_gpu() -> None:
    plan: Plan[UnitKey, str] = Plan(LIMITED)
    plan.limits = (0, 2)  # no memory limit, two GPUs
    for i in range(3):
        plan.want(unit("gpu", i), unit("gpu", i))
    assert start(plan, plan.find_work(4)) == [unit("gpu", 0), unit("gpu", 1)]
    plan.ended(unit("gpu", 1))
    assert plan.find_work(4) == [unit("gpu", 2)]


def test_a_unit_asking_more_than_exists_is_handed_on_to_fail_at_once() -> None:
    # waiting would be for ever: the executor refuses it with a message instead
    plan: Plan[UnitKey, str] = Plan({"gpu": TaskRank(gpus=1), "fit": TaskRank(memory=600)})
    plan.limits = (500, 0)
    plan.want(unit("gpu", 0), unit("gpu", 0))
    plan.want(unit("fit", 1), unit("fit", 1))
    assert plan.find_work(4) == [unit("gpu", 0), unit("fit", 1)]


def test_without_limits_the_executor_places_units() -> None:
    plan: Plan[UnitKey, str] = Plan(LIMITED)  # Ray: limits None
    for i in range(3):
        plan.want(unit("gpu", i), unit("gpu", i))
    assert len(plan.find_work(4)) == 3
