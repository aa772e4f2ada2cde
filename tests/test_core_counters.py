"""RaftNode.counters: the core counts its own decisions (no clock, no driver help)."""

from __future__ import annotations

from helpers import drain, make_node

from raftpy import Config, RequestVote, RequestVoteResponse, Role


def grant(node_id: int, msg: RequestVote) -> RequestVoteResponse:
    return RequestVoteResponse(term=msg.term, src=node_id, dst=msg.src,
                               vote_granted=True, pre_vote=msg.pre_vote)


def test_a_pre_vote_then_an_election_won_then_a_proposal_and_a_newer_term() -> None:
    node = make_node(1, (1, 2, 3), config=Config())
    node.tick(10.0)  # past any election timeout: a pre-vote round first (Raft §9.6)
    sent, _ = drain(node, 10.0)
    c = node.counters
    assert (c.pre_votes_started, c.elections_started, c.terms_seen) == (1, 0, 0)
    assert node.current_term == 0
    node.step(grant(2, next(m for m in sent if isinstance(m, RequestVote))), 10.0)
    sent, _ = drain(node, 10.0)  # the real election: term 1, its own vote persisted
    assert (c.pre_votes_started, c.elections_started, c.terms_seen) == (1, 1, 1)
    assert c.elections_won == 0
    node.step(grant(2, next(m for m in sent if isinstance(m, RequestVote))), 10.0)
    drain(node, 10.0)
    assert node.role is Role.LEADER and c.elections_won == 1
    node.propose_many([b"a", b"b"], 10.0)
    node.propose(b"c", 10.0)
    assert c.proposals == 3  # the leader's no-op is not a proposal
    node.step(RequestVoteResponse(term=5, src=3, dst=1, vote_granted=False), 10.0)
    assert node.role is Role.FOLLOWER and c.terms_seen == 2  # 1, then straight to 5
    assert c.snapshots_sent == 0
