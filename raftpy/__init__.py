"""raftpy: a sans-I/O Raft consensus library.

The protocol core (:class:`RaftNode`) is a deterministic state machine: feed it
messages and the time, drain :class:`Ready` batches of messages to send, state
to persist and entries to apply. Drivers live at the edges: the deterministic
simulator in :mod:`raftpy.sim` and the Trio network runtime in :mod:`raftpy.trio`.
"""

from raftpy.codec import decode, encode
from raftpy.config import Config
from raftpy.errors import (
    ConfigError,
    ConfigurationChangeInProgress,
    CorruptLog,
    HandshakeRefused,
    InvalidMembershipChange,
    InvalidTransferTarget,
    LeadershipTransferInProgress,
    NodeClosed,
    NotLeader,
    ProtocolError,
    RaftError,
    StorageError,
    TransferFailed,
)
from raftpy.membership import (
    Configuration,
    ConfigurationState,
    Member,
    MemberRole,
)
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
from raftpy.node import PersistentState, RaftNode
from raftpy.ready import (
    ConfigurationChanged,
    Event,
    HardState,
    LeaderChanged,
    LogPosition,
    PromotionEnded,
    Ready,
    Role,
    SnapshotMeta,
    TransferEnded,
)

__version__ = "0.1.0"

__all__ = [
    "AppendEntries",
    "AppendEntriesResponse",
    "Config",
    "ConfigError",
    "Configuration",
    "ConfigurationChangeInProgress",
    "ConfigurationChanged",
    "ConfigurationState",
    "CorruptLog",
    "Entry",
    "EntryKind",
    "Event",
    "HandshakeRefused",
    "HardState",
    "InstallSnapshot",
    "InstallSnapshotResponse",
    "InvalidMembershipChange",
    "InvalidTransferTarget",
    "LeaderChanged",
    "LeadershipTransferInProgress",
    "LogPosition",
    "Member",
    "MemberRole",
    "Message",
    "NodeClosed",
    "NotLeader",
    "PersistentState",
    "PromotionEnded",
    "ProtocolError",
    "RaftError",
    "RaftNode",
    "Ready",
    "RequestVote",
    "RequestVoteResponse",
    "Role",
    "SnapshotMeta",
    "StorageError",
    "TimeoutNow",
    "TransferEnded",
    "TransferFailed",
    "__version__",
    "decode",
    "encode",
]
