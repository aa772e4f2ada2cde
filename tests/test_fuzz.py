"""Seeded fuzzing: hundreds of random fault schedules, every invariant on every event."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftpy.sim.fuzz import FaultPlan, run_seed

SEEDS = 400


def test_hundreds_of_seeds_keep_every_invariant_and_recover() -> None:
    faults: Counter[str] = Counter()
    failures = []
    transfers_ok = 0
    for seed in range(SEEDS):
        report = run_seed(seed)
        faults.update(report.faults)
        transfers_ok += report.transfers_succeeded
        if not report.ok:
            failures.append(f"seed {seed}: {report.failure}")
    assert failures == []
    # A run that silently injected nothing proves nothing: every fault fired.
    for kind in ("drop", "duplicate", "reorder", "partition", "crash", "restart", "hold",
                 "snapshot", "install_snapshot", "action_transfer", "action_propose"):
        assert faults[kind] > 0, kind
    assert transfers_ok > SEEDS  # at least the liveness-phase transfer of every seed


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=10_000, max_value=2**32))
def test_random_seeds_keep_every_invariant(seed: int) -> None:
    report = run_seed(seed, safety_time=3.0)
    assert report.ok, f"{report.failure}\nreplay: python -m raftpy.sim --seed {seed}"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hostile_plan_with_five_nodes(seed: int) -> None:
    import random

    from raftpy.sim.network import NetworkConfig

    plan = FaultPlan.draw(random.Random(seed))
    hostile = FaultPlan(
        nodes=5, pre_vote=True, learners=1,
        network=NetworkConfig(drop=0.3, duplicate=0.1, reorder=0.3, delay_max=0.03),
        action_rate=40, weights=plan.weights, snapshot_every=20)
    report = run_seed(seed, plan=hostile)
    assert report.ok, report.failure
    assert report.faults["drop"] > 100
