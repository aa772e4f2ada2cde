"""The runtime over real loopback TCP (real time, generous bounds), with the KV server
and client on the same ports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from helpers import Cluster

from raftpy import Config, Role
from raftpy.kv.client import KeyNotFound, KVClient
from raftpy.kv.server import KVServer
from raftpy.kv.statemachine import KVStore, put_command
from raftpy.sessions import SessionStateMachine
from raftpy.trio.runtime import Node

CONFIG = Config(election_timeout_min=0.150, election_timeout_max=0.300)
CLUSTER_ID = "tcp-test"


class TcpCluster(Cluster):
    """The shared :class:`Cluster` on real loopback ports (``ports``); each member
    serves the KV protocol on its port too."""

    def __init__(self, nursery: trio.Nursery, ports: dict[int, int]) -> None:
        super().__init__(nursery, len(ports), CONFIG,
                         machine=lambda: SessionStateMachine(KVStore()))
        self.ports = ports

    @property
    def stores(self) -> dict[int, KVStore]:
        """Each member's KV store, inside its session layer."""
        return {i: m.inner for i, m in self.machines.items()}

    def address(self, node_id: int) -> str:
        return f"127.0.0.1:{self.ports[node_id]}"

    async def start(self, node_id: int, listeners: Any = None, **kwargs: Any) -> Node:
        if listeners is None:
            listeners = await trio.open_tcp_listeners(self.ports[node_id], host="127.0.0.1")
        return await super().start(node_id, listen=listeners, **kwargs)

    def network_options(self, node_id: int, machine: Any) -> dict[str, Any]:
        return {"cluster_id": CLUSTER_ID, "client_handler": KVServer(machine).serve_connection}


@asynccontextmanager
async def tcp_cluster(n: int = 3) -> AsyncIterator[TcpCluster]:
    listeners = {i: await trio.open_tcp_listeners(0, host="127.0.0.1") for i in range(1, n + 1)}
    ports = {i: ls[0].socket.getsockname()[1] for i, ls in listeners.items()}
    async with trio.open_nursery() as nursery:
        c = TcpCluster(nursery, ports)
        for node_id in c.ids:
            await c.start(node_id, listeners[node_id])
        yield c
        nursery.cancel_scope.cancel()


async def test_three_nodes_over_tcp_elect_replicate_transfer_and_survive_a_kill() -> None:
    with trio.fail_after(30):
        async with tcp_cluster() as c:
            leader = await c.leader()
            await leader.apply(put_command("a", "1"))
            await leader.read_barrier()
            assert c.stores[leader.id].data == {"a": "1"}

            target = next(i for i in c.ids if i != leader.id)
            start = trio.current_time()
            assert await leader.transfer_leadership(target) == target
            assert trio.current_time() - start < CONFIG.transfer_deadline
            assert c.nodes[target].is_leader
            assert c.nodes[target].status().leader_address == c.address(target)

            async with KVClient([c.address(i) for i in c.ids], cluster_id=CLUSTER_ID,
                                timeout=10) as client:
                await client.put("b", "2")
                assert client.leader_address == c.address(target)
                killed = target
                c.stop(killed)
                new = await c.leader(exclude=killed)
                await client.put("c", "3")  # follows the cluster to the new leader
                assert client.leader_address == c.address(new.id)
                assert await client.get("a") == "1"
                with pytest.raises(KeyNotFound):
                    await client.get("zz")

                restarted = await c.start(killed)  # same port, same (memory) storage
                await restarted.wait_applied(new.status().commit_index)
                assert c.stores[killed].data == {"a": "1", "b": "2", "c": "3"}
                status = new.status()
                assert status.role is Role.LEADER
                assert all(p.last_contact is not None and p.last_contact < 1
                           for p in status.peers)


async def test_leaving_the_context_closes_the_listening_sockets() -> None:
    with trio.fail_after(20):
        async with tcp_cluster() as c:
            await c.leader()
            ports = dict(c.ports)
    for port in ports.values():
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", port)
