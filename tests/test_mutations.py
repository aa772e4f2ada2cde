"""Mutation check: plant known protocol bugs from the test side and show that the
test suite catches each one.

Each bug is planted with ``monkeypatch`` on a ``RaftNode`` method (no switches
inside the library). Two kinds:

* **safety and durability** mutants must be caught by the seeded fuzzer alone
  (``run_seed(seed)`` for seeds 0..199, stopping at the first seed that reports
  the expected violation, no unit test involved), and by the scenario test that
  pins the rule down where there is one;
* **liveness** mutants break no invariant (nothing unsafe happens, the cluster
  just stalls in one scenario), so scenario tests catch them.

The session ends with a score table ("fuzzer alone: caught X/Y safety mutants").
If a detector stopped failing under its mutant, the test suite would have lost
the power to see that bug.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
import test_election
import test_lease
import test_membership_core
import test_membership_sim
import test_reads
import test_replication
import test_seed_scenario
import test_transfer

from raftpy import AppendEntriesResponse, Config, RaftNode, Ready, Role
from raftpy.errors import ConfigurationChangeInProgress, LeadershipTransferInProgress, NotLeader
from raftpy.membership import EMPTY, Member, MemberRole
from raftpy.messages import (
    AppendEntries,
    Message,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
)
from raftpy.ready import ReadIndexReady, SnapshotMeta
from raftpy.sim.fuzz import run_seed

FUZZ_SEEDS = 200

Plant = Callable[[pytest.MonkeyPatch], None]


@dataclass(frozen=True)
class Mutant:
    name: str
    plant: Plant
    expect: tuple[str, ...]
    """A fuzzer catch is an InvariantViolation whose text holds one of these."""
    unit: Callable[[], None] | None = None
    """A scenario test that must fail under the mutant."""
    fuzzer_reaches_it: bool = True
    """False: the fuzzer is known not to reach the bug yet (the test xfails)."""


# ---------------------------------------------------------------- planted bugs


def ack_before_fsync(mp: pytest.MonkeyPatch) -> None:
    original = RaftNode._send

    def send(self: RaftNode, msg: Message) -> None:
        if isinstance(msg, AppendEntriesResponse):
            self._messages.append(msg)
        else:
            original(self, msg)

    mp.setattr(RaftNode, "_send", send)


def vote_grant_before_fsync(mp: pytest.MonkeyPatch) -> None:
    original = RaftNode._send

    def send(self: RaftNode, msg: Message) -> None:
        if isinstance(msg, RequestVoteResponse):
            self._messages.append(msg)
        else:
            original(self, msg)

    mp.setattr(RaftNode, "_send", send)


def candidate_leads_before_its_vote_is_durable(mp: pytest.MonkeyPatch) -> None:
    # The candidate counts its own vote, and may lead, as soon as it campaigns,
    # while its RequestVotes (which leave before the save) are answered.
    original = RaftNode._become_candidate

    def become_candidate(self: RaftNode, *, pre_vote: bool, disrupt_leader: bool) -> None:
        original(self, pre_vote=pre_vote, disrupt_leader=disrupt_leader)
        if self._candidacy is not None and self.role is Role.CANDIDATE:
            self._candidacy.vote_durable = True
            if self.is_voter:
                self._votes[self.id] = True
                self._tally_votes()

    mp.setattr(RaftNode, "_become_candidate", become_candidate)


def term_from_append_entries_not_persisted(mp: pytest.MonkeyPatch) -> None:
    # _become_follower forgets to mark the hard state dirty when an AppendEntries
    # raises the term: a restart returns to the old term, where a deposed leader's
    # entries are accepted again.
    original = RaftNode.step

    def step(self: RaftNode, msg: Message, now: float) -> None:
        rises = isinstance(msg, AppendEntries) and msg.term > self.current_term
        was_dirty = self._hard_state_dirty
        original(self, msg, now)
        if rises and not was_dirty:
            self._hard_state_dirty = False

    mp.setattr(RaftNode, "step", step)


def vote_not_persisted(mp: pytest.MonkeyPatch) -> None:
    # voted_for is set but the hard state is not marked dirty by the vote (a term
    # change in the same step still persists it, by luck).
    original = RaftNode._handle_request_vote

    def handle(self: RaftNode, msg: RequestVote) -> None:
        was_dirty = self._hard_state_dirty
        original(self, msg)
        if not msg.pre_vote and self.voted_for == msg.src and not was_dirty:
            self._hard_state_dirty = False

    mp.setattr(RaftNode, "_handle_request_vote", handle)


def double_vote(mp: pytest.MonkeyPatch) -> None:
    original = RaftNode._handle_request_vote

    def forget_vote(self: RaftNode, msg: RequestVote) -> None:
        if not msg.pre_vote:
            self.voted_for = None
            self.leader_id = None
        original(self, msg)

    mp.setattr(RaftNode, "_handle_request_vote", forget_vote)


def commit_earlier_term_by_counting(mp: pytest.MonkeyPatch) -> None:
    def commit_by_counting(self: RaftNode) -> None:
        matches = sorted((self.log.persisted_index if v == self.id
                          else self.progress[v].match_index for v in self.voters),
                         reverse=True)
        self.commit_index = max(self.commit_index, matches[self.quorum - 1])

    mp.setattr(RaftNode, "_maybe_commit", commit_by_counting)


def follower_commits_past_what_it_verified(mp: pytest.MonkeyPatch) -> None:
    original = RaftNode._ack

    def trust_leader_commit(self: RaftNode, leader: int, match_index: int, leader_commit: int,
                            last_new: int) -> None:
        original(self, leader, match_index, leader_commit,
                 max(last_new, min(leader_commit, self.log.last_index)))

    mp.setattr(RaftNode, "_ack", trust_leader_commit)


def leader_rewrites_its_own_entries(mp: pytest.MonkeyPatch) -> None:
    # A leader "coalesces" a new proposal into its last, uncommitted entry of its
    # own term: followers may already have acknowledged the old one.
    original = RaftNode.propose_many

    def propose_many(self: RaftNode, commands: Any, now: float) -> Any:
        log = self.log
        if (self.role is Role.LEADER and self._transfer is None
                and log.last_index > max(self.commit_index, log.snapshot_index)
                and log.last_term == self.current_term):
            log.truncate_from(log.last_index)
        return original(self, commands, now)

    mp.setattr(RaftNode, "propose_many", propose_many)


def apply_an_entry_twice(mp: pytest.MonkeyPatch) -> None:
    # Off by one: the committed slice starts at applied_index, not applied_index + 1.
    original = RaftNode.ready

    def ready(self: RaftNode) -> Ready:
        applied = self.applied_index
        out = original(self)
        if out.committed and applied > self.log.snapshot_index:
            out.committed.insert(0, self.log.entry(applied))
        return out

    mp.setattr(RaftNode, "ready", ready)


def commit_index_moves_back(mp: pytest.MonkeyPatch) -> None:
    # The follower assigns min(leader_commit, last new entry) without keeping the max.
    original = RaftNode._ack

    def ack(self: RaftNode, leader: int, match_index: int, leader_commit: int,
            last_new: int) -> None:
        original(self, leader, match_index, leader_commit, last_new)
        self.commit_index = max(min(leader_commit, last_new), self.log.snapshot_index)

    mp.setattr(RaftNode, "_ack", ack)


# ---------------------------------------------------------------- membership


def configuration_applied_on_commit(mp: pytest.MonkeyPatch) -> None:
    # The configuration comes into force when its entry commits, not when it is
    # appended (what the dissertation warns against, §4.1).
    def use_committed(self: RaftNode) -> None:
        configuration, _ = self._configurations.at(self.commit_index)
        was_voter = self.id in self.voters
        self.voters = configuration.voters
        self.learners = configuration.standbys
        if self.role is Role.LEADER:
            self._sync_progress()
        elif was_voter != (self.id in self.voters):
            self._reset_election_timer()

    original = RaftNode.ready

    def ready(self: RaftNode) -> Ready:
        use_committed(self)
        return original(self)

    mp.setattr(RaftNode, "_use_configuration", use_committed)
    mp.setattr(RaftNode, "ready", ready)


def _check_can_change(self: RaftNode, *, one_at_a_time: bool, own_term_first: bool) -> None:
    if self.role is not Role.LEADER:
        raise NotLeader(self.id, self.leader_id)
    if self._transfer is not None:
        raise LeadershipTransferInProgress(self._transfer.target)
    if self._promotion is not None:
        raise ConfigurationChangeInProgress("catching up")
    if own_term_first and self.log.term_at(self.commit_index) != self.current_term:
        raise ConfigurationChangeInProgress("no entry of this term committed yet")
    if one_at_a_time and self._configurations.uncommitted(self.commit_index):
        raise ConfigurationChangeInProgress("a configuration is not committed yet")


def two_uncommitted_changes(mp: pytest.MonkeyPatch) -> None:
    def check(self: RaftNode) -> None:
        _check_can_change(self, one_at_a_time=False, own_term_first=True)

    mp.setattr(RaftNode, "_check_can_change", check)


def no_2015_correction(mp: pytest.MonkeyPatch) -> None:
    def check(self: RaftNode) -> None:
        _check_can_change(self, one_at_a_time=True, own_term_first=False)

    mp.setattr(RaftNode, "_check_can_change", check)


def standby_ack_counted(mp: pytest.MonkeyPatch) -> None:
    def maybe_commit(self: RaftNode) -> None:
        counted = [m for m in self.voters | self.learners if m == self.id or m in self.progress]
        matches = sorted((self.log.persisted_index if m == self.id
                          else self.progress[m].match_index for m in counted), reverse=True)
        candidate = matches[self.quorum - 1]
        if candidate > self.commit_index and self.log.term_at(candidate) == self.current_term:
            self.commit_index = candidate
            self._leader_commit_advanced()

    mp.setattr(RaftNode, "_maybe_commit", maybe_commit)


def promotion_without_catch_up(mp: pytest.MonkeyPatch) -> None:
    def promote_at_once(self: RaftNode, member_id: int, address: str) -> None:
        self._change(self._configurations.latest.with_member(
            Member(member_id, MemberRole.VOTER, address)))

    mp.setattr(RaftNode, "_start_promotion", promote_at_once)


def snapshot_forgets_configuration(mp: pytest.MonkeyPatch) -> None:
    # The snapshot records no configuration, as if membership were fixed: a node
    # restarted from it falls back to its constructor's member list.
    original = RaftNode.snapshot_meta

    def snapshot_meta(self: RaftNode, index: int) -> SnapshotMeta:
        return dataclasses.replace(original(self, index), configuration=EMPTY,
                                   configuration_index=0)

    mp.setattr(RaftNode, "snapshot_meta", snapshot_meta)


# ---------------------------------------------------------------- reads


def read_without_a_heartbeat_round(mp: pytest.MonkeyPatch) -> None:
    # The leader trusts itself: every read counts as confirmed by a majority.
    mp.setattr(RaftNode, "_read_confirmed_round", lambda self: self._read_round)


def read_before_own_term_commit(mp: pytest.MonkeyPatch) -> None:
    # A new leader answers with its commit index before an entry of its term
    # commits: that index may lag what the previous leader committed.
    def confirm(self: RaftNode) -> None:
        confirmed = self._read_confirmed_round()
        waiting = []
        for read in self._reads:
            if read.round > confirmed:
                waiting.append(read)
            elif read.peer is None:
                self._events.append(ReadIndexReady(read.request_id, self.commit_index))
            else:
                self._send(ReadIndexResponse(term=self.current_term, src=self.id,
                                             dst=read.peer, request_id=read.request_id,
                                             read_index=self.commit_index, success=True))
        self._reads = waiting
        if waiting and self._read_round_wanted and confirmed >= self._read_round:
            self._start_read_round()

    mp.setattr(RaftNode, "_confirm_reads", confirm)


SAFETY = [
    Mutant("ack sent before its fsync", ack_before_fsync,
           ("ack not durable", "durability"),
           test_replication.test_follower_acknowledges_only_after_persisting),
    Mutant("vote grant sent before its fsync", vote_grant_before_fsync,
           ("vote not durable",)),
    Mutant("candidate leads before its vote is durable",
           candidate_leads_before_its_vote_is_durable, ("vote not durable",),
           test_election.test_a_candidate_leads_only_once_its_own_vote_is_saved),
    Mutant("term from AppendEntries not persisted", term_from_append_entries_not_persisted,
           ("term not durable",)),
    Mutant("vote not persisted", vote_not_persisted, ("vote not durable",)),
    Mutant("two votes in one term", double_vote,
           ("vote changed within a term", "election safety"),
           test_election.test_voter_grants_one_vote_per_term),
    Mutant("earlier-term entry committed by counting", commit_earlier_term_by_counting,
           ("leader commit rule", "state machine safety", "leader completeness",
            "durability"),
           test_replication.test_leader_does_not_commit_entries_of_earlier_terms_by_counting),
    # With fast back-off a leader's first batch after a rejection starts at the
    # divergence and truncates the stale suffix, so random plans do not reach the
    # cap (0 of 300 seeds); the stale suffix scenario (raftpy.sim.stale_suffix) gets
    # a heartbeat past it through a snapshot that keeps the follower's suffix.
    Mutant("follower commits past what it verified", follower_commits_past_what_it_verified,
           ("state machine safety", "durability"),
           test_replication.test_heartbeat_does_not_commit_a_followers_stale_suffix),
    Mutant("leader rewrites its own entries", leader_rewrites_its_own_entries,
           ("leader append-only", "log matching")),
    Mutant("entry applied twice", apply_an_entry_twice, ("exactly-once apply",)),
    Mutant("commit index moves back", commit_index_moves_back, ("commit index back",)),
    Mutant("configuration in force on commit", configuration_applied_on_commit,
           ("configuration in force",),
           test_membership_core.test_changes_are_entries_in_force_on_append_and_reported),
    Mutant("two uncommitted configurations", two_uncommitted_changes,
           ("one change at a time",), test_membership_core.test_refusals_name_what_is_wrong),
    Mutant("change before own-term commit (2015)", no_2015_correction,
           ("2015 correction",),
           test_membership_core.test_a_new_leader_changes_nothing_before_its_own_entry_commits),
    Mutant("standby acknowledgment counted", standby_ack_counted, ("durability",)),
    Mutant("promotion without catch-up", promotion_without_catch_up,
           ("promotion without catch-up",),
           test_membership_sim.test_a_member_that_cannot_keep_up_is_not_promoted),
    Mutant("read answered without a heartbeat round", read_without_a_heartbeat_round,
           ("stale read",),
           test_reads.test_a_leader_read_needs_a_majority_round_and_writes_nothing),
    Mutant("read answered before own-term commit", read_before_own_term_commit,
           ("stale read",),
           test_reads.test_a_new_leader_answers_only_after_its_own_entry_commits),
    Mutant("snapshot forgets the configuration", snapshot_forgets_configuration,
           ("snapshot configuration",),
           test_membership_core.test_snapshot_meta_carries_the_configuration_in_force),
]


def run_pre_vote_on_transfer(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(RaftNode, "_campaign", test_seed_scenario.run_pre_vote_on_transfer)


def candidate_ignores_same_term_append_entries(mp: pytest.MonkeyPatch) -> None:
    original = RaftNode._handle_append_entries

    def ignore_when_candidate(self: RaftNode, msg: Any) -> None:
        if self.role is Role.CANDIDATE and msg.term == self.current_term:
            return
        original(self, msg)

    mp.setattr(RaftNode, "_handle_append_entries", ignore_when_candidate)


def transfer_sides_take_a_third_term(mp: pytest.MonkeyPatch) -> None:
    # Neither the campaigning target nor the deposed leader protects the transfer's
    # election from a third candidate's higher term (fuzz seeds 5345 and 5579).
    original = RaftNode._refuses_vote_for_leader_stickiness

    def refuses(self: RaftNode, msg: RequestVote) -> bool:
        if (self.role is Role.CANDIDATE and self.disrupt_leader) or (
                self.role is Role.FOLLOWER and self._transfer is not None):
            return self._heard_from_leader_recently()
        return original(self, msg)

    mp.setattr(RaftNode, "_refuses_vote_for_leader_stickiness", refuses)


def no_leader_stickiness(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(RaftNode, "_refuses_vote_for_leader_stickiness", lambda self, msg: False)


def lease_survives_a_transfer(mp: pytest.MonkeyPatch) -> None:
    def lease_valid_until(self: RaftNode) -> float:
        if self.role is not Role.LEADER or not self.config.lease_reads:
            return -float("inf")
        sent = self._round_sent_at.get(self._read_confirmed_round())
        return -float("inf") if sent is None else sent + self.config.lease_duration

    mp.setattr(RaftNode, "lease_valid_until", property(lease_valid_until))
    mp.setattr(RaftNode, "_end_lease", lambda self: None)


def lease_longer_than_the_election_timeout(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(Config, "lease_duration",
               property(lambda self: 3 * self.election_timeout_max))


# Safety bugs the random plans reach too rarely (a read at a partitioned or
# handing-over leader inside a narrow window); scenario tests pin them down.
SCENARIO_SAFETY: list[tuple[str, Plant, list[Callable[[], None]]]] = [
    ("lease survives a transfer", lease_survives_a_transfer,
     [test_lease.test_a_transfer_ends_the_lease]),
    ("lease longer than it may be", lease_longer_than_the_election_timeout,
     [test_lease.test_a_partitioned_leader_stops_answering_before_another_can_win]),
]


LIVENESS: list[tuple[str, Plant, list[Callable[[], None]]]] = [
    ("transfer target runs a pre-vote", run_pre_vote_on_transfer,
     [partial(test_seed_scenario.test_late_heartbeat_does_not_abort_transfer, 3),
      partial(test_seed_scenario.test_late_heartbeat_does_not_abort_transfer, 5)]),
    ("candidate ignores AppendEntries of its term", candidate_ignores_same_term_append_entries,
     [test_election.test_candidate_steps_down_on_append_entries_of_its_own_term]),
    ("transfer sides take a third term", transfer_sides_take_a_third_term,
     [test_transfer.test_a_transfer_target_ignores_a_third_candidates_higher_term_while_it_campaigns,
      test_transfer.test_a_deposed_leader_ignores_a_third_candidates_higher_term_while_its_target_wins]),
    ("leader stickiness removed", no_leader_stickiness,
     [test_election.test_follower_that_heard_from_leader_refuses_votes_and_pre_votes]),
]


# ---------------------------------------------------------------- the score


class _Score:
    """A pytest plugin registered by the first test that scores: prints the table."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, str, str, str]] = {}
        """mutant -> (kind, caught by, seeds needed, first violation)"""

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.rows:
            return
        tr = terminalreporter
        tr.write_sep("-", "mutation score")
        tr.write_line(f"{'mutant':<44} {'kind':<9} {'caught by':<15} {'seeds':>5}  "
                      f"first violation / detector")
        order = [m.name for m in SAFETY] + [name for name, _, _ in SCENARIO_SAFETY] + [
            name for name, _, _ in LIVENESS]
        for name in order:
            if name in self.rows:
                kind, caught, seeds, what = self.rows[name]
                tr.write_line(f"{name:<44} {kind:<9} {caught:<15} {seeds:>5}  {what}")
        safety = [self.rows[m.name] for m in SAFETY if m.name in self.rows]
        caught = sum(1 for _, by, _, _ in safety if by == "fuzzer alone")
        tr.write_line(f"fuzzer alone: caught {caught}/{len(safety)} safety mutants "
                      f"within {FUZZ_SEEDS} seeds")


