"""Membership changes through the key-value client protocol: what a ``raftpy serve``
process uses to reach the leader when it joins or hands over, and what the
``raftpy members/add/assign/remove`` commands use.
"""

from __future__ import annotations

from raftpy.errors import ConfigurationChangeInProgress, InvalidMembershipChange, PromotionFailed
from raftpy.kv import protocol
from raftpy.kv.client import KVClient, RequestFailed
from raftpy.membership import MemberRole
from raftpy.trio.membership import Membership


class ClusterAdmin:
    """A :class:`~raftpy.trio.membership.MembershipAdmin` that reaches the leader
    through ``client`` (which follows redirects). The cluster's error codes come
    back as the runtime's exceptions, so handover treats a remote leader and a
    local one alike."""

    def __init__(self, client: KVClient) -> None:
        self.client = client

    async def members(self) -> Membership:
        """The leader's view of the membership."""
        return Membership.from_dict(await self.client.membership())

    async def add_member(self, member_id: int, address: str,
                         role: MemberRole = MemberRole.SPARE) -> int:
        """Add ``member_id`` at ``address`` as ``role``; returns the entry's index."""
        try:
            return await self.client.add_member(member_id, address, role.name.lower())
        except RequestFailed as exc:
            raise _translate(exc, member_id) from exc

    async def assign_role(self, member_id: int, role: MemberRole) -> int:
        """Give ``member_id`` ``role``; returns the entry's index."""
        try:
            return await self.client.assign_role(member_id, role.name.lower())
        except RequestFailed as exc:
            raise _translate(exc, member_id) from exc

    async def remove_member(self, member_id: int) -> int:
        """Remove ``member_id``; returns the entry's index."""
        try:
            return await self.client.remove_member(member_id)
        except RequestFailed as exc:
            raise _translate(exc, member_id) from exc


def _translate(exc: RequestFailed, member_id: int) -> Exception:
    if exc.code == protocol.BUSY:
        return ConfigurationChangeInProgress(str(exc))
    if exc.code == protocol.INVALID_CHANGE:
        return InvalidMembershipChange(member_id, str(exc))
    if exc.code == protocol.PROMOTION_FAILED:
        return PromotionFailed(member_id, str(exc))
    return exc
