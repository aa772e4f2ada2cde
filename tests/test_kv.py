"""The key-value example: state machine, client protocol, server and client (in memory)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgpack
import pytest
import trio
import trio.testing
from test_runtime import Cluster

from raftpy.kv import protocol
from raftpy.kv.client import ClusterUnavailable, KeyNotFound, KVClient, RequestFailed
from raftpy.kv.server import KVServer
from raftpy.kv.statemachine import KVStore, delete_command, put_command


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def test_store_applies_puts_and_deletes_and_round_trips_snapshots() -> None:
    store = KVStore()
    assert store.apply(put_command("a", "1")) is None
    assert store.apply(put_command("a", "2")) == "1"
    assert store.apply(put_command("b", "3")) is None
    assert store.apply(delete_command("b")) is True
    assert store.apply(delete_command("b")) is False
    copy = KVStore()
    copy.restore(store.snapshot())
    assert copy.data == store.data == {"a": "2"}


@pytest.mark.parametrize("command", [b"\xc1", msgpack.packb(["put", "k"]),
                                     msgpack.packb(["put", 1, "v"]), msgpack.packb("x")])
def test_store_refuses_malformed_commands_without_change(command: bytes) -> None:
    store = KVStore()
    store.apply(put_command("k", "v"))
    with pytest.raises(ValueError, match="not a key-value command"):
        store.apply(command)
    assert store.data == {"k": "v"}


@pytest.mark.parametrize(("request_", "problem"), [
    (b"\xc1", "not msgpack"),
    (msgpack.packb({"op": "drop"}), "'op' one of"),
    (msgpack.packb({"op": "get"}), "string 'key'"),
    (msgpack.packb({"op": "put", "key": "k", "value": 3}), "string 'value'"),
    (msgpack.packb({"op": "transfer", "to": "x"}), "node id or nil"),
])
def test_bad_requests_are_refused(request_: bytes, problem: str) -> None:
    with pytest.raises(protocol.BadRequest, match=problem):
        protocol.decode_request(request_)


class MemoryFramed:
    """One end of an in-memory framed connection."""

    def __init__(self, send: trio.MemorySendChannel[bytes],
                 receive: trio.MemoryReceiveChannel[bytes]) -> None:
        self._send, self._receive = send, receive

    async def send(self, payload: bytes) -> None:
        await self._send.send(payload)

    async def receive(self) -> bytes | None:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return None

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._receive.aclose()


def framed_pair() -> tuple[MemoryFramed, MemoryFramed]:
    a_send, b_receive = trio.open_memory_channel[bytes](10)
    b_send, a_receive = trio.open_memory_channel[bytes](10)
    return MemoryFramed(a_send, a_receive), MemoryFramed(b_send, b_receive)


@asynccontextmanager
async def kv_cluster() -> AsyncIterator[tuple[Cluster, dict[str, Any]]]:
    """A three-node KV cluster on the fake network; yields it and a connect function."""
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery)
        for node_id in c.ids:
            await c.start(node_id)
        scopes: dict[int, list[trio.CancelScope]] = {i: [] for i in c.ids}
        stop = c.stop

        def stop_and_disconnect(node_id: int) -> None:
            stop(node_id)
            for scope in scopes[node_id]:
                scope.cancel()

        c.stop = stop_and_disconnect  # type: ignore[method-assign]

        async def connect(address: str) -> MemoryFramed:
            node_id = int(address.split(".")[-1].split(":")[0])
            node = c.nodes.get(node_id)
            if node is None:
                raise ConnectionRefusedError(111, "Connection refused")
            server = KVServer(c.machines[node_id], request_timeout=1.0)  # type: ignore[arg-type]
            client_end, server_end = framed_pair()

            async def serve() -> None:
                with trio.CancelScope() as scope:
                    scopes[node_id].append(scope)
                    try:
                        await server.serve_connection(node, server_end)
                    finally:
                        await server_end.aclose()

            nursery.start_soon(serve)
            return client_end

        yield c, {"connect": connect}
        nursery.cancel_scope.cancel()


@pytest.fixture(autouse=True)
def kv_machines(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared Cluster helper builds its state machines from ``Recorder``."""
    import test_runtime

    monkeypatch.setattr(test_runtime, "Recorder", KVStore)


MEMBERS = ["10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"]


async def test_client_puts_and_gets_through_any_member(autojump_clock: trio.testing.MockClock
                                                       ) -> None:
    async with kv_cluster() as (c, env):
        leader = await c.leader()
        follower = next(i for i in c.ids if i != leader.id)
        members = [MEMBERS[follower - 1]]  # only a follower: the client must be redirected
        async with KVClient(members, connect=env["connect"], timeout=5) as client:
            await client.put("k", "v1")
            assert client.leader_address == MEMBERS[leader.id - 1]
            assert await client.get("k") == "v1"
            await client.put("k", "v2")
            assert await client.get("k") == "v2"
            with pytest.raises(KeyNotFound, match="no such key: 'nope'"):
                await client.get("nope")
            await client.delete("k")
            with pytest.raises(KeyNotFound):
                await client.delete("k")
        for node_id in c.ids:
            await c.nodes[node_id].wait_applied(leader.status().commit_index)
            assert c.machines[node_id].data == {}  # type: ignore[attr-defined]


async def test_client_status_and_transfer(autojump_clock: trio.testing.MockClock) -> None:
    async with kv_cluster() as (c, env):
        leader = await c.leader()
        async with KVClient(MEMBERS, connect=env["connect"]) as client:
            statuses = await client.statuses()
            assert [s["role"] for s in statuses.values()].count("leader") == 1  # type: ignore[index]
            target = next(i for i in c.ids if i != leader.id)
            reply = await client.transfer(target)
            assert reply["leader_id"] == target
            assert reply["leader_address"] == MEMBERS[target - 1]
            assert c.nodes[target].is_leader
            with pytest.raises(RequestFailed, match="cannot transfer") as info:
                await client.transfer(99)
            assert info.value.code == protocol.INVALID_TARGET


async def test_client_survives_leader_loss_and_reports_unavailable(
        autojump_clock: trio.testing.MockClock) -> None:
    async with kv_cluster() as (c, env):
        leader = await c.leader()
        async with KVClient(MEMBERS, connect=env["connect"], timeout=5) as client:
            await client.put("a", "1")
            c.stop(leader.id)
            await client.put("b", "2")  # after a re-election, through the new leader
            assert client.leader_address != MEMBERS[leader.id - 1]
            assert await client.get("a") == "1"
            for node_id in list(c.nodes):
                c.stop(node_id)
            start = trio.current_time()
            with pytest.raises(ClusterUnavailable, match="connection refused"):
                await client.get("a")
            assert trio.current_time() - start == pytest.approx(5, abs=0.1)
