"""Leadership transfer (Raft §3.10, Dqlite's raft_transfer semantics)."""

from __future__ import annotations

import pytest
from helpers import drain, entries, make_node, settled_cluster

from raftpy import (
    AppendEntries,
    Config,
    InvalidTransferTarget,
    LeadershipTransferInProgress,
    NotLeader,
    RequestVote,
    RequestVoteResponse,
    Role,
    TimeoutNow,
    TransferEnded,
)
from raftpy.messages import EntryKind
from raftpy.node import RaftNode
from raftpy.ready import Ready
from raftpy.sim import Cluster


def test_transfer_to_up_to_date_follower() -> None:
    cluster, leader = settled_cluster()
    target = next(i for i in cluster.voters if i != leader)
    term = cluster.node(leader).current_term
    transfer = cluster.transfer_leadership(target)
    assert cluster.run_until(lambda: transfer.done, 1.0)
    assert transfer.succeeded and transfer.new_leader == target
    assert cluster.leader() == target and cluster.node(target).current_term == term + 1
    assert cluster.node(leader).role is Role.FOLLOWER
    # TimeoutNow at once, one vote round: a handful of network delays (<= 2 ms each).
    assert transfer.duration is not None and transfer.duration < 0.015
    # The new leader commits in its term right away.
    proposal = cluster.propose(b"after")
    assert cluster.run_until(lambda: proposal.committed, 0.1)


def _commit_without(cluster: Cluster, target: int, n: int) -> None:
    """Commit ``n`` writes while every AppendEntries to ``target`` is held: it lags
    by them until ``cluster.release()``."""
    cluster.hold(lambda m: isinstance(m, AppendEntries) and m.dst == target)
    proposals = [cluster.propose(b"c%d" % i) for i in range(n)]
    assert cluster.run_until(lambda: all(p.committed for p in proposals), 1.0)


def test_transfer_to_lagging_follower_catches_it_up_first() -> None:
    cluster, leader = settled_cluster()
    target = next(i for i in cluster.voters if i != leader)
    _commit_without(cluster, target, 20)
    assert cluster.node(target).log.last_index < cluster.node(leader).log.last_index
    mark = len(cluster.trace)
    transfer = cluster.transfer_leadership(target)
    cluster.run_for(0.01)
    # TimeoutNow may go right behind the entries, but the target campaigns only
    # once it holds them all.
    assert not any(f"{target} -> candidate" in line for line in cluster.trace[mark:])
    assert cluster.node(target).role is Role.FOLLOWER
    cluster.release()
    assert cluster.run_until(lambda: transfer.done, 1.0)
    assert transfer.succeeded and cluster.leader() == target
    assert cluster.node(target).log.entries()[-21].data == b"c0"


def test_transfer_times_out_when_target_is_unreachable_then_proposals_resume() -> None:
    cluster, leader = settled_cluster()
    target = next(i for i in cluster.voters if i != leader)
    cluster.isolate(target)
    transfer = cluster.transfer_leadership(target)
    cluster.run_for(0.05)
    with pytest.raises(LeadershipTransferInProgress) as err:
        cluster.propose(b"refused")
    assert err.value.target == target
    with pytest.raises(LeadershipTransferInProgress):
        cluster.transfer_leadership(target)
    assert cluster.run_until(lambda: transfer.done, 1.0)
    assert not transfer.succeeded and transfer.reason == "timed out"
    # Reported once the fence entry that stops a late TimeoutNow has committed.
    deadline = cluster.config.transfer_deadline
    assert transfer.duration is not None and deadline < transfer.duration < deadline + 0.02
    assert cluster.node(leader).log.entries()[-1].kind is EntryKind.NOOP
    assert cluster.leader() == leader
    proposal = cluster.propose(b"accepted again")
    assert cluster.run_until(lambda: proposal.committed, 0.2)


