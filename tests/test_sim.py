"""The simulator itself: determinism, virtual time, faults, crash semantics."""

from __future__ import annotations

import pytest

from raftpy import AppendEntries, Config, ConfigError, NotLeader, Role
from raftpy.sim import Cluster, InvariantViolation, NetworkConfig
from raftpy.sim.fuzz import run_seed


def test_same_seed_same_trace_different_seed_different_trace() -> None:
    first, again, other = run_seed(12), run_seed(12), run_seed(13)
    assert (first.events, first.trace_hash) == (again.events, again.trace_hash)
    assert first.faults == again.faults
    assert first.trace_hash != other.trace_hash


def test_recorded_traces_are_identical_for_one_seed() -> None:
    def trace(seed: int) -> list[str]:
        cluster = Cluster(n=3, seed=seed, record_trace=True,
                          network=NetworkConfig(drop=0.1, reorder=0.2))
        cluster.wait_for_leader()
        cluster.run_for(1.0)
        return cluster.trace

    assert trace(5) == trace(5)


def test_run_until_reports_timeout_in_virtual_time() -> None:
    cluster = Cluster(n=3, seed=1)
    assert cluster.run_until(lambda: False, 2.5) is False
    assert cluster.now == pytest.approx(2.5)


def test_step_processes_one_event() -> None:
    cluster = Cluster(n=3, seed=1)
    assert cluster.step() is True
    assert cluster.events == 1


def test_propose_without_leader_raises_not_leader() -> None:
    cluster = Cluster(n=3, seed=1)
    with pytest.raises(NotLeader):
        cluster.propose(b"x")


def test_crash_loses_what_was_not_persisted() -> None:
    # A slow disk: the follower receives entries but crashes before the fsync.
    cluster = Cluster(n=3, seed=2, network=NetworkConfig(disk_min=0.05, disk_max=0.05))
    leader = cluster.wait_for_leader(2.0)
    cluster.run_for(0.3)
    follower = next(i for i in cluster.ids if i != leader)
    persisted = len(cluster.storages[follower].entries)
    cluster.propose(b"x")
    cluster.run_until(lambda: cluster.node(follower).log.last_index > persisted, 0.1)
    cluster.crash(follower)
    assert len(cluster.storages[follower].entries) == persisted
    cluster.restart(follower)
    assert cluster.node(follower).log.last_index == persisted


def test_hold_and_release_deliver_later_in_order() -> None:
    cluster = Cluster(n=3, seed=3)
    leader = cluster.wait_for_leader()
    cluster.hold(lambda m: isinstance(m, AppendEntries) and m.src == leader)
    cluster.run_for(0.2)
    held = list(cluster.held)
    assert held and all(isinstance(m, AppendEntries) for m in held)
    assert cluster.release() == len(held)
    assert cluster.held == []


def test_partition_and_heal() -> None:
    cluster = Cluster(n=5, seed=4)
    leader = cluster.wait_for_leader()
    minority = [leader, next(i for i in cluster.ids if i != leader)]
    cluster.partition(minority)
    cluster.run_for(1.5)
    new = cluster.leader()
    assert new is not None and new not in minority
    assert cluster.node(leader).role is not Role.LEADER  # check-quorum
    cluster.heal()
    cluster.run_for(0.5)
    assert all(cluster.node(i).leader_id == new for i in cluster.ids)


def test_invariant_violation_names_seed_and_event() -> None:
    cluster = Cluster(n=3, seed=77)
    leader = cluster.wait_for_leader()
    assert cluster.checker is not None
    cluster.checker.leaders[cluster.node(leader).current_term + 1] = 99  # plant a rival
    cluster.crash(leader)
    with pytest.raises(InvariantViolation) as err:
        cluster.wait_for_leader()
    assert err.value.seed == 77 and err.value.event == cluster.events
    assert "election safety" in str(err.value) and "seed 77" in str(err.value)


def test_bad_network_settings_are_refused() -> None:
    with pytest.raises(ConfigError):
        NetworkConfig(drop=1.5)
    with pytest.raises(ConfigError):
        NetworkConfig(delay_min=0.01, delay_max=0.001)


def test_snapshots_compact_memory_and_catch_up_a_lagging_follower() -> None:
    config = Config(snapshot_threshold=20, snapshot_trailing=10)
    cluster = Cluster(n=3, seed=5, config=config, record_trace=True)
    leader = cluster.wait_for_leader()
    lagging = next(i for i in cluster.ids if i != leader)
    cluster.crash(lagging)
    for i in range(300):
        cluster.propose(b"c%d" % i)
        cluster.run_for(0.001)
    cluster.run_for(0.2)
    node = cluster.node(leader)
    assert node.log.snapshot_index > 0
    assert len(node.log) <= 10 + 20 + 1
    mark = len(cluster.trace)
    cluster.restart(lagging)
    assert cluster.run_until(lambda: cluster.node(lagging).commit_index
                             >= cluster.node(leader).commit_index, 2.0)
    assert any("send snapshot at" in line and line.endswith(f"to {lagging}")
               for line in cluster.trace[mark:])
    assert any(f"] {lagging} install snapshot at" in line for line in cluster.trace[mark:])
    cluster.run_for(0.05)  # the last batch is applied once its fsync completes
    commands = [e.data for e in cluster.applied[lagging] if e.data.startswith(b"c")]
    assert commands == [b"c%d" % i for i in range(300)]
