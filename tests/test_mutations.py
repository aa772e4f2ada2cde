"""Mutation check: plant known protocol bugs from the test side and show that the
scenario tests or the seeded fuzzing catch each one.

Each bug is planted with ``monkeypatch`` on a ``RaftNode`` method (no switches
inside the library). If a detector stopped failing under its mutant, the test
suite would have lost the power to see that bug.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import test_election
import test_replication
import test_seed_scenario

from raftpy import AppendEntriesResponse, RaftNode, Role
from raftpy.messages import Message, RequestVote
from raftpy.sim.fuzz import run_seed


def first_failing_seed(limit: int = 300) -> tuple[int, str] | None:
    for seed in range(limit):
        report = run_seed(seed)
        if not report.ok:
            assert report.failure is not None
            return seed, report.failure
    return None


def expect_failure(test: Callable[..., None], *args: Any) -> None:
    with pytest.raises(AssertionError):
        test(*args)


def test_transfer_target_running_pre_vote_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RaftNode, "_campaign", test_seed_scenario.run_pre_vote_on_transfer)
    expect_failure(test_seed_scenario.test_late_heartbeat_does_not_abort_transfer, 3)
    expect_failure(test_seed_scenario.test_late_heartbeat_does_not_abort_transfer, 5)


def test_candidate_ignoring_same_term_append_entries_is_caught(
        monkeypatch: pytest.MonkeyPatch) -> None:
    original = RaftNode._handle_append_entries

    def ignore_when_candidate(self: RaftNode, msg: Any) -> None:
        if self.role is Role.CANDIDATE and msg.term == self.current_term:
            return
        original(self, msg)

    monkeypatch.setattr(RaftNode, "_handle_append_entries", ignore_when_candidate)
    expect_failure(test_election.test_candidate_steps_down_on_append_entries_of_its_own_term)


def test_voter_granting_two_votes_in_one_term_is_caught(
        monkeypatch: pytest.MonkeyPatch) -> None:
    original = RaftNode._handle_request_vote

    def forget_vote(self: RaftNode, msg: RequestVote) -> None:
        if not msg.pre_vote:
            self.voted_for = None
            self.leader_id = None
        original(self, msg)

    monkeypatch.setattr(RaftNode, "_handle_request_vote", forget_vote)
    expect_failure(test_election.test_voter_grants_one_vote_per_term)
    found = first_failing_seed()
    assert found is not None, "the fuzzing missed a double vote"
    assert "vote changed within a term" in found[1] or "election safety" in found[1], found


def test_committing_an_earlier_term_entry_by_counting_is_caught(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def commit_by_counting(self: RaftNode) -> None:
        matches = sorted((self.log.persisted_index if v == self.id
                          else self.progress[v].match_index for v in self.voters),
                         reverse=True)
        self.commit_index = max(self.commit_index, matches[self.quorum - 1])

    monkeypatch.setattr(RaftNode, "_maybe_commit", commit_by_counting)
    expect_failure(test_replication.test_leader_does_not_commit_entries_of_earlier_terms_by_counting)


def test_follower_acknowledging_before_persisting_is_caught(
        monkeypatch: pytest.MonkeyPatch) -> None:
    original = RaftNode._send

    def send_acks_early(self: RaftNode, msg: Message) -> None:
        if isinstance(msg, AppendEntriesResponse):
            self._messages.append(msg)
        else:
            original(self, msg)

    monkeypatch.setattr(RaftNode, "_send", send_acks_early)
    expect_failure(test_replication.test_follower_acknowledges_only_after_persisting)
    found = first_failing_seed()
    assert found is not None and "durability" in found[1], found


def test_follower_committing_past_what_it_verified_is_caught(
        monkeypatch: pytest.MonkeyPatch) -> None:
    original = RaftNode._ack

    def trust_leader_commit(self: RaftNode, leader: int, match_index: int, leader_commit: int,
                            last_new: int) -> None:
        original(self, leader, match_index, leader_commit,
                 max(last_new, min(leader_commit, self.log.last_index)))

    monkeypatch.setattr(RaftNode, "_ack", trust_leader_commit)
    # Only the scenario test sees this one: with fast back-off the leader's first
    # batch after a rejection starts at the divergence and truncates the stale
    # suffix, so the seeded fuzzing rarely reaches the interleaving that needs the
    # cap (measured: 0 of 300 seeds). The scenario test pins the rule down.
    expect_failure(test_replication.test_heartbeat_does_not_commit_a_followers_stale_suffix)


def test_leader_stickiness_removed_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RaftNode, "_refuses_vote_for_leader_stickiness",
                        lambda self, msg: False)
    expect_failure(
        test_election.test_follower_that_heard_from_leader_refuses_votes_and_pre_votes)
