"""The TCP/TLS transport: real loopback sockets (real time, generous bounds) and, for
timing, memory streams under trio's MockClock."""

from __future__ import annotations

import random
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgpack
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from raftpy import codec
from raftpy.errors import HandshakeRefused
from raftpy.messages import (
    AppendEntries,
    Entry,
    InstallSnapshot,
    Message,
    RequestVote,
    RequestVoteResponse,
)
from raftpy.trio import handshake
from raftpy.trio.client import connect_client
from raftpy.trio.framing import FramedStream, encode_frame
from raftpy.trio.transport import PeerAddress, Transport

CLUSTER = "test-cluster"
BOUND = 10.0  # seconds: generous, real-socket steps take milliseconds


def vote(src: int, dst: int, term: int = 1) -> RequestVote:
    return RequestVote(term=term, src=src, dst=dst, last_log_index=0, last_log_term=0)


def heartbeat(src: int, dst: int, commit: int = 0) -> AppendEntries:
    return AppendEntries(term=1, src=src, dst=dst, prev_log_index=0, prev_log_term=0,
                         entries=(), leader_commit=commit)


def append(src: int, dst: int, index: int) -> AppendEntries:
    return AppendEntries(term=1, src=src, dst=dst, prev_log_index=index - 1, prev_log_term=1,
                         entries=(Entry(index, 1, b"x"),), leader_commit=0)


def snapshot_chunk(src: int, dst: int, size: int) -> InstallSnapshot:
    return InstallSnapshot(term=1, src=src, dst=dst, last_included_index=10,
                           last_included_term=1, offset=0, data=b"s" * size, done=False)


async def receive(transport: Transport, count: int = 1) -> list[Message]:
    with trio.fail_after(BOUND):
        return [await transport.incoming.receive() for _ in range(count)]


async def wait_for(predicate: Callable[[], bool]) -> None:
    with trio.fail_after(BOUND):
        while not predicate():
            await trio.sleep(0.005)


class Cluster:
    """Transports on loopback listeners; each can be stopped and restarted on its port."""

    def __init__(self, nursery: trio.Nursery, ports: dict[int, int], **options: Any) -> None:
        self.nursery = nursery
        self.ports = ports
        self.options = options
        self.transports: dict[int, Transport] = {}
        self._scopes: dict[int, trio.CancelScope] = {}

    def address(self, node_id: int) -> PeerAddress:
        return PeerAddress("127.0.0.1", self.ports[node_id])

    async def start(self, node_id: int, *, peers: dict[int, PeerAddress] | None = None,
                    cluster_id: str = CLUSTER, **options: Any) -> Transport:
        if peers is None:
            peers = {p: self.address(p) for p in self.ports if p != node_id}
        transport = Transport(node_id, cluster_id, peers, rng=random.Random(node_id),
                              **{**self.options, **options})
        listeners = await trio.open_tcp_listeners(self.ports[node_id], host="127.0.0.1")

        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with trio.CancelScope() as scope:
                self._scopes[node_id] = scope
                try:
                    await transport.run(listeners, task_status=task_status)
                finally:
                    with trio.CancelScope(shield=True):
                        for listener in listeners:
                            await listener.aclose()

        await self.nursery.start(run)
        self.transports[node_id] = transport
        return transport

    def stop(self, node_id: int) -> None:
        self._scopes.pop(node_id).cancel()
        del self.transports[node_id]


async def free_ports(n: int) -> dict[int, int]:
    ports = {}
    for node_id in range(1, n + 1):
        (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
        ports[node_id] = listener.socket.getsockname()[1]
        await listener.aclose()
    return ports


@asynccontextmanager
async def cluster(n: int, start: bool = True, **options: Any) -> AsyncIterator[Cluster]:
    ports = await free_ports(n)
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, ports, **options)
        if start:
            for node_id in ports:
                await c.start(node_id)
        yield c
        nursery.cancel_scope.cancel()


