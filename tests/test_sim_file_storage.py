"""The simulator over FileStorage: nodes crash and restart from their data directories.

``Cluster(storage_factory=...)`` opens each node's storage at start and again at every
restart, so a restarted node is rebuilt from what is on disk, not from an object that
survived in memory. ``sync=False``: a simulated crash is a process crash, which keeps
the page cache; the simulator itself only hands a batch to the storage once its
virtual fsync has completed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from raftpy.config import Config
from raftpy.sim import Cluster
from raftpy.storage.file import FileStorage


@pytest.fixture
def file_cluster(tmp_path: Path) -> Iterator[Cluster]:
    def open_storage(node_id: int) -> FileStorage:
        return FileStorage(tmp_path / f"node{node_id}", node_id=node_id, cluster_id="sim",
                           sync=False)

    config = Config(snapshot_trailing=5)
    cluster = Cluster(n=3, seed=11, config=config, snapshot_every=20,
                      storage_factory=open_storage)
    yield cluster
    cluster.close()


def _commit(cluster: Cluster, count: int, tag: bytes) -> list[int]:
    proposals = [cluster.propose(tag + b"%d" % k) for k in range(count)]
    assert cluster.run_until(lambda: all(p.committed for p in proposals), timeout=5.0)
    last = proposals[-1].index
    # Followers learn the commit index with the next AppendEntries, then apply (the
    # core hands entries out for applying before the batch's fsync completes: let it).
    assert cluster.run_until(
        lambda: all(n.applied_index >= last for n in cluster.live_nodes()), timeout=5.0)
    cluster.run_for(0.01)
    return [p.index for p in proposals]


def test_nodes_restart_from_their_directories_with_acknowledged_state(
        file_cluster: Cluster) -> None:
    cluster = file_cluster
    leader = cluster.wait_for_leader()
    _commit(cluster, 30, b"a")
    follower = next(i for i in cluster.ids if i != leader)
    before = cluster.node(follower)
    term, voted_for = before.current_term, before.voted_for
    persisted = before.log.persisted_index

    cluster.crash(follower)
    cluster.restart(follower)
    reborn = cluster.node(follower)
    assert reborn is not before
    # Rebuilt from disk: the hard state and every entry it had acknowledged.
    assert (reborn.current_term, reborn.voted_for) == (term, voted_for)
    assert reborn.log.last_index == persisted
    assert cluster.snapshots[follower] is not None  # it had compacted behind a snapshot

    # The leader crashes too; the survivors elect a new one and keep committing.
    cluster.crash(leader)
    new_leader = cluster.wait_for_leader()
    assert new_leader != leader
    later = _commit(cluster, 10, b"b")
    cluster.restart(leader)
    assert cluster.run_until(
        lambda: all(cluster.node(i).applied_index >= later[-1] for i in cluster.ids), 5.0)
    cluster.run_for(0.01)
    # Every node applied the same commands in the same order (the invariant checker
    # ran after every event as well).
    applied = [[e.data for e in cluster.applied[i] if e.index <= later[-1]] for i in cluster.ids]
    assert applied[0] == applied[1] == applied[2]
    assert sum(e.data.startswith(b"a") for e in cluster.applied[leader]) == 30


def test_a_follower_behind_the_compaction_point_is_caught_up_from_disk(
        file_cluster: Cluster) -> None:
    cluster = file_cluster
    leader = cluster.wait_for_leader()
    lagging = next(i for i in cluster.ids if i != leader)
    cluster.crash(lagging)
    indexes = _commit(cluster, 60, b"c")
    snapshot = cluster.snapshots[leader]
    assert snapshot is not None and snapshot[0].index > 20
    # The leader's log no longer holds what the lagging node needs next.
    assert cluster.node(leader).log.snapshot_index > 1

    cluster.restart(lagging)
    assert cluster.run_until(
        lambda: cluster.node(lagging).applied_index >= indexes[-1], timeout=5.0)
    cluster.run_for(0.01)  # the installed snapshot's fsync
    assert cluster.fault_counts["install_snapshot"] >= 1
    # What it installed is on its disk: a second restart starts from that snapshot.
    installed = cluster.snapshots[lagging]
    assert installed is not None and installed[0].index >= snapshot[0].index
    cluster.crash(lagging)
    cluster.restart(lagging)
    again = cluster.snapshots[lagging]
    assert again is not None and again[0] == installed[0]
    assert cluster.node(lagging).log.snapshot_index >= installed[0].index
