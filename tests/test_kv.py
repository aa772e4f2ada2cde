"""The key-value example: state machine, client protocol, server and client (in memory)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgpack
import pytest
import trio
import trio.testing
from helpers import Cluster

from raftpy.kv import protocol
from raftpy.kv.client import (
    ClusterUnavailable,
    InvalidRequest,
    KeyNotFound,
    KVClient,
    OutcomeUnknown,
    RequestFailed,
)
from raftpy.kv.server import KVServer
from raftpy.kv.statemachine import KVStore, delete_command, put_command
from raftpy.sessions import MAGIC, SessionStateMachine
from raftpy.statemachine import StateMachine


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
    (msgpack.packb({"op": "put", "key": "k", "value": "v", "session": 1, "seq": 1}),
     "needs all of session, seq, ack or none"),
    (msgpack.packb({"op": "delete", "key": "k", "session": 1, "seq": 0, "ack": 0}),
     "'seq' must be a positive integer"),
    (msgpack.packb({"op": "delete", "key": "k", "session": True, "seq": 1, "ack": 1}),
     "'session' must be a positive integer"),
    (msgpack.packb({"op": "put", "key": "k", "value": "v", "session": 1, "seq": 2, "ack": 3}),
     "'ack' cannot exceed 'seq'"),
    (msgpack.packb({"op": "get", "key": "k", "session": 1, "seq": 1, "ack": 1}),
     "only put and delete carry"),
])
def test_bad_requests_are_refused(request_: bytes, problem: str) -> None:
    with pytest.raises(protocol.BadRequest, match=problem):
        protocol.decode_request(request_)


class MemoryFramed:
    """One end of an in-memory framed connection. Like a Trio stream, it refuses a
    second task receiving while one already is."""

    def __init__(self, send: trio.MemorySendChannel[bytes],
                 receive: trio.MemoryReceiveChannel[bytes]) -> None:
        self._send, self._receive = send, receive
        self._receiving = False

    async def send(self, payload: bytes) -> None:
        await self._send.send(payload)

    async def receive(self) -> bytes | None:
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this connection")
        self._receiving = True
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return None
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._receive.aclose()


Lose = Callable[[dict[str, Any], dict[str, Any]], Awaitable[bool]]
"""Decides, given a request and the server's answer to it, whether the answer is lost
(the client then sees its connection close instead)."""


async def keep(request: dict[str, Any], response: dict[str, Any]) -> bool:
    return False


class LossyFramed:
    """The client's end of a connection whose answers ``lose`` may swallow: the
    server has handled the request, but the client sees the connection close."""

    def __init__(self, inner: MemoryFramed, lose: Callable[[], Lose]) -> None:
        self.inner, self.lose = inner, lose
        self.request: dict[str, Any] = {}

    async def send(self, payload: bytes) -> None:
        self.request = msgpack.unpackb(payload)
        await self.inner.send(payload)

    async def receive(self) -> bytes | None:
        data = await self.inner.receive()
        if data is not None and await self.lose()(self.request, msgpack.unpackb(data)):
            await self.inner.aclose()
            return None
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


def framed_pair() -> tuple[MemoryFramed, MemoryFramed]:
    a_send, b_receive = trio.open_memory_channel[bytes](10)
    b_send, a_receive = trio.open_memory_channel[bytes](10)
    return MemoryFramed(a_send, a_receive), MemoryFramed(b_send, b_receive)


class CountingStore(KVStore):
    """A KVStore that records every command it applies (to count applications)."""

    def __init__(self) -> None:
        super().__init__()
        self.applied: list[bytes] = []

    def apply(self, command: bytes) -> Any:
        self.applied.append(command)
        return super().apply(command)


class WallClock:
    """The servers' wall clock, stamped on session commands: moved by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


SESSION_TIMEOUT = 3600.0