async def raw_peer(port: int, node_id: int, *, cluster_id: str = CLUSTER) -> FramedStream:
    """A hand-driven peer connection that has passed the handshake."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    return await handshake.say_hello(stream, handshake.Hello(cluster_id, node_id),
                                     expected_node=None)


async def closed_by_server(framed: FramedStream) -> bool:
    """Whether the server closed the connection (EOF or reset) within the bound."""
    with trio.fail_after(BOUND):
        try:
            return await framed.stream.receive_some(1) == b""
        except trio.BrokenResourceError:
            return True


# ---------------------------------------------------------------------- delivery


async def test_two_transports_exchange_messages_in_order() -> None:
    async with cluster(2) as c:
        t1, t2 = c.transports[1], c.transports[2]
        sent: list[Message] = [vote(1, 2), append(1, 2, 1), append(1, 2, 2), heartbeat(1, 2)]
        for msg in sent:
            t1.send(msg)
        t2.send(RequestVoteResponse(term=1, src=2, dst=1, vote_granted=True))
        assert await receive(t2, 4) == sent
        assert await receive(t1) == [RequestVoteResponse(term=1, src=2, dst=1,
                                                         vote_granted=True)]
        assert t1.stats()["frames_sent"] == 4
        assert t2.stats()["frames_received"] == 4
        assert t1.stats()["connects"] == 1  # one control connection; the bulk lane stayed idle
        assert t2.stats()["accepted"] == 1
        assert t1.connected(2)


async def test_a_burst_arrives_complete_and_in_order() -> None:
    async with cluster(2) as c:
        burst = [append(1, 2, i) for i in range(1, 1001)]
        for msg in burst:
            c.transports[1].send(msg)
        assert await receive(c.transports[2], len(burst)) == burst
        stats = c.transports[1].stats()
        assert stats["frames_sent"] == 1000
        assert stats["dropped_queue_full"] == 0


async def test_three_transports_all_pairs() -> None:
    async with cluster(3) as c:
        for src, t in c.transports.items():
            for dst in c.transports:
                if dst != src:
                    t.send(vote(src, dst))
        for dst, t in c.transports.items():
            got = await receive(t, 2)
            assert sorted(m.src for m in got) == sorted(set(c.transports) - {dst})
            assert all(m.dst == dst for m in got)


async def test_snapshot_chunks_use_their_own_connection() -> None:
    async with cluster(2) as c:
        t1, t2 = c.transports[1], c.transports[2]
        t1.send(snapshot_chunk(1, 2, 300_000))
        t1.send(heartbeat(1, 2))
        got = await receive(t2, 2)
        assert sorted(type(m).__name__ for m in got) == ["AppendEntries", "InstallSnapshot"]
        assert t1.stats()["connects"] == 2
        assert t2.stats()["accepted"] == 2


async def test_message_for_an_unknown_peer_is_dropped_and_counted() -> None:
    async with cluster(2) as c:
        c.transports[1].send(vote(1, 7))
        assert c.transports[1].stats()["dropped_unknown_peer"] == 1


async def test_reconnects_after_the_peer_restarts() -> None:
    async with cluster(2) as c:
        t1 = c.transports[1]
        t1.send(vote(1, 2, term=1))
        assert await receive(c.transports[2]) == [vote(1, 2, term=1)]
        c.stop(2)
        await wait_for(lambda: not t1.connected(2))  # the dialer notices the close at once
        t2 = await c.start(2)
        t1.send(vote(1, 2, term=2))
        assert await receive(t2) == [vote(1, 2, term=2)]
        assert t1.stats()["connects"] == 1
        assert t1.stats()["reconnects"] == 1


async def test_messages_queued_while_the_peer_is_down_arrive_when_it_starts() -> None:
    async with cluster(2, start=False) as c:
        t1 = await c.start(1)
        for term in (1, 2, 3):
            t1.send(vote(1, 2, term=term))
        await wait_for(lambda: t1.stats()["connect_failures"] >= 2)
        t2 = await c.start(2)
        assert [m.term for m in await receive(t2, 3)] == [1, 2, 3]


# ---------------------------------------------------------------------- refusals


async def test_wrong_cluster_id_is_refused_and_others_still_served() -> None:
    async with cluster(3, start=False) as c:
        t1 = await c.start(1)
        t2 = await c.start(2, cluster_id="another-cluster")
        t2.send(vote(2, 1))
        await wait_for(lambda: t1.stats()["refused"] >= 1
                       and t2.stats()["handshake_failures"] >= 1)
        assert not t2.connected(1)
        with pytest.raises(HandshakeRefused, match="cluster 'another-cluster' is not"):
            await connect_client(f"127.0.0.1:{c.ports[1]}", cluster_id="another-cluster")
        t3 = await c.start(3)
        t3.send(vote(3, 1))
        assert await receive(t1) == [vote(3, 1)]
        assert t1.stats()["frames_received"] == 1


async def test_unknown_node_id_is_refused() -> None:
    async with cluster(2) as c:
        with pytest.raises(HandshakeRefused, match="node 9 is not a configured peer"):
            await raw_peer(c.ports[1], 9)
        assert c.transports[1].stats()["refused"] == 1


async def test_dialler_refuses_another_node_at_a_peer_address() -> None:
    async with cluster(3, start=False) as c:
        t3 = await c.start(3)
        # Node 1 believes node 2 listens where node 3 does.
        t1 = await c.start(1, peers={2: c.address(3), 3: c.address(3)})
        t1.send(vote(1, 2))
        await wait_for(lambda: t1.stats()["handshake_failures"] >= 1)
        assert not t1.connected(2)
        t1.send(vote(1, 3))
        assert await receive(t3) == [vote(1, 3)]  # node 2's vote never reached node 3


async def test_peer_host_check_refuses_a_node_dialling_from_elsewhere() -> None:
    async with cluster(2, start=False) as c:
        t1 = await c.start(1, peers={2: PeerAddress("127.0.0.2", c.ports[2])},
                           check_peer_host=True)
        with pytest.raises(HandshakeRefused, match=r"configured at 127\.0\.0\.2, not 127\.0\.0\.1"):
            await raw_peer(c.ports[1], 2)
        assert t1.stats()["refused"] == 1


async def test_oversized_frame_closes_the_connection_only() -> None:
    async with cluster(3, start=False, max_frame=64 * 1024) as c:
        t1 = await c.start(1)
        bad = await raw_peer(c.ports[1], 3)
        # Claims 4 GiB; the server must refuse on the prefix alone.
        await bad.stream.send_all(struct.pack(">I", 0xFFFFFFFF))
        assert await closed_by_server(bad)
        assert t1.stats()["protocol_errors"] == 1
        t2 = await c.start(2)
        t2.send(vote(2, 1))
        assert await receive(t1) == [vote(2, 1)]


async def test_frame_over_the_limit_is_not_sent() -> None:
    async with cluster(2, max_frame=64 * 1024) as c:
        t1, t2 = c.transports[1], c.transports[2]
        t1.send(snapshot_chunk(1, 2, 100 * 1024))
        t1.send(vote(1, 2))
        assert await receive(t2) == [vote(1, 2)]
        await wait_for(lambda: t1.stats()["dropped_too_large"] == 1)


@pytest.mark.parametrize(("payload", "why"), [
    (b"\xc1\xc1", "not a valid msgpack message"),
    (msgpack.packb([42, 1, 3, 1]), "unknown message type"),
    (codec.encode(vote(2, 1)), "sent a message from 2"),  # connected as node 3
    (codec.encode(vote(3, 2)), "from 3 to 2"),
])
async def test_malformed_frames_close_the_connection(
        payload: bytes, why: str, caplog: pytest.LogCaptureFixture) -> None:
    async with cluster(3, start=False) as c:
        t1 = await c.start(1)
        bad = await raw_peer(c.ports[1], 3)
        await bad.send(payload)
        assert await closed_by_server(bad)
        assert t1.stats()["protocol_errors"] == 1
        assert why in caplog.text
        good = await raw_peer(c.ports[1], 3)
        await good.send(codec.encode(vote(3, 1)))
        assert await receive(t1) == [vote(3, 1)]
        await good.aclose()


async def test_garbage_instead_of_a_hello_is_refused() -> None:
    async with cluster(2) as c:
        stream = await trio.open_tcp_stream("127.0.0.1", c.ports[1])
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await closed_by_server(FramedStream(stream))
        assert c.transports[1].stats()["protocol_errors"] == 1


# ---------------------------------------------------------------------- clients


async def test_client_connection_reaches_the_client_handler() -> None:
    async def echo(stream: FramedStream) -> None:
        while (data := await stream.receive()) is not None:
            await stream.send(data.upper())

    async with cluster(1, client_handler=echo) as c:
        client = await connect_client(f"127.0.0.1:{c.ports[1]}", cluster_id=CLUSTER)
        await client.send(b"ping")
        assert await client.receive() == b"PING"
        await client.aclose()
        assert c.transports[1].stats()["client_connections"] == 1


async def test_client_refused_without_a_handler() -> None:
    async with cluster(1) as c:
        with pytest.raises(HandshakeRefused, match="serves no clients"):
            await connect_client(("127.0.0.1", c.ports[1]), cluster_id=CLUSTER)


async def test_failing_client_handler_does_not_stop_the_server() -> None:
    async def broken(stream: FramedStream) -> None:
        raise RuntimeError("handler bug")

    async with cluster(2, client_handler=broken) as c:
        client = await connect_client(f"127.0.0.1:{c.ports[1]}", cluster_id=CLUSTER)
        assert await closed_by_server(client)
        c.transports[2].send(vote(2, 1))
        assert await receive(c.transports[1]) == [vote(2, 1)]


# TLS (certificates, identities, refusals): tests/test_security.py


# ---------------------------------------------------------------------- queues and timing
# Memory streams under MockClock: virtual time, exact outcomes.


class MemoryNet:
    """Connects dialling transports to accepting ones over memory streams."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.servers: dict[int, Transport] = {}
        self.attempts: list[float] = []
        self.fail_first = 0

    async def connect(self, peer: int, address: PeerAddress) -> trio.abc.Stream:
        self.attempts.append(trio.current_time())
        if len(self.attempts) <= self.fail_first:
            raise OSError("connection refused (simulated)")
        client, server = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self.servers[peer].accept_stream, server)
        return client


