"""raftpy: a sans-I/O Raft consensus library.

The protocol core (:class:`RaftNode`) is a deterministic state machine: feed it
messages and the time, drain :class:`Ready` batches of messages to send, state
to persist and entries to apply. Drivers live at the edges: the deterministic
simulator in :mod:`raftpy.sim` and the Trio network runtime in :mod:`raftpy.trio`.
"""

from raftpy.codec import decode, encode
from raftpy.config import Config
from raftpy.errors import (
    AlreadyAcknowledged,
    ConfigError,
    ConfigurationChangeInProgress,
    CorruptLog,
    HandshakeRefused,
    InvalidMembershipChange,
    InvalidSessionCommand,
    InvalidSessionSnapshot,
    InvalidTransferTarget,
    LeadershipTransferInProgress,
    NodeClosed,
    NotLeader,
    PromotionFailed,
    ProtocolError,
    RaftError,
    RepeatedFailure,
    SessionError,
    SessionExpired,
    StorageError,
    TooManyPendingResults,
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
from raftpy.roles import MemberHealth, RoleTargets, plan_role_changes
from raftpy.sessions import (
    SessionInfo,
    SessionStateMachine,
    close_session_command,
    register_command,
    session_command,
)
from raftpy.statemachine import StateMachine

__version__ = "0.1.0"

__all__ = [
    "AlreadyAcknowledged",
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
    "InvalidSessionCommand",
    "InvalidSessionSnapshot",
    "InvalidTransferTarget",
    "LeaderChanged",
    "LeadershipTransferInProgress",
    "LogPosition",
    "Member",
    "MemberHealth",
    "MemberRole",
    "Message",
    "NodeClosed",
    "NotLeader",
    "PersistentState",
    "PromotionEnded",
    "PromotionFailed",
    "ProtocolError",
    "RaftError",
    "RaftNode",
    "Ready",
    "RepeatedFailure",
    "RequestVote",
    "RequestVoteResponse",
    "Role",
    "RoleTargets",
    "SessionError",
    "SessionExpired",
    "SessionInfo",
    "SessionStateMachine",
    "SnapshotMeta",
    "StateMachine",
    "StorageError",
    "TimeoutNow",
    "TooManyPendingResults",
    "TransferEnded",
    "TransferFailed",
    "__version__",
    "close_session_command",
    "decode",
    "encode",
    "plan_role_changes",
    "register_command",
    "session_command",
]
