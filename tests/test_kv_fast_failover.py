"""Failover without polling: the members' long poll for the next leader, a failed
member trusted again once it leads in a later term, a transfer's target and any
candidate holding requests for their election's outcome."""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
import pytest
import trio
import trio.testing
from test_kv import (
    MEMBERS,
    MemoryFramed,
    framed_pair,
    kv_cluster,
    store,
)

from raftpy.errors import TransferFailed
from raftpy.kv import protocol
from raftpy.kv.client import KVClient
from raftpy.kv.server import KVServer
from raftpy.messages import RequestVoteResponse
from raftpy.ready import Role

A, B, C = MEMBERS


# ------------------------------------------------------------------- the server side

@pytest.mark.parametrize(("request_", "problem"), [
    ({"op": "get", "key": "k", "wait": 1.0}, "only status requests carry"),
    ({"op": "status", "wait": 6.0}, "'wait' must be seconds from 0 to 5"),
    ({"op": "status", "wait": "1"}, "'wait' must be seconds"),
    ({"op": "status", "wait": 1.0, "exclude": [[1]]}, "list of \\[leader id, term\\] pairs"),
    ({"op": "status", "wait": 1.0, "exclude": [[1, -1]]}, "list of \\[leader id, term\\]"),
])
def test_bad_long_polls_are_refused(request_: dict[str, Any], problem: str) -> None:
    with pytest.raises(protocol.BadRequest, match=problem):
        protocol.decode_request(msgpack.packb(request_))


def test_a_long_poll_is_a_valid_status_request() -> None:
    request = {"op": "status", "wait": 0.5, "exclude": [[1, 3]]}
    assert protocol.decode_request(msgpack.packb(request)) == request


async def test_a_follower_answers_a_long_poll_when_it_learns_of_the_next_leader(
        autojump_clock: trio.testing.MockClock) -> None:
    async with kv_cluster() as (c, _):
        old = await c.leader()
        term = old.status().term
        follower = next(i for i in c.ids if i != old.id)
        server = KVServer(c.machines[follower])  # type: ignore[arg-type]
        node = c.nodes[follower]
        # Without exclusion a known leader is named at once.
        start = trio.current_time()
        answer = await server.handle(node, {"op": "status", "wait": 2.0})
        assert answer["status"]["leader_id"] == old.id
        assert trio.current_time() == start
        c.stop(old.id)
        start = trio.current_time()
        answer = await server.handle(node, {"op": "status", "wait": 2.0,
                                            "exclude": [[old.id, term]]})
        elapsed = trio.current_time() - start
        new = answer["status"]["leader_id"]
        assert new not in (None, old.id)
        assert answer["status"]["term"] > term
        assert 0 < elapsed < 2.0  # an election, not the whole wait
        assert node.status().leader_id == new


async def test_a_long_poll_without_a_leader_ends_after_its_wait(
        autojump_clock: trio.testing.MockClock) -> None:
    async with kv_cluster() as (c, _):
        old = await c.leader()
        survivor = next(i for i in c.ids if i != old.id)
        for node_id in c.ids:
            if node_id != survivor:
                c.stop(node_id)
        server = KVServer(c.machines[survivor])  # type: ignore[arg-type]
        start = trio.current_time()
        answer = await server.handle(c.nodes[survivor], {
            "op": "status", "wait": 1.5, "exclude": [[old.id, old.status().term]]})
        assert trio.current_time() - start == pytest.approx(1.5)
        assert answer["status"]["leader_id"] in (None, old.id)


