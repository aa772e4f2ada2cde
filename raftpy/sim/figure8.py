"""A randomised Figure 8 (Raft paper Figure 8, dissertation Figure 3.7).

A leader gets an entry of its term onto one follower only and crashes; a node
lacking it is elected in a higher term, appends its own entry and crashes before
replicating it; the first entry's holders elect one of themselves again, which
replicates the old-term entry to a majority (but not its own no-op) and crashes;
then the node with the newer entry is elected and overwrites the old one. A core
that commits an older-term entry by counting replicas (Raft §3.6.2 forbids it)
commits it in the third step, and the last step loses it: the invariant checker
sees a leader without a committed entry, or two different entries applied at
one index.

Which nodes play which part, how many entries come first and how long each
stage waits are drawn from the seed; elections run on the nodes' own timers.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from raftpy.errors import LeadershipTransferInProgress, NotLeader
from raftpy.messages import AppendEntries, Message, RequestVote
from raftpy.ready import Role
from raftpy.sim.cluster import Cluster
from raftpy.sim.scripted import STAGE_TIMEOUT, Abandoned, play, wait


def run_figure8(cluster: Cluster, rng: random.Random) -> bool:
    """Play the scenario on a five-voter cluster; True if every stage happened.

    Whatever happens, the cluster is left healed, released and fully restarted.
    """
    if len(cluster.voters) != 5:
        raise ValueError("the Figure 8 scenario needs exactly five voters")
    return play(cluster, "figure8", lambda: _play(cluster, rng))


def _leader_among(cluster: Cluster, group: Iterable[int], above_term: int) -> int | None:
    for node_id in group:
        if cluster.is_up(node_id):
            node = cluster.node(node_id)
            if node.role is Role.LEADER and node.current_term > above_term:
                return node_id
    return None


def _has(cluster: Cluster, node_id: int, index: int, term: int, *, durable: bool) -> bool:
    node = cluster.node(node_id)
    if durable and node.log.persisted_index < index:
        return False
    return node.log.term_at(index) == term


def _silence(cluster: Cluster, crashed: int) -> None:
    """Lose what a crashed node still has in flight or held, and end the hold rules."""
    for node_id in cluster.ids:
        if node_id != crashed:
            cluster.cut(crashed, node_id)
    cluster.release(lambda m: False)
    cluster.drop_held()


def _play(cluster: Cluster, rng: random.Random) -> None:
    voters = list(cluster.voters)
    # (a) A leader with a few committed entries first.
    wait(cluster, lambda: cluster.leader() is not None, "first leader")
    for k in range(rng.choice([0, 1, 3])):
        try:
            cluster.propose(b"f8-base-%d" % k)
        except (NotLeader, LeadershipTransferInProgress) as exc:
            raise Abandoned("base proposal") from exc
    cluster.run_for(rng.uniform(0.0, 0.05))

    def in_step() -> bool:
        # Every node holds the leader's whole log, durably, and knows it committed.
        leader = cluster.leader()
        if leader is None:
            return False
        log = cluster.node(leader).log
        return all(n.log.persisted_index == log.last_index == n.commit_index
                   and n.log.last_term == log.last_term for n in cluster.live_nodes())

    wait(cluster, in_step, "logs in step")
    first = cluster.leader()
    assert first is not None
    holder = rng.choice([v for v in voters if v != first])
    others = [v for v in voters if v not in (first, holder)]
    # The entry reaches `holder` only; the others' leaders (later) replicate nothing.
    for other in others:
        cluster.cut(first, other)
    cluster.hold(lambda m: isinstance(m, AppendEntries) and m.src in others
                 and bool(m.entries))
    try:
        old = cluster.propose(b"f8-old", first)
    except (NotLeader, LeadershipTransferInProgress) as exc:
        raise Abandoned("old entry") from exc
    wait(cluster, lambda: _has(cluster, first, old.index, old.term, durable=True)
          and _has(cluster, holder, old.index, old.term, durable=True), "old entry on two")
    cluster.crash(first)
    # (b) A node lacking the entry wins a higher term with the others' votes, and
    # crashes with its own entry at that index, durable but on no other node.
    for node_id in voters:
        if node_id != holder:
            cluster.cut_both(holder, node_id)
    wait(cluster, lambda: _leader_among(cluster, others, old.term) is not None,
          "second leader")
    second = _leader_among(cluster, others, old.term)
    assert second is not None
    new_term = cluster.node(second).current_term
    if not cluster.run_until(
            lambda: cluster.is_up(second)
            and cluster.node(second).log.persisted_index >= old.index
            and cluster.node(second).log.term_at(old.index) == new_term, STAGE_TIMEOUT):
        raise Abandoned("second leader's entry")
    cluster.run_for(rng.uniform(0.0, 0.005))
    if not (cluster.is_up(second) and cluster.node(second).log.persisted_index
            >= old.index and cluster.node(second).log.term_at(old.index) == new_term):
        raise Abandoned("second leader stepped down")
    cluster.crash(second)
    _silence(cluster, second)
    # (c) The old entry's holders elect one of themselves in a still higher term; it
    # brings the old entry to a majority but holds back its own no-op.
    for node_id in voters:
        if node_id not in (holder, second):
            cluster.restore_both(holder, node_id)
        if node_id != first:
            cluster.restore(first, node_id)
    cluster.restore(holder, second)
    cluster.restart(first)
    holders = (first, holder)
    rest = [v for v in others if v != second]

    def own_entry_past_old(m: Message) -> bool:
        # Only the other holder may get the new leader's no-op. A follower still
        # lacking the old entry rejects it, so it may pass until the old one lands.
        return isinstance(m, AppendEntries) and m.src in holders and m.dst in rest and any(
            e.term > new_term for e in m.entries) and cluster.is_up(m.dst) and _has(
            cluster, m.dst, old.index, old.term, durable=False)

    cluster.hold(own_entry_past_old)
    wait(cluster, lambda: _leader_among(cluster, holders, new_term) is not None,
          "third leader")
    third = _leader_among(cluster, holders, new_term)
    assert third is not None

    def on_majority() -> bool:
        # The old entry is on a majority (counted as the leader counts), its no-op not.
        node = cluster.node(third) if cluster.is_up(third) else None
        return node is not None and node.role is Role.LEADER and _has(
            cluster, third, old.index, old.term, durable=True) and 1 + sum(
            node.progress[v].match_index >= old.index for v in voters if v != third
        ) >= node.quorum

    wait(cluster, on_majority, "old entry on a majority")
    cluster.run_for(rng.uniform(0.0, 0.003))
    cluster.crash(third)
    _silence(cluster, third)
    # (d) The node with the newer entry comes back and is elected: the others' vote
    # requests are held so that it is the one to win. It overwrites the old entry.
    for node_id in voters:
        if node_id != second:
            cluster.restore(second, node_id)
    cluster.restart(second)

    def not_second(m: Message) -> bool:
        return isinstance(m, RequestVote) and m.src != second

    cluster.hold(not_second)
    wait(cluster, lambda: cluster.leader() == second, "fourth leader")

    def settled() -> bool:
        node = cluster.node(second)
        return node.role is Role.LEADER and node.log.term_at(node.commit_index) == \
            node.current_term

    wait(cluster, settled, "fourth leader commits")
