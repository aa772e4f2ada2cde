"""Lease reads (Raft §6.4.1, opt-in): within a lease the leader answers at once;
a partitioned leader's lease runs out before anyone else can win; a transfer ends
the lease. The simulator checks every answer against what was committed before
the read was asked (stale reads raise InvariantViolation)."""

from __future__ import annotations

from raftpy import Config, NotLeader
from raftpy.messages import Message
from raftpy.sim import Cluster

LEASE = Config(lease_reads=True)


def settled(seed: int = 1, n: int = 3) -> tuple[Cluster, int]:
    cluster = Cluster(n=n, seed=seed, config=LEASE)
    leader = cluster.wait_for_leader()
    proposal = cluster.propose(b"w")
    assert cluster.run_until(lambda: proposal.committed, 1.0)
    cluster.run_for(0.2)
    return cluster, leader


def test_within_the_lease_a_leader_answers_at_once() -> None:
    cluster, leader = settled()
    node = cluster.node(leader)
    assert node.lease_valid_until > cluster.now
    round_before = node._read_round
    read = cluster.read(leader)
    assert read.read_index == node.commit_index and read.answered_at == read.asked_at
    assert node._read_round == round_before  # no heartbeat round was needed


def test_without_lease_reads_every_read_waits_for_a_round() -> None:
    cluster = Cluster(n=3, seed=1)
    leader = cluster.wait_for_leader()
    cluster.run_for(0.2)
    assert cluster.node(leader).lease_valid_until == -float("inf")
    assert not cluster.read(leader).done


def test_a_partitioned_leader_stops_answering_before_another_can_win() -> None:
    # Read at the old leader every millisecond after it is cut off, while the
    # others elect a new leader and commit: no answer may be stale (the
    # simulator raises if one is), and the lease answers end within its length.
    for seed in range(12):
        cluster, old = settled(seed)
        cluster.isolate(old)
        cut_at = cluster.now
        answered_at = []
        new_commit = None
        while cluster.now < cut_at + 1.0:
            cluster.run_for(0.001)
            node = cluster.node(old)
            if node.role.value == "leader":
                read = cluster.read(old)
                if read.read_index is not None:
                    answered_at.append(cluster.now)
            leader = cluster.leader()
            if leader is not None and leader != old and new_commit is None:
                new_commit = cluster.propose(b"after")
        assert new_commit is not None and new_commit.committed, seed
        assert all(t - cut_at <= LEASE.lease_duration for t in answered_at), seed


def test_a_transfer_ends_the_lease() -> None:
    for seed in range(8):
        cluster, old = settled(seed)
        target = next(i for i in cluster.voters if i != old)

        def new_leader_to_old(msg: Message, old: int = old, target: int = target) -> bool:
            # The target's messages never reach the old leader, which keeps believing
            # it leads (as it would across a one-way cut).
            return msg.src == target and msg.dst == old

        cluster.hold(new_leader_to_old)
        cluster.transfer_leadership(target)
        assert cluster.node(old).lease_valid_until == -float("inf")
        target_node = cluster.node
        assert cluster.run_until(lambda t=target, f=target_node: f(t).role.value == "leader", 1.0)
        write = cluster.propose(b"after", node_id=target)
        assert cluster.run_until(lambda w=write: w.committed, 1.0)
        try:
            read = cluster.read(old)  # a stale lease would answer this at once
        except NotLeader:
            continue  # it learnt of the new leader some other way
        assert read.read_index is None or read.read_index >= write.index
        cluster.release()
