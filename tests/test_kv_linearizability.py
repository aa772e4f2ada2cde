"""A history recorded from the key-value example under leader crashes is linearizable.

Six clients put, get and delete two keys through ``KVClient`` on the in-memory
three-node cluster of ``test_kv`` while leaders are stopped and restarted; every
operation goes into a ``raftpy.testing.History``, which ``KVModel`` must accept.
"""

from __future__ import annotations

import trio
import trio.testing
from test_kv import MEMBERS, kv_cluster

from raftpy.kv.client import ClusterUnavailable, Connect, KeyNotFound, KVClient
from raftpy.kv.statemachine import KVStore
from raftpy.sessions import SessionStateMachine
from raftpy.testing import History, KVModel, Outcome, check


async def test_history_of_the_kv_store_under_leader_crashes_is_linearizable(
        autojump_clock: trio.testing.MockClock) -> None:
    history = History()
    now = trio.current_time

    async def client(n: int, connect: Connect) -> None:
        async with KVClient(MEMBERS, connect=connect, timeout=2) as kv:
            for i in range(100):
                key = f"k{i % 2}"
                if (i + n) % 3 == 0:
                    op = history.invoke(n, "put", key, f"{n}-{i}", at=now())
                    try:
                        await kv.put(key, f"{n}-{i}")
                    except ClusterUnavailable:
                        history.unknown(op, at=now())
                    else:
                        history.ok(op, at=now())
                else:
                    deleting = (i + n) % 7 == 0
                    op = history.invoke(n, "delete" if deleting else "get", key, at=now())
                    result: object
                    try:
                        if deleting:
                            await kv.delete(key)
                            result = True
                        else:
                            result = await kv.get(key)
                    except KeyNotFound:
                        result = False if deleting else None
                    except ClusterUnavailable:
                        history.unknown(op, at=now())
                        continue
                    history.ok(op, result, at=now())
                await trio.sleep(0.001 * ((7 * n + i) % 5))

    # The KV server runs the store inside the session layer (docs/sessions.md).
    async with (kv_cluster(machine=lambda: SessionStateMachine(KVStore())) as (c, env),
                trio.open_nursery() as nursery):
        for n in range(6):
            nursery.start_soon(client, n, env["connect"])
        crashes = []
        for _ in range(2):
            await trio.sleep(0.05)
            leader = await c.leader()
            c.stop(leader.id)
            crashes.append(trio.current_time())
            await trio.sleep(0.2)
            await c.start(leader.id)

    ops = history.operations
    assert len(ops) == 600
    assert all(op.outcome is not Outcome.FAIL for op in ops)
    assert sum(op.invoke > crashes[-1] for op in ops) > 50  # the load outlived the crashes
    result = check(history, KVModel())
    assert result.ok, result.explanation
    assert (result.operations, result.key) == (600, None)
