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


class PromotionFailed(RaftError):
    """A promotion to voter ended without the member being promoted: it did not catch
    up in time, or the leader lost leadership (or started a transfer) meanwhile."""

    def __init__(self, member_id: int, reason: str):
        self.member_id = member_id
        self.reason = reason
        super().__init__(f"promotion of node {member_id} to voter failed: {reason}")


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


class SessionError(RaftError):
    """Base class of the client-session errors (:mod:`raftpy.sessions`). Raised for a
    command, it means the command was refused and NOT applied by this delivery."""


class SessionExpired(SessionError):
    """The command's session is unknown: it expired (no activity for ``session_timeout``
    of cluster time), was closed, or never existed. The command was not applied; a
    retried command may or may not have been applied by an earlier attempt, so the
    client must open a new session and treat that outcome as unknown."""

    def __init__(self, session_id: int):
        self.session_id = session_id
        super().__init__(f"session {session_id} is unknown or expired; open a new session")


class AlreadyAcknowledged(SessionError):
    """The command's sequence number is below what its client has acknowledged: its
    result was discarded, so the command is refused rather than applied again."""

    def __init__(self, session_id: int, seq: int, floor: int):
        self.session_id = session_id
        self.seq = seq
        self.floor = floor
        super().__init__(f"session {session_id}: request {seq} was already acknowledged "
                         f"(results below {floor} are discarded); not applied again")


class TooManyPendingResults(SessionError):
    """The session already holds ``limit`` results its client has not acknowledged;
    the command is refused (not applied) until the client acknowledges some."""

    def __init__(self, session_id: int, limit: int):
        self.session_id = session_id
        self.limit = limit
        super().__init__(f"session {session_id} holds {limit} unacknowledged results "
                         "(max_pending_results); request refused, not applied")


class InvalidSessionCommand(SessionError, ValueError):
    """A command marked as a session envelope whose fields are malformed."""


class InvalidSessionSnapshot(SessionError, ValueError):
    """Bytes given to :meth:`SessionStateMachine.restore` that are not a session
    snapshot (wrong marker, format version or field types)."""


class RepeatedFailure(RaftError):
    """A duplicate's first result was an exception that cannot be re-created here (its
    class is not loaded or needs other constructor arguments); ``error_type`` names it
    and the message is the original's. (Not a :class:`SessionError`: the command was
    applied, by its first delivery, and failed then.)"""

    def __init__(self, error_type: str, message: str):
        self.error_type = error_type
        self.message = message
        super().__init__(f"{error_type}: {message}")
