"""Pruning: what a prune may be asked to do."""

from __future__ import annotations

import pytest

from loopaware_persist._ops import (
    plan_prune,
)


def test_plan_prune_refuses_an_unbounded_or_negative_prune() -> None:
    with pytest.raises(ValueError, match="Say what to prune"):
        plan_prune([], now=0.0)
    with pytest.raises(ValueError, match="keep must be >= 0, got -1"):
        plan_prune([], keep=-1, now=0.0)
