"""The seed bug (Dqlite raft issue #203, fixed May 2021): a heartbeat from the old
leader reaching a node that has just become candidate through a leadership
transfer must not make the transfer fail.

With pre-vote on, a transfer target that ran a pre-vote round would stay at the
leader's term; the leader's next heartbeat (same term) would legitimately demote
it and the transfer would silently time out. raftpy's target skips pre-vote
(term+1 at once, ``disrupt_leader`` set), so the late heartbeat is stale to it.
"""

from __future__ import annotations

import pytest

from raftpy import AppendEntries, Config, RaftNode, Role
from raftpy.sim import Cluster, NetworkConfig

# Fast heartbeats (1 ms, as in Dqlite's raft_transfer/preVote test) guarantee that
# heartbeats are in flight while TimeoutNow travels to the target.
FAST_HEARTBEATS = Config(pre_vote=True, heartbeat_interval=0.001)
NETWORK = NetworkConfig(delay_min=0.002, delay_max=0.004)


def run_pre_vote_on_transfer(self: RaftNode, *, disrupt_leader: bool) -> None:
    """The bug, planted from the test side: the transfer target runs pre-vote."""
    self._become_candidate(pre_vote=self.config.pre_vote, disrupt_leader=disrupt_leader)


def stable_cluster(n: int, config: Config, seed: int = 3) -> tuple[Cluster, int, int]:
    cluster = Cluster(n=n, seed=seed, config=config, network=NETWORK, record_trace=True)
    leader = cluster.wait_for_leader()
    proposal = cluster.propose(b"x=1")
    assert cluster.run_until(lambda: proposal.committed, 1.0)
    cluster.run_for(0.2)
    target = max(i for i in cluster.voters if i != leader)
    return cluster, leader, target


def transfer_with_held_heartbeat(cluster: Cluster, leader: int, target: int) -> int:
    """Transfer to ``target`` while holding the leader's heartbeats to it until the
    target has become candidate, then release them. Returns how many were held."""
    cluster.hold(lambda m: isinstance(m, AppendEntries) and m.src == leader
                 and m.dst == target)
    transfer = cluster.transfer_leadership(target)
    assert cluster.run_until(lambda: cluster.node(target).role is Role.CANDIDATE, 0.1)
    released = cluster.release()
    cluster.run_until(lambda: transfer.done, 1.0)
    return released


@pytest.mark.parametrize("n", [3, 5])
def test_late_heartbeat_does_not_abort_transfer(n: int) -> None:
    cluster, leader, target = stable_cluster(n, FAST_HEARTBEATS)
    term = cluster.node(leader).current_term
    mark = len(cluster.trace)

    released = transfer_with_held_heartbeat(cluster, leader, target)

    assert released >= 1, "the scenario needs a heartbeat that arrives during candidacy"
    transfer = cluster.transfers[-1]
    assert transfer.succeeded and transfer.new_leader == target
    assert cluster.leader() == target
    assert [cluster.node(i).current_term for i in cluster.ids] == [term + 1] * n
    after = cluster.trace[mark:]
    # The held heartbeat reached the candidate and was rejected as stale...
    assert any(f"{target} reject stale AppendEntries from {leader} (term {term})" in line
               for line in after)
    # ...and the only election was the target's, straight at term+1, no pre-vote.
    candidacies = [line for line in after if "-> candidate" in line]
    assert len(candidacies) == 1
    assert f"] {target} -> candidate, term {term + 1}, disrupt_leader" in candidacies[0]
    assert not any("pre-vote for term" in line for line in after)


@pytest.mark.parametrize("n", [3, 5])
def test_target_running_pre_vote_is_demoted_by_late_heartbeat(
        n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RaftNode, "_campaign", run_pre_vote_on_transfer)
    cluster, leader, target = stable_cluster(n, FAST_HEARTBEATS)
    term = cluster.node(leader).current_term

    transfer_with_held_heartbeat(cluster, leader, target)

    transfer = cluster.transfers[-1]
    assert transfer.done and not transfer.succeeded
    assert transfer.reason == "timed out"
    assert cluster.leader() == leader
    assert cluster.node(leader).current_term == term
    assert any(f"{target} step down: {leader} is leader of term {term}" in line
               for line in cluster.trace)


def test_three_nodes_pre_vote_transfer_only_fails_in_that_interleaving(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # With 3 nodes, the leader's own pre-vote plus the target's make a majority, so
    # the buggy target wins when no heartbeat overtakes its pre-vote round: the bug
    # hides behind timing, which is why the held heartbeat is needed to expose it.
    monkeypatch.setattr(RaftNode, "_campaign", run_pre_vote_on_transfer)
    cluster, _leader, target = stable_cluster(3, Config(pre_vote=True))
    transfer = cluster.transfer_leadership(target)
    assert cluster.run_until(lambda: transfer.done, 1.0)
    assert transfer.succeeded
    assert any(f"{target} -> candidate, pre-vote for term" in line for line in cluster.trace)


def test_five_nodes_pre_vote_transfer_fails_even_without_held_heartbeat(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Followers that hear from a live leader refuse pre-votes: the target gets only
    # its own and the leader's, 2 of 5, and the next heartbeat demotes it.
    monkeypatch.setattr(RaftNode, "_campaign", run_pre_vote_on_transfer)
    cluster, leader, target = stable_cluster(5, Config(pre_vote=True))
    transfer = cluster.transfer_leadership(target)
    assert cluster.run_until(lambda: transfer.done, 1.0)
    assert not transfer.succeeded
    assert cluster.leader() == leader
    rejections = [line for line in cluster.trace
                  if f"reject vote from {target}: heard from leader recently" in line]
    # At most one pre-vote round per TimeoutNow (resent at every heartbeat until the
    # target campaigns; one that finds it still a pre-candidate is ignored), each
    # refused by all three followers other than the target.
    sent = sum(f"{leader} send TimeoutNow to {target}" in line for line in cluster.trace)
    assert len(rejections) % 3 == 0 and 3 <= len(rejections) <= 3 * sent


@pytest.mark.parametrize("n", [3, 5])
def test_transfer_succeeds_without_held_heartbeat(n: int) -> None:
    cluster, _leader, target = stable_cluster(n, Config(pre_vote=True))
    transfer = cluster.transfer_leadership(target)
    assert cluster.run_until(lambda: transfer.done, 1.0)
    assert transfer.succeeded and cluster.leader() == target
