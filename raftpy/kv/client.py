"""A key-value client that talks to any member and follows the leader.

It tries the members it was given in turn, follows ``not_leader`` redirects,
waits briefly while an election runs, and gives up with
:class:`ClusterUnavailable` once its deadline passes.

Writes go through a client session (``docs/sessions.md``): the client opens one on
its first write, numbers every write and sends the same number on every retry, so
the cluster applies a retried write once.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from raftpy.errors import HandshakeRefused, ProtocolError, RaftError
from raftpy.kv import protocol
from raftpy.kv.server import FramedStream

logger = logging.getLogger(__name__)

Connect = Callable[[str], Awaitable[Any]]
"""Opens a framed client connection to ``host:port``."""


class KVError(RaftError):
    """Base class of the key-value client's errors."""


class KeyNotFound(KVError, KeyError):
    """The key does not exist (or did not, for a delete)."""

    def __init__(self, key: str):
        self.key = key
        super().__init__(f"no such key: {key!r}")

    def __str__(self) -> str:
        return f"no such key: {self.key!r}"


class ClusterUnavailable(KVError):
    """No member answered usefully before the deadline (unreachable, no leader...)."""


class RequestFailed(KVError):
    """The cluster answered, with an error that retrying will not fix."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


class InvalidRequest(KVError, ValueError):
    """A key or value the cluster cannot take (not valid Unicode text, or above
    ``protocol.MAX_KEY_BYTES`` / ``MAX_VALUE_BYTES``): refused before sending."""


class ConnectionRejected(KVError):
    """A member refused the connection for a reason retrying cannot fix: another
    cluster id, no client service, a TLS handshake that failed (certificates, or
    TLS on one side only)."""


class OutcomeUnknown(KVError):
    """A write was retried and its session expired meanwhile: an earlier attempt may
    or may not have been applied, and the cluster no longer remembers. The write was
    NOT applied again. The client drops the session (the next write opens another).
    """

    def __init__(self, op: str, key: str, session_id: int):
        self.op = op
        self.key = key
        self.session_id = session_id
        super().__init__(f"outcome of {op} {key!r} unknown: it was retried and its session "
                         f"{session_id} expired meanwhile (an earlier attempt may have been "
                         "applied); read the key to find out")


class _Session:
    """The client's session: its id, the next request number, the numbers of the
    writes still waiting for an answer (several tasks may share one client)."""

    __slots__ = ("id", "last_used", "next_seq", "pending", "timeout")

    def __init__(self, session_id: int, timeout: float) -> None:
        self.id = session_id
        self.timeout = timeout
        """The cluster's session timeout (seconds of cluster time)."""
        self.next_seq = 1
        self.pending: set[int] = set()
        self.last_used = trio.current_time()
        """When this session's latest write was sent (this client's clock)."""


class _Retry(Exception):
    """Internal: this member cannot answer now; try another."""


