"""A randomised stale suffix: a follower keeps entries no later leader ever had, and
hears a heartbeat that matches only below them.

(a) A leader of term T commits the entries up to index E, the snapshot interval, on
every node but one follower, F. F gets entry E and, right behind it, K more entries
that reach nobody else; F never learns that E committed, so it takes no snapshot.
The leader's disk is slow for those K entries, and it crashes before they are
durable: they survive on F alone. Every other node snapshots at E, keeping nothing
behind the snapshot (``snapshot_trailing=0``).

(b) With F cut off, the others elect a leader L of a higher term, which commits its
no-op at E + 1, and then transfer leadership to M, whose snapshot ends at E.

(c) F comes back. M's probe meets F's stale term T, which M's log no longer holds, so
M backs off below E and sends its snapshot at E. F installs it and keeps the entries
after it, because the logs agree at E (Raft paper Figure 13, InstallSnapshot
receiver rule 6).
M's next AppendEntries to F are held, so its next heartbeat matches at E, carries a
commit index past E and covers none of F's stale entries.

A follower that sets its commit index to min(leader_commit, last index) instead of
min(leader_commit, index of last new entry) (Raft Figure 3.1) applies the stale
entries: the invariant checker sees an entry applied that differs from the one
committed at that index.

Which nodes play F and M, the cluster size (three or five), the snapshot interval,
K and the slow disk's delay are drawn from the seed; elections run on the nodes'
own timers.
"""

from __future__ import annotations

import random
from dataclasses import replace

from raftpy.errors import InvalidTransferTarget, LeadershipTransferInProgress, NotLeader
from raftpy.messages import AppendEntries, Message, RequestVote
from raftpy.sim.cluster import Cluster
from raftpy.sim.scripted import Abandoned, play, wait


def run_stale_suffix(cluster: Cluster, rng: random.Random) -> bool:
    """Play the scenario on a fresh cluster; True if every stage happened.

    The cluster needs three or five voters, no learners, snapshots every
    ``snapshot_every >= 3`` applied entries with ``snapshot_trailing=0`` and a
    replication window of at least two entries. Whatever happens, the cluster is
    left healed, released and fully restarted.
    """
    every = cluster.snapshot_every
    config = cluster.config
    if (len(cluster.voters) not in (3, 5) or cluster.learners or every is None
            or every < 3 or config.snapshot_trailing != 0
            or config.max_inflight_entries < 2):
        raise ValueError("the stale suffix scenario needs three or five voters, no learners, "
                         "snapshot_every >= 3, snapshot_trailing=0 and "
                         "max_inflight_entries >= 2")
    return play(cluster, "stale_suffix", lambda: _play(cluster, rng, every))


def _snapshot_at(cluster: Cluster, node_id: int) -> int | None:
    """The index of ``node_id``'s durable snapshot if its log starts right after it."""
    latest = cluster.snapshots[node_id]
    if latest is None or not cluster.is_up(node_id):
        return None
    index = latest[0].index
    return index if cluster.node(node_id).log.snapshot_index == index else None


def _unhold(cluster: Cluster) -> None:
    """End every hold rule and lose what they held."""
    cluster.release(lambda m: False)
    cluster.drop_held()


