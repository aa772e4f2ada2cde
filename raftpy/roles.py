"""Automatic role management: which role changes bring a cluster to its targets.

Dqlite's ``src/roles.c`` (and go-dqlite's ``app`` package) keep a cluster at a
target number of online voters and standbys: the leader polls every member, then
changes roles one at a time. This is the decision half, a pure function of the
members' roles and liveness; the runtime (``Node.adjust_roles``) applies the first
change, waits for it to commit, and asks again.

The rules, in the order they are applied:

1. An offline voter or standby is demoted to spare (never the leader itself).
2. Too few online voters: promote online standbys first, then online spares,
   preferring the failure domain least represented among the voters, then the
   lowest weight, then the lowest id.
3. Too many online voters: demote the reverse way (most represented domain,
   highest weight, highest id; never the leader), to standby while standbys are
   short of their target, else to spare.
4. Too few online standbys: promote online spares (same preference); too many:
   demote standbys to spare (reverse preference).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from raftpy.membership import MemberRole


@dataclass(frozen=True, slots=True)
class RoleTargets:
    """How many online voters and standbys the cluster should have."""

    voters: int = 3
    standbys: int = 0

    def __post_init__(self) -> None:
        if self.voters < 1 or self.standbys < 0:
            raise ValueError("targets need voters >= 1 and standbys >= 0")


@dataclass(frozen=True, slots=True)
class MemberHealth:
    """One member as the leader sees it."""

    id: int
    role: MemberRole
    online: bool
    domain: int = 0
    """Failure domain (rack, zone): voters are spread across domains."""
    weight: int = 0
    """Lower is preferred for promotion."""


def plan_role_changes(members: Sequence[MemberHealth], targets: RoleTargets,
                      leader_id: int) -> list[tuple[int, MemberRole]]:
    """The role changes, in order, that move ``members`` towards ``targets``.

    Apply them one at a time (one configuration change in flight) and plan again
    after each: the outcome of a promotion (a member may fail to catch up) changes
    the next step.
    """
    # The leader is online by definition (it is the one planning).
    members = [MemberHealth(m.id, m.role, True, m.domain, m.weight) if m.id == leader_id
               else m for m in members]
    roles = {m.id: m.role for m in members}
    by_id = {m.id: m for m in members}
    changes: list[tuple[int, MemberRole]] = []

    def change(member_id: int, role: MemberRole) -> None:
        roles[member_id] = role
        changes.append((member_id, role))

    def online(role: MemberRole) -> list[MemberHealth]:
        return [m for m in members if roles[m.id] is role and m.online]

    def preference(candidates: list[MemberHealth]) -> list[MemberHealth]:
        """Best first: least represented domain among voters, lowest weight, id."""
        domains = Counter(by_id[i].domain for i, r in roles.items()
                          if r is MemberRole.VOTER and by_id[i].online)
        return sorted(candidates, key=lambda m: (domains[m.domain], m.weight, m.id))

    def demotion_order(candidates: list[MemberHealth]) -> list[MemberHealth]:
        """Best to demote first: most represented domain, highest weight, highest id."""
        domains = Counter(by_id[i].domain for i, r in roles.items()
                          if r is MemberRole.VOTER and by_id[i].online)
        return sorted((m for m in candidates if m.id != leader_id),
                      key=lambda m: (-domains[m.domain], -m.weight, -m.id))

    # 1. Offline voters and standbys become spares.
    for m in sorted(members, key=lambda m: m.id):
        if not m.online and m.role is not MemberRole.SPARE and m.id != leader_id:
            change(m.id, MemberRole.SPARE)

    # 2. and 3. Voters.
    voters = online(MemberRole.VOTER)
    missing = targets.voters - len(voters)
    while missing > 0:
        pool = online(MemberRole.STANDBY) or online(MemberRole.SPARE)
        if not pool:
            break
        change(preference(pool)[0].id, MemberRole.VOTER)
        missing -= 1
    while missing < 0:
        pool = demotion_order(online(MemberRole.VOTER))
        if not pool:
            break
        short = len(online(MemberRole.STANDBY)) < targets.standbys
        change(pool[0].id, MemberRole.STANDBY if short else MemberRole.SPARE)
        missing += 1

    # 4. Standbys.
    standbys = online(MemberRole.STANDBY)
    missing = targets.standbys - len(standbys)
    while missing > 0:
        pool = online(MemberRole.SPARE)
        if not pool:
            break
        change(preference(pool)[0].id, MemberRole.STANDBY)
        missing -= 1
    while missing < 0:
        pool = demotion_order(online(MemberRole.STANDBY))
        if not pool:
            break
        change(pool[0].id, MemberRole.SPARE)
        missing += 1
    return changes
