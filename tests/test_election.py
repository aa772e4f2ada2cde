"""Elections, pre-vote, leader stickiness and check-quorum (Raft §3.4, §9.6)."""

from __future__ import annotations

import pytest
from helpers import drain, entries, make_node

from raftpy import (
    AppendEntries,
    AppendEntriesResponse,
    Config,
    RaftNode,
    RequestVote,
    RequestVoteResponse,
    Role,
)
from raftpy.sim import Cluster


@pytest.mark.parametrize("pre_vote", [True, False])
def test_three_nodes_elect_exactly_one_leader_in_the_first_term(pre_vote: bool) -> None:
    cluster = Cluster(n=3, seed=11, config=Config(pre_vote=pre_vote))
    leader = cluster.wait_for_leader()
    cluster.run_for(0.5)
    assert cluster.leader() == leader
    # Bootstrap leaves every node at term 1; pre-vote does not bump the term, so the
    # first election happens at term 2 either way.
    assert [cluster.node(i).current_term for i in cluster.ids] == [2, 2, 2]
    assert [cluster.node(i).leader_id for i in cluster.ids] == [leader] * 3
    roles = sorted(cluster.node(i).role.value for i in cluster.ids)
    assert roles == ["follower", "follower", "leader"]


def test_first_election_happens_within_the_timeout_range() -> None:
    cluster = Cluster(n=5, seed=4)
    cluster.wait_for_leader()
    # The first timeout fires in [150, 300] ms; pre-vote and vote take a few ms.
    assert 0.150 <= cluster.now <= 0.320


@pytest.mark.parametrize("pre_vote", [True, False])
def test_leader_crash_leads_to_reelection(pre_vote: bool) -> None:
    cluster = Cluster(n=5, seed=5, config=Config(pre_vote=pre_vote))
    old = cluster.wait_for_leader()
    cluster.run_for(0.3)
    cluster.crash(old)
    crashed_at = cluster.now
    new = cluster.wait_for_leader(2.0)
    assert new != old
    assert 0.150 <= cluster.now - crashed_at <= 0.7
    assert cluster.node(new).current_term == 3


def test_rejoining_partitioned_node_does_not_disrupt_with_pre_vote() -> None:
    cluster = Cluster(n=3, seed=21, config=Config(pre_vote=True))
    leader = cluster.wait_for_leader()
    follower = next(i for i in cluster.ids if i != leader)
    cluster.isolate(follower)
    cluster.run_for(2.0)  # many election timeouts: pre-votes all fail
    assert cluster.node(follower).current_term == 2
    cluster.heal()
    cluster.run_for(1.0)
    assert cluster.leader() == leader
    assert [cluster.node(i).current_term for i in cluster.ids] == [2, 2, 2]


def test_rejoining_partitioned_node_disrupts_without_pre_vote() -> None:
    cluster = Cluster(n=3, seed=21, config=Config(pre_vote=False))
    cluster.wait_for_leader()
    leader = cluster.leader()
    assert leader is not None
    follower = next(i for i in cluster.ids if i != leader)
    cluster.isolate(follower)
    cluster.run_for(2.0)
    isolated_term = cluster.node(follower).current_term
    assert isolated_term > 3  # it kept campaigning alone
    cluster.heal()
    cluster.run_for(1.0)
    # Its higher term reached the leader (through rejected appends), which stepped
    # down: the cluster moved to a term at least as high as the rejoiner's.
    assert min(cluster.node(i).current_term for i in cluster.ids) >= isolated_term
    assert cluster.leader() is not None


def test_isolated_leader_steps_down_by_check_quorum() -> None:
    cluster = Cluster(n=3, seed=8, record_trace=True)
    leader = cluster.wait_for_leader()
    cluster.isolate(leader)
    cluster.run_for(0.7)
    assert cluster.node(leader).role is not Role.LEADER
    assert any(f"{leader} step down: heard from 1 of 3 voters" in line for line in cluster.trace)


