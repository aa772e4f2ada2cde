"""Log replication, commit and apply (Raft §3.5, §3.6)."""

from __future__ import annotations

import pytest
from helpers import drain, entries, make_node

from raftpy import (
    AppendEntries,
    AppendEntriesResponse,
    Config,
    Entry,
    EntryKind,
    RequestVoteResponse,
    Role,
)
from raftpy.node import RaftNode
from raftpy.progress import ProgressState
from raftpy.sim import Cluster, NetworkConfig


def commands(cluster: Cluster, node_id: int) -> list[bytes]:
    return [e.data for e in cluster.applied[node_id] if e.kind is EntryKind.COMMAND]


def test_commands_commit_and_apply_in_order_exactly_once_everywhere() -> None:
    cluster = Cluster(n=5, seed=1)
    cluster.wait_for_leader()
    proposals = [cluster.propose(b"c%d" % i) for i in range(50)]
    assert cluster.run_until(lambda: all(p.committed for p in proposals), 1.0)
    cluster.run_for(0.2)  # followers learn the commit index from the next heartbeat
    expected = [b"c%d" % i for i in range(50)]
    for node_id in cluster.ids:
        assert commands(cluster, node_id) == expected
        applied = [e.index for e in cluster.applied[node_id]]
        assert applied == list(range(1, len(applied) + 1))


def test_replication_survives_drops_duplicates_and_reordering() -> None:
    net = NetworkConfig(drop=0.2, duplicate=0.2, reorder=0.3, reorder_delay=0.03)
    cluster = Cluster(n=3, seed=9, network=net)
    cluster.wait_for_leader(5.0)
    proposals = []
    for i in range(30):
        leader = cluster.leader()
        if leader is not None:
            proposals.append(cluster.propose(b"c%d" % i))
        cluster.run_for(0.01)
    assert cluster.run_until(lambda: all(p.done for p in proposals), 10.0)
    committed = [p.data for p in proposals if p.committed]
    assert len(committed) >= 25
    cluster.set_network(NetworkConfig())
    cluster.run_for(1.0)
    for node_id in cluster.ids:
        assert [c for c in commands(cluster, node_id) if c in committed] == committed
    assert cluster.fault_counts["drop"] > 0 and cluster.fault_counts["duplicate"] > 0


def test_divergent_follower_log_is_repaired() -> None:
    cluster = Cluster(n=3, seed=4)
    old = cluster.wait_for_leader()
    cluster.isolate(old)
    # The isolated leader accepts 40 entries it can never commit.
    lost = [cluster.propose(b"lost%d" % i, node_id=old) for i in range(40)]
    assert cluster.run_until(lambda: cluster.leader() not in (None, old), 2.0)
    kept = [cluster.propose(b"kept%d" % i) for i in range(5)]
    assert cluster.run_until(lambda: all(p.committed for p in kept), 1.0)
    cluster.heal()
    cluster.run_for(1.0)
    assert not any(p.committed for p in lost)
    # Those whose index was reused by the new leader are known to have failed.
    top = cluster.node(old).commit_index
    assert all(p.failed for p in lost if p.index <= top)
    logs = {i: [(e.index, e.term, e.data) for e in cluster.node(i).log.entries()]
            for i in cluster.ids}
    assert logs[1] == logs[2] == logs[3]
    assert [e[2] for e in logs[old][-5:]] == [b"kept%d" % i for i in range(5)]


def test_lagging_follower_is_caught_up_with_one_rejection() -> None:
    cluster = Cluster(n=5, seed=4, record_trace=True)
    leader = cluster.wait_for_leader()
    lagging = next(i for i in cluster.ids if i != leader)
    cluster.crash(lagging)
    proposals = [cluster.propose(b"c%d" % i) for i in range(40)]
    assert cluster.run_until(lambda: all(p.committed for p in proposals), 1.0)
    cluster.crash(leader)  # the new leader knows nothing of the lagging follower
    assert cluster.run_until(lambda: cluster.leader() not in (None, leader), 2.0)
    cluster.restart(lagging)
    new = cluster.leader()
    assert new is not None
    assert cluster.run_until(
        lambda: cluster.node(new).progress[lagging].match_index
        == cluster.node(new).log.last_index, 1.0)
    # Fast back-off: the rejection says where the follower's log ends, and the
    # leader jumps there at once instead of stepping back 40 times.
    rejects = [line for line in cluster.trace if f"] {lagging} reject append" in line]
    assert len(rejects) == 1


