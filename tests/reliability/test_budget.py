"""The campaigns' size: a count or a time budget, whichever comes first."""

from __future__ import annotations

import pytest

from ._support import Budget


def test_a_budget_stops_at_its_count() -> None:
    budget = Budget(5, 3, seconds=3600.0)
    assert list(budget) == [0, 1, 2, 3, 4]
    assert (budget.ran, budget.stopped_by) == (5, "count")
    budget.check()


def test_a_budget_stops_when_its_time_is_spent() -> None:
    budget = Budget(10**9, 1, seconds=0.05)
    ran = sum(1 for _ in budget)
    assert ran == budget.ran < 10**9
    assert budget.report()["stopped_by"] == "time"


def test_too_few_iterations_fail_the_campaign() -> None:
    budget = Budget(100, 10, seconds=0.0)
    assert list(budget) == []
    with pytest.raises(AssertionError, match="only 0 of 100 iterations ran"):
        budget.check()


def test_stopping_early_in_a_zip_counts_only_what_ran() -> None:
    budget = Budget(3, 0, seconds=3600.0)
    pairs = list(zip(budget, "abcdef", strict=False))
    assert [p[1] for p in pairs] == ["a", "b", "c"]
    assert budget.ran == 3
