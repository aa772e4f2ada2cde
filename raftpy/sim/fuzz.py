"""Seeded fault-injection runs, TigerBeetle-style: each seed draws its own faults.

A run has a **safety phase**, where proposals, transfers, crashes, restarts,
partitions, one-way and partial cuts, flapping links, paused processes, clock
jumps, held messages, drops, duplicates and reordering are thrown at the
cluster while the invariant checker watches every event (one seed in eight
first plays a randomised Figure 8, :mod:`raftpy.sim.figure8`, and one in ten a
follower's stale suffix, :mod:`raftpy.sim.stale_suffix`). Throughout it,
a :class:`~raftpy.sim.liveness.LivenessMonitor` asks every stable majority to
get a committing leader within ``WINDOW_TIMEOUTS`` election timeouts. Then
comes a **liveness phase**, where every fault stops and the cluster must elect
a leader, commit, resolve every pending proposal and complete a leadership
transfer to an up-to-date target within bounds. ``python -m raftpy.sim`` runs
many seeds; ``python -m raftpy.sim --seed N`` replays one.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from raftpy.config import Config
from raftpy.errors import (
    ConfigurationChangeInProgress,
    InvalidMembershipChange,
    InvalidTransferTarget,
    LeadershipTransferInProgress,
    NotLeader,
)
from raftpy.membership import MemberRole
from raftpy.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from raftpy.ready import Role
from raftpy.sim.cluster import Cluster, Proposal
from raftpy.sim.figure8 import run_figure8
from raftpy.sim.invariants import InvariantViolation
from raftpy.sim.liveness import LivenessFailure, LivenessMonitor
from raftpy.sim.network import NetworkConfig
from raftpy.sim.stale_suffix import run_stale_suffix
from raftpy.storage.memory import MemoryStorage
from raftpy.transfer import MAX_TRANSFER_TIMEOUTS

__all__ = ["FaultPlan", "LivenessFailure", "SeedReport", "run_seed", "trace_of"]


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """The fault settings one seed draws for itself."""

    nodes: int
    pre_vote: bool
    learners: int
    network: NetworkConfig
    action_rate: float
    """Random actions (proposal, transfer, crash, ...) per virtual second."""
    weights: tuple[tuple[str, float], ...]
    snapshot_every: int | None
    config: Config = field(default_factory=Config)
    """Replication knobs drawn too: tiny batches and windows reach rare interleavings."""
    figure8: bool = False
    """Play the randomised Figure 8 scenario (:mod:`raftpy.sim.figure8`) first."""
    stale_suffix: bool = False
    """Play the randomised stale suffix scenario (:mod:`raftpy.sim.stale_suffix`) first."""

    @classmethod
    def draw(cls, rng: random.Random, *, membership: bool = True) -> FaultPlan:
        """Draw a plan; some seeds are calm, some are hostile."""
        delay_min = rng.uniform(0.0002, 0.002)
        network = NetworkConfig(
            delay_min=delay_min,
            delay_max=delay_min + rng.choice([0.0005, 0.002, 0.010, 0.030]),
            drop=rng.choice([0.0, 0.0, 0.01, 0.05, 0.15, 0.30]),
            duplicate=rng.choice([0.0, 0.01, 0.05, 0.10]),
            reorder=rng.choice([0.0, 0.02, 0.10, 0.30]),
            reorder_delay=rng.choice([0.005, 0.020, 0.080]),
            disk_min=0.0001,
            disk_max=rng.choice([0.0005, 0.002, 0.010]),
        )
        weights: tuple[tuple[str, float], ...] = (
            ("propose", rng.uniform(3, 10)),
            ("transfer", rng.uniform(0.5, 3)),
            ("crash", rng.choice([0.0, 0.3, 1.0, 2.0])),
            ("restart", 2.0),
            ("partition", rng.choice([0.0, 0.3, 1.0])),
            ("heal", 1.0),
            ("hold", rng.choice([0.0, 0.5, 1.5])),
            ("release", 1.0),
        )
        pre_vote = rng.random() < 0.8
        max_entries = rng.choice([1, 2, 5, 1024])
        max_inflight = rng.choice([1, 4, 64, 8192])
        trailing = rng.choice([0, 5, 1000])
        nodes = rng.choice([1, 2, 3, 3, 3, 5, 5])
        learners = rng.choice([0, 0, 0, 1])
        action_rate = rng.uniform(5, 40)
        snapshot_every = rng.choice([None, None, 20, 50])
        # Drawn after the original knobs, so each seed keeps its old plan and adds these.
        weights += (
            ("cut", rng.choice([0.0, 0.0, 0.3, 1.0])),
            ("restore", 1.0),
            ("flap", rng.choice([0.0, 0.0, 0.2, 0.6])),
            ("pause", rng.choice([0.0, 0.0, 0.2, 0.6])),
            ("clock_jump", rng.choice([0.0, 0.0, 0.0, 0.3])),
            ("calm", rng.choice([0.0, 0.3, 1.0])),
        )
        check_quorum = rng.random() < 0.85
        # One draw picks the scenario, so the seeds that play none keep their plans.
        scenario = rng.random()
        figure8 = scenario < 1 / 8
        stale_suffix = 1 / 8 <= scenario < 1 / 8 + 1 / 10
        if figure8 or stale_suffix:
            network = NetworkConfig(
                delay_min=network.delay_min, delay_max=network.delay_max,
                duplicate=network.duplicate, reorder=network.reorder,
                reorder_delay=network.reorder_delay, disk_min=network.disk_min,
                disk_max=network.disk_max)
        if figure8:
            # Five voters, no loss, one entry per message: every stage can happen.
            nodes, learners, max_entries = 5, 0, 1
        elif stale_suffix:
            # No loss, one entry per message, snapshots every few entries with none
            # kept behind them, and a window that lets the stale entries leave together.
            nodes, learners, max_entries, trailing = rng.choice([3, 5]), 0, 1, 0
            snapshot_every = rng.randint(4, 8)
            max_inflight = max(max_inflight, 4)
        # Drawn last, so that the plans drawn before membership existed stay the same.
        # `--no-membership` leaves it out and gives back the plans of before.
        change_rate = rng.choice([0.0, 0.5, 1.0, 2.0])
        weights += (("membership", change_rate if membership and not (figure8 or stale_suffix)
                     else 0.0),)
        # ReadIndex reads, at leaders (stale ones too) and followers.
        weights += (("read", rng.choice([0.0, 2.0, 5.0, 10.0])),)
        # Lease reads (Raft §6.4.1) in some plans with check-quorum. A lease assumes
        # clocks that do not jump, so those plans jump none.
        lease = check_quorum and rng.random() < 0.3
        if lease:
            weights = tuple((k, 0.0 if k == "clock_jump" else w) for k, w in weights)
        # Early pre-vote (raftpy.failover) in some plans with pre-vote and no lease:
        # crashes and cut links then tell the peers at once, and spurious connection
        # losses (a flapping link that heartbeats still cross) come in too.
        # Not in the scripted scenarios (Figure 8, stale suffix): their crashes are
        # placed to reach one interleaving, which an early election would cut short.
        early = (pre_vote and not lease and not (figure8 or stale_suffix)
                 and rng.random() < 0.3)
        weights += (("conn_reset", rng.choice([0.5, 2.0]) if early else 0.0),)
        config = Config(
            pre_vote=pre_vote,
            check_quorum=check_quorum,
            max_entries_per_message=max_entries,
            max_inflight_entries=max_inflight,
            snapshot_trailing=trailing,
            lease_reads=lease,
            early_pre_vote=early,
        )
        return cls(
            nodes=nodes,
            pre_vote=pre_vote,
            learners=learners,
            config=config,
            network=network,
            action_rate=action_rate,
            weights=weights,
            snapshot_every=snapshot_every,
            figure8=figure8,
            stale_suffix=stale_suffix,
        )


@dataclass(slots=True)
class SeedReport:
    """The outcome of one seeded run."""

    seed: int
    plan: FaultPlan
    events: int = 0
    trace_hash: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    proposals: int = 0
    committed: int = 0
    transfers: int = 0
    transfers_succeeded: int = 0
    liveness_windows: int = 0
    """Stable-majority windows in the safety phase that got a committing leader."""
    worst_leader_wait: float = 0.0
    """The longest of those waits (seconds from the window's start)."""
    worst_window_start: float = 0.0
    """When the window of that longest wait started (virtual seconds)."""
    failure: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the run found no violation."""
        return self.failure is None


_HOLD_TYPES: tuple[type, ...] = (AppendEntries, AppendEntriesResponse, RequestVote,
                                 RequestVoteResponse, TimeoutNow)


WINDOW_TIMEOUTS = 8
"""How many maximum election timeouts a stable majority may wait for a committing
leader during the safety phase (see :class:`LivenessMonitor`)."""
WINDOW_MAX_DROP = 0.05
"""Plans losing more messages than this skip the stable-majority check."""


def _elections_can_settle(plan: FaultPlan) -> bool:
    """Whether a stable majority must find a committing leader within the window.
    Not with heavy loss; nor without pre-vote when a vote's round trip can outlast
    the shortest election timeout (Raft §5.6's timing requirement, broadcast time
    << election timeout, does not hold): candidates then keep deposing each other
    with higher terms (seed 486). Pre-vote damps that, so its plans keep the check."""
    net = plan.network
    if net.drop > WINDOW_MAX_DROP:
        return False
    one_way = net.delay_max + (net.reorder_delay if net.reorder else 0.0)
    return plan.config.pre_vote or 2 * one_way + net.disk_max < plan.config.election_timeout_min


def run_seed(seed: int, *, safety_time: float = 5.0, liveness_bound: float = 10.0,
             plan: FaultPlan | None = None, record_trace: bool = False,
             window_bound: float | None = None, membership: bool = True,
             paranoid: bool = False) -> SeedReport:
    """Run one seed; violations are reported in the result, not raised.

    ``window_bound`` is how long a stable majority may wait for a committing leader
    during the safety phase (default ``WINDOW_TIMEOUTS`` election timeouts).
    ``paranoid`` adds the slow full rescans of :mod:`raftpy.sim.paranoid` after
    every event (the run itself is the same)."""
    rng = random.Random(seed * 7919 + 17)
    plan = plan if plan is not None else FaultPlan.draw(rng, membership=membership)
    report = SeedReport(seed, plan)
    try:
        cluster = Cluster(plan.nodes, seed=seed, config=plan.config, learners=plan.learners,
                          network=plan.network, record_trace=record_trace,
                          snapshot_every=plan.snapshot_every, paranoid=paranoid)
    except InvariantViolation as exc:  # already when the nodes start
        report.failure = f"{type(exc).__name__}: {exc}"
        return report
    if window_bound is None:
        window_bound = WINDOW_TIMEOUTS * plan.config.election_timeout_max
    monitor = LivenessMonitor(cluster, window_bound, enabled=_elections_can_settle(plan))
    faults = _Faults(cluster, monitor)
    try:
        if plan.figure8:
            run_figure8(cluster, rng)
        elif plan.stale_suffix:
            run_stale_suffix(cluster, rng)
        _safety_phase(faults, rng, plan, report, safety_time)
        _liveness_phase(faults, rng, report, liveness_bound)
    except (InvariantViolation, LivenessFailure) as exc:
        report.failure = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a crash of the core or simulator is a failure too
        report.failure = (f"{type(exc).__name__} at event {cluster.events} "
                          f"(t={cluster.now:.6f}s): {exc}")
    finally:
        report.events = cluster.events
        report.trace_hash = cluster.trace_hash
        report.faults.update(cluster.fault_counts)
        report.proposals = len(cluster.proposals)
        report.committed = sum(p.committed for p in cluster.proposals)
        report.transfers = len(cluster.transfers)
        report.transfers_succeeded = sum(t.succeeded for t in cluster.transfers)
        report.liveness_windows = monitor.windows
        report.worst_leader_wait = monitor.worst
        report.worst_window_start = monitor.worst_at
    if record_trace:
        _last_trace[seed] = cluster.trace
    return report


_last_trace: dict[int, list[str]] = {}


def trace_of(seed: int) -> list[str]:
    """The trace of the last ``run_seed(seed, record_trace=True)``."""
    return _last_trace.get(seed, [])


class _Faults:
    """The cluster under test and the faults scheduled on it for later."""

    def __init__(self, cluster: Cluster, monitor: LivenessMonitor) -> None:
        self.cluster = cluster
        self.monitor = monitor
        self.stopped = False
        """Set for the liveness phase: scheduled faults then do nothing."""
        self.pause_token: dict[int, int] = {}

    def later(self, delay: float, action: Callable[[], None]) -> None:
        """Run ``action`` after ``delay``, unless faults have stopped by then."""
        def fire() -> None:
            if not self.stopped:
                action()

        self.cluster.at(delay, fire)

    def pause(self, node_id: int, duration: float) -> None:
        """Pause ``node_id`` for ``duration`` (unless crashed or resumed before)."""
        cluster = self.cluster
        cluster.pause(node_id)
        token = self.pause_token[node_id] = self.pause_token.get(node_id, 0) + 1

        def resume() -> None:
            if cluster.is_paused(node_id) and self.pause_token[node_id] == token:
                cluster.resume(node_id)

        self.later(duration, resume)

    def flap(self, rng: random.Random, src: int, dst: int, both: bool) -> None:
        """Take a link down and up a few times over a short window, ending up."""
        cluster = self.cluster
        cut = cluster.cut_both if both else cluster.cut
        restore = cluster.restore_both if both else cluster.restore
        when = 0.0
        for flip in range(2 * rng.randint(2, 5)):
            when += rng.uniform(0.003, 0.08)
            self.later(when, partial(restore if flip % 2 else cut, src, dst))
        cluster.fault_counts["flap"] += 1

    def stop(self) -> None:
        """Stop every fault: cancel scheduled ones, resume paused nodes, heal."""
        self.stopped = True
        self.monitor.stop()
        cluster = self.cluster
        for node_id in cluster.ids:
            if cluster.is_paused(node_id):
                cluster.resume(node_id)
        cluster.heal()
        cluster.release()


def _safety_phase(faults: _Faults, rng: random.Random, plan: FaultPlan, report: SeedReport,
                  duration: float) -> None:
    cluster = faults.cluster
    names = [name for name, _ in plan.weights]
    weights = [w for _, w in plan.weights]
    end = cluster.now + duration
    counter = 0
    poll = faults.monitor.poll
    calm_until = 0.0
    while cluster.now < end:
        cluster.run_until(poll, min(rng.expovariate(plan.action_rate), end - cluster.now))
        action = rng.choices(names, weights)[0]
        counter += 1
        if action == "calm":
            # A stretch with no new faults: the faults in place may leave a stable
            # majority, which must then elect a committing leader (LivenessMonitor).
            calm_until = cluster.now + rng.uniform(0.5, 4.0)
            cluster.fault_counts["calm"] += 1
        elif cluster.now >= calm_until or action in ("propose", "transfer"):
            _act(faults, rng, action, counter, report)
    # A stable majority still waiting for its leader may not escape the check
    # because the phase ended: wait for it (faults in place, none added).
    faults.monitor.settle()


def _act(faults: _Faults, rng: random.Random, action: str, counter: int,
         report: SeedReport) -> None:
    cluster = faults.cluster
    voters = cluster.voters
    down = [i for i in cluster.ids if not cluster.is_up(i)]
    if action == "propose":
        try:
            for burst in range(rng.choice([1, 1, 3, 10])):
                cluster.propose(b"cmd-%d-%d" % (counter, burst))
                report.faults["action_propose"] += 1
        except (NotLeader, LeadershipTransferInProgress):
            pass
    elif action == "read":
        live = [n for n in cluster.live_nodes() if not cluster.is_paused(n.id)]
        leaders = [n.id for n in live if n.role is Role.LEADER]
        if live:
            node = (rng.choice(leaders) if leaders and rng.random() < 0.5
                    else rng.choice(live).id)
            try:
                for _ in range(rng.choice([1, 1, 4])):
                    cluster.read(node)
                    report.faults["action_read"] += 1
            except NotLeader:
                pass
    elif action == "transfer":
        target = rng.choice([None, *voters])
        try:
            cluster.transfer_leadership(target)
            report.faults["action_transfer"] += 1
        except (NotLeader, LeadershipTransferInProgress, InvalidTransferTarget):
            pass
    elif action == "crash":
        up = [i for i in cluster.ids if cluster.is_up(i)]
        voters_down = sum(not cluster.is_up(i) for i in voters)
        # Mostly keep a majority running; a lone voter may crash (it restarts later).
        if up and voters_down < max(1, len(voters) // 2):
            leader = cluster.leader()
            victim = leader if leader is not None and rng.random() < 0.5 else rng.choice(up)
            cluster.crash(victim)
    elif action == "restart" and down:
        cluster.restart(rng.choice(down))
    elif action == "partition" and len(cluster.ids) > 1:
        ids = list(cluster.ids)
        rng.shuffle(ids)
        cut = rng.randint(1, len(ids) - 1)
        cluster.partition(ids[:cut], ids[cut:])
    elif action == "heal":
        cluster.heal()
    elif action == "hold":
        kind = rng.choice(_HOLD_TYPES)
        node = rng.choice(cluster.ids)
        by_src = rng.random() < 0.5

        def predicate(msg: Message, kind: type = kind, node: int = node,
                      by_src: bool = by_src) -> bool:
            return isinstance(msg, kind) and (msg.src if by_src else msg.dst) == node

        cluster.hold(predicate)
        cluster.fault_counts["hold_rule"] += 1
    elif action == "release":
        cluster.release()
    elif action == "membership":
        _change_membership(cluster, rng, report)
    elif len(cluster.ids) > 1:
        _act_on_links(faults, rng, action)


_MAX_NODES = 9


def _change_membership(cluster: Cluster, rng: random.Random, report: SeedReport) -> None:
    """One membership change through the leader: add (as spare, standby or voter),
    promote, demote (the leader too), remove (the leader too), or replace a crashed
    voter by a new one. Refusals (one change at a time, the 2015 correction, a
    transfer in progress, no leader) are part of the game."""
    leader = cluster.leader()
    if leader is None or cluster.is_paused(leader):
        return
    conf = cluster.node(leader).configuration.configuration
    members = sorted(conf.ids)
    voters = sorted(conf.voters)
    others = [m for m in members if m not in conf.voters]
    dead_voters = [v for v in voters if not cluster.is_up(v)]
    choices = ["add", "promote", "demote", "remove"] + (["replace"] if dead_voters else [])
    kind = rng.choice(choices)
    try:
        if kind in ("add", "replace") and len(cluster.ids) < _MAX_NODES:
            role = (MemberRole.VOTER if kind == "replace"
                    else rng.choice([MemberRole.SPARE, MemberRole.STANDBY, MemberRole.VOTER]))
            cluster.add_node(role=role)
        elif kind == "promote" and others:
            cluster.assign_role(rng.choice(others), MemberRole.VOTER)
        elif kind == "demote" and len(voters) > 1:
            cluster.assign_role(rng.choice(voters),
                                rng.choice([MemberRole.STANDBY, MemberRole.SPARE]))
        elif kind == "remove" and len(members) > 1:
            victim = (dead_voters[0] if dead_voters and rng.random() < 0.5
                      else rng.choice(members))
            if victim in conf.voters and len(voters) == 1:
                return
            cluster.remove_node(victim)
        else:
            return
        report.faults[f"membership_{kind}"] += 1
    except (NotLeader, LeadershipTransferInProgress, ConfigurationChangeInProgress,
            InvalidMembershipChange):
        report.faults["membership_refused"] += 1


def _act_on_links(faults: _Faults, rng: random.Random, action: str) -> None:
    cluster = faults.cluster
    ids = cluster.ids
    if action == "cut":
        shape = rng.random()
        if shape < 0.4:
            src, dst = rng.sample(ids, 2)
            cluster.cut(src, dst)
        elif shape < 0.7:
            cluster.cut_both(*rng.sample(ids, 2))
        else:
            # A partial partition: one node loses some peers but keeps the others.
            node = rng.choice(ids)
            peers = [i for i in ids if i != node]
            for peer in rng.sample(peers, rng.randint(1, max(1, len(peers) - 1))):
                cluster.cut_both(node, peer)
    elif action == "restore":
        blocked = [(a, b) for a in ids for b in ids if a != b and not cluster.link_open(a, b)]
        if blocked:
            src, dst = rng.choice(blocked)
            if rng.random() < 0.5:
                cluster.restore_both(src, dst)
            else:
                cluster.restore(src, dst)
    elif action == "flap":
        src, dst = rng.sample(ids, 2)
        faults.flap(rng, src, dst, both=rng.random() < 0.5)
    elif action == "pause":
        running = [i for i in ids if cluster.is_up(i) and not cluster.is_paused(i)]
        if running:
            leader = cluster.leader()
            victim = (leader if leader is not None and leader in running
                      and rng.random() < 0.5 else rng.choice(running))
            timeout = cluster.config.election_timeout_max
            duration = rng.choice([rng.uniform(0.01, 0.1), rng.uniform(0.1, timeout),
                                   rng.uniform(timeout, 4 * timeout)])
            faults.pause(victim, duration)
    elif action == "conn_reset":
        # The transport of one node reports every connection to a peer lost (it
        # need not be true): the leader's heartbeats may still arrive.
        node, peer = rng.sample(ids, 2)
        cluster.connection_lost(node, peer, cluster.now - rng.choice([0.0, 0.001, 0.05]))
    elif action == "clock_jump":
        timeout = cluster.config.election_timeout_max
        cluster.jump_clock(rng.choice(ids), rng.choice([rng.uniform(0.001, 0.05),
                                                        rng.uniform(0.05, 2 * timeout),
                                                        rng.uniform(1.0, 30.0)]))


def _liveness_phase(faults: _Faults, rng: random.Random, report: SeedReport,
                    bound: float) -> None:
    cluster = faults.cluster
    faults.stop()
    net = cluster.network
    cluster.set_network(NetworkConfig(delay_min=net.delay_min, delay_max=net.delay_max,
                                      disk_min=net.disk_min, disk_max=net.disk_max))
    for node_id in cluster.ids:
        if not cluster.is_up(node_id):
            cluster.restart(node_id)
    if not cluster.config.pre_vote:
        # Without pre-vote nothing keeps a removed node that never learnt of its
        # removal from raising terms (Raft §4.2.3); an operator stops it.
        for node_id in cluster.ids:
            if node_id not in cluster.members and cluster.is_up(node_id):
                cluster.crash(node_id)
    start = cluster.now
    # A transfer pending from the safety phase ends within its bound; with the
    # network healed, far sooner (the old leader hears who won, or its fence commits).
    if not cluster.run_until(lambda: all(t.done for t in cluster.transfers),
                             MAX_TRANSFER_TIMEOUTS * cluster.config.transfer_deadline + 0.001):
        raise LivenessFailure("a leadership transfer did not end within its timeout")
    final = commit_one(cluster, b"liveness-probe", start + bound)
    # Everything at or below the final index is now decided; proposals above it
    # come from older terms and can never commit (the leader overwrites them).
    for proposal in cluster.proposals:
        if not proposal.done:
            if proposal.index > final.index and proposal.term < final.term:
                proposal.failed = True
            else:
                raise LivenessFailure(f"proposal at index {proposal.index} (term "
                                      f"{proposal.term}) never resolved")
    check_transfer_liveness(cluster, rng, start + bound)
    check_committed_durable(cluster)


def commit_one(cluster: Cluster, command: bytes, deadline: float) -> Proposal:
    """Commit ``command`` through whoever leads, retrying across leader changes,
    before virtual time ``deadline``; raises :class:`LivenessFailure`."""
    while cluster.now < deadline:
        if not cluster.run_until(lambda: cluster.leader() is not None,
                                 deadline - cluster.now):
            break
        try:
            proposal = cluster.propose(command)
        except (NotLeader, LeadershipTransferInProgress):
            cluster.run_for(0.01)
            continue
        cluster.run_until(partial(_decided_or_moved_on, cluster, proposal),
                          deadline - cluster.now)
        if proposal.committed:
            return proposal
    raise LivenessFailure(f"no command committed within the bound after faults stopped "
                          f"(leader {cluster.leader()})")


def _decided_or_moved_on(cluster: Cluster, proposal: Proposal) -> bool:
    # Done, or leadership moved on (the entry may then never be decided).
    leader = proposal.leader
    return proposal.done or cluster.leader() != leader or (
        cluster.node(leader).current_term != proposal.term)


_CATCH_UP_GRACE = 60.0
"""Virtual seconds past the liveness bound that a member still gaining entries
may take to catch up before the cluster counts as settled."""


def check_transfer_liveness(cluster: Cluster, rng: random.Random, deadline: float) -> None:
    """Once the cluster settles, a transfer to a random up-to-date voter must succeed
    within one election timeout; raises :class:`LivenessFailure`."""
    if len(cluster.voters) == 1:
        return

    def settled() -> bool:
        # Every node follows one leader in one term and holds its whole log: only
        # then is "a transfer to a connected, up-to-date target" well defined.
        leader = cluster.leader()
        if leader is None:
            return False
        node = cluster.node(leader)
        last = node.log.last_index
        members = node.configuration.configuration.replicated
        return node.commit_index == last and all(
            n.leader_id == leader and n.current_term == node.current_term
            and n.log.last_index == last for n in cluster.live_nodes() if n.id in members)

    def slowest() -> int:
        replicated = {*cluster.voters, *cluster.learners}  # spares get no entries
        return min((n.log.last_index for n in cluster.live_nodes() if n.id in replicated),
                   default=0)

    settled_in_time = cluster.run_until(settled, deadline - cluster.now)
    # A member that was down for long catches up at one batch per round trip: on a
    # plan with one entry per message and one in flight that is ~30 entries/s
    # (seed 624). It is not stuck while it gains: wait on, a second at a time.
    give_up = deadline + _CATCH_UP_GRACE
    while not settled_in_time and cluster.now < give_up:
        before = slowest()
        settled_in_time = cluster.run_until(settled, 1.0)
        if not settled_in_time and slowest() <= before:
            break
    if not settled_in_time:
        raise LivenessFailure("the cluster did not settle on one up-to-date leader after "
                              "faults stopped")
    leader = cluster.leader()
    target = rng.choice([v for v in cluster.voters if v != leader])
    transfer = cluster.transfer_leadership(target)
    limit = cluster.config.election_timeout_max
    if not cluster.run_until(lambda: transfer.done, limit):
        raise LivenessFailure(f"transfer {leader} -> {target} did not end within {limit}s")
    if not transfer.succeeded:
        raise LivenessFailure(f"transfer {leader} -> {target} to an up-to-date, connected "
                              f"target failed: {transfer.reason}")


def check_committed_durable(cluster: Cluster) -> None:
    """Every proposal acknowledged as committed is on a majority of voters' disks."""
    quorum = len(cluster.voters) // 2 + 1
    for proposal in cluster.proposals:
        if not proposal.committed:
            continue
        holders = 0
        for voter in cluster.voters:
            storage = cluster.storages[voter]
            assert isinstance(storage, MemoryStorage)  # the fuzz plans never use files
            latest = cluster.snapshots[voter]
            snap = latest[0].index if latest is not None else 0
            if proposal.index <= snap or storage.term_at(proposal.index) == proposal.term:
                holders += 1
        if holders < quorum:
            raise LivenessFailure(f"committed proposal at {proposal.index} is on {holders} "
                                  f"disks, fewer than a majority")
