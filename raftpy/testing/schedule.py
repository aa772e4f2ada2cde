"""Fault schedules for the simulator: plain data that replays exactly.

A *schedule* is a :class:`ClusterSetup` and a list of *steps* (one small frozen
dataclass per kind: :class:`Run`, :class:`Propose`, :class:`Transfer`,
:class:`Crash`, :class:`Partition`, :class:`AddMember`...). :func:`apply_step`
plays one on a :class:`~raftpy.sim.Cluster`; refusals the protocol is allowed to
give (no leader, a transfer or membership change in progress) are outcomes, not
errors. :func:`run_schedule` plays a whole schedule, then lets the cluster
recover and checks that it does (:func:`recover`). The simulator checks Raft's
invariants after every event throughout, so a schedule that breaks one raises
:class:`~raftpy.sim.InvariantViolation` at the event where it happens.

Schedules round-trip through JSON (:func:`schedule_to_json`,
:func:`schedule_from_json`), which is how ``python -m raftpy.testing.replay``
replays a failure found by Hypothesis in one command.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from raftpy.config import Config
from raftpy.errors import (
    ConfigurationChangeInProgress,
    InvalidMembershipChange,
    InvalidTransferTarget,
    LeadershipTransferInProgress,
    NotLeader,
)
from raftpy.membership import MemberRole
from raftpy.messages import AppendEntries, Message, RequestVote, TimeoutNow
from raftpy.sim.cluster import Cluster
from raftpy.sim.network import NetworkConfig

REFUSALS: tuple[type[Exception], ...] = (
    NotLeader, LeadershipTransferInProgress, InvalidTransferTarget,
    ConfigurationChangeInProgress, InvalidMembershipChange)
"""What a step may be refused with: the protocol saying "not now", not a bug."""

HOLDABLE: dict[str, type[Message]] = {
    "append": AppendEntries, "vote": RequestVote, "timeout_now": TimeoutNow}
"""Message kinds a :class:`Hold` step can hold back, by name."""


@dataclass(frozen=True, slots=True)
class ClusterSetup:
    """The cluster a schedule runs on."""

    nodes: int = 5
    seed: int = 0
    pre_vote: bool = True
    check_quorum: bool = True
    network: NetworkConfig = field(default_factory=NetworkConfig)
    snapshot_every: int | None = None

    def build(self, *, record_trace: bool = False) -> Cluster:
        """A fresh, bootstrapped cluster with this setup."""
        return Cluster(self.nodes, seed=self.seed,
                       config=Config(pre_vote=self.pre_vote, check_quorum=self.check_quorum),
                       network=self.network, snapshot_every=self.snapshot_every,
                       record_trace=record_trace)


@dataclass(frozen=True, slots=True)
class Run:
    """Let ``seconds`` of virtual time pass."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Propose:
    """Propose ``command`` through the leader ``count`` times."""

    command: bytes = b"p"
    count: int = 1


@dataclass(frozen=True, slots=True)
class Transfer:
    """Ask the leader to hand over to ``to`` (``None``: the best voter)."""

    to: int | None = None


@dataclass(frozen=True, slots=True)
class Crash:
    """Crash ``node`` (it loses whatever it had not fsynced)."""

    node: int


@dataclass(frozen=True, slots=True)
class Restart:
    """Restart ``node`` from what it persisted."""

    node: int


@dataclass(frozen=True, slots=True)
class Pause:
    """Stop ``node`` (as SIGSTOP does) until a :class:`Resume`."""

    node: int


@dataclass(frozen=True, slots=True)
class Resume:
    """Let a paused ``node`` run again."""

    node: int


@dataclass(frozen=True, slots=True)
class Partition:
    """Split the network: ``group`` on one side, everyone else on the other."""

    group: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Cut:
    """Cut the link ``src -> dst`` (both ways if ``both``): a partial partition."""

    src: int
    dst: int
    both: bool = True


@dataclass(frozen=True, slots=True)
class Heal:
    """Restore every link."""


@dataclass(frozen=True, slots=True)
class Hold:
    """Hold back messages of ``kind`` (see :data:`HOLDABLE`) sent by (or to) ``node``."""

    kind: str
    node: int
    by_source: bool = True