def test_transfer_target_crashes_mid_transfer() -> None:
    cluster, leader = settled_cluster(n=5)
    target = next(i for i in cluster.voters if i != leader)
    # Let TimeoutNow leave, then crash the target before it is delivered.
    cluster.hold(lambda m: isinstance(m, TimeoutNow))
    transfer = cluster.transfer_leadership(target)
    assert cluster.run_until(lambda: len(cluster.held) == 1, 0.1)
    cluster.crash(target)
    cluster.release()
    assert cluster.run_until(lambda: transfer.done, 1.0)
    assert not transfer.succeeded and transfer.reason == "timed out"
    assert cluster.leader() == leader
    proposal = cluster.propose(b"still works")
    assert cluster.run_until(lambda: proposal.committed, 0.2)


def test_transfer_without_target_picks_the_most_up_to_date_voter() -> None:
    cluster, leader = settled_cluster(n=5)
    others = sorted(i for i in cluster.voters if i != leader)
    behind = set(others[:3])  # only the last one keeps up
    cluster.hold(lambda m: isinstance(m, AppendEntries) and m.dst in behind)
    proposals = [cluster.propose(b"c%d" % i) for i in range(5)]
    cluster.run_for(0.05)
    assert not any(p.committed for p in proposals)  # 2 of 5 is no majority
    transfer = cluster.transfer_leadership(None)
    assert transfer.target == others[3]
    cluster.release()
    assert cluster.run_until(lambda: transfer.done, 1.0)
    assert transfer.succeeded and cluster.leader() == others[3]


def test_transfer_argument_errors() -> None:
    cluster, leader = settled_cluster(learners=1)
    follower = next(i for i in cluster.voters if i != leader)
    node = cluster.node(leader)
    with pytest.raises(InvalidTransferTarget, match="leader itself"):
        node.transfer_leadership(leader, cluster.now)
    with pytest.raises(InvalidTransferTarget, match="no such node"):
        node.transfer_leadership(99, cluster.now)
    with pytest.raises(InvalidTransferTarget, match="not a voter"):
        node.transfer_leadership(4, cluster.now)
    with pytest.raises(NotLeader) as err:
        cluster.node(follower).transfer_leadership(None, cluster.now)
    assert err.value.leader_id == leader
    assert node.transfer_target is None  # none of these started a transfer


def test_transfer_in_single_voter_cluster_is_refused() -> None:
    cluster = Cluster(n=1, seed=1)
    leader = cluster.wait_for_leader()
    with pytest.raises(InvalidTransferTarget, match="no other voter"):
        cluster.node(leader).transfer_leadership(None, cluster.now)


def test_leader_reports_the_outcome_as_an_event() -> None:
    cluster, leader = settled_cluster()
    target = next(i for i in cluster.voters if i != leader)
    events: list[TransferEnded] = []
    node = cluster.node(leader)
    original = node.ready

    def spy() -> object:
        ready = original()
        events.extend(e for e in ready.events if isinstance(e, TransferEnded))
        return ready

    node.ready = spy  # type: ignore[method-assign]
    cluster.transfer_leadership(target)
    cluster.run_for(0.5)
    assert len(events) == 1
    assert events[0].succeeded and events[0].new_leader == target and events[0].target == target


def test_target_acts_only_on_timeout_now_from_its_leader_with_matching_log() -> None:
    log = entries(1, 1, 2)
    node = make_node(2, term=2, entries=log)
    node.step(AppendEntries(term=2, src=1, dst=2, prev_log_index=3, prev_log_term=2,
                            entries=(), leader_commit=3), now=1.0)
    drain(node, 1.0)
    for bad in (
        TimeoutNow(term=2, src=3, dst=2, last_log_index=3, last_log_term=2),  # not its leader
        TimeoutNow(term=2, src=1, dst=2, last_log_index=4, last_log_term=2),  # log behind
        TimeoutNow(term=2, src=1, dst=2, last_log_index=3, last_log_term=1),  # other term
    ):
        node.step(bad, 1.01)
        assert node.role is Role.FOLLOWER and node.current_term == 2
    node.step(TimeoutNow(term=2, src=1, dst=2, last_log_index=3, last_log_term=2), 1.02)
    sent, readies = drain(node, 1.02)
    assert node.role is Role.CANDIDATE and node.current_term == 3 and not node.in_pre_vote
    assert {m.dst for m in sent} == {1, 3}
    for msg in sent:
        assert isinstance(msg, RequestVote)
        assert msg.term == 3 and msg.disrupt_leader and not msg.pre_vote
    assert readies[0].hard_state is not None and readies[0].hard_state.term == 3


