"""What a leader knows of each follower's log (etcd raft's Progress)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ProgressState(enum.Enum):
    """How the leader is replicating to a follower."""

    PROBE = "probe"
    """Finding where the logs agree: one AppendEntries at a time."""
    REPLICATE = "replicate"
    """Logs agree up to ``match_index``: stream entries without waiting for answers."""
    SNAPSHOT = "snapshot"
    """The entries the follower needs were compacted: sending a snapshot."""


@dataclass(slots=True)
class Progress:
    """Replication state of one follower, kept by the leader."""

    match_index: int
    next_index: int
    state: ProgressState = ProgressState.PROBE
    paused: bool = False
    """A probe or snapshot chunk is in flight; wait for its answer or the next heartbeat."""
    recent_active: bool = False
    """Heard from since the last check-quorum round."""
    match_at_last_heartbeat: int = 0
    rewind_until: int = 0
    """``next_index`` when replication last rewound: rejections of messages sent
    before that are stale, and acting on each would resend the backlog again and
    again (a storm, once messages are lost or reordered)."""
    assumed_index: int = 0
    """A new leader's guess that this follower's log matches its own up to here (its
    last index when elected): it streams entries from there at once instead of
    probing first, which saves the first writes of a term a round trip. Never
    counted as replicated (commit uses ``match_index`` only); a rejection, or a
    heartbeat interval without an answer, drops the guess and probes from there."""
    snapshot_index: int = 0
    snapshot_term: int = 0
    snapshot_offset: int = 0
    snapshot_data: bytes = b""
    snapshot_configuration: bytes = b""
    snapshot_configuration_index: int = 0

    def in_flight(self) -> int:
        """Entries sent in replicate state and not yet acknowledged (or assumed)."""
        return self.next_index - 1 - max(self.match_index, self.assumed_index)

    def start_probe(self, next_index: int) -> None:
        """Find where the logs agree, one AppendEntries at a time, from ``next_index``."""
        self.state = ProgressState.PROBE
        self.next_index = next_index
        self.assumed_index = 0