class KVClient:
    """A client of the replicated key-value store.

    ``members`` lists ``host:port`` addresses of any members (not necessarily all).
    ``timeout`` bounds each whole operation, retries included (the first write also
    opens the session: one more request, with its own ``timeout``).
    """

    def __init__(
        self,
        members: Sequence[str],
        *,
        cluster_id: str = "raftpy",
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        connect: Connect | None = None,
    ) -> None:
        if not members:
            raise ValueError("a client needs at least one member address")
        self.members = list(dict.fromkeys(members))
        self.timeout = timeout
        self.leader_address: str | None = None
        self._connect = connect if connect is not None else _default_connect(
            cluster_id, ssl_context)
        self._streams: dict[str, Any] = {}
        self._locks: dict[str, trio.Lock] = {}
        self._session: _Session | None = None
        self._session_lock = trio.Lock()
        self._sends: dict[tuple[int, int], int] = {}
        """How often each (session, seq) write has been sent (see :meth:`_write`)."""

    async def __aenter__(self) -> KVClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every open connection."""
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            await _close(stream)

    async def put(self, key: str, value: str) -> None:
        """Set ``key`` to ``value`` (returns once committed; applied once, however
        often it had to be retried). Raises :class:`OutcomeUnknown` if the session
        expired while retrying, :class:`InvalidRequest` at once for a key or value
        the cluster cannot take."""
        _check(key, value)
        await self._write({"op": "put", "key": key, "value": value})

    async def get(self, key: str, *, stale: bool = False) -> str:
        """The value of ``key``, read linearizably (ReadIndex) unless ``stale``: then
        the member answers from its own state at once, which may be behind.
        Raises :class:`KeyNotFound`."""
        _check(key)
        request: dict[str, Any] = {"op": "get", "key": key}
        if stale:
            request["stale"] = True
        response = await self._leader_request(request)
        value: str = response["value"]
        return value

    async def delete(self, key: str) -> None:
        """Remove ``key``; raises :class:`KeyNotFound` if it did not exist (before
        this delete: a retry of a delete that was applied reports success), and
        :class:`OutcomeUnknown` and :class:`InvalidRequest` like :meth:`put`."""
        _check(key)
        await self._write({"op": "delete", "key": key})

    async def transfer(self, to: int | None = None) -> dict[str, Any]:
        """Ask the leader to hand over (to ``to``, or the best voter). Returns the
        response: ``leader_id``, ``leader_address``, ``elapsed_ms`` (leader-side)."""
        return await self._leader_request({"op": "transfer", "to": to})

    async def membership(self) -> dict[str, Any]:
        """The leader's view of the membership (``Membership.to_dict()`` form)."""
        response = await self._leader_request({"op": "members"})
        members: dict[str, Any] = response["members"]
        return members

    async def add_member(self, member_id: int, address: str, role: str = "spare") -> int:
        """Have the leader add ``member_id`` at ``address`` as ``role``; returns the
        configuration entry's index once committed. Raises :class:`RequestFailed`
        (codes ``busy``, ``invalid_change``, ``promotion_failed``)."""
        response = await self._leader_request(
            {"op": "add_member", "id": member_id, "address": address, "role": role})
        return int(response["index"])

    async def assign_role(self, member_id: int, role: str) -> int:
        """Have the leader give ``member_id`` ``role``; like :meth:`add_member`."""
        response = await self._leader_request({"op": "assign", "id": member_id, "role": role})
        return int(response["index"])

    async def remove_member(self, member_id: int) -> int:
        """Have the leader remove ``member_id``; like :meth:`add_member`."""
        response = await self._leader_request({"op": "remove", "id": member_id})
        return int(response["index"])

    async def status(self, address: str) -> dict[str, Any]:
        """The status of the member at ``address`` (no redirect)."""
        with trio.fail_after(self.timeout):
            response = await self._request_once(address, {"op": "status"})
        if not response["ok"]:
            raise RequestFailed(response.get("error", "?"), response.get("message", ""))
        status: dict[str, Any] = response["status"]
        return status

    async def statuses(self) -> dict[str, dict[str, Any] | str]:
        """Every listed member's status, or why it could not be had."""
        out: dict[str, dict[str, Any] | str] = {}

        async def one(address: str) -> None:
            try:
                with trio.fail_after(min(self.timeout, 2.0)):
                    out[address] = await self.status(address)
            except (OSError, trio.TooSlowError, RaftError, ValueError,
                    trio.BrokenResourceError) as exc:
                out[address] = _describe(exc)

        async with trio.open_nursery() as nursery:
            for address in self.members:
                nursery.start_soon(one, address)
        return {a: out[a] for a in self.members}

    # ------------------------------------------------------------------ internals

    async def _write(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send a put or delete as the next request of the session, the same
        ``(session, seq)`` on every retry, so that the cluster applies it once."""
        renewed = False
        while True:
            session = await self._open_session()
            seq = session.next_seq
            session.next_seq += 1
            session.pending.add(seq)
            session.last_used = trio.current_time()
            key = (session.id, seq)
            # ack: every answer below the lowest write still waited on has arrived
            # (by this or another task), so the cluster may forget those results.
            numbered = {**request, "session": session.id, "seq": seq,
                        "ack": min(session.pending)}
            try:
                response = await self._leader_request(numbered)
            except RequestFailed as exc:
                if exc.code != protocol.SESSION_EXPIRED:
                    raise
                if self._session is session:
                    self._session = None  # the next write opens a new one
                # Sent more than once: an earlier attempt may have been applied (even
                # a not_leader answer may come from a leader that lost its proposal's
                # fate to a snapshot). Sent once and refused: certainly not applied,
                # so it may go again, once, in a new session.
                if self._sends.get(key, 0) > 1:
                    raise OutcomeUnknown(request["op"], request["key"], session.id) from None
                if renewed:
                    raise
                renewed = True
            else:
                return response
            finally:
                session.pending.discard(seq)
                self._sends.pop(key, None)

    async def _open_session(self) -> _Session:
        """The client's session, registered through the log on first use."""
        async with self._session_lock:  # concurrent first writes share one session
            session = self._session
            if (session is not None and not session.pending
                    and trio.current_time() - session.last_used > session.timeout / 2):
                # Idle for long: the cluster may expire it under the next write, and a
                # retried write would then end in OutcomeUnknown. Cheaper to start over.
                session = None
            if session is None:
                response = await self._leader_request({"op": "session"})
                session_id, timeout = response.get("session"), response.get("timeout")
                if type(session_id) is not int or not isinstance(timeout, (int, float)):
                    raise RequestFailed("malformed_response",
                                        f"no session in the answer: {response!r:.100}")
                session = self._session = _Session(session_id, float(timeout))
            return session

    async def _leader_request(self, request: dict[str, Any]) -> dict[str, Any]:
        last_problem = "no member tried"
        no_leader: str | None = None
        """A member's answer that it knows no leader (better than a connect error)."""
        tried_without_leader = 0
        with trio.move_on_after(self.timeout):
            order = list(self.members)
            turn = 0
            while True:
                if self.leader_address is not None:
                    address = self.leader_address
                else:
                    address = order[turn % len(order)]
                    turn += 1
                try:
                    response = await self._request_once(address, request)
                except ConnectionRejected:
                    raise  # retrying cannot fix it
                except (OSError, trio.BrokenResourceError, trio.TooSlowError,
                        ValueError, RaftError) as exc:
                    last_problem = f"{address}: {_describe(exc)}"
                    logger.debug("request to %s failed: %s", address, last_problem)
                    self.leader_address = None
                    await self._drop(address)
                    tried_without_leader += 1
                else:
                    if response["ok"]:
                        self.leader_address = address
                        return response
                    code = response.get("error")
                    message = response.get("message", "")
                    if code == protocol.NOT_FOUND:
                        raise KeyNotFound(request.get("key", ""))
                    if code == protocol.NOT_LEADER:
                        leader = response.get("leader_address")
                        last_problem = f"{address}: {message}"
                        if leader and leader != address:
                            self.leader_address = leader
                            continue
                        self.leader_address = None
                        no_leader = last_problem
                        tried_without_leader += 1
                    elif code == protocol.UNAVAILABLE:
                        last_problem = no_leader = f"{address}: {message}"
                        self.leader_address = None
                        tried_without_leader += 1
                    else:
                        raise RequestFailed(str(code), message)
                if tried_without_leader and tried_without_leader % len(order) == 0:
                    # Every member tried: give an election time to finish.
                    await trio.sleep(0.05)
        if no_leader is not None:
            raise ClusterUnavailable(f"no leader within {self.timeout:g}s ({no_leader})")
        raise ClusterUnavailable(
            f"no answer from the cluster within {self.timeout:g}s ({last_problem})")

    async def _request_once(self, address: str, request: dict[str, Any]) -> dict[str, Any]:
        # One request at a time per connection: tasks sharing this client would
        # otherwise receive concurrently on one stream (Trio refuses that with
        # BusyResourceError) or take each other's answers.
        async with self._locks.setdefault(address, trio.Lock()):
            return await self._exchange(address, request)

    async def _exchange(self, address: str, request: dict[str, Any]) -> dict[str, Any]:
        stream = self._streams.get(address)
        if stream is None:
            with trio.fail_after(min(self.timeout, 2.0)):
                stream = await self._connect(address)
            self._streams[address] = stream
        if "seq" in request:
            key = (request["session"], request["seq"])
            self._sends[key] = self._sends.get(key, 0) + 1
        try:
            await stream.send(protocol.encode(request))
            data = await stream.receive()
        except BaseException:
            await self._drop(address)
            raise
        if data is None:
            await self._drop(address)
            raise trio.BrokenResourceError(f"{address} closed the connection")
        return protocol.decode_response(data)

    async def _drop(self, address: str) -> None:
        stream = self._streams.pop(address, None)
        if stream is not None:
            await _close(stream)


async def _close(stream: Any) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await aclose()


def _check(key: str, value: str | None = None) -> None:
    try:
        protocol.check_key(key)
        if value is not None:
            protocol.check_value(value)
    except protocol.BadRequest as exc:
        raise InvalidRequest(str(exc)) from None


def _describe(exc: BaseException) -> str:
    if _refused(exc):
        return "connection refused"
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def _refused(exc: BaseException | None) -> bool:
    """Whether ``exc`` is (or wraps: trio's "all attempts failed") a refused connect."""
    if exc is None:
        return False
    if isinstance(exc, ConnectionRefusedError):
        return True
    inner = getattr(exc, "exceptions", None)
    if isinstance(inner, tuple) and inner and all(_refused(e) for e in inner):
        return True
    return _refused(exc.__cause__)


def _default_connect(cluster_id: str, ssl_context: ssl.SSLContext | None) -> Connect:
    from raftpy.trio.client import connect_client

    async def connect(address: str) -> FramedStream:
        try:
            stream: FramedStream = await connect_client(address, cluster_id=cluster_id,
                                                        ssl_context=ssl_context)
        except HandshakeRefused as exc:
            raise ConnectionRejected(f"{address} refused us: {exc.reason}") from exc
        except trio.BrokenResourceError as exc:
            if isinstance(exc.__cause__, ssl.SSLError):
                raise ConnectionRejected(
                    f"TLS handshake with {address} failed: {_describe(exc.__cause__)}"
                ) from exc
            raise
        except ProtocolError as exc:
            # Bytes where a hello reply belongs: not a raftpy member's port.
            raise ConnectionRejected(
                f"{address} did not answer like a raftpy member: {exc}") from exc
        return stream

    return connect
