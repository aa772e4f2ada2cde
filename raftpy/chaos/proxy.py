"""A TCP proxy for one directed peer link, which the nemesis can cut.

Member ``i`` is given ``127.0.0.1:P`` as member ``j``'s address, where a
:class:`LinkProxy` listens and forwards to ``j``'s real listener. Since a member
dials each peer for the messages it sends (``docs/transport.md``), this proxy
carries exactly the messages ``i`` sends to ``j``. :meth:`LinkProxy.cut` makes it
a black hole: bytes in both directions are read and thrown away, new connections
are accepted and never forwarded (like a dropped route, no reset). :meth:`heal`
closes the connections that lost bytes (their framing is broken) so the dialer
reconnects, and forwards again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

logger = logging.getLogger(__name__)


class LinkProxy:
    """Forwards ``127.0.0.1:port`` to ``target`` (``(host, port)``) unless cut."""

    def __init__(self, port: int, target: tuple[str, int], name: str) -> None:
        self.port = port
        self.target = target
        self.name = name
        self.is_cut = False
        self._scopes: set[trio.CancelScope] = set()
        self.connections = 0

    def cut(self) -> None:
        """Blackhole the link (existing and new connections)."""
        self.is_cut = True

    def heal(self) -> None:
        """Forward again; connections that lost bytes meanwhile are closed."""
        if self.is_cut:
            self.is_cut = False
            for scope in list(self._scopes):
                scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Serve until cancelled."""
        await _serve(self.port, self._handle, task_status)

    async def _handle(self, downstream: trio.SocketStream) -> None:
        self.connections += 1
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                upstream = None
                try:
                    if not self.is_cut:
                        upstream = await trio.open_tcp_stream(*self.target)
                except OSError:
                    return  # the member is down: the dialer sees the connection close
                async with trio.open_nursery() as nursery:
                    if upstream is None:
                        nursery.start_soon(_discard, downstream)
                    else:
                        nursery.start_soon(self._pump, downstream, upstream, nursery)
                        nursery.start_soon(self._pump, upstream, downstream, nursery)
            finally:
                self._scopes.discard(scope)
                with trio.CancelScope(shield=True):
                    for stream in (downstream, upstream):
                        if stream is not None:
                            await stream.aclose()

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream,
                    nursery: trio.Nursery) -> None:
        try:
            while data := await source.receive_some(65536):
                if not self.is_cut:
                    await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        nursery.cancel_scope.cancel()  # one side closed: close both



class MemberProxy:
    """Forwards every peer's connections to one member, and cuts them per source.

    The cluster's configuration gives each member one address, the same for every
    peer (it is replicated in the log), so per-link proxies cannot be given out
    per dialer. This proxy stands in front of one member instead and learns who
    dials from the handshake's hello, the first frame of every peer connection;
    :meth:`cut` then blackholes one directed link ``src -> member`` (bytes both ways
    are read and dropped), :meth:`heal` restores it and closes the connections that
    lost bytes so the dialer reconnects.
    """

    _HELLO_LIMIT = 64 * 1024

    def __init__(self, port: int, target: tuple[str, int], member_id: int) -> None:
        self.port = port
        self.target = target
        self.member_id = member_id
        self.cut_from: set[int] = set()
        self._scopes: dict[int | None, set[trio.CancelScope]] = {}
        self.connections = 0

    def cut(self, src: int) -> None:
        """Blackhole what ``src`` sends to this member (and the answers)."""
        self.cut_from.add(src)

    def heal(self, src: int | None = None) -> None:
        """Forward again from ``src`` (default: everyone)."""
        sources = set(self.cut_from) if src is None else {src} & self.cut_from
        for source in sources:
            self.cut_from.discard(source)
            for scope in list(self._scopes.get(source, ())):
                scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Serve until cancelled."""
        await _serve(self.port, self._handle, task_status)

    async def _hello(self, stream: trio.SocketStream) -> tuple[bytes, int | None]:
        """The first frame's bytes and the node id its hello names (None: not a
        peer's hello, or none within a second)."""
        from raftpy.errors import ProtocolError
        from raftpy.trio.handshake import MAGIC, decode_hello

        data = b""
        skip = len(MAGIC)  # the preamble, then the hello frame
        with trio.move_on_after(1.0):
            while len(data) < skip + 4 \
                    or len(data) < skip + 4 + int.from_bytes(data[skip:skip + 4], "big"):
                if len(data) > self._HELLO_LIMIT:
                    break
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                data += chunk
        if len(data) < skip + 4 or not data.startswith(MAGIC):
            return data, None
        length = int.from_bytes(data[skip:skip + 4], "big")
        try:
            hello = decode_hello(data[skip + 4:skip + 4 + length])
        except ProtocolError:
            return data, None
        return data, hello.node_id

    async def _handle(self, downstream: trio.SocketStream) -> None:
        self.connections += 1
        upstream: trio.SocketStream | None = None
        src: int | None = None
        with trio.CancelScope() as scope:
            try:
                first, src = await self._hello(downstream)
                self._scopes.setdefault(src, set()).add(scope)
                if src not in self.cut_from:
                    try:
                        upstream = await trio.open_tcp_stream(*self.target)
                        await upstream.send_all(first)
                    except (OSError, trio.BrokenResourceError):
                        return  # the member is down: the dialer sees the close
                async with trio.open_nursery() as nursery:
                    if upstream is None:
                        nursery.start_soon(_discard, downstream)
                    else:
                        nursery.start_soon(self._pump, downstream, upstream, src, nursery)
                        nursery.start_soon(self._pump, upstream, downstream, src, nursery)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                self._scopes.get(src, set()).discard(scope)
                with trio.CancelScope(shield=True):
                    for stream in (downstream, upstream):
                        if stream is not None:
                            await stream.aclose()

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream,
                    src: int | None, nursery: trio.Nursery) -> None:
        try:
            while data := await source.receive_some(65536):
                if src not in self.cut_from:
                    await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        nursery.cancel_scope.cancel()


async def _serve(port: int, handler: Callable[[trio.SocketStream], Awaitable[None]],
                 task_status: trio.TaskStatus[None]) -> None:
    """Accept on ``127.0.0.1:port`` and run ``handler`` per connection until cancelled."""
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        task_status.started()
        await trio.serve_listeners(handler, listeners, handler_nursery=nursery)


async def _discard(source: trio.SocketStream) -> None:
    """Read and drop everything (a blackholed link)."""
    try:
        while await source.receive_some(65536):
            pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
