"""Node.metrics() and Node.observe() on in-memory runtime clusters under MockClock."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing
from helpers import SNAPSHOT_CONFIG, FakeNetwork, FakeTransport, Recorder, addr, cluster

from raftpy import Role
from raftpy.metrics import Histogram
from raftpy.storage.memory import MemoryStorage
from raftpy.trio.observe import (
    ConfigurationChange,
    EventStream,
    LeaderChange,
    Observation,
    PeerReachable,
    PeerUnreachable,
    RoleChange,
    SnapshotInstalled,
    SnapshotTaken,
    TransferFinished,
    TransferStarted,
)
from raftpy.trio.peerhealth import PeerHealth
from raftpy.trio.runtime import open_node


def buffered(events: EventStream) -> list[Observation]:
    out = []
    while events.pending():
        out.append(events._events.popleft())
    return out


def test_histogram_counts_into_cumulative_buckets() -> None:
    h = Histogram((0.01, 0.1))
    h.observe(0.005)
    h.observe(0.05, count=3)
    h.observe(7.0)
    snap = h.snapshot()
    assert snap.buckets == ((0.01, 1), (0.1, 4), (float("inf"), 5))
    assert snap.count == 5 and snap.sum == pytest.approx(0.005 + 0.15 + 7.0)
    assert snap.quantile(0.5) == 0.1 and snap.quantile(1.0) == float("inf")


async def test_metrics_count_elections_proposals_commits_and_time_commits(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        leader = await c.leader()
        before = leader.metrics()
        assert before.role is Role.LEADER and before.leader_id == leader.id
        assert before.counters.elections_won == 1
        assert before.counters.elections_started == 1
        assert before.counters.terms_seen == before.term
        for k in range(5):
            await leader.apply(b"%d" % k)
        await trio.sleep(0.1)  # (virtual) every follower has acknowledged by now
        after = leader.metrics()
        assert after.counters.proposals == before.counters.proposals + 5
        assert after.counters.commits == before.counters.commits + 5
        assert after.commit_index == after.applied_index == after.persisted_index
        assert after.latencies.commit.count == before.latencies.commit.count + 5
        assert after.latencies.apply.count > before.latencies.apply.count
        assert {p.node_id for p in after.peers} == set(c.ids) - {leader.id}
        assert all(p.match_index == after.last_log_index for p in after.peers)
        assert all(p.last_contact is not None and p.last_contact < 0.1 for p in after.peers)
        follower = c.nodes[next(i for i in c.ids if i != leader.id)].metrics()
        assert follower.role is Role.FOLLOWER and follower.counters.elections_won == 0
        assert follower.counters.proposals == 0
        assert all(p.match_index is None for p in follower.peers)


async def test_observer_sees_leader_role_and_transfer_events(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        leader = await c.leader()
        target = next(i for i in c.ids if i != leader.id)
        async with leader.observe() as old, c.nodes[target].observe() as new:
            assert await leader.transfer_leadership(target) == target
            await trio.sleep(0.01)
            seen_old = buffered(old)
            seen_new = buffered(new)
        kinds = [type(e) for e in seen_old]
        assert kinds[0] is TransferStarted and seen_old[0].target == target
        finished = [e for e in seen_old if isinstance(e, TransferFinished)]
        assert len(finished) == 1 and finished[0].succeeded and finished[0].new_leader == target
        roles = [e for e in seen_old if isinstance(e, RoleChange)]
        assert [(e.previous, e.role) for e in roles] == [(Role.LEADER, Role.FOLLOWER)]
        assert [(e.role) for e in seen_new if isinstance(e, RoleChange)] == [
            Role.CANDIDATE, Role.LEADER]
        assert [e.leader_id for e in seen_new if isinstance(e, LeaderChange)] == [None, target]
        m = leader.metrics()
        assert m.counters.transfers_succeeded == 1 and m.latencies.transfer.count == 1


async def test_a_failed_transfer_is_counted_by_reason(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        leader = await c.leader()
        target = next(i for i in c.ids if i != leader.id)
        c.network.cut.add(target)
        with pytest.raises(Exception, match="timed out"):
            await leader.transfer_leadership(target)
        counters = leader.metrics().counters
        assert counters.transfers_failed == (("timed out", 1),)
        assert counters.transfers_succeeded == 0 and counters.transfers_failed_total == 1


async def test_a_slow_observer_loses_the_oldest_events_and_never_blocks_the_node(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        leader = await c.leader()
        async with leader.observe(buffer=2) as events:
            for _ in range(3):  # each round trip: TransferStarted, role, leader, finished
                target = next(i for i in c.ids if i != leader.id)
                await leader.transfer_leadership(target)
                leader = c.nodes[target]
                await leader.wait_leader()
                back = next(i for i in c.ids if i != leader.id)
                await leader.transfer_leadership(back)
                leader = c.nodes[back]
            assert events.pending() == 2
            assert events.dropped > 0
            dropped = events.dropped
            last = buffered(events)
        # The newest events are kept: the last one is the end of the last transfer
        # this node ran, or its last role/leader change.
        assert isinstance(last[-1], (TransferFinished, LeaderChange, RoleChange))
        assert sum(n.metrics().counters.observer_events_dropped for n in c.nodes.values()) \
            == dropped


async def test_iteration_ends_when_the_node_stops(autojump_clock: trio.testing.MockClock
                                                  ) -> None:
    async with cluster() as c:
        leader = await c.leader()
        ended = trio.Event()

        async def consume() -> None:
            async with leader.observe() as events:
                async for _ in events:
                    pass
            ended.set()

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                await trio.sleep(0.01)
                assert not ended.is_set()
                c.stop(leader.id)
        assert ended.is_set()


async def test_snapshot_taken_and_installed_are_observed_and_counted(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster(config=SNAPSHOT_CONFIG) as c:
        leader = await c.leader()
        lagging = next(i for i in c.ids if i != leader.id)
        c.stop(lagging)
        c.storages[lagging] = MemoryStorage()
        async with leader.observe() as events:
            for k in range(12):
                await leader.apply(b"%d" % k)
            taken = [e for e in buffered(events) if isinstance(e, SnapshotTaken)]
        assert [e.index for e in taken] == [5, 10]
        node = await c.start(lagging)
        async with node.observe() as events:
            await node.wait_applied(leader.status().commit_index)
            installed = [e for e in buffered(events) if isinstance(e, SnapshotInstalled)]
        assert len(installed) == 1 and installed[0].index == 10
        assert node.metrics().counters.snapshots_installed == 1
        assert leader.metrics().counters.snapshots_sent == 1
        assert leader.metrics().counters.snapshots_taken == 2



async def test_a_membership_change_is_observed_appended_then_committed(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster(membership=True) as c:
        leader = await c.leader()
        async with leader.observe() as events:
            index = await leader.add_member(4, addr(4))
            await trio.sleep(0.1)
            changes = [e for e in buffered(events) if isinstance(e, ConfigurationChange)]
        assert [(e.index, e.committed) for e in changes] == [(index, False), (index, True)]
        assert 4 in {m.id for m in changes[-1].configuration.members}


class HealthTransport(FakeTransport):
    """A fake transport with the TCP transport's peer health tracker."""

    def __init__(self, network: FakeNetwork, node_id: int) -> None:
        super().__init__(network, node_id)
        self.peer_health = PeerHealth(node_id)


