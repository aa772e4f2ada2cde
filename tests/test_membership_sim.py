"""Membership scenarios in the simulator, as the dissertation tells them (chapter 4):
grow a cluster under writes, replace a dead voter, remove the leader, a removed
node that keeps running, a restart whose flags disagree with its log, and a
promotion that cannot keep up."""

from __future__ import annotations

import pytest

from raftpy import (
    Config,
    ConfigurationChangeInProgress,
    EntryKind,
    MemberRole,
    NotLeader,
    RaftNode,
    Role,
)
from raftpy.sim import Cluster, NetworkConfig

V, S, P = MemberRole.VOTER, MemberRole.STANDBY, MemberRole.SPARE


def settled(n: int = 3, seed: int = 3, **kwargs: object) -> tuple[Cluster, int]:
    cluster = Cluster(n=n, seed=seed, record_trace=True, **kwargs)  # type: ignore[arg-type]
    leader = cluster.wait_for_leader()
    proposal = cluster.propose(b"warm-up")
    assert cluster.run_until(lambda: proposal.committed, 1.0)
    return cluster, leader


def committed_everywhere(cluster: Cluster) -> bool:
    leader = cluster.leader()
    if leader is None:
        return False
    node = cluster.node(leader)
    return node.configuration.committed and not node.uncommitted_configurations


def promoted(cluster: Cluster, node_id: int) -> bool:
    leader = cluster.leader()
    return leader is not None and node_id in cluster.node(leader).voters and \
        committed_everywhere(cluster)


def commands(cluster: Cluster, node_id: int) -> list[bytes]:
    return [e.data for e in cluster.applied[node_id] if e.kind is EntryKind.COMMAND]


