"""`raftpy serve --metrics`: scrape the Prometheus endpoints of a real 3-process cluster
and watch term, leader, commit index and commit latency move under `raftpy put` load."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from raftpy import cli
from raftpy.demo_net import Servers, _free_ports

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

Scrape = dict[str, float]


def scrape(port: int) -> Scrape:
    """Every sample of one scrape, by name plus labels (``name{label=value}``)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    out: Scrape = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def scrape_all(ports: dict[int, int]) -> dict[int, Scrape]:
    return {node_id: scrape(port) for node_id, port in ports.items()}


def wait_until(what: str, check: object, timeout: float = 30.0) -> dict[int, Scrape]:
    """Scrape until ``check(scrapes)`` holds (generous real-time bound)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            scrapes = check()  # type: ignore[operator]
        except (urllib.error.URLError, ConnectionError) as exc:
            last = exc
        else:
            if scrapes:
                return scrapes  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last error: {last})")


def raftpy(servers: Servers, *argv: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RAFTPY_CLUSTER=",".join(servers.addresses),
               RAFTPY_CLUSTER_ID=servers.cluster_id)
    return subprocess.run([sys.executable, "-m", "raftpy.cli", *argv], env=env,
                          capture_output=True, text=True, timeout=30)


def put_load(servers: Servers, n: int, tag: str) -> None:
    for k in range(n):
        done = raftpy(servers, "put", f"{tag}{k}", f"v{k}")
        assert done.returncode == cli.EXIT_OK, done.stderr


def test_prometheus_endpoints_of_a_process_cluster_move_under_put_load(tmp_path: Path) -> None:
    servers = Servers(tmp_path, 3, cluster_id="metrics-test")
    ports = dict(zip(servers.ids, _free_ports(3), strict=True))
    try:
        for node_id in servers.ids:
            servers.start(node_id, extra=["--metrics", f"127.0.0.1:{ports[node_id]}"])

        def agreed_leader() -> dict[int, Scrape] | None:
            scrapes = scrape_all(ports)
            leaders = {s["raftpy_leader_id"] for s in scrapes.values()}
            if len(leaders) == 1 and leaders != {-1}:
                return scrapes
            return None

        before = wait_until("a leader every member knows", agreed_leader)
        leader = int(before[1]["raftpy_leader_id"])
        assert before[leader]["raftpy_is_leader"] == 1
        assert before[leader]["raftpy_role{role=leader}"] == 1
        term = before[leader]["raftpy_term"]
        assert term >= 1 and all(s["raftpy_term"] == term for s in before.values())

        put_load(servers, 5, "a")
        after = scrape_all(ports)
        lead = after[leader]
        assert lead["raftpy_commit_index"] >= before[leader]["raftpy_commit_index"] + 5
        assert lead["raftpy_proposals_total"] >= before[leader]["raftpy_proposals_total"] + 5
        assert lead["raftpy_commit_latency_seconds_count"] >= \
            before[leader]["raftpy_commit_latency_seconds_count"] + 5
        assert lead["raftpy_commit_latency_seconds_sum"] > 0
        assert lead["raftpy_commit_latency_seconds_bucket{le=+Inf}"] == \
            lead["raftpy_commit_latency_seconds_count"]
        assert lead["raftpy_fsync_seconds_count"] > before[leader]["raftpy_fsync_seconds_count"]
        assert lead["raftpy_transport_bytes_sent_total"] > 0
        for node_id, s in after.items():
            if node_id != leader:
                assert s["raftpy_commit_latency_seconds_count"] == 0  # followers propose nothing
                assert s[f"raftpy_peer_reachable{{peer={leader}}}"] == 1  # it acks the leader
        followers = [i for i in servers.ids if i != leader]

        def replicated() -> dict[int, Scrape] | None:
            s = scrape(ports[leader])
            if all(s[f"raftpy_peer_match_index{{peer={p}}}"] >= lead["raftpy_commit_index"]
                   for p in followers):
                return {leader: s}
            return None

        wait_until("every follower to match the leader", replicated)

        # Hand leadership over: the term and the leader move on every member.
        target = followers[0]
        moved = raftpy(servers, "transfer", "--to", str(target))
        assert moved.returncode == cli.EXIT_OK, moved.stderr

        def new_leader() -> dict[int, Scrape] | None:
            scrapes = scrape_all(ports)
            if all(s["raftpy_leader_id"] == target and s["raftpy_term"] > term
                   for s in scrapes.values()):
                return scrapes
            return None

        moved_scrapes = wait_until("the new leader everywhere", new_leader)
        old = moved_scrapes[leader]
        assert old["raftpy_transfers_total{outcome=succeeded,reason=}"] == 1
        assert old["raftpy_transfer_seconds_count"] == 1
        assert moved_scrapes[target]["raftpy_elections_won_total"] >= 1

        put_load(servers, 3, "b")
        final = scrape(ports[target])
        assert final["raftpy_commit_latency_seconds_count"] >= 3
        assert final["raftpy_commit_index"] >= lead["raftpy_commit_index"] + 3

        # Anything but /metrics is a 404.
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{ports[target]}/nope", timeout=5)
        assert info.value.code == 404
    finally:
        codes = servers.stop_all()
    assert codes == dict.fromkeys(servers.ids, 0)
