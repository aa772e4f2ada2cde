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
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        async with trio.open_nursery() as nursery:
            task_status.started()
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

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
                        nursery.start_soon(self._discard, downstream)
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

    async def _discard(self, source: trio.SocketStream) -> None:
        try:
            while await source.receive_some(65536):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