def session_machine() -> SessionStateMachine[CountingStore]:
    """The KV server's state machine: a session layer around a (counting) store."""
    return SessionStateMachine(CountingStore(), session_timeout=SESSION_TIMEOUT)


@asynccontextmanager
async def kv_cluster(clock: Callable[[], float] | None = None, *,
                     machine: Callable[[], StateMachine] = session_machine
                     ) -> AsyncIterator[tuple[Cluster, dict[str, Any]]]:
    """A three-node KV cluster on the fake network, each member's state machine made by
    ``machine``; yields it and ``env``: ``connect`` (a client's connect function) and
    ``lose`` (see :data:`Lose`; keeps every answer unless a test replaces it). ``clock``
    is the servers' wall clock."""
    clock = clock if clock is not None else WallClock()
    env: dict[str, Any] = {"lose": keep}
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, machine=machine)
        for node_id in c.ids:
            await c.start(node_id)
        scopes: dict[int, list[trio.CancelScope]] = {i: [] for i in c.ids}
        stop = c.stop

        def stop_and_disconnect(node_id: int) -> None:
            stop(node_id)
            for scope in scopes[node_id]:
                scope.cancel()

        c.stop = stop_and_disconnect  # type: ignore[method-assign]

        async def connect(address: str) -> LossyFramed:
            node_id = int(address.split(".")[-1].split(":")[0])
            node = c.nodes.get(node_id)
            if node is None:
                raise ConnectionRefusedError(111, "Connection refused")
            server = KVServer(c.machines[node_id], request_timeout=1.0,  # type: ignore[arg-type]
                              clock=clock)
            client_end, server_end = framed_pair()

            async def serve() -> None:
                with trio.CancelScope() as scope:
                    scopes[node_id].append(scope)
                    try:
                        await server.serve_connection(node, server_end)
                    finally:
                        await server_end.aclose()

            nursery.start_soon(serve)
            return LossyFramed(client_end, lambda: env["lose"])

        env["connect"] = connect
        yield c, env
        nursery.cancel_scope.cancel()


def store(c: Cluster, node_id: int) -> CountingStore:
    machine: SessionStateMachine[CountingStore] = c.machines[node_id]  # type: ignore[assignment]
    return machine.inner


def sessions(c: Cluster, node_id: int) -> SessionStateMachine[CountingStore]:
    machine: SessionStateMachine[CountingStore] = c.machines[node_id]  # type: ignore[assignment]
    return machine


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
            assert store(c, node_id).data == {}


async def test_a_follower_serves_linearizable_and_stale_gets(
        autojump_clock: trio.testing.MockClock) -> None:
    async with kv_cluster() as (c, env):
        leader = await c.leader()
        follower = next(i for i in c.ids if i != leader.id)
        async with KVClient(MEMBERS, connect=env["connect"], timeout=5) as client:
            await client.put("k", "v1")
        last = leader.status().last_log_index
        server = KVServer(c.machines[follower], request_timeout=1.0)  # type: ignore[arg-type]
        node = c.nodes[follower]
        # Linearizable: the follower asks the leader for a read index and waits for
        # it, so it sees the put even if it had not applied it yet.
        assert await server.handle(node, {"op": "get", "key": "k"}) == {"ok": True,
                                                                        "value": "v1"}
        assert await server.handle(node, {"op": "get", "key": "k", "stale": True}) == {
            "ok": True, "value": "v1"}
        assert leader.status().last_log_index == last  # the reads wrote nothing
        with pytest.raises(protocol.BadRequest, match="'stale' is a boolean"):
            protocol.decode_request(protocol.encode({"op": "get", "key": "k", "stale": 1}))


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


