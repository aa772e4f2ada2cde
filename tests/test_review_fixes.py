"""Defects found by review of the runtime, join and metrics changes, each pinned by
a test that fails without its fix."""

from __future__ import annotations

import contextlib
import random
import ssl
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from helpers import Recorder

from raftpy.config import Config
from raftpy.messages import AppendEntries, AppendEntriesResponse, Entry, Message
from raftpy.node import RaftNode
from raftpy.ready import Role
from raftpy.storage.memory import MemoryStorage
from raftpy.trio import certs, handshake
from raftpy.trio.client import connect_client
from raftpy.trio.peerloss import PeerLossDetector
from raftpy.trio.runtime import open_node
from raftpy.trio.transport import Transport


class _Transport:
    def __init__(self) -> None:
        self._send, self.incoming = trio.open_memory_channel[Message](10)
        self.sent: list[Message] = []

    def send(self, msg: Message) -> None:
        self.sent.append(msg)

    async def run(self, listeners: Any = None, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()


async def test_a_core_failure_in_one_reader_stops_every_other_reader_from_acking(
        autojump_clock: trio.testing.MockClock) -> None:
    """A failure while one reading task steps the core leaves it half-updated (a
    batch handed out, never persisted): no other task may step it again, else a
    heartbeat would be acknowledged for entries the disk never saw."""
    transport, storage = _Transport(), MemoryStorage()
    config = Config(election_timeout_min=100.0, election_timeout_max=200.0)
    second: list[BaseException] = []
    with pytest.raises(BaseException) as failed:
        async with open_node(1, peers={2: "127.0.0.1:1", 3: "127.0.0.1:2"},
                             transport=transport, storage=storage,  # type: ignore[arg-type]
                             state_machine=Recorder(), config=config) as node:
            await trio.sleep(0.01)
            observer = node._observer
            drained = observer.drained
            calls = [0]

            def failing(raft: Any, ready: Any) -> Any:
                calls[0] += 1
                if calls[0] == 1:
                    raise RuntimeError("a bug while handing out a batch")
                return drained(raft, ready)

            observer.drained = failing  # type: ignore[method-assign]
            entries = (Entry(1, 1, b"a"), Entry(2, 1, b"b"))
            with pytest.raises(trio.ClosedResourceError):
                node._wire.send_nowait(AppendEntries(
                    term=1, src=2, dst=1, prev_log_index=0, prev_log_term=0,
                    entries=entries, leader_commit=0))
            try:  # another reader, before the driver has run
                node._wire.send_nowait(AppendEntries(
                    term=1, src=2, dst=1, prev_log_index=2, prev_log_term=1, entries=(),
                    leader_commit=0))
            except trio.ClosedResourceError as exc:
                second.append(exc)
            await trio.sleep(1)
    assert "a bug while handing out a batch" in repr(failed.value)
    assert len(second) == 1
    acks = [m for m in transport.sent if isinstance(m, AppendEntriesResponse) and m.success
            and m.match_index > 0]
    assert acks == [] and storage.entries == []


def test_early_pre_vote_report_names_when_the_leader_was_lost() -> None:
    """The detector passes the time the last connection went down, so a leader
    heard after it (during a reconnect backoff) cancels the report."""
    now = [10.0]
    reports: list[tuple[int, float | None]] = []
    detector = PeerLossDetector(lambda peer, at: reports.append((peer, at)),
                                clock=lambda: now[0])
    detector.up(5)
    detector.down(5)
    now[0] = 10.4
    detector.reconnect_failed(5)
    assert reports == [(5, 10.0)]

    config = Config(election_timeout_min=0.15, election_timeout_max=0.3, early_pre_vote=True)
    node = RaftNode(1, {1, 2, 5}, config=config, rng=random.Random(1))
    node.step(AppendEntries(term=1, src=5, dst=1, prev_log_index=0, prev_log_term=0,
                            entries=(), leader_commit=0), 10.2)  # heard after the loss
    assert node.leader_connection_lost(5, 10.4, lost_at=10.0) is False
    assert (node.role, node.leader_id) == (Role.FOLLOWER, 5)
    assert node.leader_connection_lost(5, 10.4, lost_at=10.3) is True
    assert node.in_pre_vote


def test_a_pre_candidate_yields_only_to_a_concurrent_lower_id() -> None:
    """A lower id's pre-vote that arrives a round trip or more after this node's
    round began is granted, but this node keeps its round: the two are not
    concurrent, and the lower id may be one that reaches no majority."""
    from raftpy.messages import RequestVote

    config = Config(election_timeout_min=0.15, election_timeout_max=0.3, pre_vote=True)
    for delay, yields in ((0.001, True), (0.05, False)):
        node = RaftNode(3, {1, 2, 3}, config=config, rng=random.Random(3))
        start = node.next_deadline()
        node.tick(start)
        assert node.role is Role.CANDIDATE and node.in_pre_vote
        node.step(RequestVote(term=1, src=1, dst=3, last_log_index=0, last_log_term=0,
                              pre_vote=True), start + delay)
        assert (node.role is Role.FOLLOWER) is yields, delay


def _tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    from raftpy.cli import tls_contexts

    certs.init_ca(tmp_path, "c")
    certs.issue_node(tmp_path, 1)
    certs.issue_client(tmp_path, "ops", admin=True)
    server, _ = tls_contexts(str(tmp_path / "ca.pem"), str(tmp_path / "node-1.pem"),
                             str(tmp_path / "node-1-key.pem"))
    server.verify_mode = ssl.CERT_OPTIONAL  # as a member holding the CA key does
    _, client = tls_contexts(str(tmp_path / "ca.pem"), str(tmp_path / "admin-ops.pem"),
                             str(tmp_path / "admin-ops-key.pem"))
    return server, client


async def test_idle_joining_connections_neither_crowd_out_clients_nor_stay(
        tmp_path: Path) -> None:
    """Joining nodes show no certificate: they have a budget of their own, and one
    that says nothing is closed after twice the handshake deadline."""
    server_ctx, client_ctx = _tls(tmp_path)
    served: list[str] = []

    async def client_handler(framed: Any) -> None:
        served.append("client")
        await trio.sleep_forever()

    async def join_handler(framed: Any) -> None:
        await trio.sleep_forever()  # a joiner that never asks

    transport = Transport(1, "c", {}, ssl_context=server_ctx, client_handler=client_handler,
                          join_handler=join_handler, max_clients=4, max_joins=2,
                          handshake_timeout=0.5)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def join() -> trio.SSLStream[trio.SocketStream]:
        raw = await trio.open_tcp_stream("127.0.0.1", port)
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        stream = trio.SSLStream(raw, context, server_hostname="x")
        await stream.do_handshake()
        await handshake.say_hello(stream, handshake.Hello(
            cluster_id="c", node_id=None, role=handshake.ROLE_JOIN), expected_node=None)
        return stream

    async with trio.open_nursery() as nursery:
        await nursery.start(transport.run, listeners)
        with trio.fail_after(30):
            joiners = [await join(), await join()]
            with pytest.raises(Exception, match="too many joining nodes"):
                await join()
            # The clients' budget is untouched: an admin gets in.
            await connect_client(f"127.0.0.1:{port}", cluster_id="c", ssl_context=client_ctx)
            while not served:
                await trio.sleep(0.01)
            # Past twice the handshake deadline the idle joiners are closed.
            for stream in joiners:
                # (closed without a TLS close_notify is closed all the same)
                with contextlib.suppress(trio.BrokenResourceError):
                    assert await stream.receive_some(100) == b""
        nursery.cancel_scope.cancel()


async def test_the_metrics_endpoint_bounds_its_connections() -> None:
    pytest.importorskip("prometheus_client")
    from raftpy.trio import prometheus

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(prometheus.serve_metrics, lambda: None, listeners)
        with trio.fail_after(20):
            held = [await trio.open_tcp_stream("127.0.0.1", port)
                    for _ in range(prometheus._MAX_CONNECTIONS)]
            await trio.sleep(0.2)  # (real time: the server accepts them)
            extra = await trio.open_tcp_stream("127.0.0.1", port)
            assert await extra.receive_some(100) == b""  # closed at once
        for stream in held:
            await stream.aclose()
        nursery.cancel_scope.cancel()
