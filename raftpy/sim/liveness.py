"""Liveness while faults go on: a stable majority must get a committing leader.

Raft promises progress only while a majority of voters can talk to each other.
:class:`LivenessMonitor` watches a simulated cluster for *windows* in which that
holds and the network stays put, and asks that a leader inside the majority
commit an entry of its own term within a bound.
"""

from __future__ import annotations

from itertools import combinations

from raftpy.node import RaftNode
from raftpy.ready import Role
from raftpy.sim.cluster import Cluster


class LivenessFailure(AssertionError):
    """The cluster did not make progress within its bound although it could."""


class LivenessMonitor:
    """Watches for stable majorities and times how long each one waits for a leader.

    A *stable majority* is a set ``S`` of up, unpaused voters, at least a quorum,
    with every link inside ``S`` open both ways, no active hold rule, and no
    topology change (partition, cut, heal, crash, restart, pause, resume, clock
    jump, hold, release) since the window opened. Without check-quorum, no voter
    outside ``S`` may reach into it either: a deposed leader that never steps down
    keeps its followers sticky, as Raft without check-quorum allows.

    The window is satisfied once a node of ``S`` leads and has committed an entry
    of its current term. :meth:`poll` raises :class:`LivenessFailure` when a window
    stays unsatisfied longer than ``bound`` seconds, counted from the window's
    start or from the last time a leader in ``S`` brought the index a majority
    holds further than before (catching up a far-behind follower legitimately
    takes a round trip per batch). It never stops a run itself, so
    ``cluster.run_until(monitor.poll, dt)`` runs the full ``dt``.
    """

    def __init__(self, cluster: Cluster, bound: float, *, enabled: bool = True,
                 stars: bool | None = None) -> None:
        self.cluster = cluster
        self.bound = bound
        self.enabled = enabled
        self.stars = cluster.config.pre_vote if stars is None else stars
        """Also watch stars (see :func:`stable_majorities`); by default with pre-vote."""
        self.windows = 0
        """Windows that ended satisfied."""
        self.worst = 0.0
        """The longest time from a window's start to its committing leader."""
        self.worst_at = 0.0
        """When that window started."""
        self._seen = -1
        self._members: frozenset[int] = frozenset()
        self._since = 0.0
        self._progress_at = 0.0
        self._best = 0
        self._open = False

    @property
    def open(self) -> bool:
        """Whether a window is open and still waiting for its leader."""
        return self._open

    def poll(self) -> bool:
        """Check the current window after an event; always False (never stops a run)."""
        cluster = self.cluster
        if cluster.topology_changes != self._seen:
            self._seen = cluster.topology_changes
            self._reopen()
        if not self._open:
            return False
        for node_id in self._members:
            node = cluster.node(node_id)
            if node.role is Role.LEADER:
                if node.log.term_at(node.commit_index) == node.current_term:
                    self._satisfied()
                    return False
                self._note_catch_up(node)
        if cluster.now - self._progress_at > self.bound:
            raise LivenessFailure(
                f"voters {sorted(self._members)} were connected and stable from "
                f"t={self._since:.6f}s but no leader among them committed an entry of its "
                f"term (no replication progress for {self.bound:.3f}s; now "
                f"t={cluster.now:.6f}s, seed {cluster.seed}, event {cluster.events})")
        return False

    def _note_catch_up(self, leader: RaftNode) -> None:
        # Bringing lagging followers up to date takes as long as their lag (one
        # round trip per batch): the bound runs from the last step forward. Only new
        # ground counts, so leaders that keep replacing each other cannot extend it.
        held = sorted([leader.log.persisted_index,
                       *(pr.match_index for v, pr in leader.progress.items()
                         if v in leader.voters)], reverse=True)[leader.quorum - 1]
        if held > self._best:
            self._best = held
            self._progress_at = self.cluster.now

    def settle(self) -> None:
        """Run on, adding no faults, until the open window (if any) gets its leader;
        raises :class:`LivenessFailure` once it is past its bound."""
        self.poll()
        while self._open:
            self.cluster.run_until(lambda: self.poll() or not self._open, self.bound)

    def stop(self) -> None:
        """Stop watching (faults are about to stop for good)."""
        self.enabled = False
        self._open = False

    def _satisfied(self) -> None:
        waited = self.cluster.now - self._since
        self.windows += 1
        if waited > self.worst:
            self.worst = waited
            self.worst_at = self._since
        self._open = False

    def _reopen(self) -> None:
        cluster = self.cluster
        self._open = False
        if not self.enabled or cluster.holding:
            return
        # The voters change with membership: the quorum is the current one.
        members = stable_majorities(cluster, len(cluster.voters) // 2 + 1, stars=self.stars)
        # Mid-change, a member may already use a newer configuration (in force on
        # append): a set must then hold a majority of that one's voters too, or Raft
        # rightly cannot elect anyone there (fuzz seed 1852 with --membership).
        committed = set(cluster.voters) | set(cluster.learners)
        in_force = {frozenset(n.voters) for n in cluster.live_nodes() if n.id in committed}
        members = [m for m in members
                   if all(len(m & vs) >= len(vs) // 2 + 1 for vs in in_force if vs)]
        if not members:
            return
        self._members = frozenset().union(*members)
        self._since = self._progress_at = cluster.topology_changed_at
        self._best = 0
        self._open = True


def stable_majorities(cluster: Cluster, quorum: int, *,
                      stars: bool = False) -> list[frozenset[int]]:
    """The largest sets of up, unpaused voters (each at least ``quorum``) whose links
    are all open both ways; without check-quorum, also closed to the other voters.

    With ``stars``, a voter with links open both ways to enough others to make a
    quorum, each with a log no more up to date than the hub's, forms a set with
    them even if they cannot all reach each other: with pre-vote and leader
    stickiness that hub can always be elected and then keep the others from
    campaigning, so Raft must make progress there too. (A hub whose log is behind
    a neighbour's cannot win that neighbour's vote: seed 2780 had the only node
    that could win cut off from the third voter it needed.)"""
    running = [v for v in cluster.voters if cluster.is_up(v) and not cluster.is_paused(v)]

    def both(a: int, b: int) -> bool:
        return cluster.link_open(a, b) and cluster.link_open(b, a)

    found: list[frozenset[int]] = []
    for size in range(len(running), quorum - 1, -1):
        for group in combinations(running, size):
            if any(set(group) <= s for s in found):
                continue
            if all(both(a, b) for a, b in combinations(group, 2)):
                found.append(frozenset(group))
    if stars:
        def log_position(node_id: int) -> tuple[int, int]:
            log = cluster.node(node_id).log
            return log.last_term, log.last_index

        for hub in running:
            mine = log_position(hub)
            star = frozenset([hub, *(v for v in running if v != hub and both(hub, v)
                                     and log_position(v) <= mine)])
            if len(star) >= quorum and not any(star <= s for s in found):
                found.append(star)
    if not cluster.config.check_quorum:
        outside = [v for v in cluster.voters if cluster.is_up(v)]
        found = [s for s in found
                 if not any(cluster.link_open(o, m) for o in outside if o not in s for m in s)]
    return found
