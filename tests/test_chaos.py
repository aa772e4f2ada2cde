"""A short chaos run on real processes (``python -m raftpy.chaos``, docs/testing.md):
three ``raftpy serve`` members, clients, SIGKILL / SIGSTOP / transfer / partition
faults from a fixed seed; the history must be linearizable, the replicas equal,
no acknowledged write lost or applied twice."""

from __future__ import annotations

import itertools
from pathlib import Path

from raftpy.chaos import Options, run
from raftpy.chaos.nemesis import KINDS, PARTITION_KINDS, schedule


def test_the_schedule_depends_only_on_the_seed() -> None:
    plan = schedule(7, 30, partitions=True)
    assert plan == schedule(7, 30, partitions=True)
    assert plan != schedule(8, 30, partitions=True)
    assert {p.kind for p in plan} == set(KINDS + PARTITION_KINDS)  # each kind once first
    assert all(b.at >= a.at + a.duration + 1.2 for a, b in itertools.pairwise(plan))
    assert plan[-1].at + plan[-1].duration <= 27
    assert not {p.kind for p in schedule(7, 30, partitions=False)} & set(PARTITION_KINDS)


def test_a_short_chaos_run_is_linearizable_and_loses_nothing(tmp_path: Path) -> None:
    result = run(Options(seed=29, seconds=24, nodes=3, partitions=True, root=tmp_path))
    report = f"problems: {result.problems}; data and history in {tmp_path}"
    counts = result.history.counts()
    assert counts["ok"] > 500, report
    assert result.verdict is not None and result.verdict.linearizable is True, report
    assert result.replicas is not None and result.replicas.equal, report
    assert result.replicas.counted_from == 0  # every put's applications were counted
    assert result.replicas.duplicates == [] and result.replicas.lost == [], report
    assert {e.kind for e in result.events} >= {"kill-leader", "pause-leader", "transfer",
                                               "kill-majority", "partition-leader"}
    assert result.passed, report
