"""The invariant checker itself: hand-made Readies and messages, each check firing
with its own message, and a correct sequence passing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from raftpy.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    InstallSnapshot,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from raftpy.ready import HardState, LeaderChanged, Ready, SnapshotMeta
from raftpy.sim.invariants import InvariantChecker, InvariantViolation

E1, E2, E3, E4 = (Entry(i, 1, b"c%d" % i) for i in range(1, 5))


def checker() -> InvariantChecker:
    def fail(what: str) -> InvariantViolation:
        return InvariantViolation(what, seed=7, event=1, now=0.0)

    return InvariantChecker((1, 2, 3), (1, 2, 3), fail)


def ack(src: int, match: int, term: int = 1, dst: int = 1) -> AppendEntriesResponse:
    return AppendEntriesResponse(term=term, src=src, dst=dst, success=True, match_index=match)


def vote(src: int, dst: int, term: int, *, granted: bool = True,
         pre_vote: bool = False) -> RequestVoteResponse:
    return RequestVoteResponse(term=term, src=src, dst=dst, vote_granted=granted,
                               pre_vote=pre_vote)


def request_vote(src: int, dst: int, term: int, *, pre_vote: bool = False) -> RequestVote:
    return RequestVote(term=term, src=src, dst=dst, last_log_index=0, last_log_term=0,
                       pre_vote=pre_vote)


def append(term: int, entries: Sequence[Entry] = (), src: int = 1,
           dst: int = 2) -> AppendEntries:
    return AppendEntries(term=term, src=src, dst=dst, prev_log_index=0, prev_log_term=0,
                         entries=tuple(entries), leader_commit=0)


def store(c: InvariantChecker, node: int, entries: Sequence[Entry]) -> None:
    """``node`` takes ``entries`` into memory and persists them, in term 1 (voted for 1)."""
    ready = Ready(hard_state=HardState(1, 1), entries=list(entries))
    c.on_ready(node, ready, 1)
    c.on_persist(node, ready)


def replicated(entries: Sequence[Entry] = (E1, E2, E3, E4)) -> InvariantChecker:
    """Every node holds and persisted ``entries`` in term 1, voted for node 1."""
    c = checker()
    for node in (1, 2, 3):
        store(c, node, entries)
    return c


def raises(match: str) -> Any:
    return pytest.raises(InvariantViolation, match=match)


# ---------------------------------------------------------------- durable promises


def test_a_vote_grant_leaves_only_once_that_vote_is_persisted() -> None:
    c = checker()
    with raises(r"vote not durable: node 2 grants its vote to 1 in term 1, but has "
                r"persisted HardState\(term=0, voted_for=None\)"):
        c.on_send(2, vote(2, 1, 1))
    c.on_persist(2, Ready(hard_state=HardState(1, None)))
    with raises("vote not durable: node 2 grants its vote to 1 in term 1"):
        c.on_send(2, vote(2, 1, 1))  # the term is durable, the vote is not
    c.on_persist(2, Ready(hard_state=HardState(1, 1)))
    c.on_send(2, vote(2, 1, 1))
    with raises("vote not durable: node 2 grants its vote to 3 in term 1"):
        c.on_send(2, vote(2, 3, 1))
    # A vote persisted once stays cast, even after the node moved to a later term.
    c.on_persist(2, Ready(hard_state=HardState(2, None)))
    c.on_send(2, vote(2, 1, 1))


def test_a_node_leads_a_term_only_once_its_own_vote_in_it_is_durable() -> None:
    c = checker()
    # Its RequestVote leaves before its save: that promises nothing.
    c.on_send(1, request_vote(1, 2, 1))
    for voter in (2, 3):  # both others grant it durably (a majority without it)
        c.on_persist(voter, Ready(hard_state=HardState(1, 1)))
        c.on_send(voter, vote(voter, 1, 1))
    won = Ready(events=[LeaderChanged(1, 1)])
    with raises(r"vote not durable: node 1 leads term 1, but has persisted "
                r"HardState\(term=0, voted_for=None\)"):
        c.on_ready(1, won, 1, is_leader=True)
    c = checker()
    c.on_persist(1, Ready(hard_state=HardState(1, 2)))  # it voted for another
    with raises("vote not durable: node 1 leads term 1"):
        c.on_ready(1, won, 1, is_leader=True)
    c = checker()
    c.on_persist(1, Ready(hard_state=HardState(1, 1)))
    c.on_ready(1, won, 1, is_leader=True)
    assert c.leaders == {1: 1}


def test_pre_votes_and_rejections_need_nothing_durable() -> None:
    c = checker()
    c.on_send(1, request_vote(1, 2, 5, pre_vote=True))
    c.on_send(2, vote(2, 1, 5, pre_vote=True))
    c.on_send(2, vote(2, 1, 5, granted=False))
    c.on_send(2, AppendEntriesResponse(term=5, src=2, dst=1, success=False, reject_index=3))


@pytest.mark.parametrize("msg", [
    append(2),
    InstallSnapshot(term=2, src=1, dst=2, last_included_index=0, last_included_term=0,
                    offset=0, data=b"", done=True),
    TimeoutNow(term=2, src=1, dst=2, last_log_index=0, last_log_term=0),
], ids=["AppendEntries", "InstallSnapshot", "TimeoutNow"])
def test_a_leader_speaks_only_for_a_durable_term(
        msg: AppendEntries | InstallSnapshot | TimeoutNow) -> None:
    c = checker()
    c.on_persist(1, Ready(hard_state=HardState(1, 1)))
    name = type(msg).__name__
    with raises(f"term not durable: node 1 sends {name} of term 2 to 2, but has "
                f"persisted term 1"):
        c.on_send(1, msg)
    c.on_persist(1, Ready(hard_state=HardState(2, 1)))
    c.on_send(1, msg)


def test_an_ack_leaves_only_once_the_entries_are_on_disk() -> None:
    c = checker()
    c.on_persist(2, Ready(hard_state=HardState(1, 1)))
    a = ack(2, 2)
    ready = Ready(entries=[E1, E2], messages_after_persist=[a])
    c.on_ready(2, ready, 1)
    with raises("ack not durable: node 2 acknowledges entries up to 2 \\(term 1\\) to 1, but "
                "its disk ends at 0"):
        c.on_send(2, a)
    c.on_persist(2, ready)
    c.on_send(2, a)


def test_an_ack_needs_the_term_it_carries_durable() -> None:
    c = checker()
    store(c, 2, [E1])
    with raises("term not durable: node 2 sends AppendEntriesResponse of term 2 to 1, but "
                "has persisted term 1"):
        c.on_send(2, ack(2, 1, term=2))


def test_an_ack_over_a_rewritten_suffix_needs_the_new_entries_on_disk() -> None:
    c = checker()
    store(c, 2, [E1, E2])
    c.on_persist(2, Ready(hard_state=HardState(2, 3)))
    new2 = Entry(2, 2, b"other")
    a = ack(2, 2, term=2, dst=3)
    c.on_ready(2, Ready(entries=[new2], messages=[a]), 2)
    with raises("ack not durable: node 2 acknowledges entries up to 2 \\(term 2\\) to 3, but "
                "its disk holds other entries there"):
        c.on_send(2, a)


def test_an_ack_vouches_for_the_log_as_it_was_when_made() -> None:
    # Batch A (entries 1..2, ack 2) waits for its fsync while a new leader's batch B
    # cuts entry 2: A's ack is true of A's entries, which are on disk when it leaves.
    c = checker()
    c.on_persist(2, Ready(hard_state=HardState(1, 1)))
    a = ack(2, 2)
    batch_a = Ready(entries=[E1, E2], messages_after_persist=[a])
    c.on_ready(2, batch_a, 1)
    c.on_ready(2, Ready(hard_state=HardState(2, None), entries=[Entry(2, 2, b"new")]), 2)
    c.on_persist(2, batch_a)
    c.on_send(2, a)


def test_an_ack_covered_by_a_durable_snapshot_passes() -> None:
    c = replicated()
    c.on_ready(1, Ready(committed=[E1, E2, E3]), 1, is_leader=True, commit_index=3)
    c.on_compact(2, 3, memory=True, disk=True)
    c.on_send(2, ack(2, 2))
    c.on_send(2, ack(2, 3))


# ---------------------------------------------------------------- per-node rules


def test_a_leader_never_rewrites_its_own_entries() -> None:
    c = checker()
    c.on_ready(1, Ready(entries=[E1, E2]), 1, is_leader=True)
    with raises("leader append-only: leader 1 of term 1 hands out entries from 2, but its "
                "log ends at 2"):
        c.on_ready(1, Ready(entries=[Entry(2, 1, b"x")]), 1, is_leader=True)


def test_a_leader_appends_after_its_last_entry_and_a_follower_may_cut() -> None:
    c = checker()
    c.on_ready(1, Ready(entries=[E1, E2]), 1, is_leader=True)
    c.on_ready(1, Ready(entries=[E3]), 1, is_leader=True)
    c.on_ready(2, Ready(entries=[E1, E2]), 1)
    c.on_ready(2, Ready(entries=[Entry(2, 2, b"y")]), 2)  # a follower's truncation


def test_committed_entries_are_applied_once_and_in_order() -> None:
    c = replicated()
    c.on_ready(1, Ready(committed=[E1, E2]), 1, is_leader=True, commit_index=2)
    with raises("exactly-once apply: node 1 hands out committed entry 2 to apply, expected 3 "
                "\\(applied up to 2\\)"):
        c.on_ready(1, Ready(committed=[E2, E3]), 1, is_leader=True, commit_index=3)


def test_a_gap_in_applied_entries_is_caught() -> None:
    c = replicated()
    c.on_ready(2, Ready(committed=[E1]), 1, commit_index=1)
    with raises("exactly-once apply: node 2 hands out committed entry 3 to apply, expected 2"):
        c.on_ready(2, Ready(committed=[E3]), 1, commit_index=3)


def test_a_received_snapshot_moves_the_applied_index() -> None:
    c = replicated()
    c.on_ready(1, Ready(committed=[E1, E2, E3]), 1, is_leader=True, commit_index=3)
    c.on_ready(2, Ready(snapshot=(SnapshotMeta(2, 1), b"")), 1, commit_index=2)
    c.on_ready(2, Ready(committed=[E3]), 1, commit_index=3)
    assert c.applied[2] == 3
    with raises("node 2 restores a snapshot at 2 after applying up to 3"):
        c.on_ready(2, Ready(snapshot=(SnapshotMeta(2, 1), b"")), 1, commit_index=3)


def test_a_restart_resets_applied_and_commit_index_to_the_snapshot() -> None:
    c = replicated()
    c.on_ready(2, Ready(committed=[E1, E2, E3]), 1, commit_index=3)
    c.on_compact(2, 2, memory=False, disk=True)
    c.on_restart(2)
    assert c.applied[2] == 2
    c.on_ready(2, Ready(committed=[E3]), 1, commit_index=3)  # applied again: new lifetime
    c.on_restart(2)
    with raises("exactly-once apply: node 2 hands out committed entry 2 to apply, expected 3"):
        c.on_ready(2, Ready(committed=[E2, E3]), 1, commit_index=3)


def test_the_commit_index_never_moves_back_while_a_node_runs() -> None:
    c = replicated()
    c.on_ready(2, Ready(committed=[E1, E2, E3]), 1, commit_index=3)
    with raises("node 2 moved its commit index back from 3 to 2"):
        c.on_ready(2, Ready(), 1, commit_index=2)
    c.on_restart(2)
    c.on_ready(2, Ready(), 1, commit_index=0)


def test_a_leader_commits_by_counting_only_entries_of_its_term() -> None:
    c = replicated()
    with raises("leader commit rule: leader 1 of term 2 advanced its commit index to 2, an "
                "entry of term 1"):
        c.on_ready(1, Ready(committed=[E1, E2]), 2, is_leader=True, commit_index=2)


def test_a_follower_commits_earlier_terms_freely() -> None:
    c = replicated()
    c.on_ready(2, Ready(committed=[E1, E2]), 2, commit_index=2)


# ---------------------------------------------------------------- a correct run


def test_a_correct_election_and_replication_passes_every_check() -> None:
    c = checker()
    # Node 1 campaigns in term 1: its self-vote is durable before it asks.
    campaign = Ready(hard_state=HardState(1, 1), messages_after_persist=[
        request_vote(1, 2, 1), request_vote(1, 3, 1)])
    c.on_ready(1, campaign, 1)
    c.on_persist(1, campaign)
    for msg in campaign.messages_after_persist:
        c.on_send(1, msg)
    # Node 2 votes for it, durably, then answers.
    grant = Ready(hard_state=HardState(1, 1), messages_after_persist=[vote(2, 1, 1)])
    c.on_ready(2, grant, 1)
    c.on_persist(2, grant)
    c.on_send(2, vote(2, 1, 1))
    # Node 1 wins; its appends go before its own fsync (Ready step 1).
    noop = Entry(1, 1)
    to_2 = append(1, [noop])
    lead = Ready(entries=[noop], messages=[to_2, append(1, [noop], dst=3)],
                 events=[LeaderChanged(1, 1)])
    c.on_ready(1, lead, 1, is_leader=True)
    for msg in lead.messages:
        c.on_send(1, msg)
    c.on_persist(1, lead)
    # Node 2 persists and acknowledges; node 1 commits its own term's entry.
    a = ack(2, 1)
    follow = Ready(entries=[noop], messages_after_persist=[a], events=[LeaderChanged(1, 1)])
    c.on_ready(2, follow, 1)
    c.on_persist(2, follow)
    c.on_send(2, a)
    assert c.on_ready(1, Ready(committed=[noop]), 1, is_leader=True, commit_index=1) == [noop]
    c.on_ready(1, Ready(entries=[Entry(2, 1, b"x")]), 1, is_leader=True, commit_index=1)
    c.on_ready(2, Ready(committed=[noop]), 1, commit_index=1)
    assert c.applied == {1: 1, 2: 1, 3: 0}
    assert c.leaders == {1: 1}


def test_concurrent_leaders_need_overlapping_majorities_unless_the_older_is_fenced() -> None:
    def fail(what: str) -> InvariantViolation:
        return InvariantViolation(what, seed=7, event=1, now=0.0)

    c = InvariantChecker((1, 2, 3, 4, 5), (1, 2, 3, 4, 5), fail)
    old = (5, 10, frozenset({1, 2, 3, 4, 5}))
    new = (4, 12, frozenset({1, 3, 4}))  # two single-server changes later
    c.check_leaders_overlap((4, 12, frozenset({1, 2, 3, 4})), old)  # one change: overlap
    with raises(r"leaders 4 \(term 12, voters \[1, 3, 4\]\) and 5 \(term 10, voters "
                r"\[1, 2, 3, 4, 5\]\) have majorities that need not overlap"):
        c.check_leaders_overlap(new, old)
    # Once a majority of the old leader's voters persisted a later term, it can
    # commit nothing more (fuzz seed 7201: it was paused through both changes).
    for node in (1, 3):
        c.on_persist(node, Ready(hard_state=HardState(11, None)))
    with raises("need not overlap"):
        c.check_leaders_overlap(new, old)  # 2, 4 and 5 could still take its entries
    c.on_persist(4, Ready(hard_state=HardState(12, 4)))
    c.check_leaders_overlap(new, old)
