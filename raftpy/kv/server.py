"""Serving key-value clients on a running node.

Writes go through the log (:meth:`Node.apply`); reads first pass a read barrier
so that they are linearizable, then read the local dict. A member that is not
the leader answers ``not_leader`` with the leader's id and address, and the
client follows (a redirect, rather than forwarding: one less hop to reason
about, and the client learns the leader for its next request).

The node's state machine is a :class:`~raftpy.sessions.SessionStateMachine` around
the :class:`KVStore`, so that a client's retried write is applied once. The server
stamps every session command with its own wall clock when proposing it: that stamp,
carried in the log, is the only time the sessions' expiry ever looks at.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import trio

from raftpy.errors import (
    ConfigurationChangeInProgress,
    InvalidMembershipChange,
    InvalidTransferTarget,
    LeadershipTransferInProgress,
    NodeClosed,
    NotLeader,
    PromotionFailed,
    RepeatedFailure,
    SessionError,
    SessionExpired,
    TransferFailed,
)
from raftpy.kv import protocol
from raftpy.kv.statemachine import (
    KVStore,
    delete_command,
    join_token_command,
    join_token_problem,
    join_use_command,
    put_command,
)
from raftpy.ready import Role
from raftpy.sessions import SessionStateMachine, register_command, session_command
from raftpy.trio.identity import may_administer
from raftpy.trio.membership import parse_role
from raftpy.trio.runtime import Node

logger = logging.getLogger(__name__)


class FramedStream(Protocol):
    """A connection carrying whole frames (the transport's client streams)."""

    async def send(self, payload: bytes) -> None:
        """Send one frame."""
        ...

    async def receive(self) -> bytes | None:
        """The next frame; ``None`` once the peer closed the connection."""
        ...


class KVServer:
    """Answers client requests for one node, whose state machine is ``state_machine``:
    ``SessionStateMachine(KVStore())``. ``clock`` gives the wall-clock seconds stamped
    on session commands (tests pass a fake one)."""

    def __init__(self, state_machine: SessionStateMachine[KVStore], *,
                 request_timeout: float = 5.0,
                 change_timeout: float = 60.0,
                 clock: Callable[[], float] = time.time,
                 name_leader_address: bool = True,
                 candidate_hold: float = 0.3) -> None:
        if not (isinstance(state_machine, SessionStateMachine)
                and isinstance(state_machine.inner, KVStore)):
            raise TypeError("KVServer needs the node's state machine, "
                            "SessionStateMachine(KVStore()), not a bare KVStore")
        self.state_machine = state_machine
        self.store = state_machine.inner
        self.request_timeout = request_timeout
        self.change_timeout = change_timeout
        """Membership changes wait longer: a promotion catches the member up first."""
        self.clock = clock
        self.candidate_hold = candidate_hold
        """How long a request reaching a candidate waits for the election's outcome."""
        self.name_leader_address = name_leader_address
        """Whether a ``not_leader`` answer names the leader's address: not when clients
        have listeners of their own (``--client-listen``), since the configuration
        holds the peer addresses; the client then asks its members who leads."""

    async def use_join_token(self, node: Node, digest: str, node_id: int) -> str:
        """Spend the join token ``digest`` for ``node_id``: ``"ok"`` the first time, else
        why not. Checked first with a linearizable read (a wrong secret costs no log
        entry), then spent through the log, so every member agrees it is spent.
        Raises :class:`~raftpy.errors.NotLeader` on a follower once the read passed."""
        await node.read_barrier()
        problem = join_token_problem(self.store.data, digest, node_id, self.clock())
        if problem is not None:
            return problem
        return _join_result(await node.apply(join_use_command(digest, node_id, self.clock())))

    async def serve_connection(self, node: Node, stream: FramedStream) -> None:
        """Answer requests on ``stream`` until the client closes it."""
        while True:
            data = await stream.receive()
            if data is None:
                return
            try:
                request = protocol.decode_request(data)
            except protocol.TooLarge as exc:
                response = protocol.error(protocol.TOO_LARGE, str(exc))
            except protocol.BadRequest as exc:
                response = protocol.error(protocol.BAD_REQUEST, str(exc))
            else:
                who = getattr(stream, "identity", None)  # set by the transport with TLS
                if request["op"] in protocol.ADMIN_OPS and not may_administer(who):
                    logger.warning("node %d: refused %s to %s: not an admin", node.id,
                                   request["op"], who)
                    response = protocol.error(
                        protocol.FORBIDDEN, f"{request['op']} needs an admin or node "
                        f"certificate; {who} is a {who.kind if who else '?'} certificate")
                else:
                    response = await self.handle(node, request)
            await stream.send(protocol.encode(response))

    async def handle(self, node: Node, request: dict[str, Any]) -> dict[str, Any]:
        """The response to one validated request."""
        op = request["op"]
        if op == "status":
            if request.get("wait"):
                await wait_for_leader(node, float(request["wait"]),
                                      [(int(i), int(t)) for i, t in request.get("exclude", ())])
            status = node.status().to_dict()
            if not self.name_leader_address:
                status.pop("leader_address", None)
            return {"ok": True, "status": status}
        timeout = self.change_timeout if op in _CHANGES else self.request_timeout
        with trio.move_on_after(timeout):
            try:
                return await self._handle_after_transfer(node, request)
            except NotLeader as exc:
                return protocol.error(
                    protocol.NOT_LEADER, str(exc), leader_id=exc.leader_id,
                    leader_address=exc.leader_address if self.name_leader_address else None,
                    term=node.status().term)
            except LeadershipTransferInProgress as exc:
                return protocol.error(protocol.UNAVAILABLE, str(exc))
            except NodeClosed as exc:
                return protocol.error(protocol.UNAVAILABLE, str(exc))
            except InvalidTransferTarget as exc:
                return protocol.error(protocol.INVALID_TARGET, str(exc))
            except TransferFailed as exc:
                return protocol.error(protocol.TRANSFER_FAILED, str(exc),
                                      leader_id=exc.new_leader)
            except SessionExpired as exc:
                return protocol.error(protocol.SESSION_EXPIRED, str(exc))
            except ConfigurationChangeInProgress as exc:
                return protocol.error(protocol.BUSY, str(exc))
            except InvalidMembershipChange as exc:
                return protocol.error(protocol.INVALID_CHANGE, str(exc))
            except PromotionFailed as exc:
                return protocol.error(protocol.PROMOTION_FAILED, str(exc))
            except (ValueError, SessionError, RepeatedFailure) as exc:
                # The state machine refused the command (or, for a retry, did the
                # first time).
                return protocol.error(protocol.REJECTED, str(exc))
        return protocol.error(protocol.UNAVAILABLE,
                              f"no outcome within {timeout:g}s (a write may still commit)")

    async def _handle_after_transfer(self, node: Node, request: dict[str, Any]
                                     ) -> dict[str, Any]:
        """:meth:`_handle`, except around an election, where a client would otherwise
        have to poll for the new leader:

        * a request meeting a leadership transfer (Raft §3.10: the leader takes no new
          requests meanwhile; none was proposed) waits until the transfer ends or
          this leader steps down for its target's election, and is handled again: it
          succeeds if the transfer failed, else is redirected to the new leader, or
          to the target while it campaigns (it knows no leader yet, but the target
          is about to be it);
        * a request reaching a candidate waits (up to ``candidate_hold``) for the
          election's outcome: handled here if it won, else redirected to the winner.
          A transfer's target gets the redirected clients this way as it wins, and
          their writes go out with its first entries.
        """
        waited = held = False
        while True:
            try:
                return await self._handle(node, request)
            except LeadershipTransferInProgress:
                if request["op"] == "transfer":
                    raise
                while node.status().transfer_target is not None and node.is_leader:
                    await node.wait_changed()
                waited = True
            except NotLeader as exc:
                if exc.leader_id is not None or request["op"] == "transfer":
                    raise
                status = node.status()
                if status.leader_id is not None and not held:
                    # Learnt meanwhile (the request waited for the driver): name it.
                    held = True
                    if status.leader_id == node.id:
                        continue
                    raise NotLeader(node.id, status.leader_id,
                                    leader_address=node.address_of(status.leader_id)) from None
                target = status.transfer_target
                if target is not None:
                    # This leader handed over: its transfer target's vote request (a
                    # higher term) made it a follower that knows no leader yet. The
                    # target campaigns and holds the requests it gets until it wins.
                    raise NotLeader(node.id, target,
                                    leader_address=node.address_of(target)) from None
                if status.role is Role.CANDIDATE and not held:
                    held = True
                    with trio.move_on_after(self.candidate_hold):
                        leader = await node.wait_leader()
                        if leader == node.id:
                            continue  # it won: handle the request here
                        raise NotLeader(node.id, leader,
                                        leader_address=node.address_of(leader)) from None
                    raise
                if not waited:
                    raise
                # The transfer ended on a message of the new term that named nobody
                # (a vote request); the new leader's first heartbeat is on its way:
                # wait for it briefly so that the redirect names it.
                with trio.move_on_after(self.request_timeout / 10):
                    leader = await node.wait_leader()
                    if leader == node.id:
                        continue  # it leads again: handle the request here
                    raise NotLeader(node.id, leader,
                                    leader_address=node.address_of(leader)) from None
                raise

    async def _handle(self, node: Node, request: dict[str, Any]) -> dict[str, Any]:
        op = request["op"]
        if op == "session":
            session_id = await node.apply(register_command(self.clock()))
            # The timeout lets an idle client start a new session rather than risk
            # its old one expiring under a retried write.
            return {"ok": True, "session": session_id,
                    "timeout": self.state_machine.session_timeout}
        if op in ("put", "delete"):
            key = request["key"]
            command = put_command(key, request["value"]) if op == "put" else delete_command(key)
            if "session" in request:
                command = session_command(request["session"], request["seq"], request["ack"],
                                          self.clock(), command)
            # A put answers the previous value (ignored), a delete whether the key existed;
            # for a retried session write, what its first application answered.
            result = await node.apply(command)
            if op == "delete" and not result:
                return protocol.error(protocol.NOT_FOUND, f"no such key: {key!r}")
            return {"ok": True}
        if op == "get":
            if not request.get("stale"):
                # ReadIndex: linearizable on any member (a follower asks its leader).
                await node.read_barrier()
            value = self.store.data.get(request["key"])
            if value is None:
                return protocol.error(protocol.NOT_FOUND, f"no such key: {request['key']!r}")
            return {"ok": True, "value": value}
        if op == "members":
            if not node.is_leader:
                raise node._not_leader()  # the leader's view: match indexes, contacts
            return {"ok": True, "members": (await node.members()).to_dict()}
        if op == "add_member":
            index = await node.add_member(request["id"], request["address"],
                                          parse_role(request.get("role", "spare")))
            return {"ok": True, "index": index}
        if op == "assign":
            index = await node.assign_role(request["id"], parse_role(request["role"]))
            return {"ok": True, "index": index}
        if op == "remove":
            return {"ok": True, "index": await node.remove_member(request["id"])}
        if op == "join_token":
            if not node.is_leader:
                raise node._not_leader()
            await node.apply(join_token_command(request["digest"], request["id"],
                                                request["expires"]))
            return {"ok": True}
        if op == "join_use":
            return {"ok": True, "result": await self.use_join_token(
                node, request["digest"], request["id"])}
        assert op == "transfer"
        start = trio.current_time()
        leader = await node.transfer_leadership(request.get("to"))
        elapsed = trio.current_time() - start
        logger.info("node %d: leadership transferred to %d in %.2f ms", node.id, leader,
                    elapsed * 1000)
        return {"ok": True, "leader_id": leader, "leader_address": node.address_of(leader),
                "elapsed_ms": elapsed * 1000}


_CHANGES = ("add_member", "assign", "remove")


async def wait_for_leader(node: Node, wait: float,
                          exclude: Sequence[tuple[int, int]] = ()) -> None:
    """The long poll of a ``status`` request with ``wait`` (``docs/runtime.md``): return
    once ``node`` knows a leader that the client does not distrust, or after ``wait``
    seconds (at most :data:`protocol.MAX_STATUS_WAIT`).

    ``exclude`` holds ``(leader id, term)`` pairs: a leader the client saw fail, in
    the term it last knew. While the node's leader is one of those ids and its term
    is not above the pair's, the node keeps waiting (its followers still name a dead
    leader until an election timeout passes); a newer leader, even the same member
    re-elected in a later term, ends the wait at once, and so does this node leading
    (it answers: it is alive). The client that asked learns of the new leader the
    moment this member does, instead of polling every ``retry_delay``."""

    def known() -> bool:
        status = node.status()
        leader = status.leader_id
        if leader is None:
            return False
        return leader == node.id or not any(
            leader == member and status.term <= term for member, term in exclude)

    with trio.move_on_after(min(wait, protocol.MAX_STATUS_WAIT)):
        try:
            while not known():
                await node.wait_changed()
        except NodeClosed:
            return


def _join_result(result: object) -> str:
    return result if isinstance(result, str) else f"unexpected result {result!r:.40}"
