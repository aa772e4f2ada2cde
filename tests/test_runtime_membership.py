"""Membership in the Trio runtime, on an in-memory network under virtual time:
bootstrap and join, the Node's membership calls, the transport following the
configuration, and handover."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from helpers import addr, cluster, initial, roles

from raftpy.errors import (
    ConfigError,
    InvalidMembershipChange,
    NotLeader,
    PromotionFailed,
    StorageError,
)
from raftpy.membership import MemberRole
from raftpy.roles import RoleTargets
from raftpy.storage.bootstrap import bootstrap
from raftpy.storage.memory import MemoryStorage
from raftpy.trio.membership import Membership, MemberStatus, replacement_candidates
from raftpy.trio.transport import PeerAddress

VOTER, STANDBY, SPARE = MemberRole.VOTER, MemberRole.STANDBY, MemberRole.SPARE


async def test_bootstrap_join_add_promote_remove_and_the_transport_follows(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster(membership=True) as c:
        with trio.fail_after(10):
            leader = await c.leader()
            assert roles(await leader.members()) == {1: VOTER, 2: VOTER, 3: VOTER}
            # The transport learned every member's address from the bootstrap entry.
            assert c.transports[leader.id].peers == {
                i: PeerAddress(f"10.0.0.{i}", 7000) for i in (1, 2, 3) if i != leader.id}
            assert c.transports[leader.id].admit == frozenset({1, 2, 3})

            joiner = await c.start(4, join=True)
            assert (await joiner.members()).index == 0 and (await joiner.members()).members == ()
            assert c.transports[4].admit is None  # waits to be added: anyone may lead

            index = await leader.add_member(4, addr(4))
            view = await leader.members()
            assert (view.index, view.committed) == (index, True)
            assert roles(view) == {1: VOTER, 2: VOTER, 3: VOTER, 4: SPARE}
            assert view.get(4) == MemberStatus(4, SPARE, addr(4), None, None)
            assert c.transports[leader.id].peers[4] == PeerAddress("10.0.0.4", 7000)
            assert 4 in (c.transports[leader.id].admit or ())
            assert f"configuration at index {index}" in c.transports[leader.id].updates[-1][2]

            index = await leader.assign_role(4, VOTER)  # catch-up rounds, then the entry
            await joiner.wait_applied(index)
            view = await leader.members()
            assert roles(view)[4] is VOTER
            assert view.get(4) is not None and view.get(4).match_index == index  # type: ignore[union-attr]
            # The new member learned the others from the log: it admits members only now.
            assert roles(await joiner.members()) == roles(view)
            assert c.transports[4].admit == frozenset({1, 2, 3, 4})
            assert set(c.transports[4].peers) == {1, 2, 3}

            assert await leader.apply(b"after-join") >= 1
            victim = next(i for i in (1, 2, 3) if i != leader.id)
            await leader.remove_member(victim)
            assert set(roles(await leader.members())) == {1, 2, 3, 4} - {victim}
            assert victim not in c.transports[leader.id].peers
            assert victim not in (c.transports[leader.id].admit or ())
            c.stop(victim)
            assert await leader.apply(b"after-remove") >= 1


async def test_calls_on_a_follower_raise_not_leader_with_the_address(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster(membership=True) as c:
        with trio.fail_after(10):
            leader = await c.leader()
            follower = next(n for n in c.nodes.values() if n is not leader)
            for call in (lambda: follower.add_member(4, addr(4)),
                         lambda: follower.assign_role(leader.id, SPARE),
                         lambda: follower.remove_member(leader.id)):
                with pytest.raises(NotLeader) as info:
                    await call()
                assert (info.value.leader_id, info.value.leader_address) == (
                    leader.id, addr(leader.id))
            with pytest.raises(InvalidMembershipChange, match="a member already"):
                await leader.add_member(2, addr(2))
            with pytest.raises(InvalidMembershipChange, match="not a member"):
                await leader.assign_role(9, STANDBY)


async def test_promotion_of_a_dead_member_fails_and_nothing_changes(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster(membership=True) as c:
        with trio.fail_after(30):
            leader = await c.leader()
            before = trio.current_time()
            with pytest.raises(PromotionFailed) as info:
                await leader.add_member(4, addr(4), role=VOTER)  # nobody runs node 4
            assert info.value.member_id == 4 and "longer than 5 s" in info.value.reason
            assert trio.current_time() - before == pytest.approx(5.0, abs=0.5)
            assert roles(await leader.members()) == {1: VOTER, 2: VOTER, 3: VOTER}
            assert 4 not in c.transports[leader.id].peers  # the address is forgotten too


async def test_bootstrap_rules_and_restarts_follow_the_log(
        autojump_clock: trio.testing.MockClock) -> None:
    storage = MemoryStorage()
    conf = initial(1, 2, 3)
    assert bootstrap(storage, conf) is True
    async with cluster(0, membership=True, storages={1: storage}) as c:
        await c.start(1, bootstrap=conf)  # the same configuration again: a no-op
        c.stop(1)
        with pytest.raises(StorageError, match="another configuration"):
            await c.start(1, bootstrap=initial(1, 2))
        # No arguments at all, or a contradicting fixed peer list: the log wins.
        node = await c.start(1)
        assert roles(await node.members()) == {1: VOTER, 2: VOTER, 3: VOTER}
        c.stop(1)
        node = await c.start(1, peers={5: addr(5)})
        assert roles(await node.members()) == {1: VOTER, 2: VOTER, 3: VOTER}
        assert set(c.transports[1].peers) == {2, 3, 5}  # the fixed address is only added
        c.stop(1)
        with pytest.raises(ConfigError, match="empty storage"):
            await c.start(7)
        with pytest.raises(ConfigError, match="not a member"):
            await c.start(8, bootstrap=conf)
        with pytest.raises(ConfigError, match="not both"):
            await c.start(9, bootstrap=initial(9), join=True)


async def test_single_node_bootstrap_grows_by_joins(autojump_clock: trio.testing.MockClock
                                                    ) -> None:
    async with cluster(0, membership=True) as c:
        with trio.fail_after(20):
            first = await c.start(1, bootstrap=initial(1))
            await c.leader()
            for new in (2, 3):
                await c.start(new, join=True)
                await first.add_member(new, addr(new), role=VOTER)
            assert roles(await first.members()) == {1: VOTER, 2: VOTER, 3: VOTER}
            assert await first.apply(b"x") >= 1
            # It survives the loss of its first member: the others elect a leader.
            c.stop(1)
            leader = await c.leader()
            assert leader.id in (2, 3)


async def test_leader_handover_promotes_a_standby_and_leaves_as_spare(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster(membership=True) as c:
        with trio.fail_after(20):
            leader = await c.leader()
            await c.start(4, join=True)
            await leader.add_member(4, addr(4), role=STANDBY)
            await trio.sleep(0.2)  # a heartbeat round: the leader hears from the standby
            promoted = await leader.handover()
            assert promoted == 4
            new_leader = await c.leader()
            assert new_leader.id != leader.id
            view = await new_leader.members()
            assert roles(view) == {**{i: VOTER for i in (1, 2, 3, 4)}, leader.id: SPARE}
            assert len(view.configuration.voters) == 3


async def test_follower_handover_asks_the_leader_then_a_leader_transfers_without_spares(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster(membership=True) as c:
        with trio.fail_after(20):
            leader = await c.leader()
            await c.start(4, join=True)
            await leader.add_member(4, addr(4))  # a spare
            follower = next(n for n in c.nodes.values() if n is not leader)
            with pytest.raises(NotLeader):
                await follower.handover()  # no way to reach the leader
            assert await follower.handover(leader) == 4
            assert roles(await leader.members())[follower.id] is SPARE
            assert roles(await leader.members())[4] is VOTER
            # No standby or spare left: the leader only transfers leadership (and
            # stays a voter).
            await leader.remove_member(follower.id)
            c.stop(follower.id)
            assert await leader.handover() is None
            assert not leader.is_leader
            new_leader = await c.leader()
            assert new_leader.id != leader.id
            assert roles(await new_leader.members())[leader.id] is VOTER


async def test_adjust_roles_replaces_a_dead_voter_and_fills_the_standby_target(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster(membership=True) as c:
        with trio.fail_after(60):
            leader = await c.leader()
            for new in (4, 5):
                await c.start(new, join=True)
                await leader.add_member(new, addr(new))
            dead = next(i for i in (1, 2, 3) if i != leader.id)
            c.stop(dead)
            await trio.sleep(3)  # longer than online_within: the leader notices
            done = await leader.adjust_roles(RoleTargets(voters=3, standbys=1))
            assert done == [(dead, SPARE), (4, VOTER), (5, STANDBY)]
            assert roles(await leader.members()) == {
                **{i: VOTER for i in (1, 2, 3, 4)}, dead: SPARE, 5: STANDBY}
            # (A spare promoted a moment ago may not have answered yet: a standby
            # the leader never heard from counts as offline in adjust_roles.)
            while next(m for m in (await leader.members()).members
                       if m.id == 5).last_contact is None:
                await trio.sleep(0.01)
            assert await leader.adjust_roles(RoleTargets(voters=3, standbys=1)) == []


def test_replacement_candidates_prefer_live_up_to_date_standbys_then_spares() -> None:
    members = (
        MemberStatus(1, VOTER, "a", 0.0, 50),
        MemberStatus(2, STANDBY, "b", 0.1, 40),
        MemberStatus(3, STANDBY, "c", 0.1, 49),
        MemberStatus(4, STANDBY, "d", 30.0, 50),  # not heard from for long
        MemberStatus(5, SPARE, "e", None, None),
        MemberStatus(6, STANDBY, "f", None, None),  # never heard from
        MemberStatus(7, SPARE, "g", None, None),
    )
    m = Membership(9, True, 1, members)
    assert replacement_candidates(m, leaving=1) == [3, 2, 6, 5, 7]
    assert replacement_candidates(m, leaving=3) == [2, 6, 5, 7]
    assert Membership.from_dict(m.to_dict()) == m
