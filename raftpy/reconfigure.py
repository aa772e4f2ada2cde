"""Membership changes (Raft chapter 4, Dqlite's raft_add/raft_assign/raft_remove).

Single-server changes: each change adds, removes or re-roles one member, so any
majority of the old voters and any majority of the new ones overlap and no joint
phase is needed. The rules:

* A configuration entry is in force on a node from the moment it is appended,
  and the previous one again if it is cut away (:class:`ConfigurationHistory`).
* One change at a time: refused while a configuration entry is uncommitted or a
  promotion is catching up, and until the leader has committed an entry of its
  own term (the 2015 correction to the dissertation: otherwise two leaders of
  adjacent terms can each commit a different change, and their majorities need
  not overlap). Refused while a leadership transfer is pending; starting a
  transfer cancels a pending promotion.
* Promotion to voter catches up first (§4.2.1): the leader replicates in rounds;
  a round ends when the member holds every entry the leader had when it began.
  A round that completes within ``election_timeout_min`` appends the change;
  after ``max_catch_up_rounds`` rounds, or one round longer than
  ``catch_up_round_timeout``, the promotion fails and nothing changes.
* A leader that removes or demotes itself keeps leading without counting itself
  until the change commits, then steps down (§4.2.2) and sends TimeoutNow to an
  up-to-date voter so that the next election does not wait for a timeout.
"""

from __future__ import annotations

from collections.abc import Sequence

from raftpy.errors import (
    ConfigurationChangeInProgress,
    InvalidMembershipChange,
    LeadershipTransferInProgress,
    NotLeader,
)
from raftpy.membership import (
    Configuration,
    ConfigurationState,
    Member,
    MemberRole,
    configuration_entry,
)
from raftpy.messages import Entry, EntryKind, TimeoutNow
from raftpy.nodestate import NodeState, Promotion
from raftpy.progress import Progress
from raftpy.ready import ConfigurationChanged, LogPosition, PromotionEnded, Role, SnapshotMeta


