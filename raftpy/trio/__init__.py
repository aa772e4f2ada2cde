"""The Trio network runtime: the only package (besides tests) that imports trio."""

from raftpy.trio.autoroles import AutoRoles
from raftpy.trio.membership import Membership, MembershipAdmin, MemberStatus
from raftpy.trio.runtime import Node, NodeStatus, PeerStatus, StateMachine, open_node

__all__ = ["AutoRoles", "MemberStatus", "Membership", "MembershipAdmin", "Node", "NodeStatus",
           "PeerStatus", "StateMachine", "open_node"]
from raftpy.trio.client import connect_client
from raftpy.trio.framing import DEFAULT_MAX_FRAME, FrameDecoder, FramedStream, encode_frame
from raftpy.trio.transport import PeerAddress, Transport

__all__ += ["DEFAULT_MAX_FRAME", "FrameDecoder", "FramedStream", "PeerAddress", "Transport",
            "connect_client", "encode_frame"]
