"""Separate peer and client listeners (``--client-listen``): peers are refused on the
client listener, clients on the peer listener; each works on its own (real sockets, and
real ``raftpy serve`` processes)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import trio
from test_trio_transport import CLUSTER, receive, vote, wait_for

from raftpy import cli
from raftpy.demo_net import Servers, _free_ports
from raftpy.errors import HandshakeRefused
from raftpy.trio.client import connect_client
from raftpy.trio.framing import FramedStream
from raftpy.trio.transport import PeerAddress, Transport


async def echo(stream: FramedStream) -> None:
    while (data := await stream.receive()) is not None:
        await stream.send(data.upper())


async def test_peers_and_clients_each_on_their_own_listener() -> None:
    peer_port, client_port = _free_ports(2)
    t1 = Transport(1, CLUSTER, {2: PeerAddress("127.0.0.1", 1)}, client_handler=echo)
    peer_listeners = await trio.open_tcp_listeners(peer_port, host="127.0.0.1")
    client_listeners = await trio.open_tcp_listeners(client_port, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(t1.run, peer_listeners, client_listeners=client_listeners))
        # A client on the client listener is served; on the peer listener it is refused.
        client = await connect_client(f"127.0.0.1:{client_port}", cluster_id=CLUSTER)
        await client.send(b"ping")
        assert await client.receive() == b"PING"
        await client.aclose()
        with pytest.raises(HandshakeRefused) as refused:
            await connect_client(f"127.0.0.1:{peer_port}", cluster_id=CLUSTER)
        assert refused.value.reason == \
            "this is the peer listener; clients connect to the client listener"
        # A peer dialling the client listener is refused; the peer listener takes it.
        wrong = Transport(2, CLUSTER, {1: PeerAddress("127.0.0.1", client_port)})
        nursery.start_soon(wrong.run)
        wrong.send(vote(2, 1))
        await wait_for(lambda: wrong.stats()["handshake_failures"] >= 1)
        assert t1.stats()["frames_received"] == 0
        right = Transport(2, CLUSTER, {1: PeerAddress("127.0.0.1", peer_port)})
        nursery.start_soon(right.run)
        right.send(vote(2, 1))
        assert await receive(t1) == [vote(2, 1)]
        assert t1.stats()["refused"] >= 2
        nursery.cancel_scope.cancel()
    for listener in [*peer_listeners, *client_listeners]:
        await listener.aclose()


def test_raftpy_serve_with_client_listen(tmp_path: Path) -> None:
    """Three processes, clients given the client addresses only (the first a follower
    most of the time: answers name no peer address to follow, the client asks around)."""
    servers = Servers(tmp_path, 3, cluster_id="split")
    client_ports = dict(zip(servers.ids, _free_ports(3), strict=True))
    client_addresses = [f"127.0.0.1:{client_ports[i]}" for i in servers.ids]

    def raftpy(addresses: list[str], *argv: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, RAFTPY_CLUSTER=",".join(addresses), RAFTPY_CLUSTER_ID="split")
        return subprocess.run([sys.executable, "-m", "raftpy.cli", *argv, "--timeout", "5"],
                              env=env, capture_output=True, text=True, timeout=60)

    try:
        for node_id in servers.ids:
            servers.start(node_id, extra=["--client-listen", client_addresses[node_id - 1]])
        deadline = time.monotonic() + 30
        while (put := raftpy(client_addresses, "put", "k", "v")).returncode != cli.EXIT_OK \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert put.returncode == cli.EXIT_OK, put.stderr
        for i in range(3):  # whichever member is asked first, leader or not
            got = raftpy(client_addresses[i:] + client_addresses[:i], "get", "k")
            assert (got.returncode, got.stdout) == (cli.EXIT_OK, "v\n"), got.stderr
        refused = raftpy(servers.addresses[:1], "get", "k")
        assert refused.returncode == cli.EXIT_FAILED
        assert "this is the peer listener; clients connect to the client listener" \
            in refused.stderr, refused.stderr
    finally:
        servers.stop_all()
