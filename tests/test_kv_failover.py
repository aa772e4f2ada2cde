"""KVClient failover under virtual time: paused members, dead leaders, error messages.

The members here are scripted (no Raft underneath) so that each test controls
exactly what every address does: refuse, accept and never answer the handshake (a
SIGSTOPped process: the kernel still accepts), answer a request, or never answer it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import pytest
import trio
import trio.testing
from test_kv import (
    MEMBERS,
    MemoryFramed,
    framed_pair,
    keep,
    kv_cluster,
    session_writes,
    store,
)

from raftpy.kv import protocol
from raftpy.kv.client import ClusterUnavailable, KVClient
from raftpy.kv.statemachine import put_command

A, B, C = MEMBERS

Handler = Callable[[dict[str, Any]], dict[str, Any] | None]
"""A scripted member: the answer to a request, or ``None`` to never answer."""


def leader(request: dict[str, Any]) -> dict[str, Any]:
    """A member that leads: answers everything."""
    if request["op"] == "status":
        return {"ok": True, "status": {"role": "leader", "term": 2, "leader_address": None}}
    if request["op"] == "session":
        return {"ok": True, "session": 1, "timeout": 3600.0}
    if request["op"] == "get":
        return {"ok": True, "value": "v"}
    return {"ok": True}


def follower_of(address: str | None) -> Handler:
    """A member that follows ``address`` (or knows no leader)."""

    def handle(request: dict[str, Any]) -> dict[str, Any]:
        if request["op"] == "status":
            return {"ok": True, "status": {"role": "follower", "term": 1,
                                           "leader_address": address}}
        return protocol.error(protocol.NOT_LEADER, f"not the leader; the leader is {address}",
                              leader_id=None, leader_address=address)

    return handle


def silent(request: dict[str, Any]) -> None:
    """A member whose process stopped after the connection was made."""
    return None


class Scripted:
    """Addresses and what each does; counts connects and requests per address."""

    def __init__(self, nursery: trio.Nursery, members: dict[str, Handler | str]) -> None:
        self.nursery = nursery
        self.members = members
        """A handler, or ``"refuse"`` (nothing listens) or ``"hang"`` (accepts, then the
        handshake is never answered)."""
        self.connects: dict[str, int] = {}
        self.delays: dict[str, float] = {}
        """How long members take to answer each op (default: no time)."""
        self.requests: dict[str, list[str]] = {}

    async def connect(self, address: str) -> MemoryFramed:
        self.connects[address] = self.connects.get(address, 0) + 1
        what = self.members[address]
        if what == "refuse":
            raise ConnectionRefusedError(111, "Connection refused")
        if what == "hang":
            await trio.sleep_forever()
        client_end, server_end = framed_pair()
        self.nursery.start_soon(self._serve, address, server_end)
        return client_end

    async def _serve(self, address: str, stream: MemoryFramed) -> None:
        while (data := await stream.receive()) is not None:
            request = msgpack.unpackb(data)
            self.requests.setdefault(address, []).append(request["op"])
            handler = self.members[address]
            assert callable(handler)
            response = handler(request)
            await trio.sleep(self.delays.get(request["op"], 0))
            if response is None:
                await trio.sleep_forever()
            await stream.send(msgpack.packb(response))


async def test_a_remembered_leader_that_was_paused_is_left_within_the_connect_bound(
        autojump_clock: trio.testing.MockClock) -> None:
    """The issue's SIGSTOP: the client remembers A as leader, A's kernel accepts but
    the handshake never comes; B now leads. The client must not wait on A for longer
    than ``connect_timeout``, nor go back to it."""
    async with trio.open_nursery() as nursery:
        net = Scripted(nursery, {A: "hang", B: leader, C: follower_of(B)})
        client = KVClient(MEMBERS, connect=net.connect, timeout=5, connect_timeout=0.3,
                          attempt_timeout=0.5, watch_after=None)
        client.leader_address = A
        start = trio.current_time()
        await client.put("k", "v")
        assert trio.current_time() - start == pytest.approx(0.3)
        assert client.leader_address == B
        assert net.connects[A] == 1
        assert net.requests[B] == ["status", "session", "put"]
        nursery.cancel_scope.cancel()


async def test_while_an_answer_is_late_the_client_looks_for_a_new_leader(
        autojump_clock: trio.testing.MockClock) -> None:
    """With ``watch_after`` (default 0.15 s) the client does not even wait for the
    connect bound: after 0.15 s it asks the others, and B says it leads."""
    async with trio.open_nursery() as nursery:
        net = Scripted(nursery, {A: "hang", B: leader, C: follower_of(B)})
        client = KVClient(MEMBERS, connect=net.connect, timeout=5, connect_timeout=0.3)
        client.leader_address = A
        start = trio.current_time()
        await client.put("k", "v")
        assert trio.current_time() - start == pytest.approx(0.15)
        assert client.leader_address == B
        assert net.connects[A] == 1
        nursery.cancel_scope.cancel()


async def test_a_slow_leader_nobody_replaced_is_waited_for(
        autojump_clock: trio.testing.MockClock) -> None:
    """Watching finds no other leader: the slow answer is still taken."""
    async with trio.open_nursery() as nursery:
        net = Scripted(nursery, {A: leader, B: follower_of(A), C: follower_of(A)})
        net.delays["get"] = 0.38
        client = KVClient(MEMBERS, connect=net.connect, timeout=5, attempt_timeout=0.5)
        client.leader_address = A
        assert await client.get("k") == "v"
        assert net.requests[A] == ["get"]
        assert net.requests[B].count("status") == 5  # at 0.15 s, then every 0.05 s
        nursery.cancel_scope.cancel()


async def test_a_leader_that_stops_answering_is_left_after_the_attempt_timeout(
        autojump_clock: trio.testing.MockClock) -> None:
    """Connected to A, which then stops (the request goes out, no answer comes)."""
    async with trio.open_nursery() as nursery:
        net = Scripted(nursery, {A: leader, B: follower_of(A), C: follower_of(A)})
        client = KVClient(MEMBERS, connect=net.connect, timeout=5, connect_timeout=0.3,
                          attempt_timeout=0.5, watch_after=None)
        await client.put("k", "v1")
        assert client.leader_address == A
        net.members.update({A: silent, B: leader, C: follower_of(B)})
        start = trio.current_time()
        await client.put("k", "v2")
        # 0.5 s for A's answer, then A's connection is dropped; the others are
        # asked who leads (A's reconnect is not even needed: it is suspected).
        assert trio.current_time() - start == pytest.approx(0.5)
        assert client.leader_address == B
        assert net.requests[A] == ["status", "session", "put", "put"]
        assert net.requests[B][-1] == "put"
        nursery.cancel_scope.cancel()


async def test_a_redirect_to_a_dead_leader_is_not_followed_forever(
        autojump_clock: trio.testing.MockClock) -> None:
    """The issue's SIGKILL: B and C still name the dead A for a while. The client
    tries A once per ``suspect_time`` at most, and writes as soon as B leads."""
    async with trio.open_nursery() as nursery:
        net = Scripted(nursery, {A: "refuse", B: follower_of(A), C: follower_of(A)})
        client = KVClient([B, C, A], connect=net.connect, timeout=5, suspect_time=0.5,
                          retry_delay=0.02)

        async def elect_b_later() -> None:
            await trio.sleep(1.2)
            net.members.update({B: leader, C: follower_of(B)})

        nursery.start_soon(elect_b_later)
        start = trio.current_time()
        await client.put("k", "v")
        assert 1.2 <= trio.current_time() - start <= 1.25
        assert client.leader_address == B
        assert net.connects[A] <= 4  # once at first, then once per 0.5 s suspicion
        nursery.cancel_scope.cancel()


async def test_members_naming_each_other_are_not_ping_ponged_without_pause(
        autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        net = Scripted(nursery, {A: follower_of(B), B: follower_of(A), C: "refuse"})
        client = KVClient(MEMBERS, connect=net.connect, timeout=1, retry_delay=0.02)
        client.leader_address = A
        with pytest.raises(ClusterUnavailable):
            await client.get("k")
        # at most 4 redirects per 20 ms pause
        assert len(net.requests[A]) + len(net.requests[B]) <= 4 * (1 / 0.02) + 4
        nursery.cancel_scope.cancel()


async def test_the_error_names_every_member_tried_and_what_it_said(
        autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        net = Scripted(nursery, {A: "refuse", B: "hang", C: follower_of(None)})
        client = KVClient(MEMBERS, connect=net.connect, timeout=2)
        start = trio.current_time()
        with pytest.raises(ClusterUnavailable) as info:
            await client.get("k")
        assert trio.current_time() - start == pytest.approx(2)
        message = str(info.value)
        assert message.startswith(("no answer from the cluster within 2s (tried ",
                               "no leader within 2s (tried "))
        assert f"{A}: connection refused" in message
        assert f"{B}: timed out" in message
        assert f"{C}: knows no leader" in message
        assert "no member tried" not in message
        assert not info.value.in_doubt  # nobody got the request but to refuse it
        nursery.cancel_scope.cancel()


async def test_a_deadline_cut_short_still_names_the_member_being_tried(
        autojump_clock: trio.testing.MockClock) -> None:
    """The issue's 'no member tried' although one was: the only attempt was cut by
    the deadline itself."""
    async with trio.open_nursery() as nursery:
        net = Scripted(nursery, {A: silent})
        client = KVClient([A], connect=net.connect, timeout=0.2, attempt_timeout=1)
        client.leader_address = A
        with pytest.raises(ClusterUnavailable, match=rf"\(tried {A}: no answer yet\)") as info:
            await client.get("k")
        assert info.value.in_doubt
        nursery.cancel_scope.cancel()


async def test_a_slow_transfer_is_not_sent_twice(autojump_clock: trio.testing.MockClock
                                                 ) -> None:
    """A transfer waits for its answer up to ``timeout``: sent again elsewhere, it
    would move leadership a second time."""
    async with trio.open_nursery() as nursery:
        net = Scripted(nursery, {A: leader, B: follower_of(A), C: follower_of(A)})
        net.delays["transfer"] = 1.0
        client = KVClient(MEMBERS, connect=net.connect, timeout=5, attempt_timeout=0.1)
        start = trio.current_time()
        assert (await client.transfer(2))["ok"]
        assert trio.current_time() - start == pytest.approx(1.0)
        assert net.requests[A] == ["status", "transfer"]
        nursery.cancel_scope.cancel()


async def test_redirects_through_aliases_reach_the_client_address(
        autojump_clock: trio.testing.MockClock) -> None:
    """Members may advertise each other under addresses the client cannot use (a
    proxy, NAT): ``aliases`` maps them."""
    async with trio.open_nursery() as nursery:
        net = Scripted(nursery, {A: follower_of("10.9.9.9:1"), B: leader, C: follower_of(B)})
        client = KVClient([A], connect=net.connect, timeout=5,
                          aliases={"10.9.9.9:1": B})
        await client.put("k", "v")
        assert client.leader_address == B
        assert "10.9.9.9:1" not in net.connects
        nursery.cancel_scope.cancel()


async def test_failover_on_a_real_cluster_keeps_writes_exactly_once(
        autojump_clock: trio.testing.MockClock) -> None:
    """With the Raft cluster underneath: the leader stops answering (its answers are
    swallowed and it is stopped); the retried put applies once, on the new leader."""
    async with kv_cluster() as (c, env):
        old = await c.leader()
        async with KVClient(MEMBERS, connect=env["connect"], timeout=5,
                            attempt_timeout=0.5) as client:
            await client.put("a", "1")

            async def stall(request: dict[str, Any], response: dict[str, Any]) -> bool:
                if request.get("value") == "2":
                    env["lose"] = keep
                    c.stop(old.id)
                    await trio.sleep_forever()  # the answer never comes
                return False

            env["lose"] = stall
            start = trio.current_time()
            await client.put("a", "2")
            assert trio.current_time() - start < 1.5
            assert await client.get("a") == "2"
        new = await c.leader()
        for node_id in c.nodes:
            await c.nodes[node_id].wait_applied(new.status().commit_index)
            assert store(c, node_id).applied.count(put_command("a", "2")) == 1
            assert session_writes(c, node_id, put_command("a", "2"))[-1] == (1, 2)
