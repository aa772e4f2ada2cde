"""Automatic roles on a schedule (``open_node(voters=, standbys=)``), on the
in-memory network of helpers.Cluster(membership=True) under virtual time: the leader
re-balances every poll, at once when a member goes offline or is removed, and
leaves a spare that failed alone for ``retry_spares_after``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing
from helpers import Cluster, addr, cluster, initial, roles

from raftpy.membership import MemberRole
from raftpy.trio.autoroles import AutoRoles
from raftpy.trio.runtime import Node

VOTER, STANDBY, SPARE = MemberRole.VOTER, MemberRole.STANDBY, MemberRole.SPARE
POLL = 5.0
RETRY = 10.0
ONLINE_WITHIN = 0.6  # the default: twice election_timeout_max (0.3 s in CONFIG)
AUTO: dict[str, Any] = {
    "voters": 3, "standbys": 1,
    "auto_roles": AutoRoles(poll_interval=POLL, retry_spares_after=RETRY)}


@asynccontextmanager
async def five_members() -> AsyncIterator[tuple[Cluster, Node]]:
    """Voters 1-3 bootstrapped with automatic roles, 4 and 5 joined as spares."""
    async with cluster(0, membership=True) as c:
        for node_id in (1, 2, 3):
            await c.start(node_id, bootstrap=initial(1, 2, 3), **AUTO)
        leader = await c.leader()
        for new in (4, 5):
            await c.start(new, join=True, **AUTO)
            await leader.add_member(new, addr(new))
        yield c, leader


async def until(leader: Node, check: Callable[[dict[int, MemberRole]], bool]) -> float:
    """Wait until the leader's roles pass ``check``; returns when (virtual time)."""
    while not check(roles(await leader.members())):
        await trio.sleep(0.01)
    return trio.current_time()


async def test_the_leader_fills_targets_on_its_poll_and_replaces_a_dead_voter_at_once(
        autojump_clock: trio.testing.MockClock) -> None:
    async with five_members() as (c, leader):
        with trio.fail_after(200):
            joined = trio.current_time()
            assert roles(await leader.members())[4] is SPARE
            # Nothing is offline or removed: the standby target waits for the poll.
            filled = await until(leader, lambda r: r[4] is STANDBY)
            assert roles(await leader.members()) == {1: VOTER, 2: VOTER, 3: VOTER,
                                                     4: STANDBY, 5: SPARE}
            assert 0 < filled - joined <= POLL + 0.2

            dead = next(i for i in (1, 2, 3) if i != leader.id)
            c.stop(dead)
            killed = trio.current_time()
            replaced = await until(leader, lambda r: r[dead] is SPARE and r[4] is VOTER
                                   and r[5] is STANDBY)
            # Seen offline after ONLINE_WITHIN, re-balanced at once (not at the poll):
            # demote, promote the standby (caught up already), then the spare.
            assert ONLINE_WITHIN < replaced - killed < ONLINE_WITHIN + 0.5

            # The dead member comes back as a spare: nothing needs it...
            await c.start(dead, **AUTO)
            await trio.sleep(POLL + 1)
            assert roles(await leader.members())[dead] is SPARE
            # ...until the standby dies: then it is promoted, but not before its
            # RETRY seconds on the bench (it was demoted for being offline) are over.
            c.stop(5)
            await until(leader, lambda r: r[5] is SPARE)
            back = await until(leader, lambda r: r[dead] is STANDBY)
            assert back - replaced >= RETRY
            assert back - replaced <= RETRY + POLL + 0.5
            assert roles(await leader.members()) == {
                **{i: VOTER for i in (1, 2, 3, 4) if i != dead}, dead: STANDBY, 5: SPARE}


async def test_a_removed_standby_is_replaced_at_once(
        autojump_clock: trio.testing.MockClock) -> None:
    async with five_members() as (_, leader):
        with trio.fail_after(100):
            await until(leader, lambda r: r[4] is STANDBY)
            await leader.remove_member(4)
            removed = trio.current_time()
            replaced = await until(leader, lambda r: r.get(5) is STANDBY)
            assert replaced - removed < 0.5  # far below the 5 s poll
            assert roles(await leader.members()) == {1: VOTER, 2: VOTER, 3: VOTER,
                                                     5: STANDBY}


async def test_a_dead_spare_is_tried_once_then_benched(
        autojump_clock: trio.testing.MockClock) -> None:
    async with five_members() as (c, leader):
        with trio.fail_after(200):
            await until(leader, lambda r: r[4] is STANDBY)
            c.stop(5)  # a spare: the leader cannot tell
            c.stop(4)
            stopped = trio.current_time()
            # 4 is demoted and benched; 5 (unknown) is promoted, never answers, and
            # is demoted and benched too.
            await until(leader, lambda r: r[4] is SPARE and r[5] is STANDBY)
            demoted = await until(leader, lambda r: r[5] is SPARE)
            assert demoted - stopped < 2 * ONLINE_WITHIN + 0.5
            changes = (await leader.members()).index
            await trio.sleep(RETRY - 5)
            assert (await leader.members()).index == changes  # no churn while benched
            assert roles(await leader.members()) == {1: VOTER, 2: VOTER, 3: VOTER,
                                                     4: SPARE, 5: SPARE}


async def test_a_follower_does_nothing_and_closing_cancels_the_task(
        autojump_clock: trio.testing.MockClock) -> None:
    async with five_members() as (c, leader):
        with trio.fail_after(100):
            await until(leader, lambda r: r[4] is STANDBY)
            index = (await leader.members()).index
            await trio.sleep(3 * POLL)
            assert (await leader.members()).index == index  # targets met: no changes
        follower = next(n for n in c.nodes.values() if not n.is_leader)
        assert roles(await follower.members())[4] is STANDBY
    # Leaving five_members() closed every node with its automatic-roles task (a
    # task left behind would keep the nursery open and this line unreached).