def pair(net: MemoryNet, **options: Any) -> tuple[Transport, Transport]:
    peers = {1: PeerAddress("mem", 1), 2: PeerAddress("mem", 2)}
    t1 = Transport(1, CLUSTER, peers, connect_stream=net.connect, rng=random.Random(1),
                   **options)
    t2 = Transport(2, CLUSTER, peers, connect_stream=net.connect, rng=random.Random(2))
    net.servers = {1: t1, 2: t2}
    return t1, t2


async def test_backoff_is_exponential_capped_and_jittered(
        autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        net = MemoryNet(nursery)
        net.fail_first = 8
        t1, t2 = pair(net, backoff_min=0.1, backoff_max=1.0)
        nursery.start_soon(t1.run)
        t1.send(vote(1, 2))
        assert await receive(t2) == [vote(1, 2)]
        gaps = [b - a for a, b in zip(net.attempts, net.attempts[1:], strict=False)]
        steps = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]  # doubling, capped at 1 s
        assert len(gaps) == len(steps)
        for gap, step in zip(gaps, steps, strict=True):
            assert step / 2 <= gap <= step
        assert len({round(g / s, 6) for g, s in zip(gaps, steps, strict=True)}) == len(gaps)
        assert t1.stats()["connect_failures"] == 8
        assert t1.stats()["connects"] == 1
        nursery.cancel_scope.cancel()