@pytest.fixture
def score(request: pytest.FixtureRequest) -> _Score:
    manager = request.config.pluginmanager
    plugin = manager.get_plugin("raftpy-mutation-score")
    if plugin is None:
        plugin = _Score()
        manager.register(plugin, "raftpy-mutation-score")
    assert isinstance(plugin, _Score)
    return plugin


def first_failing_seed(expect: tuple[str, ...]) -> tuple[int, str, list[str]]:
    """The first seed whose run reports a violation matching ``expect`` (-1 if none),
    its text, and the unrelated failures met on the way."""
    other: list[str] = []
    for seed in range(FUZZ_SEEDS):
        report = run_seed(seed)
        failure = report.failure
        if failure is None:
            continue
        if failure.startswith("InvariantViolation") and any(e in failure for e in expect):
            return seed, failure, other
        other.append(f"seed {seed}: {failure}")
    return -1, "", other


def expect_failure(test: Callable[[], None]) -> None:
    # A failed assert (InvariantViolation is one), or a `pytest.raises` that saw
    # nothing raised.
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        test()


# ---------------------------------------------------------------- the tests


@pytest.mark.parametrize("mutant", SAFETY, ids=[m.plant.__name__ for m in SAFETY])
def test_safety_mutant_is_caught_by_the_fuzzer_alone(
        mutant: Mutant, monkeypatch: pytest.MonkeyPatch, score: _Score) -> None:
    mutant.plant(monkeypatch)
    if mutant.unit is not None:
        expect_failure(mutant.unit)
    seed, failure, other = first_failing_seed(mutant.expect)
    if seed < 0:
        score.rows[mutant.name] = ("safety", "unit test only" if mutant.unit else "nothing",
                                   "-", f"(fuzzer: none in {FUZZ_SEEDS} seeds)")
        if not mutant.fuzzer_reaches_it:
            pytest.xfail(f"the fuzzer does not reach '{mutant.name}' yet")
        pytest.fail(f"the fuzzer missed '{mutant.name}' in {FUZZ_SEEDS} seeds; "
                    f"other failures: {other}")
    what = failure.split("): ", 1)[-1]
    score.rows[mutant.name] = ("safety", "fuzzer alone", str(seed + 1), what[:64])