async def test_peer_reachability_from_the_transport_is_observed_and_in_metrics(
        autojump_clock: trio.testing.MockClock) -> None:
    network = FakeNetwork()
    transport = HealthTransport(network, 1)
    async with open_node(1, {2: "10.0.0.2:7000", 3: "10.0.0.3:7000"},
                         state_machine=Recorder(), transport=transport) as node:
        assert [p.reachable for p in node.metrics().peers] == [None, None]
        async with node.observe() as events:
            transport.peer_health.failed(2, "10.0.0.2:7000", "connection refused")
            transport.peer_health.failed(2, "10.0.0.2:7000", "connection refused")
            transport.peer_health.connected(3, "10.0.0.3:7000")
            assert [p.reachable for p in node.metrics().peers] == [False, True]
            transport.peer_health.connected(2, "10.0.0.2:7000")
            seen = [e for e in buffered(events) if isinstance(e, (PeerReachable,
                                                                  PeerUnreachable))]
    assert [(type(e), e.peer) for e in seen] == [
        (PeerUnreachable, 2), (PeerReachable, 3), (PeerReachable, 2)]
    assert isinstance(seen[0], PeerUnreachable) and seen[0].reason == "connection refused"


def test_the_observability_page_example_runs_and_prints_what_it_says(
        capsys: pytest.CaptureFixture[str]) -> None:
    page = (Path(__file__).parent.parent / "docs" / "observability.md").read_text()
    code = page.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "docs/observability.md", "exec"), {"__name__": "__doc_example__"})
    assert capsys.readouterr().out.splitlines() == [
        "leader 2 5 3 3", "RoleChange 2", "RoleChange 2", "LeaderChange 2"]