@pytest.mark.parametrize("attempt", range(5))  # trio's scheduling order varies per run
async def test_requests_meeting_a_transfer_wait_for_it_and_are_redirected(
        autojump_clock: trio.testing.MockClock, attempt: int) -> None:
    """Rather than 'unavailable' (the client would then poll for the new leader), a
    request that meets a leadership transfer is answered once the transfer ended:
    with a redirect to the new leader."""
    async with kv_cluster() as (c, _):
        leader = await c.leader()
        target = next(i for i in c.ids if i != leader.id)
        server = KVServer(c.machines[leader.id])  # type: ignore[arg-type]
        answers: list[dict[str, Any]] = []

        async def request(body: dict[str, Any]) -> None:
            answers.append({"op": body["op"], **await server.handle(leader, body)})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(leader.transfer_leadership, target)
            while leader.status().transfer_target is None:
                await trio.sleep(0)
            nursery.start_soon(request, {"op": "put", "key": "k", "value": "v"})
            nursery.start_soon(request, {"op": "get", "key": "k"})
        # The put is redirected; the get (ReadIndex) is answered after the transfer,
        # linearizably, by the old leader now a follower: the key was never written.
        put = next(a for a in answers if a["op"] == "put")
        get = next(a for a in answers if a["op"] == "get")
        # Also when the put reached the driver after the target's vote request had
        # made this leader a follower knowing no leader: it waits for the transfer
        # to end (the target's first heartbeat) and names the target.
        assert (put["error"], put["leader_id"]) == (protocol.NOT_LEADER, target)
        assert get["error"] in (protocol.NOT_LEADER, protocol.NOT_FOUND)
        assert c.nodes[target].is_leader
        assert store(c, target).data == {}  # the put was not applied


# ---------------------------------------------------------------------- sessions

def test_the_server_needs_the_session_layer() -> None:
    with pytest.raises(TypeError, match=r"SessionStateMachine\(KVStore\(\)\)"):
        KVServer(KVStore())  # type: ignore[arg-type]


def session_log(c: Cluster, node_id: int) -> list[tuple[int, int, bytes]]:
    """(session, seq, payload) of every session command in node ``node_id``'s log, in
    log order (one entry per delivery that reached the log)."""
    out = []
    for entry in c.storages[node_id].entries:
        if entry.data.startswith(MAGIC):
            fields = msgpack.unpackb(entry.data[len(MAGIC):])
            if fields[0] == 1:
                out.append((fields[1], fields[2], fields[5]))
    return out


def session_writes(c: Cluster, node_id: int, op: bytes) -> list[tuple[int, int]]:
    """(session, seq) of the session commands in the log whose payload is ``op``."""
    return [(session, seq) for session, seq, payload in session_log(c, node_id)
            if payload == op]


async def test_a_delete_whose_answer_died_with_the_leader_is_applied_once(
        autojump_clock: trio.testing.MockClock) -> None:
    """The issue's SIGKILL: the leader applies a delete, dies before its answer gets
    out; the client retries on the next leader, which answers the first result."""
    async with kv_cluster() as (c, env):
        leader = await c.leader()
        async with KVClient(MEMBERS, connect=env["connect"], timeout=5) as client:
            await client.put("k", "v")

            async def lose_and_kill(request: dict[str, Any], response: dict[str, Any]) -> bool:
                if request.get("op") != "delete" or not response["ok"]:
                    return False
                env["lose"] = keep
                c.stop(leader.id)
                return True

            env["lose"] = lose_and_kill
            await client.delete("k")  # no KeyNotFound: the retry got the first answer
            assert env["lose"] is keep  # (the answer was indeed lost once)
            assert client.leader_address != MEMBERS[leader.id - 1]
            with pytest.raises(KeyNotFound):
                await client.get("k")
        new = await c.leader()
        for node_id in c.nodes:
            await c.nodes[node_id].wait_applied(new.status().commit_index)
            assert session_writes(c, node_id, delete_command("k")) == [(1, 2), (1, 2)]
            assert store(c, node_id).applied.count(delete_command("k")) == 1
            assert store(c, node_id).data == {}


