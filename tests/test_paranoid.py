"""The incremental invariant checker against its slow twin (raftpy.sim.paranoid).

The checker keeps running state (chain values per node, the committed prefix,
who led which term) instead of rescanning logs after every event. Paranoid mode
re-derives that state from the nodes' actual logs and storage after every event
and checks the safety properties by full rescans. These tests show that

* both see the same runs: on the same seeds they give the same verdict, events
  and trace (paranoid mode only reads);
* a planted protocol bug gets the same verdict from both;
* the rescans are not a rubber stamp: a checker whose model drifts from the
  truth, or that stops checking election safety, is caught by paranoid mode alone.
"""

from __future__ import annotations

import pytest
from test_mutations import double_vote  # the same planted bug the mutation score uses

from raftpy.sim import Cluster
from raftpy.sim.fuzz import run_seed
from raftpy.sim.invariants import InvariantChecker, InvariantViolation

SEEDS = range(8)
SAFETY_TIME = 1.0  # paranoid mode rescans every log after every event: keep runs short


def _verdict(seed: int, paranoid: bool) -> tuple[object, ...]:
    report = run_seed(seed, safety_time=SAFETY_TIME, paranoid=paranoid)
    return report.ok, report.failure, report.events, report.trace_hash, report.committed


@pytest.mark.parametrize("seed", SEEDS)
def test_paranoid_and_incremental_agree_on_seed(seed: int) -> None:
    fast = _verdict(seed, paranoid=False)
    assert fast[0], fast[1]
    assert _verdict(seed, paranoid=True) == fast


def test_paranoid_rescans_pass_every_event_of_a_busy_cluster() -> None:
    cluster = Cluster(n=3, seed=5, paranoid=True, snapshot_every=10)
    cluster.wait_for_leader()
    for k in range(40):
        cluster.propose(b"cmd-%d" % k)
        cluster.run_for(0.003)
    cluster.crash(1)
    cluster.run_for(0.5)
    cluster.restart(1)
    cluster.run_for(0.5)
    assert cluster.paranoid and cluster.events > 500
    assert sum(p.committed for p in cluster.proposals) >= 30


def _first_failure(paranoid: bool, seeds: range = range(60)) -> tuple[int, str] | None:
    for seed in seeds:
        report = run_seed(seed, safety_time=SAFETY_TIME, paranoid=paranoid)
        if not report.ok:
            assert report.failure is not None
            return seed, report.failure
    return None


def test_a_planted_bug_gets_the_same_verdict_from_both(monkeypatch: pytest.MonkeyPatch) -> None:
    double_vote(monkeypatch)
    fast = _first_failure(paranoid=False)
    assert fast is not None
    assert _first_failure(paranoid=True, seeds=range(fast[0] + 1)) == fast


def test_paranoid_alone_catches_a_blind_election_check(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The incremental election-safety check is switched off; the double vote
    # then elects two leaders in one term, which only the rescan sees.
    double_vote(monkeypatch)
    monkeypatch.setattr(InvariantChecker, "_on_elected",
                        lambda self, node_id, term, voters=None: None)
    caught = _first_failure(paranoid=True)
    assert caught is not None
    assert "paranoid" in caught[1], caught


def test_paranoid_alone_catches_a_drifting_disk_model(monkeypatch: pytest.MonkeyPatch) -> None:
    # The checker forgets compactions of the disk log: its own checks stay
    # consistent (the chains still agree), but its model no longer is the disk.
    original = InvariantChecker.on_compact

    def forget_disk(self: InvariantChecker, node_id: int, index: int, *, memory: bool,
                    disk: bool) -> None:
        original(self, node_id, index, memory=memory, disk=False)

    monkeypatch.setattr(InvariantChecker, "on_compact", forget_disk)
    plain = Cluster(n=3, seed=2, snapshot_every=10)
    plain.wait_for_leader()
    for k in range(30):
        plain.propose(b"cmd-%d" % k)
        plain.run_for(0.003)
    assert plain.fault_counts["snapshot"] > 0  # snapshots were taken, unnoticed

    cluster = Cluster(n=3, seed=2, snapshot_every=10, paranoid=True)
    cluster.wait_for_leader()
    with pytest.raises(InvariantViolation, match="paranoid: the checker's disk log"):
        for k in range(30):
            cluster.propose(b"cmd-%d" % k)
            cluster.run_for(0.003)
