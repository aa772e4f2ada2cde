"""Early pre-vote over real loopback TCP: when the leader's process goes away its
followers' transports notice at once, and a new leader is elected long before an
election timeout would fire (real time, generous bounds)."""

from __future__ import annotations

import random

import pytest
import trio
from helpers import Recorder

from raftpy import Config, Role
from raftpy.storage.memory import MemoryStorage
from raftpy.trio.peerloss import PeerLossDetector
from raftpy.trio.runtime import Node, open_node

# A long election timeout: without the early pre-vote no election can end within
# a second of the leader going away; with it, one takes milliseconds.
TIMEOUT = 2.0


@pytest.mark.parametrize("early", [True, False])
async def test_followers_elect_a_new_leader_at_once_when_the_leader_goes_away(
        early: bool) -> None:
    config = Config(election_timeout_min=TIMEOUT, election_timeout_max=2 * TIMEOUT,
                    early_pre_vote=early)
    listeners = {i: await trio.open_tcp_listeners(0, host="127.0.0.1") for i in (1, 2, 3)}
    ports = {i: ls[0].socket.getsockname()[1] for i, ls in listeners.items()}
    nodes: dict[int, Node] = {}
    stops: dict[int, trio.CancelScope] = {}

    async def run(node_id: int, task_status: trio.TaskStatus[None]) -> None:
        with trio.CancelScope() as scope:
            stops[node_id] = scope
            peers = {p: f"127.0.0.1:{ports[p]}" for p in ports if p != node_id}
            async with open_node(node_id, peers, state_machine=Recorder(),
                                 storage=MemoryStorage(), config=config,
                                 listen=listeners[node_id], cluster_id="early",
                                 rng=random.Random(node_id)) as node:
                nodes[node_id] = node
                task_status.started()
                await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        for node_id in ports:
            await nursery.start(run, node_id)
        with trio.fail_after(30):
            leader = await nodes[1].wait_leader()
            await nodes[leader].apply(b"x")
            followers = [i for i in ports if i != leader]
            for i in followers:
                while nodes[i].leader_id != leader:
                    await nodes[i].wait_changed()
            await trio.sleep(0.2)  # every connection is up
        stops[leader].cancel()  # its listener and connections close, as in a kill
        gone = trio.current_time()
        with trio.move_on_after(1.0):
            while not any(nodes[i].is_leader for i in followers):
                await nodes[followers[0]].wait_changed()
        elected = [i for i in followers if nodes[i]._raft.role is Role.LEADER]
        losses = [getattr(nodes[i]._transport, "peer_loss", None) for i in followers]
        if early:
            assert len(elected) == 1, "no new leader within a second"
            assert trio.current_time() - gone < 1.0
            assert all(isinstance(loss, PeerLossDetector) and loss.reported >= 1
                       for loss in losses)
            assert sum(nodes[i]._raft.early_pre_votes for i in followers) >= 1
        else:
            assert elected == []
            assert losses == [None, None]
        nursery.cancel_scope.cancel()
