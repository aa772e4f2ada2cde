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
    snapshot_index: int = 0
    snapshot_term: int = 0
    snapshot_offset: int = 0
    snapshot_data: bytes = b""
    snapshot_configuration: bytes = b""
    snapshot_configuration_index: int = 0
