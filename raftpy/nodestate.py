"""The state every part of a :class:`~raftpy.node.RaftNode` shares, declared once.

``RaftNode`` is assembled from small role-specific mixins (election, follower,
leader replication, leadership transfer). This base declares the fields and the
cross-cutting methods they use so that each mixin type-checks on its own; the
fields are set and the methods defined by ``RaftNode`` itself.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from raftpy.config import Config
from raftpy.log import RaftLog
from raftpy.membership import Configuration, ConfigurationHistory
from raftpy.messages import AppendEntriesResponse, Entry, Message, TimeoutNow
from raftpy.metrics import CoreCounters
from raftpy.progress import Progress
from raftpy.ready import Event, Role, SnapshotMeta
from raftpy.snapshots import SnapshotReceiver

if TYPE_CHECKING:
    from raftpy.reads import PendingRead


class TransferStage(enum.Enum):
    """Where a leadership transfer started on this node stands."""

    CATCH_UP = "catch-up"
    """The target is more than one batch behind: writes go on while it catches up."""
    FINAL = "final"
    """The target is within one batch: writes are refused, and once it holds the
    whole log it is sent TimeoutNow (again at every heartbeat until it acts)."""
    FENCED = "fenced"
    """The final stretch timed out after TimeoutNow was sent: the leader appended a
    fence entry past the position TimeoutNow named and takes writes again; the
    transfer failed once the fence commits (the target can no longer win), or
    succeeded if the target turns out to have won first."""


@dataclass(slots=True)
class PendingTransfer:
    """A leadership transfer started on this node and not yet ended."""

    target: int
    started_at: float
    deadline: float
    """When the current stage times out (catch-up: without progress)."""
    give_up_at: float
    """When the catch-up stage ends, gaining or not."""
    outcome_by: float
    """The last moment at which the transfer may still be pending, whatever happens."""
    stage: TransferStage = TransferStage.CATCH_UP
    timeout_now_sent: bool = False
    sent_ahead: bool = False
    """The TimeoutNow sent went ahead of the target's acknowledgement of the last
    entries (right behind the entries themselves)."""
    catch_up_match: int = 0
    """The target's match index when the catch-up deadline was last extended."""
    fence_index: int = 0
    deposed_at: float = float("-inf")
    """When this node stopped leading while the transfer was pending (usually the
    target's vote request, the transfer working)."""

    @property
    def blocks_writes(self) -> bool:
        """Writes are refused only in the final stretch, so that the target can
        catch up with the whole log (Raft §3.10)."""
        return self.stage is TransferStage.FINAL


@dataclass(slots=True)
class Promotion:
    """A member this leader is catching up before making it a voter (§4.2.1)."""

    member_id: int
    address: str
    started_at: float
    round_started_at: float
    round_target: int
    """The leader's last index when the round began: the round ends once the
    member holds it."""
    rounds: int = 1


@dataclass(slots=True)
class Candidacy:
    """This node's current real candidacy (not a pre-vote round), timed so that a
    split-vote retry waits for the round's votes (see ``_back_off_split_vote``)."""

    started_at: float
    round_trip: float | None = None
    """From the start until a majority of voters had answered: how long a winner
    of this round needs for its votes, measured (both fsyncs included)."""
    contested: bool = False
    """A competing candidate of the same term asked for our vote."""
    retry_armed: bool = False
    vote_durable: bool = False
    """The driver has persisted this term and the vote for itself. Only then may it
    lead: a leader of a term it could forget in a crash could be elected again in
    that term after a restart, with another log (its RequestVotes leave before the
    save, see ``RaftNode._send``)."""


class NodeState:
    """Fields and shared methods of a node (see the module docstring)."""

    id: int
    voters: frozenset[int]
    learners: frozenset[int]
    config: Config
    current_term: int
    voted_for: int | None
    log: RaftLog
    commit_index: int
    applied_index: int
    role: Role
    leader_id: int | None
    in_pre_vote: bool
    disrupt_leader: bool
    _early_timeout_now: tuple[TimeoutNow, float] | None
    """A TimeoutNow that arrived ahead of the entries it names, and until when it
    may still start this follower's election (see :mod:`raftpy.transfer`)."""
    progress: dict[int, Progress]
    counters: CoreCounters
    _rng: random.Random
    _now: float
    _last_leader_contact: float
    _election_deadline: float
    _heartbeat_deadline: float
    _check_quorum_deadline: float
    _votes: dict[int, bool]
    _candidacy: Candidacy | None
    _configurations: ConfigurationHistory
    _promotion: Promotion | None
    _configuration_reported: tuple[int, bool, Configuration] | None
    _round_started_at: float
    _round_answered: bool
    _vote_round_trip: float | None
    _transfer: PendingTransfer | None
    _snapshot_receiver: SnapshotReceiver | None
    _snapshot_source: Callable[[], tuple[SnapshotMeta, bytes] | None] | None
    _messages: list[Message]
    _messages_after_persist: list[Message]
    _events: list[Event]
    _hard_state_dirty: bool
    _pending_snapshot: tuple[SnapshotMeta, bytes] | None
    _read_round: int
    _started_at: float
    _echo_round: int
    _reads: list[PendingRead]

    if TYPE_CHECKING:  # defined by RaftNode or a sibling mixin
        @property
        def quorum(self) -> int: ...
        @property
        def is_voter(self) -> bool: ...
        def _send(self, msg: Message) -> None: ...
        def _log_trace(self, what: str) -> None: ...
        def _reset_election_timer(self) -> None: ...
        def _become_follower(self, term: int, leader: int | None) -> None: ...
        def _become_candidate(self, *, pre_vote: bool, disrupt_leader: bool) -> None: ...
        def _become_leader(self) -> None: ...
        def _campaign(self, *, disrupt_leader: bool) -> None: ...
        def _early_timeout_now_due(self) -> None: ...
        def _transfer_learned_leader(self, leader: int) -> None: ...
        def _transfer_progress(self) -> None: ...
        def _transfer_fence_committed(self) -> None: ...
        def _resend_timeout_now(self) -> None: ...
        def _replicate_to_all(self) -> None: ...
        def _send_append(self, peer: int) -> None: ...
        def _maybe_commit(self) -> None: ...
        def _use_configuration(self) -> None: ...
        def _log_appended(self, entries: Sequence[Entry], first_new: int) -> None: ...
        def _log_replaced_by_snapshot(self, meta: SnapshotMeta, tail_dropped: bool) -> None: ...
        def _leader_commit_advanced(self) -> None: ...
        def _promotion_progress(self) -> None: ...
        def _end_promotion(self, reason: str) -> None: ...
        def _configuration_report_due(self) -> bool: ...
        def _may_campaign(self) -> bool: ...
        def _report_configuration(self) -> None: ...
        def _tick_promotion(self, now: float) -> None: ...
        def _promotion_next_deadline(self) -> float: ...
        def _note_read_ack(self, msg: AppendEntriesResponse) -> None: ...
        def _send_read_heartbeat(self, peer: int) -> None: ...
        def _confirm_reads(self) -> None: ...
        def _fail_reads(self, reason: str) -> None: ...
        def _end_lease(self) -> None: ...
        def _next_read_round(self) -> None: ...
