"""The Trio network runtime: the only package (besides tests) that imports trio."""

from raftpy.trio.autoroles import AutoRoles
from raftpy.trio.membership import Membership, MembershipAdmin, MemberStatus
from raftpy.trio.observe import (
    ConfigurationChange,
    EventStream,
    LeaderChange,
    Observation,
    PeerReachable,
    PeerUnreachable,
    RoleChange,
    SnapshotInstalled,
    SnapshotTaken,
    TransferFinished,
    TransferStarted,
)
from raftpy.trio.runtime import Node, NodeStatus, PeerStatus, StateMachine, open_node

__all__ = ["AutoRoles", "ConfigurationChange", "EventStream", "LeaderChange", "MemberStatus",
           "Membership", "MembershipAdmin", "Node", "NodeStatus", "Observation",
           "PeerReachable", "PeerStatus", "PeerUnreachable", "RoleChange", "SnapshotInstalled",
           "SnapshotTaken", "StateMachine", "TransferFinished", "TransferStarted", "open_node"]
from raftpy.trio.client import connect_client
from raftpy.trio.framing import DEFAULT_MAX_FRAME, FrameDecoder, FramedStream, encode_frame
from raftpy.trio.transport import PeerAddress, Transport

__all__ += ["DEFAULT_MAX_FRAME", "FrameDecoder", "FramedStream", "PeerAddress", "Transport",
            "connect_client", "encode_frame"]