async def test_a_transfer_target_holds_requests_while_it_campaigns(
        autojump_clock: trio.testing.MockClock) -> None:
    """A put reaching the target while it campaigns (its first election's answers are
    lost; the next election decides) waits for the outcome: handled there if the
    target wins, else redirected to the winner, rather than answered 'not leader,
    none known'."""
    async with kv_cluster() as (c, _):
        leader = await c.leader()
        target = next(i for i in c.ids if i != leader.id)
        node = c.nodes[target]
        server = KVServer(c.machines[target], candidate_hold=2.0)  # type: ignore[arg-type]
        answers: list[dict[str, Any]] = []
        flag = lose_vote_answers(c, target)
        async with trio.open_nursery() as nursery:
            async def transfer() -> None:
                with contextlib.suppress(TransferFailed):  # another may win the next round
                    await leader.transfer_leadership(target)

            nursery.start_soon(transfer)
            while node.status().role is not Role.CANDIDATE:
                await trio.sleep(0)
            start = trio.current_time()

            async def put() -> None:
                answers.append(await server.handle(node, {"op": "put", "key": "k",
                                                          "value": "v"}))

            nursery.start_soon(put)
            await trio.sleep(0.1)
            assert node.status().role is Role.CANDIDATE and not answers
            flag[0] = False  # its next election succeeds
        # Held, then handled by the winner or redirected to it (never "none known").
        assert trio.current_time() - start > 0.1
        winner = await c.leader()
        if winner.id == target:
            assert answers == [{"ok": True}]
            assert store(c, target).data == {"k": "v"}
        else:
            assert (answers[0]["error"], answers[0]["leader_id"]) == (protocol.NOT_LEADER,
                                                                      winner.id)


def lose_vote_answers(c: Any, target: int) -> list[bool]:
    """Drop every vote answer to ``target`` while the returned flag's ``[0]`` is true."""
    flag = [True]
    for voter in c.ids:
        if voter != target:
            transport = c.network.transports[voter]

            def send(msg: Any, send: Any = transport.send) -> None:
                if not (flag[0] and isinstance(msg, RequestVoteResponse) and msg.dst == target):
                    send(msg)

            transport.send = send
    return flag


async def test_the_old_leader_names_its_target_while_the_target_campaigns(
        autojump_clock: trio.testing.MockClock) -> None:
    """Once the target's vote request made the old leader a follower, a request there
    is redirected to the target at once, while it still campaigns (rather than held
    until its first heartbeat)."""
    async with kv_cluster() as (c, _):
        leader = await c.leader()
        target = next(i for i in c.ids if i != leader.id)
        server = KVServer(c.machines[leader.id])  # type: ignore[arg-type]
        flag = lose_vote_answers(c, target)
        async with trio.open_nursery() as nursery:
            async def transfer() -> None:
                with contextlib.suppress(TransferFailed):
                    await leader.transfer_leadership(target)

            nursery.start_soon(transfer)
            while leader.is_leader or leader.status().transfer_target is None:
                await trio.sleep(0)
            start = trio.current_time()
            answer = await server.handle(leader, {"op": "put", "key": "k", "value": "v"})
            assert trio.current_time() == start
            assert c.nodes[target].status().role is Role.CANDIDATE  # it has not won yet
            flag[0] = False
        assert (answer["error"], answer["leader_id"]) == (protocol.NOT_LEADER, target)


# ------------------------------------------------------------------- the client side