def test_follower_that_heard_from_leader_refuses_votes_and_pre_votes() -> None:
    node = make_node(2, term=1)
    node.step(AppendEntries(term=1, src=1, dst=2, prev_log_index=0, prev_log_term=0,
                            entries=(), leader_commit=0), now=1.0)
    drain(node, 1.0)
    for pre_vote in (True, False):
        node.step(RequestVote(term=2, src=3, dst=2, last_log_index=5, last_log_term=1,
                              pre_vote=pre_vote), now=1.05)
        sent, _ = drain(node, 1.05)
        assert sent == [RequestVoteResponse(term=1, src=2, dst=3, vote_granted=False,
                                            pre_vote=pre_vote)]
    assert node.current_term == 1 and node.leader_id == 1
    # After the minimum election timeout without contact, it grants again.
    node.step(RequestVote(term=2, src=3, dst=2, last_log_index=5, last_log_term=1,
                          pre_vote=True), now=1.0 + 0.151)
    sent, _ = drain(node, 1.151)
    assert sent == [RequestVoteResponse(term=2, src=2, dst=3, vote_granted=True, pre_vote=True)]
    assert node.current_term == 1  # a pre-vote changes nothing


def test_disrupt_leader_vote_is_granted_despite_a_live_leader() -> None:
    node = make_node(2, term=1)
    node.step(AppendEntries(term=1, src=1, dst=2, prev_log_index=0, prev_log_term=0,
                            entries=(), leader_commit=0), now=1.0)
    drain(node, 1.0)
    node.step(RequestVote(term=2, src=3, dst=2, last_log_index=0, last_log_term=0,
                          disrupt_leader=True), now=1.01)
    sent, readies = drain(node, 1.01)
    assert sent == [RequestVoteResponse(term=2, src=2, dst=3, vote_granted=True)]
    assert node.current_term == 2 and node.voted_for == 3
    # The vote waits for the fsync of term and vote.
    assert readies[0].hard_state is not None and readies[0].hard_state.voted_for == 3
    assert readies[0].messages == [] and len(readies[0].messages_after_persist) == 1


def test_pre_vote_flagged_disrupt_leader_does_not_bypass_stickiness() -> None:
    # Only a real RequestVote may disrupt; a transfer target never pre-votes.
    node = make_node(2, term=1)
    node.step(AppendEntries(term=1, src=1, dst=2, prev_log_index=0, prev_log_term=0,
                            entries=(), leader_commit=0), now=1.0)
    node.step(RequestVote(term=2, src=3, dst=2, last_log_index=0, last_log_term=0,
                          pre_vote=True, disrupt_leader=True), now=1.01)
    sent, _ = drain(node, 1.01)
    assert [m.vote_granted for m in sent if isinstance(m, RequestVoteResponse)] == [False]


def test_voter_grants_one_vote_per_term() -> None:
    node = make_node(1, term=3)
    node.step(RequestVote(term=4, src=2, dst=1, last_log_index=0, last_log_term=0), now=0.0)
    node.step(RequestVote(term=4, src=3, dst=1, last_log_index=0, last_log_term=0), now=0.0)
    node.step(RequestVote(term=4, src=2, dst=1, last_log_index=0, last_log_term=0), now=0.0)
    sent, _ = drain(node)
    assert [(m.dst, m.vote_granted) for m in sent if isinstance(m, RequestVoteResponse)] == [
        (2, True), (3, False), (2, True)]
    assert node.voted_for == 2


