"""What a node hands its driver: the output batch (:class:`Ready`) and events."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from raftpy.membership import EMPTY, Configuration
from raftpy.messages import Entry, Message


class Role(enum.Enum):
    """The role a node plays (Raft §3.3)."""

    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class HardState:
    """The state that must be durable before a node acts on it: term and vote."""

    term: int
    voted_for: int | None


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Where a snapshot sits in the log, and the configuration it includes."""

    index: int
    term: int
    configuration: Configuration = EMPTY
    """The latest configuration at or before ``index`` (Raft §5.1: snapshots carry it)."""
    configuration_index: int = 0
    """The log index of that configuration entry."""


@dataclass(frozen=True, slots=True)
class LogPosition:
    """Index and term of a proposed entry: it committed iff the entry committed at
    ``index`` has this ``term``."""

    index: int
    term: int


@dataclass(frozen=True, slots=True)
class LeaderChanged:
    """The node learned of a new leader (or lost it: ``leader_id is None``)."""

    term: int
    leader_id: int | None


@dataclass(frozen=True, slots=True)
class TransferEnded:
    """A leadership transfer this node started has ended, one way or the other."""

    target: int
    succeeded: bool
    new_leader: int | None
    reason: str
    started_at: float
    ended_at: float


@dataclass(frozen=True, slots=True)
class ConfigurationChanged:
    """The configuration in force on this node changed, or became committed.

    Emitted when a configuration entry is appended (``committed=False``), when it
    commits, and when a snapshot or a truncation brings another one into force. A
    runtime opens connections to new members and closes those to removed ones."""

    configuration: Configuration
    index: int
    committed: bool


@dataclass(frozen=True, slots=True)
class PromotionEnded:
    """A promotion to voter that this leader was catching up has ended.

    On success the configuration entry making ``member_id`` a voter was appended at
    ``index``; on failure nothing changed and ``reason`` says why."""

    member_id: int
    succeeded: bool
    reason: str
    index: int = 0
    rounds: int = 0


@dataclass(frozen=True, slots=True)
class ReadIndexReady:
    """A read asked with :meth:`~raftpy.RaftNode.read_index` may be served once this
    node has applied ``read_index``: every write committed before the read was asked
    is at or below it (Raft §6.4)."""

    request_id: int
    read_index: int


@dataclass(frozen=True, slots=True)
class ReadIndexFailed:
    """A read asked with :meth:`~raftpy.RaftNode.read_index` cannot be confirmed here:
    leadership changed, or the leader did not answer in time. ``leader_id`` is the
    leader this node knows of now, if any (ask again there)."""

    request_id: int
    reason: str
    leader_id: int | None = None


Event = (LeaderChanged | TransferEnded | ConfigurationChanged | PromotionEnded
         | ReadIndexReady | ReadIndexFailed)


@dataclass(slots=True)
class Ready:
    """One batch of work for the driver, to be handled in this order:

    1. send ``messages`` at once (a leader's appends may go before its own fsync);
    2. persist ``hard_state`` (if set), ``snapshot`` (if set) and ``entries``
       (which replace any persisted entries at or after ``entries[0].index``);
    3. only then send ``messages_after_persist`` (votes, acknowledgements) and
       apply ``committed`` entries in order (a leader may apply them before its own
       save ends: they are durable on a majority, and the core counts the leader's
       own log only up to what it persisted; never ahead of an earlier batch's);
    4. call :meth:`raftpy.RaftNode.advance` with this batch.

    Batches must be persisted in the order they were produced.
    """

    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    messages_after_persist: list[Message] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    snapshot: tuple[SnapshotMeta, bytes] | None = None
    """A snapshot received from the leader: persist it, then restore the state machine."""

    def must_persist(self) -> bool:
        """Whether step 2 has anything to do."""
        return self.hard_state is not None or bool(self.entries) or self.snapshot is not None