@dataclass(frozen=True, slots=True)
class Release:
    """Deliver every held message and stop holding."""


@dataclass(frozen=True, slots=True)
class AddMember:
    """Start a fresh node and have the leader add it with ``role``."""

    role: MemberRole = MemberRole.SPARE


@dataclass(frozen=True, slots=True)
class AssignRole:
    """Have the leader give ``node`` another role."""

    node: int
    role: MemberRole


@dataclass(frozen=True, slots=True)
class RemoveMember:
    """Have the leader remove ``node`` (the process keeps running)."""

    node: int


Step = (Run | Propose | Transfer | Crash | Restart | Pause | Resume | Partition | Cut | Heal
        | Hold | Release | AddMember | AssignRole | RemoveMember)
"""One action of a schedule."""

STEP_TYPES: dict[str, type[Any]] = {cls.__name__: cls for cls in (
    Run, Propose, Transfer, Crash, Restart, Pause, Resume, Partition, Cut, Heal, Hold,
    Release, AddMember, AssignRole, RemoveMember)}


def apply_step(cluster: Cluster, step: Step, *, max_nodes: int = 9) -> str:
    """Play ``step`` on ``cluster``; returns what happened (``"done"``, ``"skipped"``
    when it does not apply, e.g. crashing a node that is down, or
    ``"refused: NotLeader"``...). Invariant violations propagate."""
    try:
        return _apply(cluster, step, max_nodes)
    except REFUSALS as exc:
        return f"refused: {type(exc).__name__}"


def _apply(cluster: Cluster, step: Step, max_nodes: int) -> str:
    known = set(cluster.ids)
    if isinstance(step, Run):
        cluster.run_for(step.seconds)
    elif isinstance(step, Propose):
        for _ in range(step.count):
            cluster.propose(step.command)
    elif isinstance(step, Transfer):
        cluster.transfer_leadership(step.to)
    elif isinstance(step, Crash):
        if step.node not in known or not cluster.is_up(step.node) or not _may_crash(
                cluster, step.node):
            return "skipped"
        cluster.crash(step.node)
    elif isinstance(step, Restart):
        if step.node not in known or cluster.is_up(step.node):
            return "skipped"
        cluster.restart(step.node)
    elif isinstance(step, Pause):
        if step.node not in known or not cluster.is_up(step.node) \
                or cluster.is_paused(step.node) or not _may_crash(cluster, step.node):
            return "skipped"
        cluster.pause(step.node)
    elif isinstance(step, Resume):
        if step.node not in known or not cluster.is_paused(step.node):
            return "skipped"
        cluster.resume(step.node)
    elif isinstance(step, Partition):
        group = [n for n in step.group if n in known]
        if not group or len(group) == len(known):
            return "skipped"
        cluster.partition(group)
    elif isinstance(step, Cut):
        if step.src == step.dst or not {step.src, step.dst} <= known:
            return "skipped"
        if step.both:
            cluster.cut_both(step.src, step.dst)
        else:
            cluster.cut(step.src, step.dst)
    elif isinstance(step, Heal):
        cluster.heal()
    elif isinstance(step, Hold):
        cluster.hold(_hold_predicate(step))
    elif isinstance(step, Release):
        cluster.release()
    elif isinstance(step, AddMember):
        if len(known) >= max_nodes:
            return "skipped"
        cluster.add_node(role=step.role)
    elif isinstance(step, AssignRole):
        if step.node not in known:
            return "skipped"
        cluster.assign_role(step.node, step.role)
    else:
        if step.node not in known:
            return "skipped"
        cluster.remove_node(step.node)
    return "done"


def _may_crash(cluster: Cluster, node: int) -> bool:
    """Keep a majority of the committed voters running, so that the schedule tests
    recovery rather than a cluster that cannot work (a down non-voter is fine)."""
    voters = cluster.voters
    if node not in voters:
        return True
    down = sum(not cluster.is_up(v) or cluster.is_paused(v) for v in voters)
    return down + 1 <= (len(voters) - 1) // 2