class MembershipMixin(NodeState):
    """How a node tracks its configuration and how a leader changes it."""

    # ------------------------------------------------------------------ queries

    @property
    def configuration(self) -> ConfigurationState:
        """The configuration in force here, its log index and whether it is committed."""
        history = self._configurations
        index = history.latest_index
        return ConfigurationState(history.latest, index, index <= self.commit_index)

    @property
    def uncommitted_configurations(self) -> int:
        """How many configuration entries this node holds past its commit index (a
        leader never holds more than one)."""
        return self._configurations.uncommitted(self.commit_index)

    def configurations_after(self, index: int) -> int:
        """How many configuration entries this node holds past log ``index``."""
        return self._configurations.uncommitted(index)

    @property
    def promotion_target(self) -> int | None:
        """The member this leader is catching up for promotion to voter, if any."""
        return self._promotion.member_id if self._promotion is not None else None

    def snapshot_meta(self, index: int) -> SnapshotMeta:
        """The metadata of a snapshot taken at applied ``index``: its term and the
        configuration in force there (a driver stores it with the snapshot)."""
        term = self.log.term_at(index)
        if term is None or index > self.applied_index:
            raise ValueError(f"cannot snapshot at {index}: not an applied, held entry")
        configuration, configuration_index = self._configurations.at(index)
        return SnapshotMeta(index, term, configuration, configuration_index)

    # ------------------------------------------------------------------ leader API

    def add_member(self, member_id: int, address: str = "",
                   role: MemberRole = MemberRole.SPARE, *, now: float) -> LogPosition | None:
        """Add a new member (Dqlite's ``raft_add``; a spare unless ``role`` says).

        Returns the position of the configuration entry; for ``role=VOTER`` the
        member is caught up first and ``None`` is returned: the outcome comes as a
        :class:`~raftpy.ready.PromotionEnded` event. Raises :class:`NotLeader`,
        :class:`LeadershipTransferInProgress`, :class:`ConfigurationChangeInProgress`
        or :class:`InvalidMembershipChange` (already a member, bad id).
        """
        self._now = now
        self._check_can_change()
        if type(member_id) is not int or member_id < 1:
            raise InvalidMembershipChange(member_id, "member ids are positive integers")
        if self._configurations.latest.get(member_id) is not None:
            raise InvalidMembershipChange(member_id, "it is a member already")
        if role is MemberRole.VOTER:
            self._start_promotion(member_id, address)
            return None
        return self._change(self._configurations.latest.with_member(
            Member(member_id, role, address)))

    def assign_role(self, member_id: int, role: MemberRole, *, now: float) -> LogPosition | None:
        """Give a member another role (Dqlite's ``raft_assign``).

        Promotion to voter catches the member up first and returns ``None`` (the
        outcome comes as a :class:`~raftpy.ready.PromotionEnded` event); other
        changes return the position of the configuration entry. Demoting the
        leader itself is allowed: it keeps leading until the change commits.
        """
        self._now = now
        self._check_can_change()
        current = self._configurations.latest.get(member_id)
        if current is None:
            raise InvalidMembershipChange(member_id, "it is not a member")
        if current.role is role:
            raise InvalidMembershipChange(member_id, f"it is a {role.name.lower()} already")
        if role is MemberRole.VOTER:
            self._start_promotion(member_id, current.address)
            return None
        return self._change(self._configurations.latest.with_member(
            Member(member_id, role, current.address)))

    def remove_member(self, member_id: int, *, now: float) -> LogPosition:
        """Remove a member (Dqlite's ``raft_remove``). Removing the leader itself is
        allowed: it keeps leading without counting itself until the change commits,
        then steps down."""
        self._now = now
        self._check_can_change()
        if self._configurations.latest.get(member_id) is None:
            raise InvalidMembershipChange(member_id, "it is not a member")
        return self._change(self._configurations.latest.without(member_id))

    def _check_can_change(self) -> None:
        if self.role is not Role.LEADER:
            raise NotLeader(self.id, self.leader_id)
        if self._transfer is not None:
            raise LeadershipTransferInProgress(self._transfer.target)
        if self._promotion is not None:
            raise ConfigurationChangeInProgress(
                f"node {self._promotion.member_id} is catching up for promotion")
        if self.log.term_at(self.commit_index) != self.current_term:
            # The 2015 correction: a new leader first commits its own no-op.
            raise ConfigurationChangeInProgress(
                "this leader has not committed an entry of its term yet")
        history = self._configurations
        if history.uncommitted(self.commit_index):
            raise ConfigurationChangeInProgress(
                f"the configuration at index {history.latest_index} is not committed yet")

    def _change(self, configuration: Configuration) -> LogPosition:
        try:
            configuration.validate()
        except ValueError as exc:
            raise InvalidMembershipChange(None, str(exc)) from None
        entry = configuration_entry(self.log.last_index + 1, self.current_term, configuration)
        self.log.append(entry)
        self._configurations.add((entry,))
        self._log_trace(f"append configuration at {entry.index}: {configuration.describe()}")
        self._use_configuration()
        self._replicate_to_all()
        self._maybe_commit()  # a single voter commits at once
        return LogPosition(entry.index, entry.term)

    # ------------------------------------------------------------------ promotion

    def _start_promotion(self, member_id: int, address: str) -> None:
        last = self.log.last_index
        self._promotion = Promotion(member_id, address, started_at=self._now,
                                    round_started_at=self._now, round_target=last)
        self._log_trace(f"promote {member_id}: catch-up round 1 to index {last}")
        self._sync_progress()
        self._send_append(member_id)
        self._promotion_progress()

    def _promotion_progress(self) -> None:
        """The promotee acknowledged entries: end a round, maybe promote it."""
        promotion = self._promotion
        if promotion is None or self.role is not Role.LEADER:
            return
        if self.progress[promotion.member_id].match_index < promotion.round_target:
            return
        took = self._now - promotion.round_started_at
        if took < self.config.election_timeout_min:
            self._promotion = None
            member = Member(promotion.member_id, MemberRole.VOTER, promotion.address)
            position = self._change(self._configurations.latest.with_member(member))
            self._log_trace(f"promote {member.id}: caught up in {promotion.rounds} round(s)")
            self._events.append(PromotionEnded(member.id, True, "caught up", position.index,
                                               promotion.rounds))
        elif promotion.rounds >= self.config.max_catch_up_rounds:
            self._end_promotion(f"still {took * 1000:.0f} ms behind after "
                                f"{promotion.rounds} catch-up rounds")
        else:
            promotion.rounds += 1
            promotion.round_started_at = self._now
            promotion.round_target = self.log.last_index
            self._log_trace(f"promote {promotion.member_id}: catch-up round {promotion.rounds} "
                            f"to index {promotion.round_target}")

    def _tick_promotion(self, now: float) -> None:
        promotion = self._promotion
        if promotion is None:
            return
        limit = self.config.catch_up_round_timeout
        if now - promotion.round_started_at >= limit:
            self._end_promotion(f"catch-up round {promotion.rounds} took longer than "
                                f"{limit:g} s")

    def _promotion_next_deadline(self) -> float:
        promotion = self._promotion
        if promotion is None:
            return float("inf")
        return promotion.round_started_at + self.config.catch_up_round_timeout

    def _end_promotion(self, reason: str) -> None:
        """The promotion failed: nothing changes (a spare stops being replicated)."""
        promotion = self._promotion
        if promotion is None:
            return
        self._promotion = None
        self._log_trace(f"promotion of {promotion.member_id} failed: {reason}")
        self._events.append(PromotionEnded(promotion.member_id, False, reason, 0,
                                           promotion.rounds))
        if self.role is Role.LEADER:
            self._sync_progress()

    # ------------------------------------------------------------------ tracking

    def _use_configuration(self) -> None:
        """Put the latest configuration in force: voters, replication targets and
        whether this node may campaign."""
        latest = self._configurations.latest
        was_voter = self.id in self.voters
        self.voters = latest.voters
        self.learners = latest.standbys
        if self.role is Role.LEADER:
            self._sync_progress()
        elif was_voter != (self.id in self.voters):
            self._reset_election_timer()

    def _sync_progress(self) -> None:
        """A leader replicates to voters, standbys and a member being promoted."""
        wanted = set(self._configurations.latest.replicated)
        if self._promotion is not None:
            wanted.add(self._promotion.member_id)
        wanted.discard(self.id)
        for gone in [p for p in self.progress if p not in wanted]:
            del self.progress[gone]
        next_index = self.log.last_index + 1
        for peer in sorted(wanted - self.progress.keys()):
            self.progress[peer] = Progress(match_index=0, next_index=next_index)
            self._send_append(peer)

    def _log_appended(self, entries: Sequence[Entry], first_new: int) -> None:
        """A follower merged ``entries`` into its log, replacing everything from
        ``first_new`` on: configurations cut away go, appended ones come into force."""
        history = self._configurations
        if history.latest_index >= first_new or any(
                e.kind is EntryKind.CONFIGURATION for e in entries):
            history.cut_from(first_new)
            history.add([e for e in entries if e.index >= first_new])
            self._use_configuration()

    def _log_replaced_by_snapshot(self, meta: SnapshotMeta, tail_dropped: bool) -> None:
        history = self._configurations
        if tail_dropped:
            history.cut_from(meta.index + 1)
        history.compact(meta.index, meta.configuration, meta.configuration_index)
        self._use_configuration()

    def _may_campaign(self) -> bool:
        """A voter campaigns; so does a node that a not yet committed change removed
        or demoted while it was a voter. Otherwise a leader that removed itself and
        lost leadership before the change committed could be the only node holding
        the change, refusing its vote to the others (their logs are behind) and never
        campaigning itself: no leader ever again (fuzz seed 92 with --membership).
        Campaigning is always safe: it wins only with a majority of the voters of
        the configuration in force, its own vote not counted."""
        if self.id in self.voters:
            return True
        history = self._configurations
        index = history.latest_index
        if index <= self.commit_index or index == 0:
            return False
        previous, _ = history.at(index - 1)
        return self.id in previous.voters

    def _configuration_report_due(self) -> bool:
        reported = self._configuration_reported
        if reported is None:
            return True
        history = self._configurations
        index = history.latest_index
        return reported[0] != index or reported[1] != (index <= self.commit_index) or (
            reported[2] is not history.latest)

    def _report_configuration(self) -> None:
        """Emit :class:`ConfigurationChanged` when the configuration in force or its
        commitment changed since the last report."""
        history = self._configurations
        state = (history.latest_index, history.latest_index <= self.commit_index,
                 history.latest)
        changed = state != self._configuration_reported  # by value
        # Keep the object itself: the cheap check in has_ready() compares identity.
        self._configuration_reported = state
        if changed:
            self._events.append(ConfigurationChanged(state[2], state[0], state[1]))

    def _leader_commit_advanced(self) -> None:
        """The leader's commit index moved: a transfer's fence may be in, and a
        change removing or demoting this leader may be committed (§4.2.2)."""
        if self._transfer is not None:
            self._transfer_fence_committed()
        if self._reads:
            self._confirm_reads()  # waiting for an entry of this term to commit
        if self.id not in self.voters and self.role is Role.LEADER and \
                self._configurations.latest_index <= self.commit_index:
            self._step_down_after_own_removal()

    def _step_down_after_own_removal(self) -> None:
        caught_up = [v for v in sorted(self.voters)
                 if self.progress.get(v) is not None
                 and self.progress[v].match_index == self.log.last_index]
        self._log_trace("step down: no longer a voter in the committed configuration")
        if caught_up:
            # Hand over at once instead of letting the others wait out a timeout.
            self._send(TimeoutNow(term=self.current_term, src=self.id, dst=caught_up[0],
                                  last_log_index=self.log.last_index,
                                  last_log_term=self.log.last_term))
        self._become_follower(self.current_term, None)

