"""A task the user paused (`space` in the TUI) starts no new unit until it is resumed, whatever
the executor: the plan holds its ready units, and the other tasks take the free slots."""

from __future__ import annotations

from tests.test_plan import make, unit, want


def test_a_paused_task_starts_no_new_unit_and_others_take_the_slots() -> None:
    plan, runner = make(jobs=3)
    want(plan, *(unit("a", i) for i in range(4)))
    assert runner.fill() == [unit("a", 0), unit("a", 1), unit("a", 2)]
    plan.running[unit("a", 1)].paused = True  # what DevEngine.pause records
    want(plan, unit("cheap"))
    runner.finish(unit("a", 0))
    # a[3] is next in the streaming order, but its task is paused
    assert runner.fill() == [unit("cheap")]
    runner.finish(unit("a", 2))
    assert runner.fill() == []
    plan.running[unit("a", 1)].paused = False  # resumed
    assert runner.fill() == [unit("a", 3)]


def test_the_hold_ends_with_the_paused_unit() -> None:
    """A paused unit that ends (or is replaced by a rerun) holds nothing any more."""
    plan, runner = make(jobs=1)
    want(plan, unit("a", 0), unit("a", 1))
    assert runner.fill() == [unit("a", 0)]
    plan.running[unit("a", 0)].paused = True
    runner.finish(unit("a", 0))
    assert runner.fill() == [unit("a", 1)]