async def test_a_retried_put_does_not_undo_a_later_write(
        autojump_clock: trio.testing.MockClock) -> None:
    """Alice's put commits but her answer is lost; Bob writes the key; Alice's retry
    must not put her (older) value back."""
    async with kv_cluster() as (c, env):
        leader = await c.leader()
        async with KVClient(MEMBERS, connect=env["connect"], timeout=5) as alice, \
                KVClient(MEMBERS, connect=env["connect"], timeout=5) as bob:

            async def lose_once_then_bob_writes(request: dict[str, Any],
                                                response: dict[str, Any]) -> bool:
                if request.get("value") != "alice":
                    return False
                env["lose"] = keep
                await bob.put("k", "bob")
                return True

            env["lose"] = lose_once_then_bob_writes
            await alice.put("k", "alice")
            assert env["lose"] is keep
            assert await alice.get("k") == "bob"
        await leader.read_barrier()
        for node_id in c.ids:
            await c.nodes[node_id].wait_applied(leader.status().commit_index)
            assert store(c, node_id).data == {"k": "bob"}
            assert store(c, node_id).applied == [put_command("k", "alice"),
                                                 put_command("k", "bob")]
            # Alice's put reached the log twice; Bob's once, in his own session.
            assert session_writes(c, node_id, put_command("k", "alice")) == [(1, 1), (1, 1)]
            assert session_writes(c, node_id, put_command("k", "bob")) == [(2, 1)]


async def test_tasks_sharing_a_client_share_one_session_and_acknowledge(
        autojump_clock: trio.testing.MockClock) -> None:
    async with kv_cluster() as (c, env):
        leader = await c.leader()
        async with KVClient(MEMBERS, connect=env["connect"], timeout=5) as client:
            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(client.put, f"k{i}", str(i))
            await client.put("last", "x")  # nothing else pending: acknowledges all before
        for node_id in c.ids:
            await c.nodes[node_id].wait_applied(leader.status().commit_index)
            assert store(c, node_id).data == {**{f"k{i}": str(i) for i in range(20)},
                                              "last": "x"}
            (only,) = sessions(c, node_id).sessions()
            assert (only.session_id, only.acknowledged, only.pending) == (1, 21, (21,))
            assert sorted(seq for _, seq in session_writes(c, node_id, put_command("last", "x"))
                          ) == [21]


async def test_an_idle_client_whose_session_expired_starts_a_new_one(
        autojump_clock: trio.testing.MockClock) -> None:
    """The session expired between two writes: the second write was sent once and
    refused, so it certainly was not applied; it goes again in a new session."""
    clock = WallClock()
    async with kv_cluster(clock) as (c, env):
        leader = await c.leader()
        async with KVClient(MEMBERS, connect=env["connect"], timeout=5) as client:
            await client.put("a", "1")
            clock.now += SESSION_TIMEOUT + 1  # the servers' clocks; the client's stays
            await client.put("a", "2")
            assert await client.get("a") == "2"
        for node_id in c.ids:
            await c.nodes[node_id].wait_applied(leader.status().commit_index)
            machine = sessions(c, node_id)
            assert [s.session_id for s in machine.sessions()] == [2]
            assert session_writes(c, node_id, put_command("a", "2")) == [(1, 2), (2, 1)]
            assert store(c, node_id).applied == [put_command("a", "1"), put_command("a", "2")]


