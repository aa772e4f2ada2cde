"""Membership with real ``raftpy serve`` processes: joining through the CLI, a
restart that follows its log whatever its flags, handover of a leader under load,
and (slow) a rolling replacement of every original member."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from raftpy import cli
from raftpy.demo_net import Servers, wait_for_leader
from raftpy.kv.client import ClusterUnavailable, KVClient, OutcomeUnknown


def raftpy(servers: Servers, *argv: str, members: list[int] | None = None
           ) -> subprocess.CompletedProcess[str]:
    ids = members if members is not None else list(servers.procs)
    env = dict(os.environ, RAFTPY_CLUSTER=",".join(servers.address(i) for i in ids),
               RAFTPY_CLUSTER_ID=servers.cluster_id)
    return subprocess.run([sys.executable, "-m", "raftpy.cli", *argv, "--timeout", "20"],
                          env=env, capture_output=True, text=True, timeout=60)


def membership(servers: Servers, members: list[int] | None = None) -> dict[str, Any]:
    out = raftpy(servers, "members", "--json", members=members)
    assert out.returncode == cli.EXIT_OK, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def roles(m: dict[str, Any]) -> dict[int, str]:
    return {member["id"]: member["role"] for member in m["members"]}


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    s = Servers(tmp_path, 3, cluster_id="membership-test", election_timeout_ms=300)
    try:
        yield s
    finally:
        s.stop_all()


async def _wait_for(predicate: Any, timeout: float = 30.0) -> None:
    with trio.fail_after(timeout):
        while not await trio.to_thread.run_sync(predicate):
            await trio.sleep(0.1)


def test_join_through_the_cli_and_change_roles(servers: Servers) -> None:
    for node_id in servers.ids:
        servers.start(node_id)
    new = servers.add()
    servers.start(new, join=[1, 2, 3])

    async def story() -> None:
        await _wait_for(lambda: roles(membership(servers, [1, 2, 3])).get(new) == "spare")
    trio.run(story)

    m = membership(servers, [1, 2, 3])
    assert m["committed"] is True
    assert roles(m) == {1: "voter", 2: "voter", 3: "voter", 4: "spare"}
    assert next(x for x in m["members"] if x["id"] == new)["address"] == servers.address(new)

    promoted = raftpy(servers, "assign", str(new), "voter")
    assert promoted.returncode == cli.EXIT_OK, promoted.stderr
    assert "committed" in promoted.stdout
    table = raftpy(servers, "members")
    assert table.returncode == cli.EXIT_OK
    line = next(x for x in table.stdout.splitlines() if x.split()[:1] == [str(new)])
    assert line.split()[1:3] == [servers.address(new), "voter"]
    assert line.split()[-1].isdigit()  # the leader knows its match index

    again = raftpy(servers, "add", str(new), servers.address(new))
    assert again.returncode == cli.EXIT_FAILED
    assert "a member already" in again.stderr
    put = raftpy(servers, "put", "k", "v", members=[new])  # the new member redirects
    assert put.returncode == cli.EXIT_OK, put.stderr

    removed = raftpy(servers, "remove", str(new))
    assert removed.returncode == cli.EXIT_OK, removed.stderr
    assert roles(membership(servers, [1, 2, 3])) == {1: "voter", 2: "voter", 3: "voter"}


def test_a_restart_with_missing_or_wrong_flags_follows_its_log(servers: Servers) -> None:
    for node_id in servers.ids:
        servers.start(node_id)

    async def write() -> None:
        async with KVClient(servers.addresses, cluster_id=servers.cluster_id,
                            timeout=20) as client:
            await wait_for_leader(client, timeout=30)
            await client.put("before", "restart")
    trio.run(write)
    for node_id in servers.ids:
        servers.kill(node_id)

    # Alone, with no flags, node 3 still counts three voters: it never leads.
    servers.start(3, flags=False)

    async def alone() -> dict[str, Any]:
        async with KVClient([servers.address(3), servers.address(2)],
                            cluster_id=servers.cluster_id, timeout=20) as client:
            with trio.fail_after(20):
                while True:
                    try:
                        await client.status(servers.address(3))
                        break
                    except (OSError, trio.TooSlowError, trio.BrokenResourceError):
                        await trio.sleep(0.05)
            await trio.sleep(2.0)  # several election timeouts (300-600 ms)
            lonely = await client.status(servers.address(3))
            # Wrong flags: bootstrapping node 2 as a cluster of one is ignored (its
            # data dir holds state); with node 3 it makes a majority of the three.
            servers.start(2, flags=False, extra=["--bootstrap"])
            leader = await wait_for_leader(client, timeout=20)
            await client.put("with", "two")
            status3 = await client.status(servers.address(3))
            status2 = await client.status(servers.address(2))
            return {"lonely": lonely, "leader": leader, "3": status3, "2": status2}
    seen = trio.run(alone)
    assert seen["lonely"]["role"] != "leader"
    assert seen["lonely"]["leader_id"] is None
    assert [p["node_id"] for p in seen["lonely"]["peers"]] == [1, 2]
    assert [p["node_id"] for p in seen["3"]["peers"]] == [1, 2]
    assert [p["node_id"] for p in seen["2"]["peers"]] == [1, 3]
    log2 = servers.log_path(2).read_text()
    assert "holds cluster state: ignoring --bootstrap" in log2

    servers.kill(2)
    servers.start(1, flags=False)

    async def one_leader() -> None:
        async with KVClient(servers.addresses, cluster_id=servers.cluster_id,
                            timeout=20) as client:
            leader = await wait_for_leader(client, timeout=30)
            statuses = await client.statuses()
            leaders = [s for s in statuses.values()
                       if isinstance(s, dict) and s["role"] == "leader"]
            assert [s["node_id"] for s in leaders] == [leader["node_id"]]
            assert await client.get("before") == "restart"
            assert await client.get("with") == "two"
    trio.run(one_leader)
    assert roles(membership(servers, [1, 3])) == {1: "voter", 2: "voter", 3: "voter"}


class Writer:
    """Writes keys one after another, recording when each was acknowledged."""

    def __init__(self, addresses: list[str], cluster_id: str) -> None:
        self.addresses = addresses
        self.cluster_id = cluster_id
        self.acked: dict[str, str] = {}
        self.ack_times: list[float] = []
        self.failures = 0

    async def run(self, stop: trio.Event) -> None:
        async with KVClient(self.addresses, cluster_id=self.cluster_id, timeout=15) as client:
            k = 0
            while not stop.is_set():
                key, value = f"w{k}", f"v{k}"
                k += 1
                try:
                    await client.put(key, value)
                except (ClusterUnavailable, OutcomeUnknown):
                    self.failures += 1
                    continue
                self.acked[key] = value
                self.ack_times.append(trio.current_time())

    def longest_gap(self, start: float, end: float) -> float:
        """The longest time between two consecutive acknowledgements that overlaps
        ``[start, end]`` (the writer keeps writing past ``end``)."""
        return max((b - a for a, b in itertools.pairwise(self.ack_times)
                    if b >= start and a <= end), default=end - start)

    async def check_all(self, addresses: list[str]) -> None:
        async with KVClient(addresses, cluster_id=self.cluster_id, timeout=20) as client:
            missing = {k: v for k, v in self.acked.items()
                       if (await _get(client, k)) != v}
        assert missing == {}


async def _get(client: KVClient, key: str) -> str | None:
    try:
        return await client.get(key)
    except KeyError:
        return None


def test_leader_handover_under_load(servers: Servers) -> None:
    for node_id in servers.ids:
        servers.start(node_id)
    standby = servers.add()
    servers.start(standby, join=[1, 2, 3], role="standby")

    async def story() -> tuple[float, int | None, int]:
        writer = Writer(servers.addresses, servers.cluster_id)
        async with KVClient(servers.addresses, cluster_id=servers.cluster_id,
                            timeout=20) as client:
            await _wait_for(lambda: roles(membership(servers, [1, 2, 3])).get(standby)
                            == "standby")
            leader = (await wait_for_leader(client))["node_id"]
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run, stop)
            with trio.fail_after(30):
                while len(writer.acked) < 50:
                    await trio.sleep(0.01)
            began = trio.current_time()
            code = await trio.to_thread.run_sync(lambda: servers.stop(leader, timeout=20))
            ended = trio.current_time()
            with trio.fail_after(30):
                target = len(writer.acked) + 50
                while len(writer.acked) < target:
                    await trio.sleep(0.01)
            stop.set()
        gap = writer.longest_gap(began, ended)
        print(f"\nhandover of leader {leader}: process exited in {(ended - began) * 1000:.0f} "
              f"ms, longest write gap {gap * 1000:.0f} ms, {len(writer.acked)} writes "
              f"acknowledged, {writer.failures} failed")
        await writer.check_all([servers.address(i) for i in servers.procs])
        return gap, code, leader

    gap, code, leader = trio.run(story)
    assert code == 0
    assert gap < 5.0
    m = membership(servers, [i for i in servers.procs])
    assert roles(m) == {**{i: "voter" for i in (1, 2, 3, standby)}, leader: "spare"}
    assert "handover done" in servers.log_path(leader).read_text()


@pytest.mark.slow
def test_rolling_replacement_of_every_original_member(servers: Servers) -> None:
    for node_id in servers.ids:
        servers.start(node_id)
    originals = list(servers.ids)
    new_ids = [servers.add() for _ in originals]
    everyone = [servers.address(i) for i in originals + new_ids]

    async def story() -> list[tuple[int, float]]:
        writer = Writer(everyone, servers.cluster_id)
        steps: list[tuple[int, float]] = []
        async with KVClient(everyone, cluster_id=servers.cluster_id, timeout=20) as client:
            await wait_for_leader(client, timeout=30)
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run, stop)
            for old, new in zip(originals, new_ids, strict=True):
                running = [i for i in servers.procs]
                servers.start(new, join=running, role="standby")
                await _wait_for(lambda new=new, running=running: roles(
                    membership(servers, running)).get(new) == "standby", timeout=60)
                began = trio.current_time()
                code = await trio.to_thread.run_sync(lambda old=old: servers.stop(old, 20))
                assert code == 0
                running = [i for i in servers.procs]
                out = await trio.to_thread.run_sync(
                    lambda old=old, running=running: raftpy(servers, "remove", str(old),
                                                            members=running))
                assert out.returncode == cli.EXIT_OK, out.stderr
                ended = trio.current_time()
                steps.append((old, writer.longest_gap(began, ended)))
                print(f"\nreplaced {old} by {new}: longest write gap "
                      f"{steps[-1][1] * 1000:.0f} ms over {(ended - began) * 1000:.0f} ms")
            target = len(writer.acked) + 20
            with trio.fail_after(30):
                while len(writer.acked) < target:
                    await trio.sleep(0.01)
            stop.set()
        print(f"{len(writer.acked)} writes acknowledged, {writer.failures} failed")
        await writer.check_all([servers.address(i) for i in new_ids])
        return steps

    steps = trio.run(story)
    assert all(gap < 5.0 for _, gap in steps)
    m = membership(servers, new_ids)
    assert roles(m) == {i: "voter" for i in new_ids}