def _hold_predicate(step: Hold) -> Callable[[Message], bool]:
    kind = HOLDABLE[step.kind]

    def matches(msg: Message) -> bool:
        return isinstance(msg, kind) and (msg.src if step.by_source else msg.dst) == step.node

    return matches


class RecoveryFailed(AssertionError):
    """After the faults stopped the cluster did not elect, commit, settle or keep
    every acknowledged write on a majority."""


def recover(cluster: Cluster, *, bound: float = 10.0) -> None:
    """Stop every fault and check the cluster recovers within ``bound`` virtual
    seconds: a command commits, the cluster settles on one up-to-date leader, a
    transfer to an up-to-date voter succeeds, and every committed proposal is on a
    majority of disks. Raises :class:`RecoveryFailed`."""
    from raftpy.sim.fuzz import (  # the fuzzer's own liveness checks
        LivenessFailure,
        check_committed_durable,
        check_transfer_liveness,
        commit_one,
    )

    cluster.heal()
    cluster.release()
    cluster.set_network(NetworkConfig())
    for node in cluster.ids:
        if cluster.is_paused(node):
            cluster.resume(node)
        if not cluster.is_up(node):
            cluster.restart(node)
    if not cluster.config.pre_vote:
        # Without pre-vote a removed node that never learnt of its removal keeps
        # raising terms (Raft §4.2.3); an operator stops it.
        for node in cluster.ids:
            if node not in cluster.members and cluster.is_up(node):
                cluster.crash(node)
    cluster.run_for(cluster.config.transfer_deadline)
    deadline = cluster.now + bound
    try:
        commit_one(cluster, b"recovery-probe", deadline)
        check_transfer_liveness(cluster, random.Random(0), deadline)
        check_committed_durable(cluster)
    except LivenessFailure as exc:
        raise RecoveryFailed(f"no recovery after faults stopped: {exc}") from None


def run_schedule(setup: ClusterSetup, steps: Sequence[Step], *, check_recovery: bool = True,
                 max_nodes: int = 9) -> Cluster:
    """Build ``setup``'s cluster, play ``steps`` and (by default) :func:`recover`.
    Returns the cluster (closed over nothing: inspect it freely)."""
    cluster = setup.build()
    for step in steps:
        apply_step(cluster, step, max_nodes=max_nodes)
    if check_recovery:
        recover(cluster)
    return cluster


# ---------------------------------------------------------------------- JSON


def _encode(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    if isinstance(value, MemberRole):
        return value.name
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    return value


def step_to_json(step: Step) -> dict[str, Any]:
    """One step as a JSON-able dict (``{"step": "Crash", "node": 3}``)."""
    return {"step": type(step).__name__,
            **{f.name: _encode(getattr(step, f.name)) for f in fields(step)}}


def step_from_json(data: dict[str, Any]) -> Step:
    """Inverse of :func:`step_to_json`; raises ``ValueError`` on anything else."""
    try:
        cls = STEP_TYPES[data["step"]]
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            if f.name == "role":
                value = MemberRole[value]
            elif f.name == "command":
                value = bytes.fromhex(value["bytes"])
            elif f.name == "group":
                value = tuple(value)
            kwargs[f.name] = value
        step: Step = cls(**kwargs)
        return step
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"not a schedule step: {data!r:.120} ({exc})") from None


def schedule_to_json(setup: ClusterSetup, steps: Sequence[Step]) -> str:
    """A schedule as one line of JSON (what the replay command takes)."""
    return json.dumps({"setup": asdict(setup), "steps": [step_to_json(s) for s in steps]},
                      separators=(",", ":"))


def schedule_from_json(text: str) -> tuple[ClusterSetup, list[Step]]:
    """Inverse of :func:`schedule_to_json`; raises ``ValueError``."""
    try:
        data = json.loads(text)
        raw = dict(data["setup"])
        raw["network"] = NetworkConfig(**raw["network"])
        setup = ClusterSetup(**raw)
        steps = [step_from_json(s) for s in data["steps"]]
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a schedule: {exc}") from None
    return setup, steps