async def test_a_retry_whose_session_expired_reports_outcome_unknown(
        autojump_clock: trio.testing.MockClock) -> None:
    clock = WallClock()
    async with kv_cluster(clock) as (c, env):
        leader = await c.leader()
        async with KVClient(MEMBERS, connect=env["connect"], timeout=5) as client:

            async def lose_then_stall(request: dict[str, Any], response: dict[str, Any]
                                      ) -> bool:
                if request.get("op") != "put" or request["value"] != "1":
                    return False
                env["lose"] = keep
                clock.now += SESSION_TIMEOUT + 1  # the retry comes too late
                return True

            env["lose"] = lose_then_stall
            with pytest.raises(OutcomeUnknown, match="outcome of put 'a' unknown") as info:
                await client.put("a", "1")
            assert (info.value.op, info.value.key, info.value.session_id) == ("put", "a", 1)
            assert await client.get("a") == "1"  # (the first attempt was applied)
            await client.put("b", "2")  # a new session
        for node_id in c.ids:
            await c.nodes[node_id].wait_applied(leader.status().commit_index)
            assert store(c, node_id).applied == [put_command("a", "1"), put_command("b", "2")]
            assert session_writes(c, node_id, put_command("a", "1")) == [(1, 1), (1, 1)]
            assert session_writes(c, node_id, put_command("b", "2")) == [(2, 1)]


async def test_a_client_idle_for_half_the_timeout_renews_its_session_first(
        autojump_clock: trio.testing.MockClock) -> None:
    clock = WallClock()
    async with kv_cluster(clock) as (c, env):
        leader = await c.leader()
        async with KVClient(MEMBERS, connect=env["connect"], timeout=5) as client:
            await client.put("a", "1")
            await trio.sleep(1)
            await client.put("a", "2")  # recently used: same session
            # The client's own clock says it has been idle for over half the timeout.
            autojump_clock.jump(SESSION_TIMEOUT / 2 + 1)
            await client.put("a", "3")
        for node_id in c.ids:
            await c.nodes[node_id].wait_applied(leader.status().commit_index)
            assert [s.session_id for s in sessions(c, node_id).sessions()] == [1, 2]
            assert session_writes(c, node_id, put_command("a", "3")) == [(2, 1)]
            assert store(c, node_id).data == {"a": "3"}


async def test_writes_without_session_fields_still_work(
        autojump_clock: trio.testing.MockClock) -> None:
    """An older client's plain put and delete go through the log unchanged."""
    async with kv_cluster() as (c, _):
        leader = await c.leader()
        server = KVServer(c.machines[leader.id])  # type: ignore[arg-type]
        assert await server.handle(leader, {"op": "put", "key": "k", "value": "v"}) == {
            "ok": True}
        assert await server.handle(leader, {"op": "delete", "key": "k"}) == {"ok": True}
        response = await server.handle(leader, {"op": "delete", "key": "k"})
        assert response["error"] == protocol.NOT_FOUND
        assert sessions(c, leader.id).sessions() == ()
        assert store(c, leader.id).applied == [put_command("k", "v"), delete_command("k"),
                                               delete_command("k")]


async def test_session_errors_map_to_stable_codes(autojump_clock: trio.testing.MockClock
                                                  ) -> None:
    clock = WallClock()
    async with kv_cluster(clock) as (c, _):
        leader = await c.leader()
        server = KVServer(c.machines[leader.id], clock=clock)  # type: ignore[arg-type]
        opened = await server.handle(leader, {"op": "session"})
        assert opened == {"ok": True, "session": 1, "timeout": SESSION_TIMEOUT}
        write = {"op": "put", "key": "k", "value": "v", "session": 1}
        assert await server.handle(leader, {**write, "seq": 2, "ack": 2}) == {"ok": True}
        response = await server.handle(leader, {**write, "seq": 1, "ack": 1})
        assert (response["error"], response["message"]) == (
            protocol.REJECTED, "session 1: request 1 was already acknowledged (results below "
            "2 are discarded); not applied again")
        response = await server.handle(leader, {**write, "session": 7, "seq": 1, "ack": 1})
        assert (response["error"], response["message"]) == (
            protocol.SESSION_EXPIRED, "session 7 is unknown or expired; open a new session")
        assert store(c, leader.id).applied == [put_command("k", "v")]