def _play(cluster: Cluster, rng: random.Random, every: int) -> None:
    voters = list(cluster.voters)
    last_common = every  # nodes applying it one batch at a time snapshot exactly there
    # (a) A leader with every node in step just below the snapshot interval.
    wait(cluster, lambda: cluster.leader() is not None, "first leader")
    first = cluster.leader()
    assert first is not None
    base = last_common - 1 - cluster.node(first).log.last_index
    if base < 0:
        raise Abandoned("the first elections already reached the snapshot interval")
    for k in range(base):
        try:
            cluster.propose(b"stale-base-%d" % k, first)
        except (NotLeader, LeadershipTransferInProgress) as exc:
            raise Abandoned("base proposal") from exc

    def in_step() -> bool:
        leader = cluster.leader()
        if leader is None:
            return False
        log = cluster.node(leader).log
        return log.last_index == last_common - 1 and all(
            n.log.persisted_index == log.last_index == n.commit_index
            and n.log.last_term == log.last_term for n in cluster.live_nodes())

    wait(cluster, in_step, "logs in step")
    if any(snap is not None for snap in cluster.snapshots.values()):
        raise Abandoned("a snapshot before the interval")
    old = cluster.leader()
    assert old is not None
    term = cluster.node(old).current_term
    follower = rng.choice([v for v in voters if v != old])
    rest = [v for v in voters if v not in (old, follower)]
    successor = rng.choice(rest)
    stale_count = rng.randint(1, min(3, cluster.config.max_inflight_entries - 1))

    def strand(m: Message) -> bool:
        # The others get entry E but nothing after it; the follower gets everything,
        # but no message telling it that E committed.
        if not isinstance(m, AppendEntries) or m.src != old:
            return False
        if m.dst == follower:
            return m.leader_commit >= last_common
        return any(e.index > last_common for e in m.entries)

    cluster.hold(strand)
    net = cluster.network
    try:
        # These AppendEntries arrive in order: a gap would be filled only by messages
        # that say E committed.
        cluster.set_network(replace(net, reorder=0.0))
        common = cluster.propose(b"stale-common", old)
        # The old leader's disk stalls for the entries after E (its AppendEntries leave
        # before its own fsync): it crashes with them on the follower only.
        slow = rng.uniform(0.25, 0.4)
        cluster.set_network(replace(net, reorder=0.0, disk_min=slow, disk_max=slow))
        for k in range(stale_count):
            cluster.propose(b"stale-%d" % k, old)
    except (NotLeader, LeadershipTransferInProgress) as exc:
        raise Abandoned("stale proposals") from exc
    finally:
        cluster.set_network(net)
    if common.index != last_common:
        raise Abandoned("entry E at an unexpected index")
    stale_last = last_common + stale_count
    fnode = cluster.node(follower)

    def stranded() -> bool:
        return (fnode.log.persisted_index >= stale_last
                and fnode.log.term_at(stale_last) == term
                and fnode.commit_index < last_common
                and all(_snapshot_at(cluster, v) == last_common for v in rest))

    wait(cluster, stranded, "stale entries on the follower only", slow - 0.01)
    if cluster.node(old).log.persisted_index >= last_common + 1:
        raise Abandoned("the old leader made the stale entries durable")
    for node_id in voters:
        if node_id != follower:
            cluster.cut_both(follower, node_id)
    cluster.crash(old)
    _unhold(cluster)
    cluster.restart(old)
    # (b) The others elect a leader (not the successor, whose vote requests are held),
    # which commits its no-op at E + 1 and hands over to the successor. What the old
    # leader sent before it crashed stays held.

    def late_or_successor(m: Message) -> bool:
        if isinstance(m, AppendEntries):
            return m.src == old and m.term == term
        return isinstance(m, RequestVote) and m.src == successor

    cluster.hold(late_or_successor)

    def settled() -> bool:
        leader = cluster.leader()
        if leader is None or leader in (follower, successor):
            return False
        node = cluster.node(leader)
        snode = cluster.node(successor)
        return (node.current_term > term and node.commit_index > last_common
                and node.log.term_at(node.commit_index) == node.current_term
                and snode.log.persisted_index == node.log.last_index
                and snode.log.last_term == node.current_term)

    wait(cluster, settled, "a leader of a new term")
    interim = cluster.leader()
    assert interim is not None
    interim_term = cluster.node(interim).current_term
    _unhold(cluster)
    if _snapshot_at(cluster, successor) != last_common:
        raise Abandoned("the successor's snapshot moved on")
    try:
        cluster.transfer_leadership(successor)
    except (NotLeader, LeadershipTransferInProgress, InvalidTransferTarget) as exc:
        raise Abandoned("transfer to the successor") from exc

    def successor_leads() -> bool:
        return cluster.leader() == successor and cluster.node(
            successor).current_term > interim_term

    wait(cluster, successor_leads, "the successor leads")
    if _snapshot_at(cluster, successor) != last_common:
        raise Abandoned("the successor's snapshot moved on")
    # (c) The follower comes back. It hears the successor only (the interim leader's
    # probes may still be in flight), and once it has installed the snapshot at E,
    # only the successor's heartbeats.
    heard: list[AppendEntries] = []

    def entries_for_follower(m: Message) -> bool:
        if not (isinstance(m, AppendEntries) and m.dst == follower
                and cluster.is_up(follower)):
            return False
        if m.src != successor:
            return True
        log = cluster.node(follower).log
        if log.snapshot_index != last_common:
            return False
        if m.entries:
            return True
        if (m.prev_log_index == last_common and m.leader_commit > last_common
                and log.last_index == stale_last and log.term_at(stale_last) == term):
            heard.append(m)
        return False

    cluster.hold(entries_for_follower)
    for node_id in voters:
        if node_id != follower:
            cluster.restore_both(follower, node_id)
    wait(cluster, lambda: bool(heard), "a heartbeat below the stale entries")