class Writer:
    """Proposes one command every few ms through whoever leads, for the whole test."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.proposals: list[object] = []
        self.count = 0

    def run_for(self, seconds: float) -> None:
        end = self.cluster.now + seconds
        while self.cluster.now < end:
            try:
                self.proposals.append(self.cluster.propose(b"w%d" % self.count))
                self.count += 1
            except NotLeader:
                pass
            except Exception as exc:  # a transfer in progress refuses writes
                if type(exc).__name__ != "LeadershipTransferInProgress":
                    raise
            self.cluster.run_for(0.005)


def test_grow_from_three_to_five_under_writes() -> None:
    cluster, _leader = settled()
    writer = Writer(cluster)
    for new in (4, 5):
        cluster.add_node(new, P)
        writer.run_for(0.05)
        cluster.assign_role(new, V)  # caught up first, then made a voter
        writer.run_for(0.3)
        assert promoted(cluster, new), cluster.trace[-20:]
    assert cluster.voters == (1, 2, 3, 4, 5)
    writer.run_for(0.3)
    final = cluster.propose(b"final")
    assert cluster.run_until(lambda: final.committed, 1.0)
    cluster.run_for(0.2)
    done = [p for p in writer.proposals if p.committed]  # type: ignore[attr-defined]
    assert len(done) >= len(writer.proposals) - 3
    expected = commands(cluster, cluster.leader() or 0)
    for node_id in cluster.ids:
        assert commands(cluster, node_id) == expected
    # Five voters now: a write commits with two of them down.
    cluster.crash(1 if cluster.leader() != 1 else 2)
    cluster.crash(3 if cluster.leader() != 3 else 4)
    late = cluster.propose(b"with two down")
    assert cluster.run_until(lambda: late.committed, 1.0)


def test_replace_a_dead_voter_without_losing_a_write() -> None:
    cluster, leader = settled()
    dead = next(i for i in cluster.voters if i != leader)
    cluster.crash(dead)
    writer = Writer(cluster)
    writer.run_for(0.1)
    cluster.add_node(4, P)
    writer.run_for(0.05)
    cluster.assign_role(4, V)
    writer.run_for(0.3)
    assert promoted(cluster, 4)
    cluster.remove_node(dead)
    writer.run_for(0.3)
    assert committed_everywhere(cluster)
    assert set(cluster.voters) == {1, 2, 3, 4} - {dead}
    # The replacement counts: with one more member down the cluster still commits.
    other = next(i for i in cluster.voters if i not in (cluster.leader(), 4))
    cluster.crash(other)
    probe = cluster.propose(b"probe")
    assert cluster.run_until(lambda: probe.committed, 1.0)
    acked = [p.data for p in writer.proposals if p.committed]  # type: ignore[attr-defined]
    assert set(acked) <= set(commands(cluster, 4))


def test_removing_the_leader_steps_it_down_after_the_change_commits() -> None:
    cluster, leader = settled(n=3)
    term = cluster.node(leader).current_term
    cluster.remove_node(leader)
    node = cluster.node(leader)
    assert node.role is Role.LEADER and leader not in node.voters  # leads, uncounted
    assert cluster.run_until(lambda: node.role is not Role.LEADER, 1.0)
    new = cluster.wait_for_leader(1.0)
    assert new != leader and cluster.node(new).current_term == term + 1
    # It handed over with TimeoutNow: no election timeout was waited out.
    assert any(f"{leader} step down: no longer a voter" in line for line in cluster.trace)
    proposal = cluster.propose(b"after")
    assert cluster.run_until(lambda: proposal.committed, 0.5)
    assert cluster.voters == tuple(sorted({1, 2, 3} - {leader}))
    # The removed node never campaigns again.
    cluster.run_for(2.0)
    assert cluster.node(leader).role is Role.FOLLOWER
    assert cluster.node(leader).next_deadline() == float("inf")


@pytest.mark.parametrize("pre_vote", [True, False])
def test_a_removed_node_that_keeps_running_cannot_raise_the_term(pre_vote: bool) -> None:
    cluster, leader = settled(n=4, config=Config(pre_vote=pre_vote))
    victim = next(i for i in cluster.voters if i != leader)
    # The victim never hears of its removal: the change is kept from it.
    cluster.hold(lambda m: m.dst == victim)
    cluster.remove_node(victim)
    assert cluster.run_until(lambda: committed_everywhere(cluster), 1.0)
    term = cluster.node(cluster.leader() or 0).current_term
    cluster.held.clear()
    cluster.release()
    cluster.run_for(3.0)  # the victim times out again and again
    live_leader = cluster.leader()
    assert live_leader is not None and live_leader != victim
    for node_id in cluster.voters:
        assert cluster.node(node_id).current_term == term
    probe = cluster.propose(b"undisturbed")
    assert cluster.run_until(lambda: probe.committed, 0.5)


def test_a_restarted_node_follows_its_log_not_its_flags() -> None:
    # The split brain of the issue: node 3 restarted "with no peers". In the
    # simulator its flags are the fixed voters passed to RaftNode; its log says
    # {1, 2, 3}, so it cannot lead a one-node cluster of its own.
    cluster, leader = settled(n=3, bootstrap=True)
    victim = next(i for i in cluster.voters if i != leader)
    cluster.crash(victim)
    state, _ = cluster.storages[victim].load()
    node = RaftNode(victim, [victim], state=state)
    assert node.voters == {1, 2, 3}
    node.tick(10.0)
    node.ready()
    assert node.role is not Role.LEADER
    cluster.restart(victim)
    cluster.run_for(1.0)
    assert cluster.leader() == leader
    assert cluster.node(victim).leader_id == leader


def test_a_member_that_cannot_keep_up_is_not_promoted() -> None:
    # Four entries per message and four in flight over a 10 ms round trip: about
    # 400 entries/s of catch-up, against 1,000 writes/s.
    config = Config(max_catch_up_rounds=2, max_entries_per_message=4, max_inflight_entries=4)
    cluster, leader = settled(config=config, network=NetworkConfig(delay_min=0.004,
                                                                   delay_max=0.005))
    new = cluster.add_node(role=P)
    leader_node = cluster.node(leader)

    def flood(seconds: float) -> None:
        end = cluster.now + seconds
        while cluster.now < end:
            for _ in range(5):
                cluster.propose(b"flood")
            cluster.run_for(0.005)

    flood(0.3)
    start = len(cluster.trace)
    cluster.assign_role(new, V)
    with pytest.raises(ConfigurationChangeInProgress, match="catching up"):
        cluster.remove_node(new)
    while leader_node.promotion_target is not None and cluster.now < 10:
        flood(0.05)
    failed = [line for line in cluster.trace[start:] if f"promotion of {new} failed" in line]
    assert failed and "after 2 catch-up rounds" in failed[0]
    assert new not in leader_node.voters  # nothing changed: still a spare
    assert leader_node.configuration.configuration.role_of(new) is P
    # Once the flood stops it catches up within a round and is promoted.
    cluster.run_for(0.5)
    cluster.assign_role(new, V)
    assert cluster.run_until(lambda: promoted(cluster, new), 10.0)


def test_one_catch_up_round_that_takes_too_long_fails_the_promotion() -> None:
    cluster, leader = settled(config=Config(catch_up_round_timeout=0.5))
    new = cluster.add_node(role=P)
    assert cluster.run_until(lambda: committed_everywhere(cluster), 1.0)
    cluster.hold(lambda m: m.dst == new)  # it hears nothing: the round never ends
    cluster.assign_role(new, V)
    leader_node = cluster.node(leader)
    start = cluster.now
    assert cluster.run_until(lambda: leader_node.promotion_target is None, 2.0)
    assert cluster.now - start == pytest.approx(0.5, abs=0.01)
    assert any(f"promotion of {new} failed: catch-up round 1 took longer than 0.5 s" in line
               for line in cluster.trace)
    assert leader_node.configuration.configuration.role_of(new) is P
    assert new not in leader_node.progress  # a spare again: no more replication


def test_a_spare_gets_nothing_and_a_standby_gets_the_log_and_snapshots() -> None:
    cluster, _leader = settled(snapshot_every=20, config=Config(snapshot_trailing=0))
    spare = cluster.add_node(role=P)
    for i in range(60):
        cluster.propose(b"c%d" % i)
    cluster.run_for(0.3)
    assert cluster.node(spare).log.last_index == 0  # a spare is not replicated to
    cluster.assign_role(spare, S)
    assert cluster.run_until(
        lambda: commands(cluster, spare)[-1:] == [b"c59"], 1.0)
    assert cluster.node(spare).voters == {1, 2, 3} and not cluster.node(spare).is_voter
    # The entries it lacked were compacted away: it was caught up by a snapshot,
    # which it stored with the configuration in force at its index.
    snapshot = cluster.snapshots[spare]
    assert snapshot is not None and snapshot[0].configuration.voters == {1, 2, 3}


def test_a_bootstrapped_cluster_takes_its_members_from_storage_and_grows() -> None:
    cluster, leader = settled(n=3, bootstrap=True)
    node = cluster.node(leader)
    # The bootstrap entry is index 1 of term 1; the first election is for term 2.
    assert node.log.entry(1).kind is EntryKind.CONFIGURATION
    assert node.current_term >= 2 and node.configuration.committed
    assert node.configuration.configuration.describe() == "1:voter 2:voter 3:voter"
    cluster.add_node(4, S)
    assert cluster.run_until(lambda: committed_everywhere(cluster), 1.0)
    cluster.assign_role(4, V)
    assert cluster.run_until(lambda: promoted(cluster, 4), 2.0)
    assert cluster.voters == (1, 2, 3, 4)
    # A restart rebuilds membership from the disk alone.
    cluster.crash(4)
    cluster.restart(4)
    assert cluster.node(4).voters == {1, 2, 3, 4}
