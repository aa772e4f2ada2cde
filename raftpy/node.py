"""The sans-I/O Raft node: messages and time in, a :class:`~raftpy.ready.Ready` out.

The node never reads a clock, opens a socket or starts a thread. Every call that
can change state takes ``now`` (seconds, any monotonic origin); randomness comes
from the ``random.Random`` it is given. The shape follows etcd raft: one entry
point for messages (:meth:`RaftNode.step`) that applies the term rules common to
every role first, then per-role handlers; role changes happen only in the
``_become_*`` methods; output is drained with :meth:`RaftNode.ready` and
acknowledged with :meth:`RaftNode.advance`.

The per-role logic lives beside this module: :mod:`raftpy.election` (votes,
pre-vote, TimeoutNow), :mod:`raftpy.follower` (accepting the leader's log),
:mod:`raftpy.replication` (the leader's side and the commit rule) and
:mod:`raftpy.transfer` (leadership transfer); :mod:`raftpy.nodestate` declares
the state they share.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from raftpy.config import Config
from raftpy.election import ElectionMixin
from raftpy.errors import (
    InvalidTransferTarget,
    LeadershipTransferInProgress,
    NotLeader,
)
from raftpy.failover import FailoverMixin
from raftpy.follower import FollowerMixin
from raftpy.log import RaftLog
from raftpy.membership import EMPTY, Configuration, ConfigurationHistory
from raftpy.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    ReadIndex,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from raftpy.metrics import CoreCounters
from raftpy.nodestate import Candidacy, PendingTransfer, Promotion
from raftpy.progress import Progress, ProgressState
from raftpy.reads import ReadsMixin
from raftpy.ready import (
    Event,
    HardState,
    LeaderChanged,
    LogPosition,
    Ready,
    Role,
    SnapshotMeta,
)
from raftpy.reconfigure import MembershipMixin
from raftpy.replication import LeaderMixin
from raftpy.snapshots import SnapshotReceiver
from raftpy.transfer import TransferMixin

_INF = float("inf")

Trace = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class PersistentState:
    """What a node restarts from: exactly what its driver persisted."""

    hard_state: HardState = field(default_factory=lambda: HardState(0, None))
    entries: tuple[Entry, ...] = ()
    snapshot: SnapshotMeta | None = None


class RaftNode(ElectionMixin, FollowerMixin, LeaderMixin, TransferMixin, MembershipMixin,
               ReadsMixin, FailoverMixin):
    """One Raft server's protocol state machine.

    Membership comes from the node's log and snapshot (see :mod:`raftpy.membership`
    and :mod:`raftpy.storage.bootstrap`): the latest configuration entry held is in force.
    A node whose state holds no configuration never campaigns; it waits for a
    leader to add it. ``voters``/``learners`` (standbys) or ``configuration`` give a
    fixed configuration for state that holds none (tests, fixed clusters); the log,
    once it holds a configuration, always wins over them.

    Drive it with :meth:`step` (a message arrived), :meth:`tick` (time passed; call
    it at :meth:`next_deadline`), :meth:`propose`, :meth:`transfer_leadership`,
    the membership calls and (opt-in) :meth:`leader_connection_lost`; drain
    :meth:`ready` and :meth:`advance`.
    """

    def __init__(
        self,
        node_id: int,
        voters: Iterable[int] | None = None,
        *,
        learners: Iterable[int] = (),
        configuration: Configuration | None = None,
        config: Config | None = None,
        state: PersistentState | None = None,
        rng: random.Random | None = None,
        now: float = 0.0,
        trace: Trace | None = None,
    ) -> None:
        self.id = node_id
        fixed = configuration
        if voters is not None:
            if configuration is not None:
                raise ValueError("give voters/learners or a configuration, not both")
            voter_set, learner_set = frozenset(voters), frozenset(learners)
            if voter_set & learner_set:
                raise ValueError(f"ids {sorted(voter_set & learner_set)} are both voter "
                                 "and learner")
            if node_id not in voter_set | learner_set:
                raise ValueError(f"node {node_id} is not a member of its own configuration")
            fixed = Configuration.voters_only(voter_set, learner_set)
        self.config = config if config is not None else Config()
        # Unseeded by default: two processes must not draw the same election timeouts.
        # Pass a seeded random.Random for a deterministic run (the simulator does).
        self._rng = rng if rng is not None else random.Random()
        self._trace = trace
        self.counters = CoreCounters()
        """Protocol decisions counted so far (:mod:`raftpy.metrics`)."""
        state = state if state is not None else PersistentState()
        snap = state.snapshot
        self.current_term = state.hard_state.term
        self.voted_for = state.hard_state.voted_for
        self.log = RaftLog(state.entries, snap.index if snap else 0, snap.term if snap else 0)
        self._configurations = ConfigurationHistory(
            snap.configuration if snap else EMPTY, snap.configuration_index if snap else 0,
            self.log.entries())
        self._configurations.fallback = fixed if fixed is not None else EMPTY
        self.voters: frozenset[int] = self._configurations.latest.voters
        self.learners: frozenset[int] = self._configurations.latest.standbys
        self._promotion: Promotion | None = None
        self._configuration_reported: tuple[int, bool, Configuration] | None = None
        self.commit_index = self.log.snapshot_index
        self.applied_index = self.log.snapshot_index
        self.role = Role.FOLLOWER
        self.leader_id: int | None = None
        self._now = now
        self._last_leader_contact = -_INF
        self._election_deadline = _INF
        self._heartbeat_deadline = _INF
        self._check_quorum_deadline = _INF
        # Candidate state.
        self.in_pre_vote = False
        self.disrupt_leader = False
        self._early_timeout_now: tuple[TimeoutNow, float] | None = None
        self._votes: dict[int, bool] = {}
        self._candidacy: Candidacy | None = None
        self._round_started_at = -_INF
        self._round_answered = False
        self._vote_round_trip: float | None = None
        # Leader state.
        self.progress: dict[int, Progress] = {}
        self._transfer: PendingTransfer | None = None
        # Follower state: a snapshot being received in chunks.
        self._snapshot_receiver: SnapshotReceiver | None = None
        # Snapshot held by the driver for sending (leader) — set by the driver.
        self._snapshot_source: Callable[[], tuple[SnapshotMeta, bytes] | None] | None = None
        # Output not yet drained.
        self._messages: list[Message] = []
        self._messages_after_persist: list[Message] = []
        self._events: list[Event] = []
        self._hard_state_dirty = False
        self._pending_snapshot: tuple[SnapshotMeta, bytes] | None = None
        # Reads (ReadIndex, raftpy.reads).
        self._read_round = 0
        self._read_acks: dict[int, int] = {}
        self._reads = []
        self._read_round_wanted = False
        self._remote_reads: dict[int, float] = {}
        self._echo_round = 0
        self._round_sent_at: dict[int, float] = {}
        self._lease_floor = 0
        self._started_at = now
        # Early pre-vote (raftpy.failover).
        self._early_pre_vote_at = -_INF
        self.early_pre_votes = 0
        self._use_configuration()
        self._reset_election_timer()

    # ------------------------------------------------------------------ queries

    @property
    def term(self) -> int:
        """The current term (alias of ``current_term``)."""
        return self.current_term

    @property
    def quorum(self) -> int:
        """How many voters make a majority."""
        return len(self.voters) // 2 + 1

    @property
    def is_voter(self) -> bool:
        """Whether this node votes (and may campaign)."""
        return self.id in self.voters

    @property
    def transfer_target(self) -> int | None:
        """The target of the leadership transfer this node is running, if any."""
        return self._transfer.target if self._transfer else None

    def next_deadline(self) -> float:
        """The time at which :meth:`tick` has work to do (``inf``: nothing scheduled)."""
        # Hot path (the simulator asks after every event): the optional parts
        # (promotion, remote reads, transfer) are only consulted when present.
        if self.role is Role.LEADER:
            deadline = self._heartbeat_deadline
            if self._check_quorum_deadline < deadline:
                deadline = self._check_quorum_deadline
            if self._promotion is not None:
                deadline = min(deadline, self._promotion_next_deadline())
        else:
            deadline = self._election_deadline
            if self._remote_reads:
                deadline = min(deadline, self._reads_next_deadline())
        if self._transfer is not None:
            deadline = min(deadline, self._transfer_next_deadline())
        return deadline

    def has_ready(self) -> bool:
        """Whether :meth:`ready` has anything for the driver."""
        return bool(
            self._messages
            or self._messages_after_persist
            or self._events
            or self._hard_state_dirty
            or self.commit_index > self.applied_index
            or self._pending_snapshot is not None
            or self.log.has_unstable()
            or self._configuration_report_due()
        )

    def ready(self) -> Ready:
        """Drain the pending output; see :class:`~raftpy.ready.Ready` for how to handle it."""
        if self._configuration_report_due():
            self._report_configuration()
        ready = Ready(
            hard_state=HardState(self.current_term, self.voted_for)
            if self._hard_state_dirty
            else None,
            entries=self.log.take_unstable(),
            messages=self._messages,
            messages_after_persist=self._messages_after_persist,
            events=self._events,
            snapshot=self._pending_snapshot,
        )
        if self.commit_index > self.applied_index:
            ready.committed = self.log.slice(self.applied_index + 1, self.commit_index + 1)
            self.applied_index = self.commit_index
        self._messages = []
        self._messages_after_persist = []
        self._events = []
        self._hard_state_dirty = False
        self._pending_snapshot = None
        return ready

    def advance(self, ready: Ready, now: float | None = None) -> None:
        """The driver has persisted ``ready``: entries in it now count as durable here."""
        if now is not None:
            self._now = now
        if ready.entries:
            self.log.persisted(ready.entries[-1])
            if self.role is Role.LEADER:
                self._maybe_commit()
        hard = ready.hard_state
        candidacy = self._candidacy
        if (hard is not None and candidacy is not None and not candidacy.vote_durable
                and self.role is Role.CANDIDATE and hard.term == self.current_term
                and hard.voted_for == self.id):
            candidacy.vote_durable = True
            if self.is_voter:
                self._votes[self.id] = True
            self._tally_votes()

    # ------------------------------------------------------------------ local API

    def propose(self, data: bytes, now: float) -> LogPosition:
        """Append a command to the leader's log and start replicating it.

        Returns where it went: it is committed once an entry with this index *and
        term* is committed. Raises :class:`NotLeader` or
        :class:`LeadershipTransferInProgress`.
        """
        return self.propose_many((data,), now)[0]

    def propose_many(self, commands: Iterable[bytes], now: float) -> list[LogPosition]:
        """Propose several commands at once: one replication round carries them all."""
        self._now = now
        if self.role is not Role.LEADER:
            raise NotLeader(self.id, self.leader_id)
        if self._transfer is not None and self._transfer.blocks_writes:
            raise LeadershipTransferInProgress(self._transfer.target)
        term = self.current_term
        out = []
        for data in commands:
            index = self.log.last_index + 1
            self.log.append(Entry(index, term, data))
            out.append(LogPosition(index, term))
        self.counters.proposals += len(out)
        self._replicate_to_all()
        return out

    def transfer_leadership(self, target: int | None, now: float) -> int:
        """Hand leadership to ``target`` (or the most up-to-date voter if ``None``).

        Returns the chosen target. The outcome arrives later as a
        :class:`~raftpy.ready.TransferEnded` event. Raises :class:`NotLeader`,
        :class:`LeadershipTransferInProgress` or :class:`InvalidTransferTarget`.
        """
        self._now = now
        if self.role is not Role.LEADER:
            raise NotLeader(self.id, self.leader_id)
        if self._transfer is not None:
            raise LeadershipTransferInProgress(self._transfer.target)
        if target is None:
            target = self._pick_transfer_target()
        elif target == self.id:
            raise InvalidTransferTarget(target, "it is the leader itself")
        elif target not in self.voters:
            if self._configurations.latest.get(target) is not None:
                raise InvalidTransferTarget(target, "it is not a voter")
            raise InvalidTransferTarget(target, "no such node in the configuration")
        if self._promotion is not None:
            self._end_promotion("cancelled by a leadership transfer")
        self._start_transfer(target)
        if self._transfer is not None and not self._transfer.timeout_now_sent:
            self._send_append(target)
        return target

    def tick(self, now: float) -> None:
        """Let time pass: fire whichever timers are due at ``now``."""
        self._now = now
        self._tick_transfer(now)
        if self.role is Role.LEADER:
            self._tick_promotion(now)
            self._tick_leader(now)
            return
        self._tick_reads(now)
        if now >= self._election_deadline:
            self._log_trace("election timeout")
            self._campaign(disrupt_leader=False)

    def set_snapshot_source(
        self, source: Callable[[], tuple[SnapshotMeta, bytes] | None] | None
    ) -> None:
        """Give the leader a way to fetch the latest snapshot for lagging followers."""
        self._snapshot_source = source

    def compact(self, index: int) -> None:
        """The driver took a snapshot at ``index`` (applied): forget entries up to it."""
        term = self.log.term_at(index)
        if term is None or index > self.applied_index:
            raise ValueError(f"cannot compact at {index}: not an applied, held entry")
        self._configurations.compact(index)
        self.log.compact(index, term)

    # ------------------------------------------------------------------ step

    def step(self, msg: Message, now: float) -> None:
        """Handle one incoming message."""
        self._now = now
        if msg.term > self.current_term:
            if isinstance(msg, RequestVote):
                if self._refuses_vote_for_leader_stickiness(msg):
                    self._log_trace(f"reject vote from {msg.src}: heard from leader recently")
                    self._send(RequestVoteResponse(
                        term=self.current_term, src=self.id, dst=msg.src,
                        vote_granted=False, pre_vote=msg.pre_vote))
                    return
                if not msg.pre_vote:
                    self._become_follower(msg.term, None)
            elif isinstance(msg, RequestVoteResponse) and msg.pre_vote and msg.vote_granted:
                pass  # a granted pre-vote echoes the term we asked about; nobody moved
            else:
                leader = msg.src if isinstance(msg, (AppendEntries, InstallSnapshot)) else None
                self._become_follower(msg.term, leader)
        elif msg.term < self.current_term:
            self._step_stale(msg)
            return

        kind = type(msg)
        if kind is AppendEntries:  # the common cases first (same dispatch as below)
            self._handle_append_entries(msg)  # type: ignore[arg-type]
        elif kind is AppendEntriesResponse and self.role is Role.LEADER:
            self._step_leader(msg)
        elif isinstance(msg, RequestVote):
            self._handle_request_vote(msg)
        elif isinstance(msg, AppendEntries):
            self._handle_append_entries(msg)
        elif isinstance(msg, InstallSnapshot):
            self._handle_install_snapshot(msg)
        elif isinstance(msg, TimeoutNow):
            self._handle_timeout_now(msg)
        elif isinstance(msg, ReadIndex):
            self._handle_read_index(msg)
        elif isinstance(msg, ReadIndexResponse):
            self._handle_read_index_response(msg)
        elif self.role is Role.LEADER:
            self._step_leader(msg)
        elif self.role is Role.CANDIDATE:
            self._step_candidate(msg)
        # A follower ignores stray responses.

    def _step_stale(self, msg: Message) -> None:
        """A message from an older term. Tell a stale leader or candidate our term so
        it steps down (Raft §3.3); that is how an old leader learns a transfer won."""
        if isinstance(msg, (AppendEntries, InstallSnapshot)):
            self._log_trace(f"reject stale {type(msg).__name__} from {msg.src} (term {msg.term})")
            self._send(AppendEntriesResponse(
                term=self.current_term, src=self.id, dst=msg.src, success=False,
                reject_index=getattr(msg, "prev_log_index", 0)))
        elif isinstance(msg, RequestVote):
            self._send(RequestVoteResponse(
                term=self.current_term, src=self.id, dst=msg.src, vote_granted=False,
                pre_vote=msg.pre_vote))
        elif isinstance(msg, ReadIndex):
            # Tell the asker its leader is gone (our term is newer), so it fails fast.
            self._send(ReadIndexResponse(term=self.current_term, src=self.id, dst=msg.src,
                                         request_id=msg.request_id, read_index=0,
                                         success=False))

    # ------------------------------------------------------------------ role changes

    def _become_follower(self, term: int, leader: int | None) -> None:
        if self._promotion is not None:
            self._end_promotion("this node lost leadership")
        if self._transfer is not None and self.role is Role.LEADER:
            self._transfer.deposed_at = self._now
        if term > self.current_term:
            self.current_term = term
            self.counters.terms_seen += 1
            self.voted_for = None
            self._hard_state_dirty = True
        was = (self.role, self.leader_id)
        self.role = Role.FOLLOWER
        self.leader_id = leader
        if was != (Role.FOLLOWER, leader):
            self._fail_reads("leadership changed" if leader is None
                             else f"node {leader} leads now")
        self.in_pre_vote = False
        self.disrupt_leader = False
        self._votes = {}
        self._candidacy = None
        self.progress = {}
        if leader is not None:
            self._last_leader_contact = self._now
        self._reset_election_timer()
        if was != (Role.FOLLOWER, leader):
            self._log_trace(f"-> follower, term {term}, leader {leader}")
            self._events.append(LeaderChanged(term, leader))
        if leader is not None:
            self._transfer_learned_leader(leader)

    def _become_candidate(self, *, pre_vote: bool, disrupt_leader: bool) -> None:
        self._fail_reads("this node is campaigning")
        self.role = Role.CANDIDATE
        if self.leader_id is not None:
            self._events.append(LeaderChanged(self.current_term, None))
        self.leader_id = None
        self.in_pre_vote = pre_vote
        self.disrupt_leader = disrupt_leader
        self.progress = {}
        # A real self-vote counts only once it is durable (see advance), and the
        # candidate leads only then, whatever the others answered: it must not lead
        # a term it could forget in a crash.
        # Only a voter's own vote counts (a node may campaign to finish a change
        # that removed it: see _may_campaign).
        self._votes = {self.id: True} if pre_vote and self.is_voter else {}
        self._candidacy = None if pre_vote else Candidacy(started_at=self._now)
        self._round_started_at = self._now
        self._round_answered = False
        if pre_vote:
            self.counters.pre_votes_started += 1
        else:
            self.counters.elections_started += 1
            self.counters.terms_seen += 1
            self.current_term += 1
            self.voted_for = self.id
            self._hard_state_dirty = True
        self._reset_election_timer()
        term = self.current_term + 1 if pre_vote else self.current_term
        self._log_trace(f"-> candidate, {'pre-vote for ' if pre_vote else ''}term {term}"
                        f"{', disrupt_leader' if disrupt_leader else ''}")
        for peer in sorted(self.voters):
            if peer != self.id:
                self._send(RequestVote(
                    term=term, src=self.id, dst=peer, last_log_index=self.log.last_index,
                    last_log_term=self.log.last_term, pre_vote=pre_vote,
                    disrupt_leader=disrupt_leader))
        if pre_vote:
            self._tally_votes()  # a single voter wins its pre-vote at once

    def _become_leader(self) -> None:
        self._fail_reads("this node was elected")  # (nothing is pending on a candidate)
        self.role = Role.LEADER
        self.leader_id = self.id
        self.in_pre_vote = False
        self.disrupt_leader = False
        self._votes = {}
        self._candidacy = None
        self._election_deadline = _INF
        self._heartbeat_deadline = self._now + self.config.heartbeat
        self._check_quorum_deadline = self._now + self.config.election_timeout_max
        last = self.log.last_index
        # Optimistic start: followers usually hold the whole log (always after a
        # transfer), so stream from its end at once; a follower that does not
        # rejects the first message and is probed as usual (replication.py).
        self.progress = {peer: Progress(match_index=0, next_index=last + 1,
                                        state=ProgressState.REPLICATE, assumed_index=last)
                         for peer in sorted(self._configurations.latest.replicated)
                         if peer != self.id}
        self._round_sent_at = {}
        self.counters.elections_won += 1
        self._log_trace(f"-> leader, term {self.current_term}")
        self._events.append(LeaderChanged(self.current_term, self.id))
        if self._transfer is not None:
            self._end_transfer(False, "this node was elected again", self.id)
        # Raft §5.4.2: a no-op of the new term lets earlier entries commit promptly.
        self._append_own(b"", EntryKind.NOOP)

    def _append_own(self, data: bytes, kind: EntryKind) -> Entry:
        entry = Entry(self.log.last_index + 1, self.current_term, data, kind)
        self.log.append(entry)
        self._replicate_to_all()
        return entry

    # ------------------------------------------------------------------ helpers

    def _reset_election_timer(self) -> None:
        cfg = self.config
        if not self._may_campaign():
            self._election_deadline = _INF
            return
        self._election_deadline = self._now + self._rng.uniform(
            cfg.election_timeout_min, cfg.election_timeout_max)

    def _send(self, msg: Message) -> None:
        # Raft needs votes and acknowledgements to wait for the fsync of what they
        # promise (raft-rs' persisted messages); requests may leave at once. That
        # includes a candidate's RequestVote (as in etcd raft): it promises nothing,
        # and the candidate's own vote counts only once durable (advance), so it
        # never leads a term it could forget in a crash; its vote save overlaps the
        # voters' round trip instead of coming before it.
        if isinstance(msg, (AppendEntriesResponse, InstallSnapshotResponse)) or (
            isinstance(msg, RequestVoteResponse) and not msg.pre_vote
        ):
            self._messages_after_persist.append(msg)
        else:
            self._messages.append(msg)

    def _log_trace(self, what: str) -> None:
        if self._trace is not None:
            self._trace(f"[{self._now:.3f}] {self.id} {what}")
