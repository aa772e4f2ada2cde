"""Seeded fault-injection runs, TigerBeetle-style: each seed draws its own faults.

A run has a **safety phase**, where proposals, transfers, crashes, restarts,
partitions, held messages, drops, duplicates and reordering are thrown at the
cluster while the invariant checker watches every event, and then a
**liveness phase**, where every fault stops and the cluster must elect a
leader, commit, resolve every pending proposal and complete a leadership
transfer to an up-to-date target within bounds. ``python -m raftpy.sim`` runs
many seeds; ``python -m raftpy.sim --seed N`` replays one.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from functools import partial

from raftpy.config import Config
from raftpy.errors import InvalidTransferTarget, LeadershipTransferInProgress, NotLeader
from raftpy.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from raftpy.sim.cluster import Cluster, Proposal
from raftpy.sim.invariants import InvariantViolation
from raftpy.sim.network import NetworkConfig
from raftpy.storage.memory import MemoryStorage
from raftpy.transfer import MAX_TRANSFER_TIMEOUTS


class LivenessFailure(AssertionError):
    """After faults stopped, the cluster did not make progress within its bound."""


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

    @classmethod
    def draw(cls, rng: random.Random) -> FaultPlan:
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
        weights = (
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
        config = Config(
            pre_vote=pre_vote,
            max_entries_per_message=rng.choice([1, 2, 5, 1024]),
            max_inflight_entries=rng.choice([1, 4, 64, 8192]),
            snapshot_trailing=rng.choice([0, 5, 1000]),
        )
        return cls(
            nodes=rng.choice([1, 2, 3, 3, 3, 5, 5]),
            pre_vote=pre_vote,
            learners=rng.choice([0, 0, 0, 1]),
            config=config,
            network=network,
            action_rate=rng.uniform(5, 40),
            weights=weights,
            snapshot_every=rng.choice([None, None, 20, 50]),
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
    failure: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the run found no violation."""
        return self.failure is None


_HOLD_TYPES: tuple[type, ...] = (AppendEntries, AppendEntriesResponse, RequestVote,
                                 RequestVoteResponse, TimeoutNow)


def run_seed(seed: int, *, safety_time: float = 5.0, liveness_bound: float = 10.0,
             plan: FaultPlan | None = None, record_trace: bool = False) -> SeedReport:
    """Run one seed; violations are reported in the result, not raised."""
    rng = random.Random(seed * 7919 + 17)
    plan = plan if plan is not None else FaultPlan.draw(rng)
    report = SeedReport(seed, plan)
    cluster = Cluster(plan.nodes, seed=seed, config=plan.config, learners=plan.learners,
                      network=plan.network, record_trace=record_trace,
                      snapshot_every=plan.snapshot_every)
    try:
        _safety_phase(cluster, rng, plan, report, safety_time)
        _liveness_phase(cluster, rng, report, liveness_bound)
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
    if record_trace:
        _last_trace[seed] = cluster.trace
    return report


_last_trace: dict[int, list[str]] = {}


def trace_of(seed: int) -> list[str]:
    """The trace of the last ``run_seed(seed, record_trace=True)``."""
    return _last_trace.get(seed, [])


def _safety_phase(cluster: Cluster, rng: random.Random, plan: FaultPlan, report: SeedReport,
                  duration: float) -> None:
    names = [name for name, _ in plan.weights]
    weights = [w for _, w in plan.weights]
    end = cluster.now + duration
    counter = 0
    while cluster.now < end:
        cluster.run_for(min(rng.expovariate(plan.action_rate), end - cluster.now))
        action = rng.choices(names, weights)[0]
        counter += 1
        _act(cluster, rng, action, counter, report)


def _act(cluster: Cluster, rng: random.Random, action: str, counter: int,
         report: SeedReport) -> None:
    voters = cluster.voters
    down = [i for i in cluster.ids if not cluster.is_up(i)]
    if action == "propose":
        try:
            for burst in range(rng.choice([1, 1, 3, 10])):
                cluster.propose(b"cmd-%d-%d" % (counter, burst))
                report.faults["action_propose"] += 1
        except (NotLeader, LeadershipTransferInProgress):
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


def _liveness_phase(cluster: Cluster, rng: random.Random, report: SeedReport,
                    bound: float) -> None:
    cluster.heal()
    cluster.release()
    net = cluster.network
    cluster.set_network(NetworkConfig(delay_min=net.delay_min, delay_max=net.delay_max,
                                      disk_min=net.disk_min, disk_max=net.disk_max))
    for node_id in cluster.ids:
        if not cluster.is_up(node_id):
            cluster.restart(node_id)
    start = cluster.now
    # A transfer pending from the safety phase must end within its timeout (doubled
    # once the target campaigns, while the old leader waits to hear who won).
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
        return node.commit_index == last and all(
            n.leader_id == leader and n.current_term == node.current_term
            and n.log.last_index == last for n in cluster.live_nodes())

    if not cluster.run_until(settled, deadline - cluster.now):
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
