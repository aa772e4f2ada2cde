"""The sans-I/O Raft node: messages and time in, a :class:`~raftpy.ready.Ready` out.

The node never reads a clock, opens a socket or starts a thread. Every call that
can change state takes ``now`` (seconds, any monotonic origin); randomness comes
from the ``random.Random`` it is given. The shape follows etcd raft: one entry
point for messages (:meth:`RaftNode.step`) that applies the term rules common to
every role first, then per-role handlers; role changes happen only in the
``_become_*`` methods; output is drained with :meth:`RaftNode.ready` and
acknowledged with :meth:`RaftNode.advance`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from raftpy.config import Config
from raftpy.errors import (
    InvalidTransferTarget,
    LeadershipTransferInProgress,
    NotLeader,
)
from raftpy.log import RaftLog
from raftpy.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from raftpy.progress import Progress, ProgressState
from raftpy.ready import (
    Event,
    HardState,
    LeaderChanged,
    LogPosition,
    Ready,
    Role,
    SnapshotMeta,
    TransferEnded,
)
from raftpy.snapshots import SnapshotReceiver

_INF = float("inf")

Trace = Callable[[str], None]


@dataclass(slots=True)
class _Transfer:
    """A pending leadership transfer started on this node."""

    target: int
    started_at: float
    deadline: float
    timeout_now_sent: bool = False


@dataclass(frozen=True, slots=True)
class PersistentState:
    """What a node restarts from: exactly what its driver persisted."""

    hard_state: HardState = field(default_factory=lambda: HardState(0, None))
    entries: tuple[Entry, ...] = ()
    snapshot: SnapshotMeta | None = None


class RaftNode:
    """One Raft server's protocol state machine.

    ``voters`` lists every voting member (including this node when it votes);
    ``learners`` lists non-voting members, which replicate but never vote or
    campaign. Drive it with :meth:`step` (a message arrived), :meth:`tick` (time
    passed; call it at :meth:`next_deadline`), :meth:`propose` and
    :meth:`transfer_leadership`; drain :meth:`ready` and :meth:`advance`.
    """

    def __init__(
        self,
        node_id: int,
        voters: Iterable[int],
        *,
        learners: Iterable[int] = (),
        config: Config | None = None,
        state: PersistentState | None = None,
        rng: random.Random | None = None,
        now: float = 0.0,
        trace: Trace | None = None,
    ) -> None:
        self.id = node_id
        self.voters = frozenset(voters)
        self.learners = frozenset(learners)
        if self.voters & self.learners:
            both = sorted(self.voters & self.learners)
            raise ValueError(f"ids {both} are both voter and learner")
        if node_id not in self.voters | self.learners:
            raise ValueError(f"node {node_id} is not a member of its own configuration")
        self.config = config if config is not None else Config()
        self._rng = rng if rng is not None else random.Random(node_id)
        self._trace = trace
        state = state if state is not None else PersistentState()
        snap = state.snapshot
        self.current_term = state.hard_state.term
        self.voted_for = state.hard_state.voted_for
        self.log = RaftLog(state.entries, snap.index if snap else 0, snap.term if snap else 0)
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
        self._votes: dict[int, bool] = {}
        # Leader state.
        self.progress: dict[int, Progress] = {}
        self._transfer: _Transfer | None = None
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
        deadline = self._election_deadline
        if self.role is Role.LEADER:
            deadline = min(self._heartbeat_deadline, self._check_quorum_deadline)
        if self._transfer is not None:
            deadline = min(deadline, self._transfer.deadline)
        return deadline

    def has_ready(self) -> bool:
        """Whether :meth:`ready` has anything for the driver."""
        return bool(
            self._messages
            or self._messages_after_persist
            or self._events
            or self._hard_state_dirty
            or self._pending_snapshot is not None
            or self.log.has_unstable()
            or self.commit_index > self.applied_index
        )

    def ready(self) -> Ready:
        """Drain the pending output; see :class:`~raftpy.ready.Ready` for how to handle it."""
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
        if (hard is not None and self.role is Role.CANDIDATE and not self.in_pre_vote
                and hard.term == self.current_term and hard.voted_for == self.id
                and self.id not in self._votes):
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
        if self._transfer is not None:
            raise LeadershipTransferInProgress(self._transfer.target)
        term = self.current_term
        out = []
        for data in commands:
            index = self.log.last_index + 1
            self.log.append(Entry(index, term, data))
            out.append(LogPosition(index, term))
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
        elif target in self.learners:
            raise InvalidTransferTarget(target, "it is not a voter")
        elif target not in self.voters:
            raise InvalidTransferTarget(target, "no such node in the configuration")
        self._transfer = _Transfer(target, now, now + self.config.transfer_deadline)
        self._log_trace(f"transfer leadership to {target}")
        self._maybe_send_timeout_now()
        if not self._transfer.timeout_now_sent:
            self._send_append(target)
        return target

    def tick(self, now: float) -> None:
        """Let time pass: fire whichever timers are due at ``now``."""
        self._now = now
        if self._transfer is not None and now >= self._transfer.deadline:
            self._end_transfer(False, "timed out")
        if self.role is Role.LEADER:
            self._tick_leader(now)
        elif now >= self._election_deadline:
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
                    self._extend_transfer_for_vote(msg)
                    self._become_follower(msg.term, None)
            elif isinstance(msg, RequestVoteResponse) and msg.pre_vote and msg.vote_granted:
                pass  # a granted pre-vote echoes the term we asked about; nobody moved
            else:
                leader = msg.src if isinstance(msg, (AppendEntries, InstallSnapshot)) else None
                self._become_follower(msg.term, leader)
        elif msg.term < self.current_term:
            self._step_stale(msg)
            return

        if isinstance(msg, RequestVote):
            self._handle_request_vote(msg)
        elif isinstance(msg, AppendEntries):
            self._handle_append_entries(msg)
        elif isinstance(msg, InstallSnapshot):
            self._handle_install_snapshot(msg)
        elif isinstance(msg, TimeoutNow):
            self._handle_timeout_now(msg)
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

    def _refuses_vote_for_leader_stickiness(self, msg: RequestVote) -> bool:
        """Leader stickiness (Raft §9.6): while a node believes a leader is alive it
        refuses votes, so a partitioned server cannot depose a working leader. A real
        vote flagged ``disrupt_leader`` passes: the leader itself asked for it."""
        if msg.disrupt_leader and not msg.pre_vote:
            return False
        if self.role is Role.LEADER:
            # The leader asked this node to take over; grant it the (pre-)vote.
            return not (self._transfer is not None and self._transfer.target == msg.src)
        return self._heard_from_leader_recently()

    def _heard_from_leader_recently(self) -> bool:
        return (
            self.leader_id is not None
            and self._now - self._last_leader_contact < self.config.election_timeout_min
        )

    # ------------------------------------------------------------------ votes

    def _handle_request_vote(self, msg: RequestVote) -> None:
        up_to_date = (msg.last_log_term, msg.last_log_index) >= (
            self.log.last_term, self.log.last_index)
        if msg.pre_vote:
            # Nothing is persisted and no timer is reset for a pre-vote.
            can_vote = msg.term > self.current_term or (
                self.voted_for in (None, msg.src) and self.leader_id is None)
            granted = up_to_date and can_vote and self.is_voter
            if granted and self._concurrent_pre_candidate_yields_not(msg):
                granted = False
            self._log_trace(f"{'grant' if granted else 'reject'} pre-vote to {msg.src}"
                            f" for term {msg.term}")
            self._send(RequestVoteResponse(
                term=msg.term if granted else self.current_term, src=self.id, dst=msg.src,
                vote_granted=granted, pre_vote=True))
            return
        can_vote = self.voted_for == msg.src or (
            self.voted_for is None and self.leader_id is None)
        granted = up_to_date and can_vote and self.is_voter
        if (not granted and self.role is Role.CANDIDATE and not self.in_pre_vote
                and self.voted_for == self.id):
            self._back_off_split_vote()
        if granted:
            self.voted_for = msg.src
            self._hard_state_dirty = True
            self._reset_election_timer()
        self._log_trace(f"{'grant' if granted else 'reject'} vote to {msg.src} in term "
                        f"{self.current_term}")
        self._send(RequestVoteResponse(
            term=self.current_term, src=self.id, dst=msg.src, vote_granted=granted))

    def _concurrent_pre_candidate_yields_not(self, msg: RequestVote) -> bool:
        """Two pre-candidates whose timers fired within a round trip would grant each
        other's pre-vote and then split the real vote; with three voters and one
        down, nobody can win that term. Among concurrent pre-candidates with equal
        logs the lower id goes first: the higher one is refused here and grants the
        lower one's request. (Pre-votes never affect safety, only who tries first.)"""
        return (
            self.role is Role.CANDIDATE
            and self.in_pre_vote
            and msg.term == self.current_term + 1
            and (msg.last_log_term, msg.last_log_index) == (self.log.last_term,
                                                             self.log.last_index)
            and self.id < msg.src
        )

    def _back_off_split_vote(self) -> None:
        """A competing candidate asked for our vote in our own term: the vote may be
        split. Retry after a random delay in [heartbeat, election_timeout_min) instead
        of a whole election timeout, so the faster of the two wins the next term. Not
        sooner than a heartbeat: if the other candidate did win, its first
        AppendEntries must get here before we disrupt it (liveness only)."""
        cfg = self.config
        retry = self._now + self._rng.uniform(cfg.heartbeat, cfg.election_timeout_min)
        self._election_deadline = min(self._election_deadline, retry)

    def _step_candidate(self, msg: Message) -> None:
        if not isinstance(msg, RequestVoteResponse) or msg.src not in self.voters:
            return
        if msg.pre_vote != self.in_pre_vote:
            return  # an answer from the other phase
        if msg.pre_vote and msg.vote_granted and msg.term != self.current_term + 1:
            return  # a grant from an earlier pre-vote round
        self._votes[msg.src] = msg.vote_granted
        self._tally_votes()

    def _tally_votes(self) -> None:
        granted = sum(self._votes.values())
        if granted >= self.quorum:
            if self.in_pre_vote:
                self._log_trace("pre-vote won")
                self._become_candidate(pre_vote=False, disrupt_leader=self.disrupt_leader)
            else:
                self._become_leader()
        elif len(self._votes) - granted >= self.quorum:
            # Lost: wait for the election timer rather than retrying at once.
            self._log_trace(f"{'pre-vote' if self.in_pre_vote else 'election'} lost")

    def _campaign(self, *, disrupt_leader: bool) -> None:
        """Start an election. A candidate created by TimeoutNow never runs pre-vote
        (Dqlite raft ac53ca3): it must bump its term at once so that the old
        leader's heartbeats are stale to it instead of demoting it."""
        if not self.is_voter:
            self._reset_election_timer()
            return
        self._become_candidate(
            pre_vote=self.config.pre_vote and not disrupt_leader,
            disrupt_leader=disrupt_leader)

    # ------------------------------------------------------------------ timeout now

    def _handle_timeout_now(self, msg: TimeoutNow) -> None:
        if (
            self.role is Role.FOLLOWER
            and self.is_voter
            and self.leader_id == msg.src
            and self.log.last_index == msg.last_log_index
            and self.log.last_term == msg.last_log_term
        ):
            self._log_trace(f"recv TimeoutNow from {msg.src}: campaign now, skipping pre-vote")
            self._campaign(disrupt_leader=True)
        else:
            self._log_trace(f"ignore TimeoutNow from {msg.src}")

    # ------------------------------------------------------------------ follower side

    def _accept_leader(self, leader: int) -> None:
        """A leader of the current term spoke: follow it and reset the timer."""
        if self.role is not Role.FOLLOWER:
            # Raft §3.4: an AppendEntries of the candidate's own term means someone won.
            self._log_trace(f"step down: {leader} is leader of term {self.current_term}")
            self._become_follower(self.current_term, leader)
        elif self.leader_id != leader:
            self.leader_id = leader
            self._events.append(LeaderChanged(self.current_term, leader))
            self._transfer_learned_leader(leader)
        self._last_leader_contact = self._now
        self._reset_election_timer()

    def _handle_append_entries(self, msg: AppendEntries) -> None:
        if self.role is Role.LEADER:
            # Two leaders in one term would break election safety; never happens.
            raise AssertionError(f"leader {self.id} got AppendEntries of its own term")
        self._accept_leader(msg.src)
        prev = msg.prev_log_index
        if prev < self.log.snapshot_index:
            # Already covered by our snapshot: skip what we have.
            skip = self.log.snapshot_index - prev
            if skip >= len(msg.entries):
                self._ack(msg.src, self.log.snapshot_index, msg.leader_commit,
                          self.log.snapshot_index)
                return
            entries = msg.entries[skip:]
            prev = self.log.snapshot_index
        else:
            entries = msg.entries
            term_at_prev = self.log.term_at(prev)
            if term_at_prev != msg.prev_log_term:
                self._reject_append(msg, term_at_prev)
                return
        if entries:
            if entries[0].index <= self.commit_index:
                # Never cut committed entries: they match by the log matching property.
                done = self.commit_index - entries[0].index + 1
                entries = entries[done:]
            self.log.merge(entries)
        last_new = msg.prev_log_index + len(msg.entries)
        self._ack(msg.src, last_new, msg.leader_commit, last_new)

    def _ack(self, leader: int, match_index: int, leader_commit: int, last_new: int) -> None:
        # Figure 3.1: commitIndex = min(leaderCommit, index of last new entry); the
        # cap matters for heartbeats, whose "last new entry" is prev_log_index.
        commit = min(leader_commit, last_new)
        if commit > self.commit_index:
            self.commit_index = commit
        self._send(AppendEntriesResponse(
            term=self.current_term, src=self.id, dst=leader, success=True,
            match_index=match_index))

    def _reject_append(self, msg: AppendEntries, term_at_prev: int | None) -> None:
        if term_at_prev is None:
            conflict_index, conflict_term = self.log.last_index + 1, 0
        else:
            conflict_term = term_at_prev
            conflict_index = self.log.first_index_of_term(msg.prev_log_index)
        self._log_trace(f"reject append from {msg.src} at {msg.prev_log_index}")
        self._send(AppendEntriesResponse(
            term=self.current_term, src=self.id, dst=msg.src, success=False,
            reject_index=msg.prev_log_index, conflict_index=conflict_index,
            conflict_term=conflict_term))

    def _handle_install_snapshot(self, msg: InstallSnapshot) -> None:
        if self.role is Role.LEADER:
            raise AssertionError(f"leader {self.id} got InstallSnapshot of its own term")
        self._accept_leader(msg.src)
        if msg.last_included_index <= self.commit_index:
            # Nothing new for us: say where we are so the leader moves on.
            self._send(AppendEntriesResponse(
                term=self.current_term, src=self.id, dst=msg.src, success=True,
                match_index=self.commit_index))
            return
        meta = SnapshotMeta(msg.last_included_index, msg.last_included_term)
        source = (msg.src, msg.term)
        receiver = self._snapshot_receiver
        if receiver is None or receiver.meta != meta or receiver.source != source:
            # Never mix chunks of two leaders' snapshots, even of the same index.
            receiver = self._snapshot_receiver = SnapshotReceiver(meta, source)
        ok = receiver.add(msg.offset, msg.data)
        if ok and msg.done and receiver.size == msg.offset + len(msg.data):
            self._snapshot_receiver = None
            self._log_trace(f"install snapshot at {meta.index} (term {meta.term})")
            # Entries after the snapshot survive only if the log agrees at its index.
            self.log.compact(meta.index, meta.term)
            self.commit_index = max(self.commit_index, meta.index)
            self.applied_index = max(self.applied_index, meta.index)
            self._pending_snapshot = (meta, receiver.data())
            self._send(AppendEntriesResponse(
                term=self.current_term, src=self.id, dst=msg.src, success=True,
                match_index=meta.index))
            return
        self._send(InstallSnapshotResponse(
            term=self.current_term, src=self.id, dst=msg.src,
            last_included_index=msg.last_included_index, next_offset=receiver.size,
            success=ok))

    # ------------------------------------------------------------------ leader side

    def _step_leader(self, msg: Message) -> None:
        pr = self.progress.get(msg.src)
        if pr is None:
            return
        pr.recent_active = True
        if isinstance(msg, AppendEntriesResponse):
            if msg.success:
                self._on_append_success(msg.src, pr, msg.match_index)
            else:
                self._on_append_reject(msg.src, pr, msg)
        elif isinstance(msg, InstallSnapshotResponse):
            self._on_snapshot_response(msg.src, pr, msg)

    def _on_append_success(self, peer: int, pr: Progress, match_index: int) -> None:
        if match_index > pr.match_index:
            pr.match_index = match_index
            self._maybe_commit()
        if pr.next_index <= pr.match_index:
            pr.next_index = pr.match_index + 1
        if pr.state is ProgressState.PROBE or (
            pr.state is ProgressState.SNAPSHOT and pr.match_index >= pr.snapshot_index
        ):
            pr.state = ProgressState.REPLICATE
            pr.next_index = pr.match_index + 1
            pr.snapshot_data = b""
        pr.paused = False
        if self._transfer is not None and self._transfer.target == peer:
            self._maybe_send_timeout_now()
        if pr.next_index <= self.log.last_index:
            self._send_append(peer)

    def _on_append_reject(self, peer: int, pr: Progress, msg: AppendEntriesResponse) -> None:
        if pr.state is ProgressState.REPLICATE and (
                msg.reject_index <= pr.match_index or msg.reject_index < pr.rewind_until):
            return  # stale: sent before a later success, or before the last rewind
        if pr.state is ProgressState.PROBE and msg.reject_index != pr.next_index - 1:
            return  # stale: answers an older probe
        if pr.state is ProgressState.SNAPSHOT:
            return
        # Fast back-off (Raft §5.3 optimisation): skip the follower's whole
        # conflicting term, or jump to just past its last entry.
        next_index = msg.conflict_index
        if msg.conflict_term:
            last = self.log.last_index_of_term(msg.conflict_term)
            if last is not None:
                next_index = last + 1
        pr.rewind_until = pr.next_index
        pr.next_index = max(pr.match_index + 1, min(next_index, msg.reject_index))
        pr.state = ProgressState.PROBE
        pr.paused = False
        self._send_append(peer)

    def _on_snapshot_response(self, peer: int, pr: Progress,
                              msg: InstallSnapshotResponse) -> None:
        if pr.state is not ProgressState.SNAPSHOT or msg.last_included_index != pr.snapshot_index:
            return
        pr.snapshot_offset = msg.next_offset
        pr.paused = False
        self._send_snapshot_chunk(peer, pr)

    def _maybe_commit(self) -> None:
        """Raft §3.6.2: an index replicated on a majority commits only if its entry is
        of the current term; earlier entries then commit with it (Figure 3.7)."""
        matches = [self.log.persisted_index if v == self.id else self.progress[v].match_index
                   for v in self.voters]
        matches.sort(reverse=True)
        candidate = matches[self.quorum - 1]
        if candidate > self.commit_index and self.log.term_at(candidate) == self.current_term:
            self.commit_index = candidate

    def _tick_leader(self, now: float) -> None:
        if now >= self._check_quorum_deadline:
            self._check_quorum_deadline = now + self.config.election_timeout_max
            active = 1 + sum(1 for v in self.voters
                             if v != self.id and self.progress[v].recent_active)
            for pr in self.progress.values():
                pr.recent_active = False
            if self.config.check_quorum and self.is_voter and active < self.quorum:
                self._log_trace(f"step down: heard from {active} of {len(self.voters)} voters")
                self._become_follower(self.current_term, None)
                return
        if now >= self._heartbeat_deadline:
            self._heartbeat_deadline = now + self.config.heartbeat
            for peer, pr in self.progress.items():
                if pr.state is ProgressState.REPLICATE and pr.match_index < self.log.last_index \
                        and pr.match_index == pr.match_at_last_heartbeat:
                    # No progress for a whole interval: a message was lost. Resend.
                    pr.state = ProgressState.PROBE
                    pr.rewind_until = pr.next_index
                    pr.next_index = pr.match_index + 1
                pr.match_at_last_heartbeat = pr.match_index
                pr.paused = False
                if pr.state is ProgressState.REPLICATE:
                    self._send_heartbeat(peer, pr)
                elif pr.state is ProgressState.SNAPSHOT:
                    self._send_snapshot_chunk(peer, pr)  # resend a lost chunk
                else:
                    self._send_append(peer)

    def _send_heartbeat(self, peer: int, pr: Progress) -> None:
        prev = pr.match_index
        prev_term = self.log.term_at(prev)
        if prev_term is None:
            self._send_append(peer)
            return
        self._send(AppendEntries(
            term=self.current_term, src=self.id, dst=peer, prev_log_index=prev,
            prev_log_term=prev_term, entries=(), leader_commit=self.commit_index))

    def _replicate_to_all(self) -> None:
        for peer, pr in self.progress.items():
            if pr.state is not ProgressState.SNAPSHOT and not pr.paused:
                self._send_append(peer)

    def _send_append(self, peer: int) -> None:
        """Send the next batch of entries to ``peer`` (or a snapshot if they are gone)."""
        pr = self.progress[peer]
        if pr.paused or pr.state is ProgressState.SNAPSHOT:
            return
        last = self.log.last_index
        if pr.state is ProgressState.REPLICATE and (
            pr.next_index > last
            or pr.next_index - 1 - pr.match_index >= self.config.max_inflight_entries
        ):
            return  # nothing new, or the window is full: wait for acknowledgements
        cfg = self.config
        while True:
            prev = pr.next_index - 1
            prev_term = self.log.term_at(prev)
            if prev_term is None:
                self._start_snapshot(peer, pr)
                return
            entries = self.log.slice(pr.next_index, last + 1, cfg.max_entries_per_message,
                                     cfg.max_bytes_per_message)
            self._send(AppendEntries(
                term=self.current_term, src=self.id, dst=peer, prev_log_index=prev,
                prev_log_term=prev_term, entries=tuple(entries),
                leader_commit=self.commit_index))
            if pr.state is not ProgressState.REPLICATE:
                pr.paused = True  # one probe at a time
                return
            # Pipelining: stream the backlog without waiting, up to the window.
            pr.next_index = prev + 1 + len(entries)
            if pr.next_index > last or (
                    pr.next_index - 1 - pr.match_index >= cfg.max_inflight_entries):
                return

    def _start_snapshot(self, peer: int, pr: Progress) -> None:
        snap = self._snapshot_source() if self._snapshot_source is not None else None
        if snap is None:
            return
        meta, data = snap
        pr.state = ProgressState.SNAPSHOT
        pr.snapshot_index = meta.index
        pr.snapshot_offset = 0
        pr.snapshot_data = data
        pr.snapshot_term = meta.term
        self._log_trace(f"send snapshot at {meta.index} to {peer}")
        self._send_snapshot_chunk(peer, pr)

    def _send_snapshot_chunk(self, peer: int, pr: Progress) -> None:
        data = pr.snapshot_data
        start = pr.snapshot_offset
        chunk = data[start:start + self.config.snapshot_chunk_size]
        self._send(InstallSnapshot(
            term=self.current_term, src=self.id, dst=peer,
            last_included_index=pr.snapshot_index, last_included_term=pr.snapshot_term,
            offset=start, data=chunk, done=start + len(chunk) >= len(data)))
        pr.paused = True

    # ------------------------------------------------------------------ transfer

    def _pick_transfer_target(self) -> int:
        """The most up-to-date voter; ties go to the lowest id."""
        others = sorted(v for v in self.voters if v != self.id)
        if not others:
            raise InvalidTransferTarget(None, "there is no other voter")
        return max(others, key=lambda v: (self.progress[v].match_index, -v))

    def _maybe_send_timeout_now(self) -> None:
        transfer = self._transfer
        if transfer is None or transfer.timeout_now_sent or self.role is not Role.LEADER:
            return
        if self.progress[transfer.target].match_index == self.log.last_index:
            transfer.timeout_now_sent = True
            self._log_trace(f"send TimeoutNow to {transfer.target}")
            self._send(TimeoutNow(
                term=self.current_term, src=self.id, dst=transfer.target,
                last_log_index=self.log.last_index, last_log_term=self.log.last_term))

    def _extend_transfer_for_vote(self, msg: RequestVote) -> None:
        """The target is campaigning: the transfer is as good as done, but this node
        learns the winner only from the new leader's first AppendEntries. Allow a
        second transfer timeout for that rather than report a false "timed out"."""
        transfer = self._transfer
        if transfer is not None and msg.src == transfer.target and msg.disrupt_leader:
            transfer.deadline = transfer.started_at + 2 * self.config.transfer_deadline

    def _transfer_learned_leader(self, leader: int) -> None:
        transfer = self._transfer
        if transfer is None:
            return
        if leader == transfer.target:
            self._end_transfer(True, "target became leader", leader)
        else:
            self._end_transfer(False, f"node {leader} became leader instead", leader)

    def _end_transfer(self, succeeded: bool, reason: str, new_leader: int | None = None) -> None:
        transfer = self._transfer
        assert transfer is not None
        self._transfer = None
        if new_leader is None:
            new_leader = self.leader_id
        self._log_trace(f"transfer to {transfer.target} ended: {reason}")
        self._events.append(TransferEnded(
            target=transfer.target, succeeded=succeeded, new_leader=new_leader, reason=reason,
            started_at=transfer.started_at, ended_at=self._now))

    # ------------------------------------------------------------------ role changes

    def _become_follower(self, term: int, leader: int | None) -> None:
        if term > self.current_term:
            self.current_term = term
            self.voted_for = None
            self._hard_state_dirty = True
        was = (self.role, self.leader_id)
        self.role = Role.FOLLOWER
        self.leader_id = leader
        self.in_pre_vote = False
        self.disrupt_leader = False
        self._votes = {}
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
        self.role = Role.CANDIDATE
        if self.leader_id is not None:
            self._events.append(LeaderChanged(self.current_term, None))
        self.leader_id = None
        self.in_pre_vote = pre_vote
        self.disrupt_leader = disrupt_leader
        self.progress = {}
        # A real self-vote counts only once it is durable (see advance): a single
        # voter must not lead a term it could forget in a crash.
        self._votes = {self.id: True} if pre_vote else {}
        if not pre_vote:
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
        self.role = Role.LEADER
        self.leader_id = self.id
        self.in_pre_vote = False
        self.disrupt_leader = False
        self._votes = {}
        self._election_deadline = _INF
        self._heartbeat_deadline = self._now + self.config.heartbeat
        self._check_quorum_deadline = self._now + self.config.election_timeout_max
        last = self.log.last_index
        self.progress = {peer: Progress(match_index=0, next_index=last + 1)
                         for peer in sorted(self.voters | self.learners) if peer != self.id}
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
        if not self.is_voter:
            self._election_deadline = _INF
            return
        self._election_deadline = self._now + self._rng.uniform(
            cfg.election_timeout_min, cfg.election_timeout_max)

    def _send(self, msg: Message) -> None:
        # Raft needs votes and acknowledgements to wait for the fsync of what they
        # promise (raft-rs' persisted messages); requests may leave at once.
        if isinstance(msg, (AppendEntriesResponse, InstallSnapshotResponse)) or (
            isinstance(msg, RequestVoteResponse) and not msg.pre_vote
        ) or (isinstance(msg, RequestVote) and not msg.pre_vote):
            self._messages_after_persist.append(msg)
        else:
            self._messages.append(msg)

    def _log_trace(self, what: str) -> None:
        if self._trace is not None:
            self._trace(f"[{self._now:.3f}] {self.id} {what}")
