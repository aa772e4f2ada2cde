"""Automatic role management (raftpy.roles): table-driven, like Dqlite's roles tests."""

from __future__ import annotations

import pytest

from raftpy.membership import MemberRole
from raftpy.roles import MemberHealth, RoleTargets, plan_role_changes

V, S, P = MemberRole.VOTER, MemberRole.STANDBY, MemberRole.SPARE


def m(member_id: int, role: MemberRole, online: bool = True, domain: int = 0,
      weight: int = 0) -> MemberHealth:
    return MemberHealth(member_id, role, online, domain, weight)


CASES = [
    # (name, members, targets (voters, standbys), expected changes); the leader is 1
    ("at target: nothing", [m(1, V), m(2, V), m(3, V)], (3, 0), []),
    ("promote a spare to reach three voters", [m(1, V), m(2, P)], (3, 0), [(2, V)]),
    ("standby before spare", [m(1, V), m(2, P), m(3, S)], (3, 0), [(3, V), (2, V)]),
    ("an offline voter becomes a spare and is replaced",
     [m(1, V), m(2, V), m(3, V, online=False), m(4, S)], (3, 0), [(3, P), (4, V)]),
    ("offline candidates are not promoted", [m(1, V), m(2, P, online=False)], (3, 0), []),
    ("the leader is never demoted, even offline-looking",
     [m(1, V, online=False), m(2, V)], (1, 0), [(2, P)]),
    ("too many voters: demote the highest id to spare",
     [m(1, V), m(2, V), m(3, V), m(4, V), m(5, V)], (3, 0), [(5, P), (4, P)]),
    ("too many voters and standbys short: demote to standby",
     [m(1, V), m(2, V), m(3, V), m(4, V)], (3, 1), [(4, S)]),
    ("promote spares to standby", [m(1, V), m(2, P), m(3, P)], (1, 1), [(2, S)]),
    ("too many standbys", [m(1, V), m(2, S), m(3, S)], (1, 1), [(3, P)]),
    ("spread voters across failure domains",
     [m(1, V, domain=1), m(2, V, domain=1), m(3, P, domain=1), m(4, P, domain=2)], (3, 0),
     [(4, V)]),
    ("lower weight first", [m(1, V), m(2, P, weight=5), m(3, P, weight=1)], (2, 0),
     [(3, V)]),
    ("demote from the most represented domain",
     [m(1, V, domain=1), m(2, V, domain=2), m(3, V, domain=2), m(4, V, domain=3)], (3, 0),
     [(3, P)]),
]


@pytest.mark.parametrize(("name", "members", "targets", "expected"), CASES,
                         ids=[c[0] for c in CASES])
def test_plan_role_changes(name: str, members: list[MemberHealth], targets: tuple[int, int],
                           expected: list[tuple[int, MemberRole]]) -> None:
    assert plan_role_changes(members, RoleTargets(*targets), leader_id=1) == expected


def test_targets_are_validated() -> None:
    with pytest.raises(ValueError):
        RoleTargets(voters=0)
    with pytest.raises(ValueError):
        RoleTargets(standbys=-1)
