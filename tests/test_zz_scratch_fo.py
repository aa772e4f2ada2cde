import traceback
from typing import Any
import pytest
import trio
from test_kv import kv_cluster, store, kv_machines  # noqa: F401
from raftpy.kv import protocol
from raftpy.kv.server import KVServer
import raftpy.trio.runtime as rt
from raftpy.errors import NotLeader

LOG: list[str] = []
orig = NotLeader.__init__
def patched(self, node_id, leader_id=None, **kw):
    if leader_id is None:
        LOG.append("".join(traceback.format_stack(limit=6)[:-1]))
    orig(self, node_id, leader_id, **kw)

@pytest.mark.parametrize("i", range(10))
async def test_scratch(i, autojump_clock, monkeypatch) -> None:
    monkeypatch.setattr(NotLeader, "__init__", patched)
    LOG.clear()
    async with kv_cluster() as (c, _):
        leader = await c.leader()
        target = next(x for x in c.ids if x != leader.id)
        server = KVServer(c.machines[leader.id])
        answers: list[dict[str, Any]] = []
        trace = []
        leader._raft._trace = trace.append
        async def request(body):
            answers.append({"op": body["op"], **await server.handle(leader, body)})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(leader.transfer_leadership, target)
            while leader.status().transfer_target is None:
                await trio.sleep(0)
            nursery.start_soon(request, {"op": "put", "key": "k", "value": "v"})
            nursery.start_soon(request, {"op": "get", "key": "k"})
        put = next(a for a in answers if a["op"] == "put")
        if put["leader_id"] is None:
            print("\n".join(trace[-30:]))
            print("\n=====\n".join(LOG[:3]))
        assert put["leader_id"] == target
