"""raftpy.trio.inlinesaves: which saves may run on the event loop."""

from __future__ import annotations

import math
import random

import pytest

from raftpy.messages import Entry
from raftpy.ready import Ready
from raftpy.trio.inlinesaves import InlineSaves


def test_a_slow_save_sends_the_next_window_of_saves_to_the_thread() -> None:
    saves = InlineSaves(0.002, window=3)
    small = Ready(entries=[Entry(1, 1, b"x")])
    assert saves.allows(small)
    saves.record(0.010)  # the disk turned slow
    for _ in range(2):
        assert not saves.allows(small)
        saves.record(0.001)
    assert not saves.allows(small)  # the slow one is still among the last 3
    saves.record(0.001)
    assert saves.allows(small)


def test_the_slow_count_is_the_number_of_slow_saves_in_the_window() -> None:
    rng = random.Random(1)
    for _ in range(500):
        window, budget = rng.randint(1, 10), rng.choice([0.001, 0.002])
        saves, history = InlineSaves(budget, window=window), []
        for _ in range(rng.randint(0, 40)):
            took = rng.choice([0.0005, 0.0015, 0.0025, budget])
            saves.record(took)
            history.append(took)
            slow = any(t > budget for t in history[-window:])
            assert saves.allows(Ready()) is not slow


def test_large_batches_and_a_zero_budget_go_to_the_thread() -> None:
    saves = InlineSaves(0.002, max_bytes=10)
    assert not saves.allows(Ready(entries=[Entry(1, 1, b"x" * 11)]))
    assert saves.allows(Ready(entries=[Entry(1, 1, b"x" * 10)]))
    assert not InlineSaves(0).allows(Ready())


@pytest.mark.parametrize("budget", [-0.001, math.nan])
def test_a_negative_or_nan_budget_is_refused(budget: float) -> None:
    with pytest.raises(ValueError, match="budget"):
        InlineSaves(budget)
    with pytest.raises(ValueError, match="window"):
        InlineSaves(0.002, window=0)