def test_a_candidate_leads_only_once_its_own_vote_is_saved() -> None:
    # Five voters: the four others answer before the candidate's save ends.
    node = make_node(1, voters=(1, 2, 3, 4, 5), term=3,
                     config=Config(pre_vote=False))
    node.tick(1.0)
    ready = node.ready()
    assert node.role is Role.CANDIDATE and ready.hard_state is not None
    assert (ready.hard_state.term, ready.hard_state.voted_for) == (4, 1)
    # The vote requests leave at once: they overlap the candidate's own save.
    assert sorted(m.dst for m in ready.messages if isinstance(m, RequestVote)) == [2, 3, 4, 5]
    for voter in (2, 3, 4, 5):
        node.step(RequestVoteResponse(term=4, src=voter, dst=1, vote_granted=True), 1.001)
    # A majority granted, but a crash now would forget term 4 and the vote: it
    # could then win term 4 again with another log. It waits for the save.
    assert node.role is Role.CANDIDATE
    node.advance(ready, 1.002)
    assert node.role is Role.LEADER and node.current_term == 4


@pytest.mark.parametrize(("last_term", "last_index", "granted"), [
    (2, 3, True),   # same last term, same length
    (2, 2, False),  # same last term, shorter
    (3, 1, True),   # higher last term wins whatever the length
    (1, 9, False),  # lower last term loses whatever the length
])
def test_vote_requires_an_up_to_date_log(last_term: int, last_index: int,
                                         granted: bool) -> None:
    node = make_node(1, term=2, entries=entries(1, 2, 2))
    node.step(RequestVote(term=3, src=2, dst=1, last_log_index=last_index,
                          last_log_term=last_term), now=0.0)
    sent, _ = drain(node)
    assert [m.vote_granted for m in sent if isinstance(m, RequestVoteResponse)] == [granted]


def test_pre_vote_round_does_not_bump_the_term() -> None:
    node = make_node(1, term=5)
    node.tick(1.0)
    sent, readies = drain(node, 1.0)
    assert node.role is Role.CANDIDATE and node.in_pre_vote and node.current_term == 5
    assert {m.dst for m in sent} == {2, 3}
    assert all(isinstance(m, RequestVote) and m.pre_vote and m.term == 6 for m in sent)
    assert all(r.hard_state is None for r in readies)
    node.step(RequestVoteResponse(term=6, src=2, dst=1, vote_granted=True, pre_vote=True), 1.01)
    sent, readies = drain(node, 1.01)
    assert node.current_term == 6 and not node.in_pre_vote and node.voted_for == 1
    assert all(isinstance(m, RequestVote) and not m.pre_vote and m.term == 6 for m in sent)


def test_candidate_steps_down_on_append_entries_of_its_own_term() -> None:
    node = make_node(1, config=Config(pre_vote=False))
    node.tick(1.0)
    drain(node, 1.0)
    assert node.role is Role.CANDIDATE and node.current_term == 1
    node.step(AppendEntries(term=1, src=2, dst=1, prev_log_index=0, prev_log_term=0,
                            entries=(), leader_commit=0), now=1.01)
    sent, _ = drain(node, 1.01)
    assert node.role is Role.FOLLOWER and node.leader_id == 2
    assert sent == [AppendEntriesResponse(term=1, src=1, dst=2, success=True, match_index=0)]


def test_candidate_rejects_append_entries_of_a_lower_term() -> None:
    node = make_node(1, term=4, config=Config(pre_vote=False))
    node.tick(1.0)
    drain(node, 1.0)
    assert node.current_term == 5
    node.step(AppendEntries(term=4, src=2, dst=1, prev_log_index=0, prev_log_term=0,
                            entries=(), leader_commit=0), now=1.01)
    sent, _ = drain(node, 1.01)
    assert node.role is Role.CANDIDATE and node.current_term == 5
    # The reply carries the higher term so that the stale leader steps down.
    assert sent == [AppendEntriesResponse(term=5, src=1, dst=2, success=False)]


def test_learner_never_campaigns() -> None:
    cluster = Cluster(n=3, seed=2, learners=1)
    cluster.wait_for_leader()
    for voter in cluster.voters:
        cluster.crash(voter)
    cluster.run_for(3.0)
    learner = cluster.node(4)
    assert learner.role is Role.FOLLOWER and learner.current_term == 2