def test_a_transfer_target_ignores_a_third_candidates_higher_term_while_it_campaigns() -> None:
    # Fuzz seed 5345: a spare that missed its demotion (it gets no entries, so it
    # still thinks it votes) campaigned without pre-vote during a transfer; the
    # target took its higher term, gave up its own election and the transfer stalled.
    node = make_node(2, term=2, entries=entries(1, 1, 2), config=Config(pre_vote=False))
    node.step(AppendEntries(term=2, src=1, dst=2, prev_log_index=3, prev_log_term=2,
                            entries=(), leader_commit=3), now=1.0)
    drain(node, 1.0)
    node.step(TimeoutNow(term=2, src=1, dst=2, last_log_index=3, last_log_term=2), 1.01)
    drain(node, 1.01)
    assert node.role is Role.CANDIDATE and node.current_term == 3 and node.disrupt_leader
    rival = RequestVote(term=4, src=3, dst=2, last_log_index=3, last_log_term=2)
    node.step(rival, 1.02)
    sent, _ = drain(node, 1.02)
    assert node.role is Role.CANDIDATE and node.current_term == 3
    assert [(type(m), m.vote_granted) for m in sent if m.dst == 3] == [  # type: ignore[attr-defined]
        (RequestVoteResponse, False)]
    # Once the leader's word is an election timeout old, the rival's term counts.
    late = 1.001 + node.config.election_timeout_min
    node.step(RequestVote(term=4, src=3, dst=2, last_log_index=3, last_log_term=2), late)
    drain(node, late)
    assert node.role is Role.FOLLOWER and node.current_term == 4 and node.voted_for == 3


def test_a_deposed_leader_ignores_a_third_candidates_higher_term_while_its_target_wins() -> None:
    # Fuzz seed 5579: a removed member's vote request, late, reached the old leader
    # between its step-down (the target's vote request) and the target's first
    # AppendEntries. It took the higher term, refused that AppendEntries with it,
    # the new leader stepped down and the transfer stalled.
    cluster, leader = settled_cluster(n=5, config=Config(pre_vote=False))
    target, rival = [i for i in cluster.voters if i != leader][:2]
    cluster.hold(lambda m: isinstance(m, AppendEntries) and m.src == target
                 and m.dst == leader)
    transfer = cluster.transfer_leadership(target)
    old = cluster.node(leader)
    assert cluster.run_until(lambda: old.role is Role.FOLLOWER
                             and cluster.node(target).role is Role.LEADER, 1.0)
    term = old.current_term
    old.step(RequestVote(term=term + 1, src=rival, dst=leader,
                         last_log_index=old.log.last_index,
                         last_log_term=old.log.last_term), cluster.now)
    assert old.current_term == term and old.voted_for == target
    cluster.release()
    assert cluster.run_until(lambda: transfer.done, 1.0)
    assert transfer.succeeded and cluster.leader() == target
    # An election timeout after its step-down, a higher term counts again.
    cluster.run_for(old.config.election_timeout_min)
    assert old._transfer is None


def test_transfer_with_pre_vote_off_also_works() -> None:
    cluster, leader = settled_cluster(config=Config(pre_vote=False))
    target = next(i for i in cluster.voters if i != leader)
    transfer = cluster.transfer_leadership(target)
    assert cluster.run_until(lambda: transfer.done, 1.0)
    assert transfer.succeeded


def test_timeout_now_goes_right_behind_the_last_entries_and_waits_for_them() -> None:
    # The leader need not wait a round trip for the target's acknowledgement: the
    # entries are on their way, TimeoutNow follows them, and a target that gets it
    # first keeps it and campaigns as soon as the entries complete its log.
    cluster, leader = settled_cluster()
    target = next(i for i in cluster.voters if i != leader)
    _commit_without(cluster, target, 3)
    mark = len(cluster.trace)
    transfer = cluster.transfer_leadership(target)
    cluster.run_for(0.005)
    early = cluster.trace[mark:]
    assert any("send TimeoutNow" in line for line in early)
    assert any(f"{target} recv TimeoutNow from {leader} ahead of entries" in line
               for line in early)
    assert cluster.node(target).role is Role.FOLLOWER  # not before it holds them
    released_at = cluster.now
    cluster.release()
    assert cluster.run_until(lambda: transfer.done, 0.2)
    assert transfer.succeeded and cluster.leader() == target
    after = cluster.trace[mark:]
    campaign = next(k for k, line in enumerate(after) if f"{target} -> candidate" in line)
    # It campaigned on the TimeoutNow it kept, not on a second one after the ack.
    assert sum("send TimeoutNow" in line for line in after[:campaign]) == 1
    assert transfer.ended_at is not None and transfer.ended_at - released_at < 0.015


