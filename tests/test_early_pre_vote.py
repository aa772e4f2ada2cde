"""Early pre-vote on leader connection loss (``Config.early_pre_vote``,
:mod:`raftpy.failover`): scenarios with exact roles and terms."""

from __future__ import annotations

import pytest
from helpers import drain, make_node, settled_cluster

from raftpy import AppendEntries, Config, RequestVote, RequestVoteResponse, Role
from raftpy.errors import ConfigError

EARLY = Config(early_pre_vote=True)


def _follower_of(node_id: int, leader: int, term: int) -> AppendEntries:
    return AppendEntries(term=term, src=leader, dst=node_id, prev_log_index=0, prev_log_term=0,
                         entries=(), leader_commit=0)


def test_config_needs_pre_vote_and_excludes_leases() -> None:
    with pytest.raises(ConfigError, match="needs pre_vote"):
        Config(early_pre_vote=True, pre_vote=False)
    with pytest.raises(ConfigError, match="lease_reads"):
        Config(early_pre_vote=True, lease_reads=True)
    assert Config().early_pre_vote is False


def test_follower_that_lost_its_leader_asks_for_pre_votes_at_once() -> None:
    node = make_node(1, term=2, config=EARLY)
    node.step(_follower_of(1, 2, 2), now=1.0)
    drain(node, 1.0)
    assert node.leader_connection_lost(2, now=1.002, lost_at=1.001)
    sent, _ = drain(node, 1.002)
    assert (node.role, node.current_term, node.in_pre_vote, node.leader_id) == (
        Role.CANDIDATE, 2, True, None)
    assert sorted((m.dst, m.term, m.pre_vote) for m in sent if isinstance(m, RequestVote)) == [
        (2, 3, True), (3, 3, True)]
    assert node.early_pre_votes == 1


@pytest.mark.parametrize("case", ["off", "other peer", "heard after the loss", "leader"])
def test_connection_loss_is_ignored(case: str) -> None:
    node = make_node(1, term=2, config=Config() if case == "off" else EARLY)
    node.step(_follower_of(1, 2, 2), now=1.0)
    drain(node, 1.0)
    peer, lost_at = (3, 0.9) if case == "other peer" else (2, 0.9)
    if case == "heard after the loss":
        lost_at = 1.0  # the leader's heartbeat arrived at (or after) the loss
    if case == "leader":
        node = make_node(1, voters=(1,), config=EARLY)
        node.tick(1.0)
        drain(node, 1.0)
        assert node.role is Role.LEADER
        peer = 1
    before = (node.role, node.current_term, node.leader_id)
    assert not node.leader_connection_lost(peer, now=1.002, lost_at=lost_at)
    sent, _ = drain(node, 1.002)
    assert (node.role, node.current_term, node.leader_id) == before
    assert not [m for m in sent if isinstance(m, RequestVote)]
    assert node.early_pre_votes == 0


def test_crash_of_the_leader_elects_a_new_one_within_milliseconds() -> None:
    cluster, leader = settled_cluster(3, seed=7, config=EARLY)
    term = cluster.node(leader).current_term
    cluster.crash(leader)
    crashed_at = cluster.now
    new = cluster.wait_for_leader(1.0)
    # A detection delay (<= 3 ms), one pre-vote and one vote round trip: far below
    # the 150 ms an election timeout waits at least.
    assert cluster.now - crashed_at < 0.020
    survivors = [i for i in cluster.ids if i != leader]
    assert new in survivors
    assert [cluster.node(i).current_term for i in survivors] == [term + 1, term + 1]
    assert sorted(cluster.node(i).role.value for i in survivors) == ["follower", "leader"]
    assert sum(cluster.node(i).early_pre_votes for i in survivors) >= 1


def test_without_the_option_a_crash_waits_for_an_election_timeout() -> None:
    cluster, leader = settled_cluster(3, seed=7)
    cluster.crash(leader)
    crashed_at = cluster.now
    cluster.wait_for_leader(1.0)
    assert cluster.now - crashed_at >= 0.150
    assert cluster.fault_counts["connection_lost"] == 0


