"""A key-value client that talks to any member and follows the leader.

It tries the members it was given in turn, follows ``not_leader`` redirects,
waits briefly while an election runs, and gives up with
:class:`ClusterUnavailable` once its deadline passes.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from raftpy.errors import RaftError
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


class _Retry(Exception):
    """Internal: this member cannot answer now; try another."""


class KVClient:
    """A client of the replicated key-value store.

    ``members`` lists ``host:port`` addresses of any members (not necessarily all).
    ``timeout`` bounds each whole operation, retries included.
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
        """Set ``key`` to ``value`` (returns once committed)."""
        await self._leader_request({"op": "put", "key": key, "value": value})

    async def get(self, key: str) -> str:
        """The value of ``key``, read linearizably; raises :class:`KeyNotFound`."""
        response = await self._leader_request({"op": "get", "key": key})
        value: str = response["value"]
        return value

    async def delete(self, key: str) -> None:
        """Remove ``key``; raises :class:`KeyNotFound` if it did not exist."""
        await self._leader_request({"op": "delete", "key": key})

    async def transfer(self, to: int | None = None) -> dict[str, Any]:
        """Ask the leader to hand over (to ``to``, or the best voter). Returns the
        response: ``leader_id``, ``leader_address``, ``elapsed_ms`` (leader-side)."""
        return await self._leader_request({"op": "transfer", "to": to})

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

    async def _leader_request(self, request: dict[str, Any]) -> dict[str, Any]:
        last_problem = "no member tried"
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
                        tried_without_leader += 1
                    elif code == protocol.UNAVAILABLE:
                        last_problem = f"{address}: {message}"
                        self.leader_address = None
                        tried_without_leader += 1
                    else:
                        raise RequestFailed(str(code), message)
                if tried_without_leader and tried_without_leader % len(order) == 0:
                    # Every member tried: give an election time to finish.
                    await trio.sleep(0.05)
        raise ClusterUnavailable(
            f"no answer from the cluster within {self.timeout:g}s ({last_problem})")

    async def _request_once(self, address: str, request: dict[str, Any]) -> dict[str, Any]:
        stream = self._streams.get(address)
        if stream is None:
            with trio.fail_after(min(self.timeout, 2.0)):
                stream = await self._connect(address)
            self._streams[address] = stream
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
        stream: FramedStream = await connect_client(address, cluster_id=cluster_id,
                                                    ssl_context=ssl_context)
        return stream

    return connect