def test_a_timeout_now_ahead_of_its_entries_is_kept_briefly_and_only_for_them() -> None:
    def follower() -> RaftNode:
        node = make_node(2, term=2, entries=entries(1, 1, 2))
        node.step(AppendEntries(term=2, src=1, dst=2, prev_log_index=3, prev_log_term=2,
                                entries=(), leader_commit=3), now=1.0)
        drain(node, 1.0)
        node.step(TimeoutNow(term=2, src=1, dst=2, last_log_index=5, last_log_term=2), 1.01)
        assert node.role is Role.FOLLOWER and node.current_term == 2
        return node

    def append(node: RaftNode, *terms: int, now: float) -> list[Ready]:
        node.step(AppendEntries(term=2, src=1, dst=2, prev_log_index=3, prev_log_term=2,
                                entries=entries(*terms, start=4), leader_commit=3), now)
        return drain(node, now)[1]

    # The entries it names arrive in time: campaign at once, the entries and the new
    # term saved in one batch; the vote requests leave without waiting for that save.
    node = follower()
    readies = append(node, 2, 2, now=1.02)
    assert node.role is Role.CANDIDATE and node.current_term == 3
    assert [e.index for e in readies[0].entries] == [4, 5]
    assert readies[0].hard_state is not None and readies[0].hard_state.term == 3
    asks = [m for m in readies[0].messages if isinstance(m, RequestVote)]
    assert asks and all(m.last_log_index == 5 for m in asks)
    assert not any(isinstance(m, RequestVote) for m in readies[0].messages_after_persist)
    # They arrive after an election timeout: too late, it stays a follower.
    node = follower()
    append(node, 2, 2, now=1.01 + node.config.election_timeout_min + 0.001)
    assert node.role is Role.FOLLOWER and node.current_term == 2
    # The log moves past what it named (a fence entry came with them): dropped, and
    # the same index reached again later does not revive it.
    node = follower()
    append(node, 2, 2, 2, now=1.02)
    assert node.role is Role.FOLLOWER
    append(node, 2, 2, now=1.03)  # (a duplicate of a prefix: nothing changes)
    assert node.role is Role.FOLLOWER and node.current_term == 2
    # Entries of another term at that index: not what the leader named.
    node = follower()
    append(node, 2, 3, now=1.02)
    assert node.role is Role.FOLLOWER and node.current_term == 2


def test_a_kept_timeout_now_does_not_depose_the_leader_after_the_transfer_failed() -> None:
    # Review finding: with a transfer timeout shorter than election_timeout_min, a
    # TimeoutNow kept ahead of entries that came late started an election after the
    # fence had committed and the transfer was reported failed: it could only depose
    # the leader in vain. The target keeps it for half the transfer timeout at most.
    config = Config(election_timeout_min=0.150, election_timeout_max=0.300,
                    heartbeat_interval=0.050, transfer_timeout=0.05)
    cluster, leader = settled_cluster(n=5, config=config)
    target = next(i for i in cluster.voters if i != leader)
    _commit_without(cluster, target, 3)
    term = cluster.node(leader).current_term
    transfer = cluster.transfer_leadership(target)
    assert cluster.run_until(lambda: transfer.done, 0.12)
    assert not transfer.succeeded and transfer.reason == "timed out"  # fence committed
    cluster.release()  # the entries from before the fence arrive now
    cluster.run_for(0.05)
    assert cluster.node(leader).role is Role.LEADER
    assert cluster.node(leader).current_term == term
    assert not any(f"{target} -> candidate" in line for line in cluster.trace)