def test_leader_skips_a_whole_conflicting_term_on_rejection() -> None:
    node = make_node(1, term=3, entries=entries(1, 1, 1, 1, 1, 3),
                     config=Config(pre_vote=False))
    node.tick(1.0)
    drain(node, 1.0)
    node.step(RequestVoteResponse(term=4, src=2, dst=1, vote_granted=True), 1.001)
    drain(node, 1.001)
    # Elected, it streams from its log's end at once (the no-op went out after 6).
    assert node.role is Role.LEADER and node.progress[3].next_index == 8
    node.step(AppendEntriesResponse(term=4, src=3, dst=1, success=False, reject_index=6,
                                    conflict_index=4, conflict_term=2), 1.002)
    sent, _ = drain(node, 1.002)
    # The leader has no entry of term 2: it resumes where the follower's term 2 began.
    probe = [m for m in sent if isinstance(m, AppendEntries) and m.dst == 3]
    assert [m.prev_log_index for m in probe] == [3]


def _elected(last_terms: tuple[int, ...]) -> tuple[RaftNode, list[AppendEntries]]:
    """Node 1 of three, restarted with entries of ``last_terms``, elected in term 4;
    with the AppendEntries it sent on winning."""
    node = make_node(1, term=3, entries=entries(*last_terms), config=Config(pre_vote=False))
    node.tick(1.0)
    drain(node, 1.0)
    node.step(RequestVoteResponse(term=4, src=2, dst=1, vote_granted=True), 1.001)
    sent, _ = drain(node, 1.001)
    assert node.role is Role.LEADER
    return node, [m for m in sent if isinstance(m, AppendEntries)]


def test_a_new_leader_streams_writes_without_waiting_for_a_first_answer() -> None:
    # Followers usually hold the whole log (always after a transfer): the first
    # writes of a term go out behind the no-op at once, not one round trip later.
    node, on_winning = _elected((1, 1, 3))
    assert sorted((m.dst, m.prev_log_index) for m in on_winning) == [(2, 3), (3, 3)]
    node.propose(b"w", 1.002)
    sent, _ = drain(node, 1.002)
    writes = [m for m in sent if isinstance(m, AppendEntries)]
    assert sorted((m.dst, m.prev_log_index, [e.data for e in m.entries]) for m in writes) \
        == [(2, 4, [b"w"]), (3, 4, [b"w"])]
    # Nothing counts as replicated before a follower says so.
    assert node.commit_index == 0 and all(pr.match_index == 0 for pr in node.progress.values())
    node.step(AppendEntriesResponse(term=4, src=2, dst=1, success=True, match_index=5), 1.003)
    drain(node, 1.003)
    assert node.commit_index == 5


def test_a_follower_silent_after_an_election_is_probed_from_the_log_end() -> None:
    # The optimistic start is dropped after a heartbeat interval without an answer,
    # and probing resumes where the leader's log ended when it won, not at index 1.
    node, _ = _elected((1, 1, 3))
    node.step(AppendEntriesResponse(term=4, src=2, dst=1, success=True, match_index=4), 1.002)
    drain(node, 1.002)
    heartbeat = node.config.heartbeat
    node.tick(1.001 + heartbeat)
    sent, _ = drain(node, 1.001 + heartbeat)
    to_3 = [m for m in sent if isinstance(m, AppendEntries) and m.dst == 3]
    assert [(m.prev_log_index, len(m.entries)) for m in to_3] == [(3, 1)]
    assert node.progress[3].state is ProgressState.PROBE