async def test_a_peer_that_dials_us_ends_our_backoff_to_it(
        autojump_clock: trio.testing.MockClock) -> None:
    """Node 2 was down long enough for node 1's dialler to back off 2 s; when node 2
    comes back and dials node 1, node 1 dials it at once."""
    async with trio.open_nursery() as nursery:
        net = MemoryNet(nursery)
        net.fail_first = 6
        t1, t2 = pair(net, backoff_min=0.1, backoff_max=2.0)
        nursery.start_soon(t1.run)
        t1.send(vote(1, 2))
        await wait_for(lambda: len(net.attempts) == 6)
        await trio.sleep(0.01)  # node 1 now waits 1 to 2 s before its next attempt
        back = trio.current_time()
        nursery.start_soon(t2.run)
        t2.send(vote(2, 1))
        assert await receive(t1) == [vote(2, 1)]
        assert await receive(t2) == [vote(1, 2)]
        assert trio.current_time() - back < 0.01
        assert t1.stats()["connects"] == 1
        nursery.cancel_scope.cancel()


async def test_full_queue_drops_old_heartbeats_first(
        autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        net = MemoryNet(nursery)
        t1, t2 = pair(net, queue_size=3)
        # Queued before the transport runs: nothing is sent yet.
        for msg in (heartbeat(1, 2, 0), append(1, 2, 1), heartbeat(1, 2, 1), append(1, 2, 2),
                    vote(1, 2)):
            t1.send(msg)
        # hb(0) is replaced by hb(1), which the vote then pushes out of the full queue.
        assert t1.stats()["coalesced_heartbeats"] == 1
        assert t1.stats()["dropped_queue_full"] == 1
        assert t1.stats()["queued"] == 3
        nursery.start_soon(t1.run)
        assert await receive(t2, 3) == [append(1, 2, 1), append(1, 2, 2), vote(1, 2)]
        nursery.cancel_scope.cancel()


async def test_full_queue_without_heartbeats_drops_the_oldest(
        autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        net = MemoryNet(nursery)
        t1, t2 = pair(net, queue_size=2)
        for term in (1, 2, 3, 4):
            t1.send(vote(1, 2, term=term))
        assert t1.stats()["dropped_queue_full"] == 2
        nursery.start_soon(t1.run)
        assert [m.term for m in await receive(t2, 2)] == [3, 4]
        nursery.cancel_scope.cancel()


async def test_queue_is_bounded_in_bytes_too(autojump_clock: trio.testing.MockClock) -> None:
    def big(index: int) -> AppendEntries:
        return AppendEntries(term=1, src=1, dst=2, prev_log_index=index - 1, prev_log_term=1,
                             entries=(Entry(index, 1, b"d" * 400),), leader_commit=0)

    async with trio.open_nursery() as nursery:
        net = MemoryNet(nursery)
        t1, t2 = pair(net, queue_bytes=1000)  # room for two of these, not three
        for index in (1, 2, 3):
            t1.send(big(index))
        assert t1.stats()["dropped_queue_full"] == 1
        nursery.start_soon(t1.run)
        assert await receive(t2, 2) == [big(2), big(3)]
        nursery.cancel_scope.cancel()


async def test_heartbeats_pass_a_stalled_snapshot_transfer(
        autojump_clock: trio.testing.MockClock) -> None:
    stalled = trio.Event()

    async def stall(server_side: trio.abc.Stream) -> None:
        # Completes the handshake, then never reads: the sender's writes block.
        assert await handshake.receive_exactly(server_side, len(handshake.MAGIC)) == handshake.MAGIC
        framed = FramedStream(server_side)
        hello = handshake.decode_hello(await framed.receive() or b"")
        assert hello.lane == handshake.LANE_BULK
        await server_side.send_all(handshake.MAGIC + encode_frame(handshake.encode_reply(
            handshake.HelloReply(ok=True, cluster_id=CLUSTER, node_id=2))))
        stalled.set()
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        net = MemoryNet(nursery)
        t1, t2 = pair(net)
        connections = 0

        async def connect(peer: int, address: PeerAddress) -> trio.abc.Stream:
            nonlocal connections
            connections += 1
            if connections > 1:
                return await net.connect(peer, address)
            client, server = trio.testing.lockstep_stream_pair()
            nursery.start_soon(stall, server)
            return client

        t1._connect_stream = connect
        nursery.start_soon(t1.run)
        t1.send(snapshot_chunk(1, 2, 256 * 1024))  # the bulk lane dials first, and stalls
        t1.send(snapshot_chunk(1, 2, 256 * 1024))
        await stalled.wait()
        for commit in range(5):
            t1.send(heartbeat(1, 2, commit))
            assert await receive(t2) == [heartbeat(1, 2, commit)]
            await trio.sleep(0.05)
        assert t1.stats()["frames_sent"] == 5  # the heartbeats; no snapshot chunk got through
        nursery.cancel_scope.cancel()


async def test_silent_connection_is_refused_after_the_handshake_timeout(
        autojump_clock: trio.testing.MockClock) -> None:
    t1 = Transport(1, CLUSTER, {2: PeerAddress("mem", 2)}, handshake_timeout=3.0)
    _client, server = trio.testing.memory_stream_pair()
    start = trio.current_time()
    await t1.accept_stream(server)  # returns (never raises) once it gives up
    assert trio.current_time() - start == pytest.approx(3.0)
    assert t1.stats()["refused"] == 1


async def test_run_closes_incoming_when_cancelled(
        autojump_clock: trio.testing.MockClock) -> None:
    t1 = Transport(1, CLUSTER, {2: PeerAddress("mem", 2)})
    with trio.move_on_after(1):
        await t1.run([])
    with pytest.raises(trio.EndOfChannel):
        await t1.incoming.receive()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=40).map(encode_frame), st.binary(max_size=40)),
                max_size=4))
