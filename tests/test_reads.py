"""ReadIndex (Raft §6.4): linearizable reads without writing the log, on the leader
and through it on followers. Scenarios on the simulator's virtual clock; the
simulator itself checks, for every answer, that the read index is not below
anything committed before the read was asked."""

from __future__ import annotations

import pytest
from test_membership_core import elected_of_three

from raftpy import AppendEntries, AppendEntriesResponse, NotLeader, ReadIndexReady, Role
from raftpy.sim import Cluster


def settled(n: int = 3, seed: int = 1) -> tuple[Cluster, int]:
    cluster = Cluster(n=n, seed=seed)
    leader = cluster.wait_for_leader()
    proposal = cluster.propose(b"w1")
    assert cluster.run_until(lambda: proposal.committed, 1.0)
    cluster.run_for(0.1)
    return cluster, leader


def test_a_leader_read_needs_a_majority_round_and_writes_nothing() -> None:
    cluster, leader = settled()
    last = cluster.node(leader).log.last_index
    commit = cluster.node(leader).commit_index
    read = cluster.read(leader)
    assert not read.done  # no answer before a majority heard this round
    assert cluster.run_until(lambda: read.done, 0.05)
    assert read.read_index == commit and read.failure is None
    assert read.answered_at is not None and read.answered_at - read.asked_at < 0.01
    assert cluster.node(leader).log.last_index == last  # no log entry written


def test_a_single_voter_answers_at_once() -> None:
    cluster, leader = settled(n=1)
    read = cluster.read(leader)
    assert read.read_index == cluster.node(leader).commit_index


def test_reads_asked_together_share_one_round() -> None:
    cluster, leader = settled(n=5)
    node = cluster.node(leader)
    before = node._read_round
    reads = [cluster.read(leader) for _ in range(20)]
    assert cluster.run_until(lambda: all(r.done for r in reads), 0.05)
    assert {r.read_index for r in reads} == {node.commit_index}
    # The first read started a round; the 19 others waited for one more.
    assert node._read_round - before <= 2


def test_a_new_leader_answers_only_after_its_own_entry_commits() -> None:
    # A node elected by votes but whose no-op is not committed yet must not answer
    # with its commit index: it may lag what the previous leader committed.
    node = elected_of_three()  # term 2; its no-op (index 2) is not committed
    assert node.role is Role.LEADER and node.commit_index < 2
    node.read_index(7, now=1.0)
    appends = [m for m in node.ready().messages if isinstance(m, AppendEntries)]
    assert appends and all(m.read_round == node._read_round for m in appends)
    # Node 2 answers the round (a majority with the leader) but has not stored the
    # no-op: nothing of term 2 is committed, so the read must wait.
    node.step(AppendEntriesResponse(term=2, src=2, dst=1, success=True, match_index=0,
                                    read_round=node._read_round), 1.0)
    assert not any(isinstance(e, ReadIndexReady) for e in node.ready().events)
    node.step(AppendEntriesResponse(term=2, src=2, dst=1, success=True, match_index=2,
                                    read_round=node._read_round), 1.0)
    events = node.ready().events
    assert ReadIndexReady(7, 2) in events


def test_a_deposed_leader_never_answers_and_fails_its_reads() -> None:
    cluster, old = settled(n=3, seed=4)
    cluster.isolate(old)
    read = cluster.read(old)
    new = None

    def other_leads() -> bool:
        nonlocal new
        new = cluster.leader()
        return new is not None and new != old

    assert cluster.run_until(other_leads, 2.0)
    proposal = cluster.propose(b"after")
    assert cluster.run_until(lambda: proposal.committed, 1.0)
    assert not read.done or read.failure is not None  # never an answer
    cluster.heal()
    assert cluster.run_until(lambda: read.done, 1.0)
    assert read.read_index is None and read.failure is not None


def test_a_follower_reads_through_the_leader() -> None:
    cluster, leader = settled(n=3)
    follower = next(i for i in cluster.ids if i != leader)
    proposal = cluster.propose(b"w2")
    read = cluster.read(follower)
    assert cluster.run_until(lambda: read.done, 0.05)
    assert read.failure is None and read.read_index is not None
    assert read.read_index >= read.committed_before
    assert cluster.node(follower).log.last_index >= read.read_index or proposal.committed


def test_a_follower_without_a_leader_refuses_and_one_whose_leader_is_gone_fails() -> None:
    cluster = Cluster(n=3, seed=2)
    with pytest.raises(NotLeader):
        cluster.read(1)  # nobody leads yet
    leader = cluster.wait_for_leader()
    follower = next(i for i in cluster.ids if i != leader)
    cluster.run_for(0.1)
    cluster.crash(leader)
    read = cluster.read(follower)
    assert cluster.run_until(lambda: read.done, 1.0)
    assert read.failure is not None