def caught_by_scenarios(name: str, plant: Plant, detectors: list[Callable[[], None]],
                        monkeypatch: pytest.MonkeyPatch, score: _Score,
                        kind_and_detector: tuple[str, str]) -> None:
    """Every detector must fail under the planted mutant; score it."""
    plant(monkeypatch)
    for detector in detectors:
        expect_failure(detector)
    names = sorted({getattr(d, "func", d).__name__ for d in detectors})
    kind, caught_by = kind_and_detector
    score.rows[name] = (kind, caught_by, "-", ", ".join(names)[:64])


@pytest.mark.parametrize("name, plant, detectors", SCENARIO_SAFETY,
                         ids=[plant.__name__ for _, plant, _ in SCENARIO_SAFETY])
def test_scenario_safety_mutant_is_caught(
        name: str, plant: Plant, detectors: list[Callable[[], None]],
        monkeypatch: pytest.MonkeyPatch, score: _Score) -> None:
    caught_by_scenarios(name, plant, detectors, monkeypatch, score,
                        ("safety", "scenario test"))


@pytest.mark.parametrize("name, plant, detectors", LIVENESS,
                         ids=[plant.__name__ for _, plant, _ in LIVENESS])
def test_liveness_mutant_is_caught_by_a_scenario_test(
        name: str, plant: Plant, detectors: list[Callable[[], None]],
        monkeypatch: pytest.MonkeyPatch, score: _Score) -> None:
    caught_by_scenarios(name, plant, detectors, monkeypatch, score, ("liveness", "unit test"))
