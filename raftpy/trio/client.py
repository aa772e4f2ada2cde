"""The client side of a member's port: connect, say hello as a client, exchange frames.

The member hands the connection to its ``client_handler`` (see
:mod:`raftpy.trio.transport`); what the frames mean is the application's
business (the key-value example speaks :mod:`raftpy.kv.protocol`).
"""

from __future__ import annotations

import ssl

import trio

from raftpy.trio import handshake
from raftpy.trio.framing import DEFAULT_MAX_FRAME, FramedStream
from raftpy.trio.transport import (
    PeerAddress,
    check_server_identity,
    close_quietly,
    open_tcp,
    peer_address,
)


async def connect_client(
    address: str | PeerAddress | tuple[str, int],
    *,
    cluster_id: str,
    ssl_context: ssl.SSLContext | None = None,
    max_frame: int = DEFAULT_MAX_FRAME,
    timeout: float = 5.0,
) -> FramedStream:
    """Open a client connection to the member at ``address`` (``"host:port"``).

    Raises :class:`~raftpy.errors.HandshakeRefused` if the member refuses (another
    cluster, no client service) or, with TLS, if its certificate is not a node
    certificate of ``cluster_id`` (``docs/security.md``); ``OSError`` or
    ``trio.TooSlowError`` if it cannot be reached within ``timeout``,
    ``trio.BrokenResourceError`` if TLS fails.
    """
    addr = peer_address(address)
    with trio.fail_after(timeout):
        stream: trio.abc.Stream = await open_tcp(0, addr)
        try:
            if ssl_context is not None:
                stream = trio.SSLStream(stream, ssl_context, server_hostname=addr.host)
                await stream.do_handshake()
                check_server_identity(stream, cluster_id, None)
            framed = await handshake.say_hello(
                stream, handshake.Hello(cluster_id=cluster_id, node_id=None,
                                        role=handshake.ROLE_CLIENT),
                expected_node=None, name=str(addr))
        except BaseException:
            await close_quietly(stream)
            raise
    framed.decoder.max_frame = max_frame
    return framed
