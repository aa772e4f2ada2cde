"""Hypothesis drives the cluster: random interleavings of proposals, transfers,
membership changes (add, promote, demote, remove, the leader included), crashes,
restarts, partitions, drops and held messages. The simulator checks the
invariants after every event; when faults stop, the cluster must recover, and a
failure shrinks to a minimal sequence of steps."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from raftpy import (
    AppendEntries,
    InvalidTransferTarget,
    LeadershipTransferInProgress,
    NotLeader,
    RequestVote,
    TimeoutNow,
)
from raftpy.errors import ConfigurationChangeInProgress, InvalidMembershipChange
from raftpy.membership import MemberRole
from raftpy.messages import Message
from raftpy.sim import Cluster, NetworkConfig
from raftpy.sim.fuzz import (
    LivenessFailure,
    check_committed_durable,
    check_transfer_liveness,
    commit_one,
)

NODES = 5
MAX_NODES = 8
ids = st.integers(min_value=1, max_value=NODES)
any_node = st.integers(min_value=1, max_value=MAX_NODES)
"""Ids of nodes that may have been added; rules skip the ones that do not exist."""
roles = st.sampled_from(list(MemberRole))
MEMBERSHIP_REFUSALS = (NotLeader, LeadershipTransferInProgress, ConfigurationChangeInProgress,
                       InvalidMembershipChange)
HOLDABLE = {"append": AppendEntries, "vote": RequestVote, "timeout_now": TimeoutNow}


class ClusterMachine(RuleBasedStateMachine):
    cluster: Cluster

    @initialize(seed=st.integers(0, 2**16), drop=st.sampled_from([0.0, 0.05, 0.2]),
                pre_vote=st.booleans(), disk=st.sampled_from([0.0005, 0.005, 0.02]))
    def start(self, seed: int, drop: float, pre_vote: bool, disk: float) -> None:
        from raftpy import Config

        self.cluster = Cluster(n=NODES, seed=seed, config=Config(pre_vote=pre_vote),
                               network=NetworkConfig(drop=drop, duplicate=0.05, reorder=0.1,
                                                     disk_max=disk))

    @rule(seconds=st.floats(0.001, 0.4))
    def run(self, seconds: float) -> None:
        self.cluster.run_for(seconds)

    @rule(count=st.integers(1, 5))
    def propose(self, count: int) -> None:
        try:
            for _ in range(count):
                self.cluster.propose(b"p")
        except (NotLeader, LeadershipTransferInProgress):
            pass

    @rule(to=st.none() | ids)
    def transfer(self, to: int | None) -> None:
        with contextlib.suppress(NotLeader, LeadershipTransferInProgress, InvalidTransferTarget):
            self.cluster.transfer_leadership(to)

    def _change(self, kind: str, change: Callable[[], object]) -> None:
        try:
            change()
        except MEMBERSHIP_REFUSALS as exc:
            event(f"membership {kind} refused: {type(exc).__name__}")
        else:
            event(f"membership {kind} made")

    @rule(role=roles)
    def add_member(self, role: MemberRole) -> None:
        if len(self.cluster.ids) < MAX_NODES:
            self._change("add", lambda: self.cluster.add_node(role=role))

    @rule(node=any_node, role=roles)
    def assign_role(self, node: int, role: MemberRole) -> None:
        if node in self.cluster.ids:
            self._change("assign", lambda: self.cluster.assign_role(node, role))

    @rule(node=any_node)
    def remove_member(self, node: int) -> None:
        if node in self.cluster.ids:
            self._change("remove", lambda: self.cluster.remove_node(node))

    @rule(node=any_node)
    def crash(self, node: int) -> None:
        voters = self.cluster.voters
        down = sum(not self.cluster.is_up(i) for i in voters)
        if node in self.cluster.ids and self.cluster.is_up(node) and (
                node not in voters or down < (len(voters) - 1) // 2):
            self.cluster.crash(node)

    @rule(node=any_node)
    def restart(self, node: int) -> None:
        if node in self.cluster.ids and not self.cluster.is_up(node):
            self.cluster.restart(node)

    @rule(group=st.sets(ids, min_size=1, max_size=NODES - 1))
    def partition(self, group: set[int]) -> None:
        self.cluster.partition(group)

    @rule()
    def heal(self) -> None:
        self.cluster.heal()

    @rule(kind=st.sampled_from(sorted(HOLDABLE)), node=ids, by_source=st.booleans())
    def hold(self, kind: str, node: int, by_source: bool) -> None:
        cls = HOLDABLE[kind]

        def matches(msg: Message) -> bool:
            return isinstance(msg, cls) and (msg.src if by_source else msg.dst) == node

        self.cluster.hold(matches)

    @rule()
    def release(self) -> None:
        self.cluster.release()

    def teardown(self) -> None:
        cluster = getattr(self, "cluster", None)
        if cluster is None:
            return
        cluster.heal()
        cluster.release()
        cluster.set_network(NetworkConfig())
        for node in cluster.ids:
            if not cluster.is_up(node):
                cluster.restart(node)
        if not cluster.config.pre_vote:
            # Without pre-vote a removed node that never learnt of its removal keeps
            # raising terms (Raft §4.2.3); an operator stops it.
            for node in cluster.ids:
                if node not in cluster.members:
                    cluster.crash(node)
        cluster.run_for(cluster.config.transfer_deadline)
        deadline = cluster.now + 10.0
        try:
            commit_one(cluster, b"final", deadline)
            check_transfer_liveness(cluster, random.Random(0), deadline)
            check_committed_durable(cluster)
        except LivenessFailure as exc:
            pytest.fail(f"no recovery after faults stopped: {exc}")


ClusterMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestClusterMachine = ClusterMachine.TestCase
