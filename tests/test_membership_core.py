"""Membership in the core: configurations as replicated data, bootstrap, the leader's
change API and its refusals (Raft chapter 4, the 2015 correction)."""

from __future__ import annotations

import random
from pathlib import Path

import msgpack
import pytest
from helpers import drain

from raftpy import (
    AppendEntries,
    AppendEntriesResponse,
    ConfigError,
    Configuration,
    ConfigurationChanged,
    ConfigurationChangeInProgress,
    Entry,
    EntryKind,
    HardState,
    InstallSnapshot,
    InvalidMembershipChange,
    InvalidTransferTarget,
    LeadershipTransferInProgress,
    Member,
    MemberRole,
    NotLeader,
    PersistentState,
    RaftNode,
    RequestVoteResponse,
    Role,
    SnapshotMeta,
    StorageError,
)
from raftpy.membership import ConfigurationHistory, configuration_entry
from raftpy.storage import FileStorage, MemoryStorage, bootstrap
from raftpy.storage.snapfiles import read_snapshot, write_snapshot

V, S, P = MemberRole.VOTER, MemberRole.STANDBY, MemberRole.SPARE
THREE = Configuration.voters_only([1, 2, 3])


def conf(*members: tuple[int, MemberRole]) -> Configuration:
    return Configuration.of(Member(i, r, f"host{i}:90{i:02d}") for i, r in members)


# ------------------------------------------------------------------ data


def test_configuration_round_trips_and_answers_role_questions() -> None:
    c = conf((3, S), (1, V), (2, V), (4, P))
    assert [m.id for m in c.members] == [1, 2, 3, 4]
    assert Configuration.decode(c.encode()) == c
    assert c.voters == {1, 2} and c.standbys == {3} and c.replicated == {1, 2, 3}
    assert c.role_of(4) is P and c.role_of(9) is None
    assert c.with_member(Member(4, V)).voters == {1, 2, 4}
    assert c.without(1).ids == {2, 3, 4}
    assert c.describe() == "1:voter 2:voter 3:standby 4:spare"


