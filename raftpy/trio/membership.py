"""Membership for a running node: how it starts (bootstrap, join or a fixed member
list), the membership calls of :class:`~raftpy.trio.runtime.Node`, keeping the
transport's peers in step with the configuration, and handover.

The core owns membership (``raftpy/reconfigure.py``): a configuration is a log
entry, in force from the moment it is appended. This module only drives it:

* **Start.** ``bootstrap=`` writes a new cluster's first configuration once to
  empty storage (the same configuration again is a no-op; another one, or storage
  that holds other state, raises :class:`~raftpy.errors.StorageError`).
  ``join=True`` starts with empty storage and waits for a leader to add the node.
  Either way, after that the configuration comes from the log and snapshots only.
* **Calls.** ``add_member``/``assign_role``/``remove_member`` go through the
  driver task to the core and wait until the configuration entry commits (a
  promotion to voter first catches the member up: its outcome is the core's
  :class:`~raftpy.ready.PromotionEnded`).
* **Transport.** On every :class:`~raftpy.ready.ConfigurationChanged` the
  transport is told the members' addresses (it dials new members and drops removed
  ones) and which node ids it may accept.
* **Handover** (Dqlite's ``dqlite_node_handover``): see :meth:`MembershipCalls.handover`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import trio

from raftpy.errors import (
    ConfigError,
    ConfigurationChangeInProgress,
    InvalidMembershipChange,
    LeadershipTransferInProgress,
    NotLeader,
    PromotionFailed,
)
from raftpy.membership import Configuration, MemberRole
from raftpy.node import PersistentState
from raftpy.ready import ConfigurationChanged, Event, PromotionEnded, Role
from raftpy.roles import RoleTargets
from raftpy.storage.base import Storage
from raftpy.storage.bootstrap import bootstrap as bootstrap_storage

if TYPE_CHECKING:
    from raftpy.node import RaftNode
    from raftpy.trio.runtime import _Reply, _Waiter

logger = logging.getLogger("raftpy.runtime.membership")

_RETRY_INTERVAL = 0.05
"""How long handover waits before retrying a change refused as "in progress"."""


# ---------------------------------------------------------------------- status


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """One member of the latest configuration, as this node sees it."""

    id: int
    role: MemberRole
    address: str
    last_contact: float | None
    """Seconds since a message from the member arrived here (``0.0`` for this node
    itself, ``None``: never)."""
    match_index: int | None
    """Highest log index known replicated on the member (only a leader knows; ``None``
    elsewhere and for spares)."""


@dataclass(frozen=True, slots=True)
class Membership:
    """The latest configuration a node holds (committed or not) and its members."""

    index: int
    """Log index of the configuration entry (0: none yet)."""
    committed: bool
    leader_id: int | None
    members: tuple[MemberStatus, ...]

    @property
    def configuration(self) -> Configuration:
        """The configuration itself (ids, roles, addresses)."""
        from raftpy.membership import Member

        return Configuration.of(Member(m.id, m.role, m.address) for m in self.members)

    def get(self, member_id: int) -> MemberStatus | None:
        """The member ``member_id``, if present."""
        for member in self.members:
            if member.id == member_id:
                return member
        return None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for JSON or msgpack); :meth:`from_dict` reads it back."""
        return {"index": self.index, "committed": self.committed, "leader_id": self.leader_id,
                "members": [{"id": m.id, "role": m.role.name.lower(), "address": m.address,
                             "last_contact": m.last_contact, "match_index": m.match_index}
                            for m in self.members]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Membership:
        """Parse :meth:`to_dict`'s output; raises ``ValueError`` when malformed."""
        try:
            members = tuple(
                MemberStatus(id=int(m["id"]), role=parse_role(str(m["role"])),
                             address=str(m["address"]),
                             last_contact=None if m["last_contact"] is None
                             else float(m["last_contact"]),
                             match_index=None if m["match_index"] is None
                             else int(m["match_index"]))
                for m in data["members"])
            leader = data["leader_id"]
            return cls(index=int(data["index"]), committed=bool(data["committed"]),
                       leader_id=None if leader is None else int(leader), members=members)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed membership: {exc!r}") from None


def parse_role(text: str) -> MemberRole:
    """``voter``, ``standby`` or ``spare`` (any case); raises ``ValueError``."""
    try:
        return MemberRole[text.upper()]
    except KeyError:
        raise ValueError(f"a role is voter, standby or spare, not {text!r}") from None


# ---------------------------------------------------------------------- start


def holds_state(state: PersistentState) -> bool:
    """Whether loaded storage holds any cluster state (else a node must bootstrap or
    join)."""
    return bool(state.entries) or state.snapshot is not None or state.hard_state.term > 0


def prepare_storage(storage: Storage, node_id: int, *, bootstrap: Configuration | None,
                    join: bool, fixed: bool) -> tuple[PersistentState, bytes | None]:
    """Check how a node starts and bootstrap if asked; returns what
    ``storage.load()`` returns afterwards (the state and the snapshot's data).

    Blocking (runs storage I/O): call it in a worker thread for file storage.
    Raises :class:`StorageError` when a bootstrap meets other state and
    :class:`ConfigError` for contradictory modes or an empty storage with nothing
    to start from.
    """
    if bootstrap is not None and join:
        raise ConfigError("a node either bootstraps a new cluster or joins one, not both")
    if bootstrap is not None:
        if node_id not in bootstrap.ids:
            raise ConfigError(f"node {node_id} is not a member of the configuration it "
                              f"bootstraps ({bootstrap.describe()})")
        if bootstrap_storage(storage, bootstrap):
            logger.info("node %d: bootstrapped %s", node_id, bootstrap.describe())
    state, snapshot_data = storage.load()
    if not holds_state(state) and bootstrap is None and not join and not fixed:
        raise ConfigError(f"node {node_id} has empty storage: bootstrap a new cluster or join "
                          "an existing one")
    if join and holds_state(state):
        logger.info("node %d: storage holds state already: membership comes from the log",
                    node_id)
    return state, snapshot_data


# ---------------------------------------------------------------------- calls


@dataclass(frozen=True, slots=True)
class _Change:
    """A membership change for the driver task."""

    op: str  # "add", "assign" or "remove"
    member_id: int
    role: MemberRole
    address: str
    reply: _Reply


class MembershipAdmin(Protocol):
    """What handover needs from the leader: a :class:`~raftpy.trio.runtime.Node` that
    leads, or a remote handle (``raftpy.kv.admin.ClusterAdmin``)."""

    async def members(self) -> Membership:
        """The leader's view of the membership."""
        ...

    async def assign_role(self, member_id: int, role: MemberRole) -> int:
        """Give ``member_id`` ``role``; returns the configuration entry's index."""
        ...


class MembershipCalls:
    """The membership half of :class:`~raftpy.trio.runtime.Node` (mixed into it)."""

    if TYPE_CHECKING:
        id: int
        _raft: RaftNode
        _transport: Any
        _addresses: dict[int, str]
        _last_contact: dict[int, float]
        _waiting: dict[int, list[tuple[int, _Waiter]]]

        async def _submit(self, item: Any) -> None: ...
        def _not_leader(self) -> NotLeader: ...
        def _notify(self) -> None: ...
        @property
        def is_leader(self) -> bool: ...
        async def transfer_leadership(self, target: int | None = None) -> int: ...

    def _init_membership(self, fixed_addresses: Mapping[int, str]) -> None:
        self._fixed_addresses = dict(fixed_addresses)
        self._adding: dict[int, str] = {}
        """Addresses of members being added or promoted, not yet in the configuration."""
        self._promotion_reply: tuple[int, _Reply] | None = None
        self._config_seen: tuple[Configuration, int] | None = None

    # ------------------------------------------------------------------ public

    async def members(self) -> Membership:
        """The latest configuration this node holds (committed or not) with each
        member's last contact and, if this node leads, match index (a coroutine, like
        the remote :class:`MembershipAdmin` it stands in for)."""
        await trio.lowlevel.checkpoint()
        return self.membership_now()

    def membership_now(self) -> Membership:
        """:meth:`members` without the checkpoint (for synchronous callers)."""
        raft = self._raft
        state = raft.configuration
        now = trio.current_time()
        leads = raft.role is Role.LEADER
        out = []
        for m in state.configuration.members:
            if m.id == self.id:
                contact: float | None = 0.0
                match: int | None = raft.log.last_index if leads else None
            else:
                seen = self._last_contact.get(m.id)
                contact = None if seen is None else max(0.0, now - seen)
                pr = raft.progress.get(m.id) if leads else None
                match = pr.match_index if pr is not None else None
            out.append(MemberStatus(m.id, m.role, m.address, contact, match))
        return Membership(state.index, state.committed, raft.leader_id, tuple(out))

    async def add_member(self, member_id: int, address: str,
                         role: MemberRole = MemberRole.SPARE) -> int:
        """Add ``member_id`` (listening at ``address``, ``host:port``) as ``role``
        (Dqlite's ``raft_add``; a spare by default) and return the index of the
        configuration entry once it has committed. For ``role=VOTER`` the member is
        caught up first.

        Raises :class:`NotLeader` (with the leader's address) on a follower,
        :class:`ConfigurationChangeInProgress` while another change is unfinished,
        :class:`InvalidMembershipChange` (already a member, bad id),
        :class:`LeadershipTransferInProgress`, :class:`PromotionFailed`.
        """
        return await self._change("add", member_id, role, address)

    async def assign_role(self, member_id: int, role: MemberRole) -> int:
        """Give member ``member_id`` another ``role`` (Dqlite's ``raft_assign``) and
        return the index of the configuration entry once it has committed.
        Promotion to voter catches the member up first (:class:`PromotionFailed` if
        it cannot). Raises like :meth:`add_member`."""
        return await self._change("assign", member_id, role, "")

    async def remove_member(self, member_id: int) -> int:
        """Remove member ``member_id`` (Dqlite's ``raft_remove``; the leader itself
        too: it steps down once the change commits) and return the index of the
        configuration entry once it has committed. Raises like :meth:`add_member`."""
        return await self._change("remove", member_id, MemberRole.SPARE, "")

    async def adjust_roles(self, targets: RoleTargets, *, online_within: float = 2.0,
                           domains: Mapping[int, int] | None = None,
                           weights: Mapping[int, int] | None = None,
                           ) -> list[tuple[int, MemberRole]]:
        """On the leader: change roles one at a time until the cluster meets
        ``targets`` (:func:`raftpy.roles.plan_role_changes`, Dqlite's automatic
        roles); returns the changes made.

        A member is online if the leader heard from it within ``online_within``
        seconds; a spare never heard from counts as online (the leader sends spares
        nothing, so only a promotion's catch-up can tell). A member whose promotion
        fails counts as offline from then on, and each member changes at most once
        per call, so the call always ends. Raises like :meth:`assign_role`.
        """
        from raftpy.trio.autoroles import apply_role_changes

        def online(m: MemberStatus) -> bool:
            if m.last_contact is None:
                return m.role is MemberRole.SPARE
            return m.last_contact <= online_within

        return await apply_role_changes(self, targets, online,  # type: ignore[arg-type]
                                        domains=domains or {}, weights=weights or {},
                                        failed=set())

    async def handover(self, leader: MembershipAdmin | None = None, *,
                       timeout: float = 10.0) -> int | None:
        """Hand this node's duties over before a clean shutdown (Dqlite's
        ``dqlite_node_handover``), so that the cluster keeps its number of voters.

        A voter finds a replacement (an up-to-date standby first, then a spare) and
        has the leader promote it; if this node leads, it then transfers leadership
        to the most up-to-date other voter and has the new leader demote it to
        spare. ``leader`` is how a node that does not lead (or no longer does, after
        the transfer) reaches the leader: e.g. ``raftpy.kv.admin.ClusterAdmin``.
        Without it a leader demotes itself while still leading (the core then steps
        down and has a caught-up voter take over at once), and a follower raises
        :class:`NotLeader`. Returns the promoted member's id (``None``: no
        replacement was found, or this node is not a voter; a leader still hands
        leadership over). Raises ``trio.TooSlowError`` after ``timeout`` seconds.
        """
        return await handover(self, leader, timeout=timeout)

    # ------------------------------------------------------------------ driver side

    async def _change(self, op: str, member_id: int, role: MemberRole, address: str) -> int:
        from raftpy.trio.runtime import _Reply

        if not isinstance(role, MemberRole):
            raise TypeError(f"role must be a MemberRole, got {role!r}")
        reply = _Reply()
        await self._submit(_Change(op, member_id, role, address, reply))
        index: int = await reply.wait()
        return index

    def _start_change(self, item: _Change, now: float) -> None:
        """Run in the driver: hand the change to the core."""
        raft = self._raft
        try:
            if item.op == "add":
                if item.address:
                    self._adding[item.member_id] = item.address
                position = raft.add_member(item.member_id, item.address, item.role, now=now)
            elif item.op == "assign":
                position = raft.assign_role(item.member_id, item.role, now=now)
            else:
                position = raft.remove_member(item.member_id, now=now)
        except NotLeader:
            self._adding.pop(item.member_id, None)
            item.reply.fail(self._not_leader())
            return
        except (ConfigurationChangeInProgress, InvalidMembershipChange,
                LeadershipTransferInProgress) as exc:
            self._adding.pop(item.member_id, None)
            item.reply.fail(exc)
            return
        if position is None:  # a promotion: PromotionEnded tells the outcome
            self._promotion_reply = (item.member_id, item.reply)
            self._sync_transport()
        else:
            self._waiting.setdefault(position.index, []).append((position.term, item.reply))

    def _membership_events(self, events: Sequence[Event]) -> None:
        """Act on the core's membership events (before the batch's messages leave,
        so that a new member's address is known to the transport first)."""
        for event in events:
            if isinstance(event, ConfigurationChanged):
                logger.info("node %d: configuration at %d%s: %s", self.id, event.index,
                            "" if event.committed else " (uncommitted)",
                            event.configuration.describe())
                for member_id in event.configuration.ids:
                    self._adding.pop(member_id, None)
                self._sync_transport()
            elif isinstance(event, PromotionEnded):
                self._promotion_ended(event)

    def _promotion_ended(self, event: PromotionEnded) -> None:
        pending = self._promotion_reply
        if not event.succeeded:
            self._adding.pop(event.member_id, None)
            self._sync_transport()
        if pending is None or pending[0] != event.member_id:
            return
        self._promotion_reply = None
        reply = pending[1]
        if not event.succeeded:
            reply.fail(PromotionFailed(event.member_id, event.reason))
            return
        term = self._raft.log.term_at(event.index)
        self._waiting.setdefault(event.index, []).append(
            (term if term is not None else self._raft.current_term, reply))

    def _fail_promotion(self, error: BaseException) -> None:
        if self._promotion_reply is not None:
            self._promotion_reply[1].fail(error)
            self._promotion_reply = None

    def _sync_transport(self) -> None:
        """Tell the transport the members' addresses and whom to accept."""
        state = self._raft.configuration
        configuration = state.configuration
        addresses = dict(self._fixed_addresses)
        for member in configuration.members:
            if member.address:
                addresses[member.id] = member.address
        addresses.update(self._adding)
        self._addresses = addresses
        update = getattr(self._transport, "update_peers", None)
        if update is None:
            return
        from raftpy.trio.runtime import parse_address
        from raftpy.trio.transport import PeerAddress

        peers: dict[int, PeerAddress] = {}
        for peer, text in addresses.items():
            if peer == self.id:
                continue
            try:
                host, port = parse_address(text)
            except ValueError:
                logger.error("node %d: member %d has an unusable address %r", self.id, peer,
                             text)
                continue
            peers[peer] = PeerAddress(host, port)
        if configuration.is_empty and not self._fixed_addresses:
            admit: frozenset[int] | None = None  # waiting to be added: anyone may be the leader
        else:
            admit = configuration.ids | self._fixed_addresses.keys() | self._adding.keys()
        update(peers, admit=admit,
               what=f"a member of the configuration at index {state.index}")


# ---------------------------------------------------------------------- handover


def replacement_candidates(membership: Membership, leaving: int,
                           stale_after: float = 2.0) -> list[int]:
    """Who may replace voter ``leaving``, best first: standbys heard from within
    ``stale_after`` seconds (the most up to date first), then standbys never heard
    from (just added), then spares by id (a leader hears nothing from spares, so
    their liveness is unknown: the promotion's catch-up tells). Standbys silent for
    longer are left out: they are down."""
    standbys = [m for m in membership.members if m.role is MemberRole.STANDBY
                and m.id != leaving]
    live = sorted((m for m in standbys
                   if m.last_contact is not None and m.last_contact <= stale_after),
                  key=lambda m: (-(m.match_index or 0), m.last_contact, m.id))
    silent = sorted(m.id for m in standbys if m.last_contact is None)
    spares = sorted(m.id for m in membership.members
                    if m.role is MemberRole.SPARE and m.id != leaving)
    return [m.id for m in live] + silent + spares


async def _retrying(call: Any, deadline: float) -> Any:
    """``await call()``, retrying while the change is refused as in progress (or the
    leader is moving) until ``deadline``."""
    while True:
        try:
            return await call()
        except (ConfigurationChangeInProgress, LeadershipTransferInProgress, NotLeader):
            if trio.current_time() + _RETRY_INTERVAL >= deadline:
                raise
            await trio.sleep(_RETRY_INTERVAL)


async def handover(node: Any, leader: MembershipAdmin | None = None, *,
                   timeout: float = 10.0) -> int | None:
    """Hand this node's duties over before it shuts down (``dqlite_node_handover``);
    see :meth:`raftpy.trio.runtime.Node.handover`. Returns the promoted
    replacement's id, if any."""
    deadline = trio.current_time() + timeout
    with trio.fail_after(timeout):
        configuration = node._raft.configuration.configuration
        if node.id not in configuration.voters:
            return None  # not a voter: nothing to hand over
        admin: MembershipAdmin | None = node if node.is_leader else leader
        if admin is None:
            raise node._not_leader()
        membership = await admin.members()
        promoted: int | None = None
        for candidate in replacement_candidates(membership, node.id):
            target = admin

            async def promote(target: MembershipAdmin = target, who: int = candidate) -> int:
                return await target.assign_role(who, MemberRole.VOTER)

            try:
                await _retrying(promote, deadline)
            except (PromotionFailed, InvalidMembershipChange) as exc:
                logger.warning("node %d: handover: %s", node.id, exc)
                continue
            promoted = candidate
            logger.info("node %d: handover: promoted node %d", node.id, candidate)
            break
        if node.is_leader:
            if promoted is not None and leader is None:
                # Nobody to ask after a transfer: demote ourselves while leading; the
                # core steps down once that commits and has a caught-up voter take over
                # at once (TimeoutNow, Raft §4.2.2).
                await _retrying(lambda: node.assign_role(node.id, MemberRole.SPARE), deadline)
                return promoted
            if len(node._raft.configuration.configuration.voters) > 1:
                new_leader = await _retrying(lambda: node.transfer_leadership(None), deadline)
                logger.info("node %d: handover: leadership moved to %d", node.id, new_leader)
        if promoted is not None:
            assert leader is not None or not node.is_leader
            remote = leader if leader is not None else admin
            await _retrying(lambda: remote.assign_role(node.id, MemberRole.SPARE), deadline)
            logger.info("node %d: handover: demoted itself to spare", node.id)
        return promoted


__all__ = [
    "MemberStatus",
    "Membership",
    "MembershipAdmin",
    "handover",
    "holds_state",
    "parse_role",
    "prepare_storage",
    "replacement_candidates",
]