def test_leader_does_not_commit_entries_of_earlier_terms_by_counting() -> None:
    # Figure 3.7 (Figure 8 in the paper): node 1 is leader in term 4 with an
    # entry of term 2 at index 2 that a majority holds; it must not commit it by
    # counting replicas, only together with an entry of its own term.
    node = make_node(1, term=3, voted_for=None, entries=entries(1, 2),
                     config=Config(pre_vote=False))
    node.tick(1.0)
    drain(node, 1.0)
    node.step(RequestVoteResponse(term=4, src=2, dst=1, vote_granted=True), 1.001)
    _sent, _ = drain(node, 1.001)
    assert node.role is Role.LEADER and node.log.last_index == 3  # the no-op of term 4
    # Follower 2 acknowledges only up to the old entry.
    node.step(AppendEntriesResponse(term=4, src=2, dst=1, success=True, match_index=2), 1.002)
    drain(node, 1.002)
    assert node.commit_index == 0
    node.step(AppendEntriesResponse(term=4, src=2, dst=1, success=True, match_index=3), 1.003)
    drain(node, 1.003)
    assert node.commit_index == 3


def test_heartbeat_does_not_commit_a_followers_stale_suffix() -> None:
    # The follower holds (1,1),(2,1),(3,2)... but only index 1 is known to match.
    node = make_node(2, term=3, entries=entries(1, 1, 2))
    node.step(AppendEntries(term=3, src=1, dst=2, prev_log_index=1, prev_log_term=1,
                            entries=(), leader_commit=5), now=1.0)
    drain(node, 1.0)
    assert node.commit_index == 1  # min(leader_commit, index of last new entry)


def test_follower_acknowledges_only_after_persisting() -> None:
    node = make_node(2, term=1)
    node.step(AppendEntries(term=1, src=1, dst=2, prev_log_index=0, prev_log_term=0,
                            entries=(Entry(1, 1, b"a"), Entry(2, 1, b"b")),
                            leader_commit=0), now=1.0)
    ready = node.ready()
    assert [e.index for e in ready.entries] == [1, 2]
    assert ready.messages == []
    assert ready.messages_after_persist == [
        AppendEntriesResponse(term=1, src=2, dst=1, success=True, match_index=2)]


def test_follower_truncates_conflicting_uncommitted_suffix() -> None:
    node = make_node(2, term=3, entries=entries(1, 2, 2))
    node.step(AppendEntries(term=3, src=1, dst=2, prev_log_index=1, prev_log_term=1,
                            entries=(Entry(2, 3, b"x"),), leader_commit=1), now=1.0)
    _, readies = drain(node, 1.0)
    assert [(e.index, e.term) for e in node.log.entries()] == [(1, 1), (2, 3)]
    assert [(e.index, e.term) for e in readies[0].entries] == [(2, 3)]


def test_rejection_tells_the_leader_where_the_conflicting_term_starts() -> None:
    node = make_node(2, term=3, entries=entries(1, 2, 2, 2))
    node.step(AppendEntries(term=3, src=1, dst=2, prev_log_index=4, prev_log_term=3,
                            entries=(), leader_commit=0), now=1.0)
    sent, _ = drain(node, 1.0)
    assert sent == [AppendEntriesResponse(term=3, src=2, dst=1, success=False, reject_index=4,
                                          conflict_index=2, conflict_term=2)]


@pytest.mark.parametrize("n", [1, 2, 4])
def test_clusters_of_other_sizes_commit(n: int) -> None:
    cluster = Cluster(n=n, seed=3)
    cluster.wait_for_leader()
    proposal = cluster.propose(b"x")
    assert cluster.run_until(lambda: proposal.committed, 1.0)


def test_restart_keeps_exactly_what_was_persisted() -> None:
    cluster = Cluster(n=3, seed=6)
    leader = cluster.wait_for_leader()
    proposals = [cluster.propose(b"c%d" % i) for i in range(10)]
    assert cluster.run_until(lambda: all(p.committed for p in proposals), 1.0)
    follower = next(i for i in cluster.ids if i != leader)
    cluster.run_for(0.1)
    before = cluster.node(follower)
    term, vote, log = before.current_term, before.voted_for, before.log.entries()
    cluster.crash(follower)
    cluster.restart(follower)
    after = cluster.node(follower)
    assert (after.current_term, after.voted_for, after.log.entries()) == (term, vote, log)
    cluster.run_for(0.5)
    assert commands(cluster, follower) == [b"c%d" % i for i in range(10)]
