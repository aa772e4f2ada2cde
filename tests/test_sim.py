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


# ---------------------------------------------------------------- finer faults


def _leader_and_followers(cluster: Cluster) -> tuple[int, int, int]:
    leader = cluster.wait_for_leader()
    cluster.run_for(0.1)  # everyone has heard from it
    first, second = (i for i in cluster.voters if i != leader)
    return leader, first, second


def test_one_way_cut_delivers_one_direction_only() -> None:
    cluster = Cluster(n=3, seed=21)
    leader, cut_off, other = _leader_and_followers(cluster)
    cluster.cut(leader, cut_off)
    assert not cluster.link_open(leader, cut_off) and cluster.link_open(cut_off, leader)
    delivered: list[tuple[int, int]] = []
    cluster.hold(lambda m: delivered.append((m.src, m.dst)) is not None)  # observe only
    cluster.run_for(0.5)  # long enough for the cut-off follower's election timer
    assert (leader, cut_off) not in delivered
    assert (cut_off, leader) in delivered and (cut_off, other) in delivered
    assert (leader, other) in delivered and (other, leader) in delivered
    assert cluster.fault_counts["cut_one_way"] == 1
    cluster.release(lambda m: False)
    cluster.restore(leader, cut_off)
    delivered.clear()
    cluster.hold(lambda m: delivered.append((m.src, m.dst)) is not None)
    cluster.run_for(0.2)
    assert (leader, cut_off) in delivered


def test_cut_both_is_a_partial_partition() -> None:
    cluster = Cluster(n=3, seed=22)
    leader, first, second = _leader_and_followers(cluster)
    cluster.cut_both(first, second)  # the followers lose each other, not the leader
    proposal = cluster.propose(b"x")
    assert cluster.run_until(lambda: proposal.committed, 0.5)
    assert cluster.run_until(lambda: cluster.node(first).log.last_index
                             == cluster.node(second).log.last_index
                             == cluster.node(leader).log.last_index, 0.5)
    assert not cluster.link_open(first, second) and not cluster.link_open(second, first)
    cluster.restore_both(second, first)
    assert cluster.link_open(first, second) and cluster.link_open(second, first)
    with pytest.raises(ValueError):
        cluster.cut(first, first)


def test_paused_node_gets_its_deferred_messages_at_resume_in_order() -> None:
    cluster = Cluster(n=3, seed=23, config=Config(max_entries_per_message=1))
    leader, paused, _ = _leader_and_followers(cluster)
    before = cluster.node(paused).log.last_index
    cluster.pause(paused)
    assert cluster.is_paused(paused) and cluster.is_up(paused)
    for i in range(5):
        cluster.propose(b"c%d" % i)
        cluster.run_for(0.005)
    cluster.run_for(0.1)
    # Nothing was handled: no entry taken, no acknowledgement sent.
    assert cluster.node(paused).log.last_index == before
    assert cluster.node(leader).progress[paused].match_index == before
    waiting = cluster.waiting(paused)
    appends = [m for m in waiting if isinstance(m, AppendEntries) and m.entries]
    assert [m.entries[0].index for m in appends[:5]] == list(range(before + 1, before + 6))
    assert all(m.dst == paused for m in waiting)
    cluster.resume(paused)
    # Replayed at once, in order (one entry per message: out of order would leave gaps).
    assert not cluster.is_paused(paused) and cluster.waiting(paused) == []
    assert cluster.node(paused).log.last_index == before + 5
    assert cluster.fault_counts["pause"] == cluster.fault_counts["resume"] == 1


def test_paused_leader_resumes_and_steps_down_to_the_newer_leader() -> None:
    cluster = Cluster(n=3, seed=24, record_trace=True)
    old, _, _ = _leader_and_followers(cluster)
    old_term = cluster.node(old).current_term
    cluster.pause(old)
    with pytest.raises(NotLeader):
        cluster.propose(b"x", old)
    assert cluster.run_until(lambda: cluster.leader() not in (None, old), 2.0)
    new = cluster.leader()
    assert new is not None
    new_term = cluster.node(new).current_term
    assert new_term > old_term
    cluster.run_for(0.1)
    assert cluster.node(old).role is Role.LEADER  # it has seen nothing yet
    cluster.resume(old)
    node = cluster.node(old)
    assert (node.role, node.current_term, node.leader_id) == (Role.FOLLOWER, new_term, new)


def test_crashing_a_paused_node_drops_what_waited_for_it() -> None:
    cluster = Cluster(n=3, seed=25)
    _, paused, _ = _leader_and_followers(cluster)
    cluster.pause(paused)
    cluster.propose(b"x")
    cluster.run_for(0.05)
    assert cluster.waiting(paused)
    cluster.crash(paused)
    assert not cluster.is_paused(paused) and cluster.waiting(paused) == []
    cluster.restart(paused)
    with pytest.raises(ValueError):
        cluster.resume(paused)


def test_clock_jump_fires_the_nodes_timer_early() -> None:
    cluster = Cluster(n=3, seed=26, record_trace=True)
    _, follower, _ = _leader_and_followers(cluster)
    node = cluster.node(follower)
    deadline = node.next_deadline()
    assert deadline > cluster.now + 0.01  # a heartbeat just reset it
    cluster.jump_clock(follower, 10.0)
    assert cluster.clock_of(follower) == pytest.approx(cluster.now + 10.0)
    mark = len(cluster.trace)
    cluster.run_for(0.0)  # the timer is due at once, in cluster time
    assert f"{follower} election timeout" in "\n".join(cluster.trace[mark:])
    assert node.role is Role.CANDIDATE and node.in_pre_vote
    # The node now reads its own clock: its next deadline is in its time, ahead of ours.
    assert node.next_deadline() > cluster.now + 10.0
    with pytest.raises(ValueError):
        cluster.jump_clock(follower, -1.0)
