"""Automatic roles with real ``raftpy serve --voters 3 --standbys 1`` processes:
a SIGKILLed voter is replaced by the standby, demoted to spare, and becomes a
standby again once it is back and a standby slot is free."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from raftpy.demo_net import Servers
from raftpy.kv.client import ClusterUnavailable, KVClient

RETRY = 5.0
AUTO = ["--voters", "3", "--standbys", "1", "--spare-retry", str(RETRY)]


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    s = Servers(tmp_path, 3, cluster_id="autoroles-test", election_timeout_ms=300)
    try:
        yield s
    finally:
        s.stop_all()


def roles(m: dict[str, Any]) -> dict[int, str]:
    return {member["id"]: member["role"] for member in m["members"]}


async def _until(client: KVClient, check: Callable[[dict[int, str]], bool],
                 timeout: float) -> tuple[float, dict[str, Any]]:
    """Poll the leader's membership until ``check`` passes; returns (when, it)."""
    with trio.fail_after(timeout):
        while True:
            try:
                m = await client.membership()
            except (ClusterUnavailable, OSError, trio.BrokenResourceError):
                m = None
            if m is not None and check(roles(m)):
                return trio.current_time(), m
            await trio.sleep(0.05)


def test_a_killed_voter_is_replaced_by_the_standby_and_comes_back_as_standby(
        servers: Servers) -> None:
    for node_id in servers.ids:
        servers.start(node_id, extra=AUTO)
    standby, spare = servers.add(), servers.add()
    figures: dict[str, float] = {}

    async def story() -> None:
        async with KVClient(servers.addresses, cluster_id=servers.cluster_id,
                            timeout=5) as client:
            await _until(client, lambda r: len(r) == 3, 30)
            servers.start(standby, join=[1, 2, 3], extra=AUTO)
            await _until(client, lambda r: r.get(standby) == "standby", 30)
            servers.start(spare, join=[1, 2, 3], extra=AUTO)
            _, m = await _until(client, lambda r: r.get(spare) == "spare", 30)
            assert roles(m) == {1: "voter", 2: "voter", 3: "voter", standby: "standby",
                                spare: "spare"}
            victim = next(i for i in (1, 2, 3) if i != m["leader_id"])

            servers.kill(victim)
            killed = trio.current_time()
            done, m = await _until(client, lambda r: r[victim] == "spare"
                                   and r[standby] == "voter" and r[spare] == "standby", 20)
            figures["promotion"] = done - killed
            print(f"\nSIGKILL of voter {victim} -> standby {standby} promoted, {victim} "
                  f"demoted, spare {spare} made standby: {figures['promotion']:.2f} s")

            # Back, as a spare: the targets are met, it stays one...
            servers.start(victim, extra=AUTO)
            await trio.sleep(2.0)
            assert roles(await client.membership())[victim] == "spare"
            # ...until the standby slot frees up (and its bench time is over).
            servers.kill(spare)
            killed = trio.current_time()
            back, m = await _until(client, lambda r: r[victim] == "standby"
                                   and r[spare] == "spare", 30)
            figures["back"] = back - killed
            print(f"standby {spare} SIGKILLed -> {victim} standby again after "
                  f"{figures['back']:.2f} s (bench {RETRY:.0f} s after its demotion)")
            assert roles(m) == {**{i: "voter" for i in (1, 2, 3, standby) if i != victim},
                                victim: "standby", spare: "spare"}
            # It is replicated to again: the leader knows how far it is.
            _, m = await _until(client, lambda r: True, 5)
            member = next(x for x in m["members"] if x["id"] == victim)
            assert member["last_contact"] is not None and member["last_contact"] < 2.0

    trio.run(story)
    # Bounds well above what the machine needs (printed above), for a loaded CI.
    assert figures["promotion"] < 10.0
    assert figures["back"] < RETRY + 15.0