async def test_a_task_writing_while_another_retries_keeps_its_result_for_it(
        autojump_clock: trio.testing.MockClock) -> None:
    """Task A's answer is lost; task B (same client) writes before A's retry. B must
    acknowledge only below A's seq, so that A's retry still finds its first result."""
    async with kv_cluster() as (c, env):
        leader = await c.leader()
        async with KVClient(MEMBERS, connect=env["connect"], timeout=5) as client, \
                trio.open_nursery() as nursery:
            await client.put("warm", "up")  # seq 1; the session is open

            async def lose_a_after_b_queued(request: dict[str, Any], response: dict[str, Any]
                                            ) -> bool:
                if request.get("key") != "a":
                    return False
                env["lose"] = keep
                nursery.start_soon(client.put, "b", "2")  # seq 3, while 2 is pending
                await trio.sleep(0.01)  # B now waits for this connection
                return True

            env["lose"] = lose_a_after_b_queued
            await client.put("a", "1")  # seq 2: lost, then retried after B's write
        assert env["lose"] is keep
        for node_id in c.ids:
            await c.nodes[node_id].wait_applied(leader.status().commit_index)
            assert session_writes(c, node_id, put_command("a", "1")) == [(1, 2), (1, 2)]
            assert session_writes(c, node_id, put_command("b", "2")) == [(1, 3)]
            # A, B, then A's retry:
            assert [seq for _, seq, _ in session_log(c, node_id)] == [1, 2, 3, 2]
            assert store(c, node_id).applied == [put_command("warm", "up"),
                                                 put_command("a", "1"), put_command("b", "2")]
            (only,) = sessions(c, node_id).sessions()
            # B's ack was 2 (A pending): A's result stayed until A's retry found it.
            assert only.acknowledged == 2


async def test_a_put_without_quorum_says_no_leader_not_the_last_connect_error(
        autojump_clock: trio.testing.MockClock) -> None:
    async with kv_cluster() as (c, env):
        leader = await c.leader()
        async with KVClient(MEMBERS, connect=env["connect"], timeout=5) as client:
            await client.put("a", "1")
            survivor = next(i for i in c.ids if i != leader.id)
            for node_id in list(c.nodes):
                if node_id != survivor:
                    c.stop(node_id)
            # The survivor answers "not the leader" (no leader known) while the others
            # refuse connections: the error says the former.
            with pytest.raises(ClusterUnavailable,
                               match=rf"^no leader within 5s \(tried .*"
                                     rf"{MEMBERS[survivor - 1]}: knows no leader"):
                await client.put("b", "2")


@pytest.mark.parametrize(("key", "value", "problem"), [
    ("k", "x" * (protocol.MAX_VALUE_BYTES + 1), "the value is 1048577 bytes, above the "
                                                 "limit of 1048576"),
    ("k" * (protocol.MAX_KEY_BYTES + 1), "v", "the key is 4097 bytes, above the limit of 4096"),
    ("\udcff", "v", "the key is not valid Unicode text (surrogates not allowed at position 0)"),
    ("k", "a\ud800", "the value is not valid Unicode text (surrogates not allowed at "
                     "position 1)"),
])
async def test_keys_and_values_the_cluster_cannot_take_fail_at_once(
        autojump_clock: trio.testing.MockClock, key: str, value: str, problem: str) -> None:
    async def never(address: str) -> Any:
        raise AssertionError("nothing is sent")

    async with KVClient(MEMBERS, connect=never, timeout=5) as client:
        with pytest.raises(InvalidRequest) as info:
            await client.put(key, value)
        assert str(info.value) == problem
        if value == "v":
            with pytest.raises(InvalidRequest):
                await client.get(key)
            with pytest.raises(InvalidRequest):
                await client.delete(key)
    # The server checks too (for a client that does not): it answers too_large.
    if "bytes" in problem:
        with pytest.raises(protocol.TooLarge, match=problem):
            protocol.decode_request(msgpack.packb({"op": "put", "key": key, "value": value}))