def test_flapping_link_with_live_heartbeats_elects_nobody() -> None:
    """The transport of one follower loses its connections to a live leader (a
    flapping link): its early pre-vote is refused by the leader and by the other
    follower, which still hears the leader; the next heartbeat brings it back."""
    cluster, leader = settled_cluster(3, seed=7, config=EARLY)
    term = cluster.node(leader).current_term
    follower, other = (i for i in cluster.ids if i != leader)
    cluster.connection_lost(follower, leader)
    assert (cluster.node(follower).role, cluster.node(follower).in_pre_vote) == (
        Role.CANDIDATE, True)
    cluster.run_for(cluster.config.heartbeat + 0.01)
    assert [cluster.node(i).role for i in (leader, follower, other)] == [
        Role.LEADER, Role.FOLLOWER, Role.FOLLOWER]
    assert [cluster.node(i).current_term for i in cluster.ids] == [term] * 3
    assert cluster.node(follower).leader_id == leader
    # Lost again every 20 ms for a second: at most one early pre-vote per
    # election_timeout_max, and still no election.
    for _ in range(50):
        cluster.connection_lost(follower, leader)
        cluster.run_for(0.020)
    assert cluster.node(follower).early_pre_votes == 1 + int(1.0 / 0.300)
    assert cluster.leader() == leader
    assert [cluster.node(i).current_term for i in cluster.ids] == [term] * 3


def test_loss_reported_after_a_later_heartbeat_is_ignored() -> None:
    cluster, leader = settled_cluster(3, seed=7, config=EARLY)
    follower = next(i for i in cluster.ids if i != leader)
    lost_at = cluster.now
    cluster.run_for(cluster.config.heartbeat + 0.005)  # a heartbeat arrives meanwhile
    cluster.connection_lost(follower, leader, lost_at=lost_at)
    assert cluster.node(follower).role is Role.FOLLOWER
    assert cluster.node(follower).early_pre_votes == 0


def test_one_early_pre_vote_per_election_timeout() -> None:
    node = make_node(1, term=2, config=EARLY)
    node.step(_follower_of(1, 2, 2), now=1.0)
    drain(node, 1.0)
    assert node.leader_connection_lost(2, now=1.01)
    drain(node, 1.01)
    node.step(_follower_of(1, 2, 2), now=1.02)  # the leader was alive after all
    drain(node, 1.02)
    assert (node.role, node.leader_id) == (Role.FOLLOWER, 2)
    assert not node.leader_connection_lost(2, now=1.01 + 0.299)
    assert node.role is Role.FOLLOWER
    # The contact was forgotten all the same: it grants others' pre-votes now.
    node.step(RequestVote(term=3, src=3, dst=1, last_log_index=0, last_log_term=0,
                          pre_vote=True), now=1.305)
    sent, _ = drain(node, 1.305)
    assert [m.vote_granted for m in sent] == [True]  # type: ignore[attr-defined]
    assert node.leader_connection_lost(2, now=1.01 + 0.300)
    assert node.early_pre_votes == 2


def test_a_voter_still_hearing_the_leader_refuses_the_early_pre_vote() -> None:
    node = make_node(3, term=2, config=EARLY)
    node.step(_follower_of(3, 2, 2), now=1.0)
    drain(node, 1.0)
    node.step(RequestVote(term=3, src=1, dst=3, last_log_index=0, last_log_term=0,
                          pre_vote=True), now=1.01)
    sent, _ = drain(node, 1.01)
    assert [m.vote_granted for m in sent] == [False]  # type: ignore[attr-defined]
    # Once it lost the leader too, it grants.
    node.leader_connection_lost(2, now=1.02)
    node.step(RequestVote(term=3, src=1, dst=3, last_log_index=0, last_log_term=0,
                          pre_vote=True), now=1.021)
    sent, _ = drain(node, 1.021)
    assert [m.vote_granted for m in sent if not isinstance(m, RequestVote)] == [True]  # type: ignore[attr-defined]


