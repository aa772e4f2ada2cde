"""Real ``raftpy serve`` processes: SIGKILL the leader, restart it from its data
directory, and read back every acknowledged write; the CLI's exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import trio

from raftpy import cli
from raftpy.demo_net import Servers, wait_for_leader
from raftpy.kv.client import ClusterUnavailable, KVClient


def raftpy(servers: Servers, *argv: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RAFTPY_CLUSTER=",".join(servers.addresses),
               RAFTPY_CLUSTER_ID=servers.cluster_id)
    return subprocess.run([sys.executable, "-m", "raftpy.cli", *argv], env=env,
                          capture_output=True, text=True, timeout=30)


async def _story(servers: Servers) -> dict[str, str]:
    acknowledged: dict[str, str] = {}
    async with KVClient(servers.addresses, cluster_id=servers.cluster_id, timeout=10) as client:
        leader = await wait_for_leader(client, timeout=30)
        for k in range(20):
            await client.put(f"k{k}", f"v{k}")
            acknowledged[f"k{k}"] = f"v{k}"
        victim = leader["node_id"]
        servers.kill(victim)
        # Keep writing through the election: whatever is acknowledged must survive.
        with trio.move_on_after(3):
            for k in range(20, 60):
                try:
                    await client.put(f"k{k}", f"v{k}")
                except ClusterUnavailable:
                    continue
                acknowledged[f"k{k}"] = f"v{k}"
        await wait_for_leader(client, exclude=victim, min_term=leader["term"] + 1)
        servers.start(victim)
        with trio.fail_after(30):
            while True:
                try:
                    status = await client.status(servers.address(victim))
                    leader_status = await wait_for_leader(client)
                    if status["applied_index"] >= leader_status["commit_index"]:
                        break
                except (OSError, trio.TooSlowError, trio.BrokenResourceError):
                    pass
                await trio.sleep(0.02)
        # Make the restarted member the leader: it must serve everything from its disk.
        reply = await client.transfer(victim)
        assert reply["leader_id"] == victim
        for key, value in acknowledged.items():
            assert await client.get(key) == value
    return acknowledged


def test_sigkilled_leader_restarts_from_disk_and_no_acknowledged_write_is_lost(
        tmp_path: Path) -> None:
    servers = Servers(tmp_path, 3, cluster_id="proc-test")
    try:
        for node_id in servers.ids:
            servers.start(node_id)
        acknowledged = trio.run(_story, servers)
        assert len(acknowledged) >= 20

        got = raftpy(servers, "get", "k0")
        assert (got.returncode, got.stdout) == (cli.EXIT_OK, "v0\n")
        missing = raftpy(servers, "get", "nope")
        assert missing.returncode == cli.EXIT_NOT_FOUND
        assert "no such key: 'nope'" in missing.stderr
        put = raftpy(servers, "put", "x", "y")
        assert put.returncode == cli.EXIT_OK
        status = raftpy(servers, "status")
        assert status.returncode == cli.EXIT_OK
        assert status.stdout.count(" leader ") == 1
        moved = raftpy(servers, "transfer")
        assert moved.returncode == cli.EXIT_OK and "leader is now" in moved.stdout
    finally:
        codes = servers.stop_all()
    assert codes == dict.fromkeys(servers.ids, 0)
