"""The Trio network runtime: the only package (besides tests) that imports trio."""

from raftpy.trio.runtime import Node, NodeStatus, PeerStatus, StateMachine, open_node

__all__ = ["Node", "NodeStatus", "PeerStatus", "StateMachine", "open_node"]