def test_random_bytes_after_the_hello_never_crash_the_acceptor(chunks: list[bytes]) -> None:
    async def main() -> None:
        t1 = Transport(1, CLUSTER, {2: PeerAddress("mem", 2)}, max_frame=4096)
        client, server = trio.testing.memory_stream_pair()
        await client.send_all(handshake.MAGIC
                              + encode_frame(handshake.encode_hello(handshake.Hello(CLUSTER, 2))))
        for chunk in chunks:
            await client.send_all(chunk)
        await client.send_eof()  # the reply can still arrive
        with trio.fail_after(5):
            await t1.accept_stream(server)  # returns; never raises
        stats = t1.stats()
        assert stats["accepted"] == 1
        assert stats["protocol_errors"] <= 1

    trio.run(main)


async def test_direct_writes_and_their_cut_short_rest_keep_frames_whole_and_in_order() -> None:
    # The receiver reads nothing until the sender's socket is full: direct writes from
    # send() are cut short and their rest (the outbox prefix) goes out before the
    # messages queued behind it.
    async with cluster(2, start=False) as c:
        receiver = await c.start(2, queue_size=1)
        sender = await c.start(1)
        sender.send(vote(1, 2))  # dials: the first message waits for the connection
        assert [m.term for m in await receive(receiver)] == [1]
        assert sender.stats()["direct_writes"] == 0
        await trio.sleep(0.01)  # the writer is idle again
        sender.send(vote(1, 2, term=2))  # written from send() itself
        assert sender.stats()["direct_writes"] == 1
        assert [m.term for m in await receive(receiver)] == [2]
        big = [AppendEntries(term=1, src=1, dst=2, prev_log_index=i, prev_log_term=1,
                             entries=(Entry(i + 1, 1, bytes([i % 256]) * 65536),),
                             leader_commit=0) for i in range(200)]
        for msg in big:
            sender.send(msg)
            await trio.sleep(0)  # let the writer run between sends, as a driver would
        stats = sender.stats()
        assert 1 < stats["direct_writes"] < 201  # some went direct, the rest queued
        assert stats["direct_writes_cut_short"] >= 1  # one of them only in part
        got = await receive(receiver, 200)
        assert got == big
        await wait_for(lambda: sender.stats()["frames_sent"] == 202)