class LongPolling:
    """Scripted members who follow ``leader`` (an address, changed by the test) in
    ``term``; they answer a status long poll like :func:`raftpy.kv.server.wait_for_leader`."""

    def __init__(self, nursery: trio.Nursery, leader: str, term: int,
                 dead: set[str]) -> None:
        self.nursery = nursery
        self.leader, self.term, self.dead = leader, term, dead
        self.changed = trio.Event()
        self.requests: dict[str, list[dict[str, Any]]] = {}
        self.connects: dict[str, int] = {}
        self.leader_delay = 0.0
        """How much later than the followers the leader answers a long poll."""

    def elect(self, leader: str, term: int) -> None:
        self.leader, self.term = leader, term
        self.changed.set()
        self.changed = trio.Event()

    def status(self, address: str) -> dict[str, Any]:
        role = "leader" if address == self.leader else "follower"
        return {"ok": True, "status": {
            "node_id": MEMBERS.index(address) + 1, "role": role, "term": self.term,
            "leader_id": MEMBERS.index(self.leader) + 1, "leader_address": self.leader}}

    async def connect(self, address: str) -> MemoryFramed:
        self.connects[address] = self.connects.get(address, 0) + 1
        if address in self.dead:
            raise ConnectionRefusedError(111, "Connection refused")
        client_end, server_end = framed_pair()
        self.nursery.start_soon(self._serve, address, server_end)
        return client_end

    async def _serve(self, address: str, stream: MemoryFramed) -> None:
        while (data := await stream.receive()) is not None:
            request = msgpack.unpackb(data)
            self.requests.setdefault(address, []).append(request)
            if request["op"] == "status":
                excluded = {(i, t) for i, t in request.get("exclude", [])}
                with trio.move_on_after(request.get("wait", 0)):
                    while (MEMBERS.index(self.leader) + 1, self.term) in excluded \
                            and address != self.leader:
                        await self.changed.wait()
                if address == self.leader and request.get("wait"):
                    await trio.sleep(self.leader_delay)
                response = self.status(address)
            elif address != self.leader:
                response = protocol.error(protocol.NOT_LEADER, "not the leader",
                                          leader_id=MEMBERS.index(self.leader) + 1,
                                          leader_address=self.leader, term=self.term)
            elif request["op"] == "session":
                response = {"ok": True, "session": 1, "timeout": 3600.0}
            else:
                response = {"ok": True}
            await stream.send(msgpack.packb(response))


async def test_after_a_kill_the_client_writes_the_moment_a_member_learns_the_new_leader(
        autojump_clock: trio.testing.MockClock) -> None:
    """A dies; B and C name it until B wins at 1.2 s. The client long-polls: it writes
    at 1.2 s exactly, after a handful of questions (polling every 20 ms would ask
    about sixty times and write up to 20 ms late)."""
    async with trio.open_nursery() as nursery:
        net = LongPolling(nursery, A, 2, dead=set())
        net.leader_delay = 0.001  # C's answer naming B comes first
        client = KVClient(MEMBERS, connect=net.connect, timeout=5, retry_delay=0.02,
                          leader_wait=0.5)
        await client.put("k", "v1")
        assert client.leader_address == A
        net.dead.add(A)
        await client.aclose()  # (connections closed: the next put connects to A, refused)

        async def elect_b_later() -> None:
            await trio.sleep(1.2)
            net.elect(B, 3)

        done: list[float] = []

        async def put() -> None:
            await client.put("k", "v2")
            done.append(trio.current_time())

        start = trio.current_time()
        nursery.start_soon(elect_b_later)
        nursery.start_soon(put)
        await trio.sleep(0.1)  # the client's long polls are out
        dials = net.connects[B]
        while not done:
            await trio.sleep(0.01)
        assert done[0] - start == pytest.approx(1.2, abs=0.002)
        assert client.leader_address == B
        # C's answer ended the round, but B's own answer was let in rather than
        # cancelled: the put went over the connection already open to B.
        assert net.connects[B] == dials
        polls = [r for a in (B, C) for r in net.requests[a] if r["op"] == "status"]
        assert 3 <= len(polls) <= 12
        assert [1, 2] in polls[-1]["exclude"]  # A, in the term it failed in
        nursery.cancel_scope.cancel()


async def test_a_member_that_failed_is_followed_at_once_when_it_leads_a_later_term(
        autojump_clock: trio.testing.MockClock) -> None:
    """A failed the client in term 2 (suspected for 10 s); it comes back and wins
    term 3: the members' redirects to A are followed at once, not after 10 s."""
    async with trio.open_nursery() as nursery:
        net = LongPolling(nursery, A, 2, dead=set())
        client = KVClient(MEMBERS, connect=net.connect, timeout=5, suspect_time=10.0,
                          leader_wait=0.5)
        await client.put("k", "v1")
        client._suspect(A)
        client.leader_address = B
        net.elect(A, 3)
        start = trio.current_time()
        await client.put("k", "v2")
        assert trio.current_time() - start < 0.01
        assert client.leader_address == A
        assert net.requests[B][-1]["op"] == "put"  # B redirected to A, in term 3
        assert net.requests[A][-1]["op"] == "put"
        nursery.cancel_scope.cancel()