@pytest.mark.parametrize("raw, match", [
    (b"\x93", "undecodable"),
    (msgpack.packb({"a": 1}), "a list of members"),
    (msgpack.packb([[1, 7, ""]]), "malformed configuration member"),
    (msgpack.packb([[1, 0, 5]]), "malformed configuration member"),
    (msgpack.packb([[0, 0, ""]]), "positive integers"),
    (msgpack.packb([[2, 0, ""], [2, 1, ""]]), "distinct ids"),
])
def test_malformed_configurations_are_refused(raw: bytes, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Configuration.decode(raw)


def test_a_configuration_without_voters_is_invalid() -> None:
    with pytest.raises(ConfigError, match="at least one voter"):
        conf((1, S)).validate()


def test_history_uses_the_latest_entry_and_falls_back_when_it_is_cut() -> None:
    a, b, c = THREE, THREE.with_member(Member(4, S)), THREE.without(3)
    history = ConfigurationHistory(a, 5, [configuration_entry(7, 2, b), Entry(8, 2, b"x"),
                                         configuration_entry(9, 2, c)])
    assert (history.latest, history.latest_index) == (c, 9)
    assert history.at(8) == (b, 7) and history.at(6) == (a, 5)
    assert history.uncommitted(7) == 1 and history.uncommitted(9) == 0
    history.cut_from(9)
    assert (history.latest, history.latest_index) == (b, 7)
    history.compact(8)
    assert (history.base, history.base_index) == (b, 7) and history.at(100) == (b, 7)
    history.cut_from(1)  # entries after the snapshot only: the base stays
    assert history.latest == b


# ------------------------------------------------------------------ bootstrap


def test_bootstrap_writes_the_first_configuration_once(tmp_path: Path) -> None:
    file_storage = FileStorage(str(tmp_path / "n1"), node_id=1, cluster_id="c", sync=False)
    for storage in (MemoryStorage(), file_storage):
        assert bootstrap(storage, THREE) is True
        assert bootstrap(storage, THREE) is False  # idempotent
        with pytest.raises(StorageError, match="another configuration"):
            bootstrap(storage, Configuration.voters_only([1, 2]))
        state, _ = storage.load()
        assert state.hard_state.term == 1
        assert state.entries == (Entry(1, 1, THREE.encode(), EntryKind.CONFIGURATION),)
        node = RaftNode(1, state=state, rng=random.Random(1))
        assert node.voters == {1, 2, 3} and node.configuration.configuration == THREE
        assert node.configuration.index == 1 and not node.configuration.committed
        close = getattr(storage, "close", None)
        if close:
            close()


def test_bootstrap_refuses_storage_that_holds_other_state() -> None:
    storage = MemoryStorage()
    storage.save(None, [Entry(1, 3, b"cmd")])
    with pytest.raises(StorageError, match="not empty"):
        bootstrap(storage, THREE)
    with pytest.raises(ConfigError, match="at least one voter"):
        bootstrap(MemoryStorage(), conf((1, S)))


def test_a_node_with_empty_storage_never_campaigns() -> None:
    node = RaftNode(4, rng=random.Random(4))
    assert node.configuration.configuration.is_empty and not node.is_voter
    assert node.next_deadline() == float("inf")
    node.tick(1000.0)
    assert node.role is Role.FOLLOWER and node.current_term == 0
    assert not drain(node, 1000.0)[0]


def test_the_log_wins_over_constructor_arguments() -> None:
    # Node 3 of a running 3-node cluster restarted with "no peers": a one-voter
    # configuration given by flags. Its log says {1, 2, 3}, so it stays one of three.
    state = PersistentState(entries=(configuration_entry(1, 1, THREE),))
    node = RaftNode(3, [3], state=state, rng=random.Random(3))
    assert node.voters == {1, 2, 3} and node.quorum == 2
    node.tick(10.0)
    node.ready()
    assert node.role is Role.CANDIDATE and node.in_pre_vote  # it cannot win alone


# ------------------------------------------------------------------ the leader's API


def lone_leader(configuration: Configuration | None = None) -> RaftNode:
    """A one-voter cluster's leader that has committed its no-op."""
    configuration = configuration if configuration is not None else conf((1, V))
    node = RaftNode(1, state=PersistentState(entries=(configuration_entry(1, 1,
                                                                          configuration),)),
                    rng=random.Random(1))
    node.tick(1.0)
    drain(node, 1.0)
    assert node.role is Role.LEADER
    return node


def test_changes_are_entries_in_force_on_append_and_reported() -> None:
    leader = lone_leader()
    pos = leader.add_member(2, "host2:9002", now=1.0)
    assert pos is not None and pos.index == 3  # after the bootstrap entry and the no-op
    entry = leader.log.entry(3)
    assert entry.kind is EntryKind.CONFIGURATION
    assert Configuration.decode(entry.data).role_of(2) is P
    assert leader.configuration.index == 3
    events = [e for r in drain(leader, 1.0)[1] for e in r.events
              if isinstance(e, ConfigurationChanged)]
    # One voter: committed on its own fsync.
    assert events[-1] == ConfigurationChanged(leader.configuration.configuration, 3, True)
    assert 2 not in leader.progress  # a spare is not replicated to
    leader.assign_role(2, S, now=1.0)
    drain(leader, 1.0)
    assert 2 in leader.progress and leader.learners == {2}


def test_refusals_name_what_is_wrong() -> None:
    follower = RaftNode(2, state=PersistentState(entries=(configuration_entry(1, 1, THREE),)))
    with pytest.raises(NotLeader):
        follower.add_member(4, now=0.0)
    leader = lone_leader(conf((1, V), (2, S)))
    with pytest.raises(InvalidMembershipChange, match="a member already"):
        leader.add_member(2, now=1.0)
    with pytest.raises(InvalidMembershipChange, match="not a member"):
        leader.remove_member(7, now=1.0)
    with pytest.raises(InvalidMembershipChange, match="a standby already"):
        leader.assign_role(2, S, now=1.0)
    with pytest.raises(InvalidMembershipChange, match="at least one voter"):
        leader.remove_member(1, now=1.0)
    with pytest.raises(InvalidTransferTarget, match="not a voter"):
        leader.transfer_leadership(2, 1.0)
    leader.add_member(3, now=1.0)  # handed out, not yet persisted: not committed
    leader.ready()
    with pytest.raises(ConfigurationChangeInProgress, match="not committed yet"):
        leader.add_member(4, now=1.0)


def elected_of_three() -> RaftNode:
    """Node 1 of a bootstrapped 3-voter cluster, elected with node 2's votes."""
    node = RaftNode(1, state=PersistentState(HardState(1, None),
                                             (configuration_entry(1, 1, THREE),)),
                    rng=random.Random(1))
    node.tick(1.0)
    drain(node, 1.0)
    node.step(RequestVoteResponse(term=2, src=2, dst=1, vote_granted=True, pre_vote=True), 1.0)
    drain(node, 1.0)
    node.step(RequestVoteResponse(term=2, src=2, dst=1, vote_granted=True), 1.0)
    drain(node, 1.0)
    assert node.role is Role.LEADER and node.current_term == 2
    return node


def test_a_new_leader_changes_nothing_before_its_own_entry_commits() -> None:
    # The 2015 correction: elected, but its no-op is not committed yet.
    node = elected_of_three()
    assert node.commit_index < node.log.last_index
    with pytest.raises(ConfigurationChangeInProgress, match="not committed an entry of its"):
        node.add_member(4, now=1.0)


def test_changes_are_refused_while_a_transfer_is_pending() -> None:
    node = elected_of_three()
    node.step(AppendEntriesResponse(term=2, src=2, dst=1, success=True, match_index=2), 1.0)
    drain(node, 1.0)
    node.transfer_leadership(2, 1.0)
    with pytest.raises(LeadershipTransferInProgress):
        node.remove_member(3, now=1.0)


# ------------------------------------------------------------------ followers


def test_a_follower_uses_a_configuration_on_append_and_falls_back_when_it_is_cut() -> None:
    node = RaftNode(2, state=PersistentState(entries=(configuration_entry(1, 1, THREE),)),
                    rng=random.Random(2))
    four = THREE.with_member(Member(4, V))
    node.step(AppendEntries(term=2, src=1, dst=2, prev_log_index=1, prev_log_term=1,
                            entries=(configuration_entry(2, 2, four),), leader_commit=1), 1.0)
    assert node.voters == {1, 2, 3, 4}  # in force before it commits
    # A new leader of term 3 overwrites index 2: back to the bootstrap configuration.
    node.step(AppendEntries(term=3, src=3, dst=2, prev_log_index=1, prev_log_term=1,
                            entries=(Entry(2, 3, b""),), leader_commit=1), 1.0)
    assert node.voters == {1, 2, 3} and node.configuration.index == 1
    events = [e for r in drain(node, 1.0)[1] for e in r.events
              if isinstance(e, ConfigurationChanged)]
    assert [e.index for e in events] == [1]  # drained once, after both steps


def test_a_node_learns_its_membership_from_a_snapshot() -> None:
    node = RaftNode(4, rng=random.Random(4))  # joined: empty storage
    four = THREE.with_member(Member(4, S, "h4"))
    node.step(InstallSnapshot(term=5, src=1, dst=4, last_included_index=40,
                              last_included_term=5, offset=0, data=b"state", done=True,
                              configuration=four.encode(), configuration_index=33), 1.0)
    assert node.configuration.configuration == four and node.configuration.index == 33
    assert node.configuration.committed
    ready = node.ready()
    assert ready.snapshot is not None
    assert ready.snapshot[0] == SnapshotMeta(40, 5, four, 33)
    assert not node.is_voter  # a standby: it never campaigns
    assert node.next_deadline() == float("inf")


def test_snapshot_meta_carries_the_configuration_in_force() -> None:
    leader = lone_leader()
    leader.add_member(2, now=1.0)
    drain(leader, 1.0)
    meta = leader.snapshot_meta(leader.applied_index)
    assert meta.configuration == leader.configuration.configuration
    assert meta.configuration_index == 3


def test_snapshot_files_keep_the_configuration(tmp_path: Path) -> None:
    meta = SnapshotMeta(9, 2, conf((1, V), (2, S)), 7)
    path = write_snapshot(str(tmp_path), meta, b"data", sync=False)
    assert read_snapshot(path, 9) == (meta, b"data")


def test_a_node_an_uncommitted_change_removed_may_still_campaign_to_finish_it() -> None:
    # Node 1 led {1, 2}, appended "only 2 votes" and lost leadership before it
    # committed. Node 2 lacks the entry, so node 1 refuses it its vote; node 1 must
    # campaign itself (counting only node 2's vote) or nobody ever leads again.
    one_two = Configuration.voters_only([1, 2])
    only_two = Configuration.voters_only([2], [1])
    state = PersistentState(HardState(3, None), (configuration_entry(1, 1, one_two),
                                                 configuration_entry(2, 3, only_two)))
    node = RaftNode(1, state=state, rng=random.Random(1))
    assert not node.is_voter and node.next_deadline() < float("inf")
    node.tick(node.next_deadline())
    sent, _ = drain(node, 1.0)
    assert node.role is Role.CANDIDATE and [m.dst for m in sent] == [2]
    node.step(RequestVoteResponse(term=4, src=2, dst=1, vote_granted=True, pre_vote=True), 1.0)
    drain(node, 1.0)
    assert node.role is Role.CANDIDATE and not node.in_pre_vote  # its own vote uncounted
    node.step(RequestVoteResponse(term=4, src=2, dst=1, vote_granted=True), 1.0)
    drain(node, 1.0)
    assert node.role is Role.LEADER
    # Once the change commits (node 2 acknowledges it), it steps down for good.
    node.step(AppendEntriesResponse(term=4, src=2, dst=1, success=True,
                                    match_index=node.log.last_index), 1.0)
    drain(node, 1.0)
    assert node.role is Role.FOLLOWER and node.next_deadline() == float("inf")