def test_a_pre_candidate_asks_again_the_voter_that_refused_it_before_it_lost_the_leader(
        ) -> None:
    """Node 1 noticed the crash of leader 3 first; node 2 still heard 3 and refused
    node 1's early pre-vote, then noticed too and asked. Node 1 (the lower id)
    would refuse a concurrent pre-candidate with the same log, and both would wait
    out their election timeouts; node 1 asks node 2 again instead."""
    node = make_node(1, term=2, config=EARLY)
    node.step(_follower_of(1, 3, 2), now=1.0)
    drain(node, 1.0)
    assert node.leader_connection_lost(3, now=1.0005)
    drain(node, 1.0005)
    node.step(RequestVoteResponse(term=2, src=2, dst=1, vote_granted=False, pre_vote=True),
              now=1.0015)
    node.step(RequestVote(term=3, src=2, dst=1, last_log_index=0, last_log_term=0,
                          pre_vote=True), now=1.0015)
    sent, _ = drain(node, 1.0015)
    # It is refused (the lower id goes first) and asked again: it lost the leader
    # since it refused us, and it yields to the lower id.
    assert [(type(m).__name__, m.dst, m.term) for m in sent] == [
        ("RequestVote", 2, 3), ("RequestVoteResponse", 2, 2)]
    assert node.role is Role.CANDIDATE and node.in_pre_vote
    node.step(RequestVoteResponse(term=3, src=2, dst=1, vote_granted=True, pre_vote=True),
              now=1.002)
    assert (node.role, node.in_pre_vote, node.current_term) == (Role.CANDIDATE, False, 3)


def test_a_pre_candidate_yields_to_a_concurrent_one_with_a_lower_id() -> None:
    """Every follower of five noticed the crash within a millisecond: among
    pre-candidates with the same log the lowest id goes first and the others grant
    it and give up their rounds, so that two of them cannot both win their
    pre-votes and split the real vote."""
    node = make_node(3, voters=(1, 2, 3, 4, 5), term=2, config=EARLY)
    node.step(_follower_of(3, 5, 2), now=1.0)
    drain(node, 1.0)
    assert node.leader_connection_lost(5, now=1.0005)
    drain(node, 1.0005)
    node.step(RequestVote(term=3, src=2, dst=3, last_log_index=0, last_log_term=0,
                          pre_vote=True), now=1.001)
    sent, _ = drain(node, 1.001)
    assert [(m.dst, m.vote_granted) for m in sent] == [(2, True)]  # type: ignore[attr-defined]
    assert (node.role, node.leader_id, node.current_term) == (Role.FOLLOWER, None, 2)


def test_peer_loss_detector_reports_once_no_connection_is_left_and_a_redial_failed() -> None:
    from raftpy.trio.peerloss import PeerLossDetector

    lost: list[int] = []
    detector = PeerLossDetector(lambda peer, lost_at: lost.append(peer))
    detector.up(2)  # dialled
    detector.up(2)  # accepted
    detector.down(2)
    detector.reconnect_failed(2)
    assert lost == []  # the accepted connection is still up
    detector.down(2)
    assert lost == [2] and detector.reported == 1
    detector.down(2)  # (nothing left to lose: no second report)
    assert lost == [2]
    # The other order: every connection gone first, then the redial fails.
    detector.up(3)
    detector.down(3)
    assert lost == [2]
    detector.reconnect_failed(3)
    assert lost == [2, 3]
    # A connection coming back in between clears a failed redial.
    detector.up(4)
    detector.reconnect_failed(4)
    detector.up(4)
    detector.down(4)
    detector.down(4)
    assert lost == [2, 3]


def test_five_voters_mostly_replace_a_crashed_leader_in_one_term() -> None:
    """All four followers notice the crash within 3 ms and pre-vote at once; the
    lowest id among them goes first and, but for rare interleavings (seed 8: two
    followers that had yielded grant a later, higher pre-candidate too), exactly
    one term is used. Before the yield rule two pre-candidates won their pre-votes
    and split the vote after about a third of the crashes."""
    one_term = []
    for seed in range(10):
        cluster, leader = settled_cluster(5, seed=seed, config=EARLY)
        term = cluster.node(leader).current_term
        cluster.crash(leader)
        crashed_at = cluster.now
        new = cluster.wait_for_leader(1.0)
        assert cluster.now - crashed_at < 0.050, f"seed {seed}"
        if cluster.node(new).current_term == term + 1:
            assert cluster.now - crashed_at < 0.020, f"seed {seed}"
            one_term.append(seed)
    assert one_term == [0, 1, 2, 3, 4, 5, 6, 7, 9]