def test_concurrent_pre_candidates_with_equal_logs_let_the_lower_id_go_first() -> None:
    low, high = make_node(1, term=2), make_node(2, term=2)
    for node in (low, high):
        node.tick(1.0)
        drain(node, 1.0)
        assert node.role is Role.CANDIDATE and node.in_pre_vote
    low.step(RequestVote(term=3, src=2, dst=1, last_log_index=0, last_log_term=0,
                         pre_vote=True), 1.001)
    high.step(RequestVote(term=3, src=1, dst=2, last_log_index=0, last_log_term=0,
                          pre_vote=True), 1.001)
    (to_high,), _ = drain(low, 1.001)
    (to_low,), _ = drain(high, 1.001)
    assert isinstance(to_high, RequestVoteResponse) and not to_high.vote_granted
    assert isinstance(to_low, RequestVoteResponse) and to_low.vote_granted
    # A requester with a more up-to-date log is granted whatever its id.
    ahead = make_node(1, term=2)
    ahead.tick(1.0)
    drain(ahead, 1.0)
    ahead.step(RequestVote(term=3, src=2, dst=1, last_log_index=1, last_log_term=2,
                           pre_vote=True), 1.001)
    (reply,), _ = drain(ahead, 1.001)
    assert isinstance(reply, RequestVoteResponse) and reply.vote_granted


def _candidate_of_term_5(now: float) -> RaftNode:
    node = make_node(1, term=4, config=Config(pre_vote=False))
    node.tick(now)
    drain(node, now)
    assert node.role is Role.CANDIDATE and node.current_term == 5
    assert node.next_deadline() >= now + 0.150
    return node


def test_split_vote_retries_early_only_once_a_majority_has_answered() -> None:
    node = _candidate_of_term_5(1.0)
    full_timeout = node.next_deadline()
    # A competitor of term 5 asks before any vote is back: nothing changes yet.
    node.step(RequestVote(term=5, src=2, dst=1, last_log_index=0, last_log_term=0), 1.002)
    (reply,), _ = drain(node, 1.002)
    assert isinstance(reply, RequestVoteResponse) and not reply.vote_granted
    assert node.next_deadline() == full_timeout
    # Node 3 answers 4 ms after the start: with our own vote, a majority has
    # answered. Retry in [2 round trips, election_timeout_min / 2) from now.
    node.step(RequestVoteResponse(term=5, src=3, dst=1, vote_granted=False), 1.004)
    assert 1.004 + 0.008 <= node.next_deadline() < 1.004 + 0.075


@pytest.mark.parametrize(("competitor", "answer_at"), [
    (False, 1.004),  # refused by a majority, but nobody else stood: e.g. a stale log
    (True, 1.040),   # a round trip of 40 ms: two of them do not fit under 75 ms
])
def test_uncontested_or_slow_rounds_keep_the_full_election_timeout(
        competitor: bool, answer_at: float) -> None:
    node = _candidate_of_term_5(1.0)
    full_timeout = node.next_deadline()
    if competitor:
        node.step(RequestVote(term=5, src=2, dst=1, last_log_index=0, last_log_term=0),
                  1.002)
    node.step(RequestVoteResponse(term=5, src=3, dst=1, vote_granted=False), answer_at)
    node.step(RequestVoteResponse(term=5, src=2, dst=1, vote_granted=False), answer_at)
    drain(node, answer_at)
    assert node.role is Role.CANDIDATE and node.next_deadline() == full_timeout


def test_three_node_re_election_tail_stays_within_two_timeouts() -> None:
    # A split vote costs a short retry, not another full election timeout.
    worst = 0.0
    for seed in range(150):
        cluster = Cluster(n=3, seed=seed, check_invariants=False)
        leader = cluster.wait_for_leader()
        cluster.run_for(0.3 + (seed % 50) / 1000)
        cluster.crash(leader)
        start = cluster.now
        cluster.wait_for_leader(5.0)
        worst = max(worst, cluster.now - start)
    assert worst < 0.300 + 0.150 + 0.02
