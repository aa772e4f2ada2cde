"""Wire messages and log entries: one small frozen dataclass per Raft RPC.

Every message carries ``term``, ``src`` and ``dst``. Messages are validated
once, when decoded from the wire (:mod:`raftpy.codec`); inside the process they
are trusted plain data.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class EntryKind(enum.IntEnum):
    """What a log entry holds."""

    COMMAND = 0
    """An application command, handed to the state machine when committed."""
    NOOP = 1
    """The empty entry a new leader appends to commit entries of earlier terms (Raft §5.4.2)."""
    CONFIGURATION = 2
    """A cluster configuration (:class:`raftpy.membership.Configuration`), in force on
    the node that holds it from the moment it is appended (Raft §4.1)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry."""

    index: int
    term: int
    data: bytes = b""
    kind: EntryKind = EntryKind.COMMAND


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestVote:
    """A (pre-)vote request (Raft §3.4, pre-vote §9.6).

    ``pre_vote`` asks "would you vote for me in ``term``?" without anyone changing
    term. ``disrupt_leader`` is set by a candidate that a leader asked to take
    over (TimeoutNow): voters grant it even though they heard from a leader lately.
    """

    term: int
    src: int
    dst: int
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    disrupt_leader: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestVoteResponse:
    """The answer to a :class:`RequestVote`; a pre-vote answer echoes the request term."""

    term: int
    src: int
    dst: int
    vote_granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendEntries:
    """Log replication and heartbeat (Raft §3.5)."""

    term: int
    src: int
    dst: int
    prev_log_index: int
    prev_log_term: int
    entries: tuple[Entry, ...]
    leader_commit: int
    read_round: int = 0
    """The leader's read round when it sent this (ReadIndex, Raft §6.4): an answer
    echoing round ``r`` proves the leader still led after round ``r`` began."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendEntriesResponse:
    """The answer to an :class:`AppendEntries`.

    On success ``match_index`` is the last index known to match the leader's log.
    On rejection ``reject_index`` is the request's ``prev_log_index`` (so the
    leader can drop stale rejections) and ``conflict_index``/``conflict_term``
    let the leader skip a whole mismatching term at once (fast back-off).
    """

    term: int
    src: int
    dst: int
    success: bool
    match_index: int = 0
    reject_index: int = 0
    conflict_index: int = 0
    conflict_term: int = 0
    read_round: int = 0
    """The ``read_round`` of the AppendEntries this answers."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutNow:
    """Leader to transfer target: "start an election now" (Raft §3.10).

    Carries the leader's last log position; the target acts only if its own log
    ends at exactly that position.
    """

    term: int
    src: int
    dst: int
    last_log_index: int
    last_log_term: int


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallSnapshot:
    """One chunk of a snapshot sent to a follower whose next entry was compacted away."""

    term: int
    src: int
    dst: int
    last_included_index: int
    last_included_term: int
    offset: int
    data: bytes
    done: bool
    configuration: bytes = b""
    """The encoded configuration the snapshot includes (sent with the last chunk)."""
    configuration_index: int = 0
    """The log index of that configuration."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallSnapshotResponse:
    """The answer to an :class:`InstallSnapshot` chunk."""

    term: int
    src: int
    dst: int
    last_included_index: int
    next_offset: int
    success: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadIndex:
    """Follower to leader: "give me a read index" (a follower read, Raft §6.4)."""

    term: int
    src: int
    dst: int
    request_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadIndexResponse:
    """The leader's answer to a :class:`ReadIndex`: once the follower has applied
    ``read_index`` it may serve the read. ``success`` is false if the node asked
    does not lead (any more)."""

    term: int
    src: int
    dst: int
    request_id: int
    read_index: int
    success: bool


Message = (
    RequestVote
    | RequestVoteResponse
    | AppendEntries
    | AppendEntriesResponse
    | TimeoutNow
    | InstallSnapshot
    | InstallSnapshotResponse
    | ReadIndex
    | ReadIndexResponse
)
"""Any Raft wire message."""

MESSAGE_TYPES: tuple[type, ...] = (
    RequestVote,
    RequestVoteResponse,
    AppendEntries,
    AppendEntriesResponse,
    TimeoutNow,
    InstallSnapshot,
    InstallSnapshotResponse,
    ReadIndex,
    ReadIndexResponse,
)
