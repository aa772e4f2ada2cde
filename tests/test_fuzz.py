"""Seeded fuzzing: hundreds of random fault schedules, every invariant on every event."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftpy import Config, RaftNode
from raftpy.sim import Cluster, InvariantViolation
from raftpy.sim.figure8 import run_figure8
from raftpy.sim.fuzz import FaultPlan, LivenessFailure, run_seed
from raftpy.sim.liveness import LivenessMonitor, stable_majorities
from raftpy.sim.stale_suffix import run_stale_suffix

SEEDS = 300  # about as long as 400 seeds took before pauses, cuts and Figure 8


def test_hundreds_of_seeds_keep_every_invariant_and_recover() -> None:
    faults: Counter[str] = Counter()
    failures = []
    transfers_ok = windows = 0
    for seed in range(SEEDS):
        report = run_seed(seed)
        faults.update(report.faults)
        transfers_ok += report.transfers_succeeded
        windows += report.liveness_windows
        if not report.ok:
            failures.append(f"seed {seed}: {report.failure}")
    assert failures == []
    # A run that silently injected nothing proves nothing: every fault fired.
    for kind in ("drop", "duplicate", "reorder", "partition", "crash", "restart", "hold",
                 "snapshot", "install_snapshot", "action_transfer", "action_propose",
                 "cut_one_way", "cut_link", "flap", "pause", "resume", "to_paused",
                 "clock_jump", "calm", "figure8_done", "stale_suffix_done"):
        assert faults[kind] > 0, kind
    assert windows > SEEDS  # stable majorities were watched, and each got its leader
    assert transfers_ok > SEEDS  # at least the liveness-phase transfer of every seed


# Derandomized: the same 40 far-off seeds on every run, so that CI is reproducible
# (a rare liveness stall found by a fresh draw would block a landing unrelated to
# it); `python -m raftpy.sim --seeds N --start S` explores new ones.
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=10_000, max_value=2**32))
def test_random_seeds_keep_every_invariant(seed: int) -> None:
    report = run_seed(seed, safety_time=3.0)
    assert report.ok, f"{report.failure}\nreplay: python -m raftpy.sim --seed {seed}"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hostile_plan_with_five_nodes(seed: int) -> None:
    from raftpy.sim.network import NetworkConfig

    plan = FaultPlan.draw(random.Random(seed))
    hostile = FaultPlan(
        nodes=5, pre_vote=True, learners=1,
        network=NetworkConfig(drop=0.3, duplicate=0.1, reorder=0.3, delay_max=0.03),
        action_rate=40, weights=plan.weights, snapshot_every=20)
    report = run_seed(seed, plan=hostile)
    assert report.ok, report.failure
    assert report.faults["drop"] > 100


# ---------------------------------------------------------------- new faults, replay


@pytest.mark.parametrize("seed", [6, 358, 11])
def test_seed_with_new_faults_replays_exactly(seed: int) -> None:
    first, again = run_seed(seed), run_seed(seed)
    assert first.ok, first.failure
    assert (first.events, first.trace_hash, first.faults) == (
        again.events, again.trace_hash, again.faults)
    assert (first.liveness_windows, first.worst_leader_wait) == (
        again.liveness_windows, again.worst_leader_wait)
    if seed == 6:
        assert first.plan.figure8 and first.faults["figure8_done"] == 1
    elif seed == 358:  # (306 until vote requests left before the save)
        for kind in ("pause", "resume", "to_paused", "cut_one_way", "cut_link", "flap",
                     "clock_jump"):
            assert first.faults[kind] > 0, kind
    else:  # lease reads and ReadIndex reads, at leaders and followers
        assert first.plan.config.lease_reads and first.faults["read_answered"] > 20


# ---------------------------------------------------------------- liveness monitor


def test_monitor_times_each_stable_majority_until_a_leader_commits() -> None:
    cluster = Cluster(n=5, seed=3)
    monitor = LivenessMonitor(cluster, bound=3.0)
    cluster.run_until(monitor.poll, 1.0)
    assert monitor.windows == 1 and not monitor.open
    assert 0.1 < monitor.worst < 0.5  # the first election and its no-op
    leader = cluster.leader()
    assert leader is not None
    cluster.isolate(leader)  # the other four still form a stable majority
    cluster.run_until(monitor.poll, 1.0)
    assert monitor.windows == 2
    assert monitor.worst_at in (0.0, cluster.topology_changed_at)
    cluster.partition({1, 2}, {3, 4}, {5})  # no majority anywhere: nothing to ask
    cluster.run_until(monitor.poll, 5.0)
    assert monitor.windows == 2 and not monitor.open


def test_monitor_raises_when_a_stable_majority_gets_no_leader(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def never_campaign(self: RaftNode, *, disrupt_leader: bool) -> None:
        self._reset_election_timer()

    monkeypatch.setattr(RaftNode, "_campaign", never_campaign)
    cluster = Cluster(n=3, seed=4)
    monitor = LivenessMonitor(cluster, bound=1.0)
    cluster.run_until(monitor.poll, 0.99)
    with pytest.raises(LivenessFailure, match=r"voters \[1, 2, 3\] were connected"):
        cluster.run_until(monitor.poll, 1.0)
    assert 1.0 < cluster.now < 1.1


def test_stable_majorities_shapes() -> None:
    # A deposed leader that still reaches the others but hears nobody: without
    # check-quorum it never steps down, so {2, 3} is not owed a leader.
    for check_quorum, expected in ((True, [frozenset({2, 3})]), (False, [])):
        cluster = Cluster(n=3, seed=5, config=Config(check_quorum=check_quorum))
        cluster.cut(2, 1)
        cluster.cut(3, 1)
        assert stable_majorities(cluster, 2) == expected
    # Five voters, two down, 1 and 3 cut apart: no clique of three, but 2 is a hub.
    cluster = Cluster(n=5, seed=6)
    cluster.crash(4)
    cluster.crash(5)
    cluster.cut_both(1, 3)
    assert stable_majorities(cluster, 3) == []
    assert stable_majorities(cluster, 3, stars=True) == [frozenset({1, 2, 3})]
    cluster.pause(2)
    assert stable_majorities(cluster, 3, stars=True) == []


# ---------------------------------------------------------------- Figure 8


def _figure8_cluster(seed: int) -> tuple[Cluster, random.Random]:
    rng = random.Random(seed)
    plan = FaultPlan.draw(random.Random(seed * 7919 + 17))
    assert plan.figure8
    cluster = Cluster(plan.nodes, seed=seed, config=plan.config, network=plan.network)
    return cluster, rng


@pytest.mark.parametrize("seed", [6, 7, 8])
def test_figure8_scenario_plays_through_on_a_correct_core(seed: int) -> None:
    cluster, rng = _figure8_cluster(seed)
    assert run_figure8(cluster, rng) is True
    # Left healed and running, and the last leader committed an entry of its term.
    leader = cluster.leader()
    assert leader is not None and all(cluster.is_up(i) for i in cluster.ids)
    node = cluster.node(leader)
    assert node.log.term_at(node.commit_index) == node.current_term


@pytest.mark.parametrize("seed", [6, 7, 8])
def test_figure8_scenario_catches_commit_by_counting_old_terms(
        seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    def counting_commit(self: RaftNode) -> None:
        matches = sorted((self.log.persisted_index if v == self.id
                          else self.progress[v].match_index for v in self.voters),
                         reverse=True)
        self.commit_index = max(self.commit_index, matches[self.quorum - 1])

    monkeypatch.setattr(RaftNode, "_maybe_commit", counting_commit)
    cluster, rng = _figure8_cluster(seed)
    with pytest.raises(InvariantViolation):
        run_figure8(cluster, rng)


# ---------------------------------------------------------------- stale suffix


def _stale_suffix_cluster(seed: int) -> tuple[Cluster, random.Random]:
    rng = random.Random(seed)
    plan = FaultPlan.draw(random.Random(seed * 7919 + 17))
    assert plan.stale_suffix
    cluster = Cluster(plan.nodes, seed=seed, config=plan.config, network=plan.network,
                      snapshot_every=plan.snapshot_every)
    return cluster, rng


def _trust_leader_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    # The follower caps its commit index by its own last index, not by the last
    # entry this AppendEntries verified (Raft Figure 3.1).
    original = RaftNode._ack

    def ack(self: RaftNode, leader: int, match_index: int, leader_commit: int,
            last_new: int) -> None:
        original(self, leader, match_index, leader_commit,
                 max(last_new, min(leader_commit, self.log.last_index)))

    monkeypatch.setattr(RaftNode, "_ack", ack)


# (Seeds 2 and 20 were here until vote requests left before the candidate's save:
# their randomised interleavings no longer reach the stale suffix.)
@pytest.mark.parametrize("seed", [156, 5, 17, 33])  # five, three, five and three voters
def test_stale_suffix_scenario_plays_through_on_a_correct_core(seed: int) -> None:
    cluster, rng = _stale_suffix_cluster(seed)
    every = cluster.snapshot_every
    assert every is not None
    assert run_stale_suffix(cluster, rng) is True
    # The follower installed the leader's snapshot at E, kept its stale entries after
    # it, and committed nothing past E; the leader committed other entries there.
    leader = cluster.leader()
    assert leader is not None and all(cluster.is_up(i) for i in cluster.ids)
    log = cluster.node(leader).log
    assert log.snapshot_index == every and cluster.node(leader).commit_index > every
    leader_term = log.term_at(every + 1)
    assert leader_term is not None
    [follower] = [n for n in cluster.live_nodes() if n.log.term_at(every + 1) not in (
        None, leader_term)]
    stale_term = follower.log.term_at(every + 1)
    assert stale_term is not None and stale_term < leader_term
    assert follower.log.snapshot_index == follower.commit_index == every

    def converged() -> bool:
        return all(n.log.last_index == log.last_index == n.applied_index
                   and n.log.last_term == log.last_term for n in cluster.live_nodes())

    assert cluster.run_until(converged, 1.0)  # healed, it takes the leader's entries


# (Seed 2 was in this list until the concurrent pre-candidate yield rule, seed 20
# until vote requests left before the candidate's save: their randomised
# interleavings no longer reach the stale suffix.)
@pytest.mark.parametrize("seed", [5, 17, 33, 156])
def test_stale_suffix_scenario_catches_a_commit_past_what_was_verified(
        seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    _trust_leader_commit(monkeypatch)
    cluster, rng = _stale_suffix_cluster(seed)
    with pytest.raises(InvariantViolation, match="state machine safety"):
        run_stale_suffix(cluster, rng)


def test_membership_plans_keep_every_invariant_and_recover() -> None:
    # Membership changes in the fault mix (opt-in: `python -m raftpy.sim --membership`).
    fired: Counter[str] = Counter()
    failures = []
    for seed in range(60):
        report = run_seed(seed, membership=True)
        fired.update(report.faults)
        if report.failure is not None:
            failures.append(f"seed {seed}: {report.failure}")
    assert failures == []
    for kind in ("add", "promote", "demote", "remove"):
        assert fired[f"membership_{kind}"] > 0, kind
    assert fired["member_add"] > 0
