"""The exceptions raftpy raises to its callers.

Every error a caller can cause derives from :class:`RaftError`, so
``except raftpy.RaftError`` catches them all; each subclass is named for what
went wrong and carries the facts needed to react (the leader id, the file and
offset of a corruption, ...).
"""

from __future__ import annotations


class RaftError(Exception):
    """Base class of every error raised by raftpy."""


class ConfigError(RaftError, ValueError):
    """A configuration value is invalid (raised when the config is built)."""


class NotLeader(RaftError):
    """The node is not the leader; ``leader_id`` is the leader it knows of, if any."""

    def __init__(self, node_id: int, leader_id: int | None, *, leader_address: str | None = None):
        self.node_id = node_id
        self.leader_id = leader_id
        self.leader_address = leader_address
        hint = f"; the leader is {leader_id}" if leader_id is not None else "; no leader is known"
        super().__init__(f"node {node_id} is not the leader{hint}")


class LeadershipTransferInProgress(RaftError):
    """The leader is handing leadership to ``target`` and refuses new work until it ends."""

    def __init__(self, target: int):
        self.target = target
        super().__init__(f"a leadership transfer to node {target} is in progress")


class InvalidTransferTarget(RaftError, ValueError):
    """``transfer_leadership`` was asked to hand over to itself, an unknown id or a non-voter."""

    def __init__(self, target: int | None, reason: str):
        self.target = target
        self.reason = reason
        super().__init__(f"cannot transfer leadership to {target}: {reason}")


class ConfigurationChangeInProgress(RaftError):
    """A membership change was refused because another one is not finished (one
    change at a time), or the leader has not yet committed an entry of its term."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"cannot change the configuration now: {reason}")


class InvalidMembershipChange(RaftError, ValueError):
    """A membership change that can never succeed: unknown member, already a member,
    a role it already has, or a configuration left without voters."""

    def __init__(self, member_id: int | None, reason: str):
        self.member_id = member_id
        self.reason = reason
        who = f"node {member_id}" if member_id is not None else "the configuration"
        super().__init__(f"invalid membership change for {who}: {reason}")


class TransferFailed(RaftError):
    """A leadership transfer ended without the target becoming leader."""

    def __init__(self, target: int, reason: str, new_leader: int | None = None):
        self.target = target
        self.reason = reason
        self.new_leader = new_leader
        super().__init__(f"leadership transfer to {target} failed: {reason}")


class ProtocolError(RaftError):
    """A wire message is malformed, of an unknown type, oversized or from another cluster."""


class StorageError(RaftError):
    """The storage backend cannot be used (wrong node/cluster, unreadable metadata...)."""


class CorruptLog(StorageError):
    """A log or metadata file fails its checksum somewhere it cannot be a torn write."""

    def __init__(self, path: str, offset: int, reason: str):
        self.path = path
        self.offset = offset
        self.reason = reason
        super().__init__(f"{path} is corrupt at offset {offset}: {reason}")


class NodeClosed(RaftError):
    """The running node was shut down before the request completed (or was made)."""

    def __init__(self, node_id: int):
        self.node_id = node_id
        super().__init__(f"node {node_id} is shut down")


class HandshakeRefused(ProtocolError):
    """A connection's hello was refused (other cluster, unknown node id, bad version...)."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"handshake refused: {reason}")
