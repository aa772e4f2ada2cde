"""Automatic roles on a schedule (Dqlite's ``src/roles.c``, go-dqlite's ``app``).

With ``open_node(..., voters=N, standbys=M)`` the node runs :func:`run_auto_roles`
in its nursery. While the node leads, the task looks at every member's liveness
each heartbeat interval (last contact as the leader sees it: cheap, no change) and
re-balances the roles with :func:`raftpy.roles.plan_role_changes`, one
configuration change at a time (:func:`apply_role_changes`):

* every ``poll_interval`` seconds (a few heartbeats), and
* at once when a voter or standby is first seen offline, or a member disappears
  from the configuration (LXD made exactly that change: waiting for the next
  round left the cluster a voter short for a whole round).

Liveness. A voter or standby is online if the leader heard from it within
``online_within`` seconds, counted from the latest of its last message, the
moment this node became leader and the moment its role last changed (so a new
leader, or a member just promoted, gets time to answer before it is judged).
A **spare** gets no traffic, so the leader cannot tell whether it runs: it
counts as online unless it is *benched*: its promotion failed, or it was demoted
for being offline, less than ``retry_spares_after`` seconds ago. A benched spare
that is tried again and is still down is found out again (a standby that never
answers is demoted once ``online_within`` has passed; a voter's catch-up fails)
and benched again, so a dead spare costs at most two configuration changes per
``retry_spares_after``. Benching is the leader's memory only: a new leader
starts with a clean slate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from raftpy.errors import (
    ConfigurationChangeInProgress,
    InvalidMembershipChange,
    LeadershipTransferInProgress,
    NotLeader,
    PromotionFailed,
)
from raftpy.membership import MemberRole
from raftpy.roles import MemberHealth, RoleTargets, plan_role_changes

if TYPE_CHECKING:
    from raftpy.config import Config
    from raftpy.trio.membership import MemberStatus
    from raftpy.trio.runtime import Node

logger = logging.getLogger("raftpy.runtime.roles")


@dataclass(frozen=True, slots=True)
class AutoRoles:
    """How the leader keeps ``open_node(voters=..., standbys=...)``'s targets."""

    poll_interval: float | None = None
    """Seconds between re-balances (default: 5 heartbeat intervals)."""
    online_within: float | None = None
    """A voter or standby silent for longer is offline (default: twice the
    maximum election timeout)."""
    retry_spares_after: float = 30.0
    """How long a spare whose promotion failed, or that was demoted for being
    offline, is left out of promotions."""
    domains: Mapping[int, int] = field(default_factory=dict)
    """Failure domain per member id (default 0): voters spread across domains."""
    weights: Mapping[int, int] = field(default_factory=dict)
    """Weight per member id (default 0): lower is promoted first."""

    def __post_init__(self) -> None:
        for name in ("poll_interval", "online_within"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.retry_spares_after < 0:
            raise ValueError("retry_spares_after must be >= 0")


async def apply_role_changes(node: Node, targets: RoleTargets,
                             online: Callable[[MemberStatus], bool], *,
                             domains: Mapping[int, int], weights: Mapping[int, int],
                             failed: set[int]) -> list[tuple[int, MemberRole]]:
    """Plan, apply the first change, plan again, until the plan is empty; returns
    the changes made (``Node.adjust_roles`` and the scheduled task share it).

    Each member changes at most once per call and a member whose promotion fails
    is added to ``failed`` and counts as offline from then on, so the call always
    ends. Raises what ``Node.assign_role`` raises, except :class:`PromotionFailed`.
    """
    done: list[tuple[int, MemberRole]] = []
    changed: dict[int, MemberRole] = {}
    while True:
        if not node.is_leader:
            raise node._not_leader()
        membership = node.membership_now()
        # A member promoted in this call had no time to answer in its new role yet:
        # it counts as online (the liveness checks judge it from now on); one
        # demoted to spare is left out (it was offline, or not needed).
        health = [MemberHealth(m.id, m.role,
                               online=m.id not in failed and (
                                   changed[m.id] is not MemberRole.SPARE if m.id in changed
                                   else online(m)),
                               domain=domains.get(m.id, 0), weight=weights.get(m.id, 0))
                  for m in membership.members]
        plan = [(i, r) for i, r in plan_role_changes(health, targets, node.id)
                if i not in changed]
        if not plan:
            return done
        member_id, role = plan[0]
        changed[member_id] = role
        try:
            await node.assign_role(member_id, role)
        except PromotionFailed as exc:
            logger.warning("node %d: automatic roles: %s", node.id, exc)
            failed.add(member_id)
            continue
        logger.info("node %d: automatic roles: node %d is now a %s", node.id, member_id,
                    role.name.lower())
        done.append((member_id, role))


class RoleScheduler:
    """The state of the automatic-roles task (one per node; see the module doc)."""

    def __init__(self, node: Node, targets: RoleTargets, options: AutoRoles,
                 config: Config) -> None:
        self.node = node
        self.targets = targets
        self.options = options
        self.check_interval = config.heartbeat
        self.poll_interval = (options.poll_interval if options.poll_interval is not None
                              else 5 * config.heartbeat)
        self.online_within = (options.online_within if options.online_within is not None
                              else 2 * config.election_timeout_max)
        self.benched: dict[int, float] = {}
        """Member id -> when it was benched (see the module doc)."""
        self.rebalances = 0
        """How many re-balances ran (tests read it)."""
        self._leader_since: float | None = None
        self._roles_seen: dict[int, MemberRole] = {}
        self._role_changed: dict[int, float] = {}
        self._offline_seen: set[int] = set()
        self._last_poll = float("-inf")

    def online(self, member: MemberStatus, now: float) -> bool:
        """Whether ``member`` counts as online for planning (see the module doc)."""
        if member.id == self.node.id:
            return True
        benched = self.benched.get(member.id)
        if benched is not None and now - benched < self.options.retry_spares_after:
            return False
        if member.role is MemberRole.SPARE:
            return True  # no traffic: unknown; tried, and benched if it fails
        leading_since = self._leader_since if self._leader_since is not None else now
        since = max(leading_since, self._role_changed.get(member.id, leading_since))
        silence = now - since
        if member.last_contact is not None:
            silence = min(silence, member.last_contact)
        return silence <= self.online_within

    async def run(self) -> None:
        """Check liveness every heartbeat while leading; re-balance on schedule or at
        once when a member goes offline or is removed. Runs until cancelled."""
        while True:
            await trio.sleep(self.check_interval)
            await self.check(trio.current_time())

    async def check(self, now: float) -> None:
        """One liveness check (and a re-balance if one is due)."""
        node = self.node
        if not node.is_leader:
            self._leader_since = None
            self._roles_seen.clear()
            self._role_changed.clear()
            self._offline_seen.clear()
            self.benched.clear()
            return
        if self._leader_since is None:
            self._leader_since = now
            self._last_poll = now
        membership = node.membership_now()
        roles = {m.id: m.role for m in membership.members}
        removed = [i for i in self._roles_seen if i not in roles]
        for member_id, role in roles.items():
            if self._roles_seen.get(member_id, role) is not role:
                self._role_changed[member_id] = now
        self._roles_seen = roles
        offline = {m.id for m in membership.members
                   if m.role is not MemberRole.SPARE and not self.online(m, now)}
        gone_offline = offline - self._offline_seen
        self._offline_seen = offline
        if gone_offline or removed:
            logger.info("node %d: automatic roles: %s: re-balancing now", node.id,
                        f"node(s) {sorted(gone_offline)} offline" if gone_offline
                        else f"node(s) {sorted(removed)} removed")
        elif now - self._last_poll < self.poll_interval:
            return
        self._last_poll = now
        await self.rebalance()

    async def rebalance(self) -> list[tuple[int, MemberRole]]:
        """Apply the plan now; a refused change (another change in flight, a
        transfer, lost leadership) waits for the next check."""
        self.rebalances += 1
        now = trio.current_time()
        before = self.node.membership_now()
        offline_before = {m.id for m in before.members if not self.online(m, now)}
        failed: set[int] = set()
        try:
            done = await apply_role_changes(
                self.node, self.targets, lambda m: self.online(m, trio.current_time()),
                domains=self.options.domains, weights=self.options.weights, failed=failed)
        except (NotLeader, ConfigurationChangeInProgress, LeadershipTransferInProgress,
                InvalidMembershipChange) as exc:
            logger.info("node %d: automatic roles: not now: %s", self.node.id, exc)
            done = []
        now = trio.current_time()
        for member_id in failed:
            self.benched[member_id] = now
        for member_id, role in done:
            if role is MemberRole.SPARE and member_id in offline_before:
                self.benched[member_id] = now
        return done


async def run_auto_roles(node: Node, targets: RoleTargets, options: AutoRoles,
                         config: Config) -> None:
    """The automatic-roles task of :func:`~raftpy.trio.runtime.open_node`."""
    await RoleScheduler(node, targets, options, config).run()


__all__ = ["AutoRoles", "RoleScheduler", "apply_role_changes", "run_auto_roles"]