# ---------------------------------------------------------------------- membership


async def test_update_peers_dials_new_members_and_refuses_removed_ones() -> None:
    async with cluster(3, start=False) as c:
        t1 = await c.start(1, peers={2: c.address(2)})
        t2 = await c.start(2, peers={1: c.address(1)})
        t3 = await c.start(3, peers={1: c.address(1)})
        # Node 3 is not a member yet: node 1 refuses it, with the reason.
        t1.update_peers({2: c.address(2)}, admit={1, 2},
                        what="a member of the configuration at index 4")
        with pytest.raises(HandshakeRefused,
                           match="node 3 is not a member of the configuration at index 4"):
            await raw_peer(c.ports[1], 3)
        # Added: node 1 dials it at once and accepts its connections.
        t1.update_peers({2: c.address(2), 3: c.address(3)}, admit={1, 2, 3})
        t1.send(vote(1, 3))
        assert await receive(t3) == [vote(1, 3)]
        t3.send(vote(3, 1))
        assert await receive(t1) == [vote(3, 1)]
        # Removed: no more dialling, its inbound connection is closed, new ones refused.
        t1.update_peers({3: c.address(3)}, admit={1, 3}, what="a member")
        assert 2 not in t1.peers
        t1.send(vote(1, 2))
        assert t1.stats()["dropped_unknown_peer"] == 1
        refused = t1.stats()["refused"]
        t2.send(vote(2, 1))
        await wait_for(lambda: t1.stats()["refused"] > refused
                       and t2.stats()["handshake_failures"] >= 1)


async def test_a_node_waiting_to_join_learns_the_leader_address_from_its_hello() -> None:
    async with cluster(2, start=False) as c:
        joiner = await c.start(2, peers={})
        joiner.update_peers({}, admit=None)  # no configuration yet: anyone may lead
        leader = await c.start(1, peers={2: c.address(2)}, advertise=str(c.address(1)))
        leader.send(heartbeat(1, 2))
        assert await receive(joiner) == [heartbeat(1, 2)]
        assert joiner.peers == {1: c.address(1)}
        joiner.send(vote(2, 1))  # it can answer now
        assert await receive(leader) == [vote(2, 1)]
