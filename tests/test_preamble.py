"""The connection preamble (``handshake.MAGIC``, issue 11): dialling a server that is not
raftpy says so, and a node refuses a client of another protocol with one clear log line
(real sockets, and a real HTTP server process)."""

from __future__ import annotations

import subprocess
import sys
from functools import partial

import pytest
import trio
from test_trio_transport import BOUND, CLUSTER, closed_by_server, cluster

from raftpy.demo_net import _free_ports
from raftpy.errors import HandshakeRefused
from raftpy.trio.client import connect_client
from raftpy.trio.framing import FramedStream


async def tiny_http_server(stream: trio.SocketStream) -> None:
    """Answers every request line with 400, as HTTP servers do."""
    data = b""
    while b"\n" not in data:
        chunk = await stream.receive_some(1024)
        if not chunk:
            return
        data += chunk
    await stream.send_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    await stream.aclose()


async def test_dialling_an_http_server_says_it_is_not_a_raftpy_node() -> None:
    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, tiny_http_server, 0,
                                                  host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        with trio.fail_after(BOUND), pytest.raises(HandshakeRefused) as caught:
            await connect_client(f"127.0.0.1:{port}", cluster_id=CLUSTER)
        assert caught.value.reason == \
            f"not a raftpy node at 127.0.0.1:{port} (it answered b'HTTP/1.1 4')"
        nursery.cancel_scope.cancel()


async def test_an_http_client_is_refused_with_a_clear_log_line(
        caplog: pytest.LogCaptureFixture) -> None:
    async with cluster(2) as c:
        stream = await trio.open_tcp_stream("127.0.0.1", c.ports[1])
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await closed_by_server(FramedStream(stream))
        assert c.transports[1].stats()["protocol_errors"] == 1
    assert "not a raftpy peer or client: HTTP (b'GET / HTTP')" in caplog.text


async def test_a_tls_client_on_a_plain_port_is_named_as_such(
        caplog: pytest.LogCaptureFixture) -> None:
    async with cluster(1) as c:
        stream = await trio.open_tcp_stream("127.0.0.1", c.ports[1])
        await stream.send_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        assert await closed_by_server(FramedStream(stream))
    assert "a TLS handshake (this node does not use TLS)" in caplog.text


def test_the_cli_pointed_at_an_http_server_says_not_a_raftpy_node() -> None:
    (port,) = _free_ports(1)
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                               "127.0.0.1"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):  # until it listens
            probe = subprocess.run([sys.executable, "-m", "raftpy.cli", "get", "k",
                                    "--cluster", f"127.0.0.1:{port}", "--timeout", "5"],
                                   capture_output=True, text=True, timeout=60)
            if "connection refused" not in probe.stderr:
                break
        # (http.server takes the preamble for an HTTP/0.9 request: it answers an error
        # page without a status line.)
        assert probe.returncode == 4, probe.stderr
        assert probe.stderr == "raftpy: connection rejected: not a raftpy node at " \
            f"127.0.0.1:{port} (it answered b'<!DOCTYPE ')\n"
    finally:
        server.kill()
        server.wait()
