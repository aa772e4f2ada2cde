"""Cluster membership as replicated data: members, roles and configurations.

A :class:`Configuration` is the set of members of a cluster, each with a
:class:`MemberRole` and an opaque address the core carries but never reads. It
lives in the replicated log, as an entry of kind
:attr:`~raftpy.messages.EntryKind.CONFIGURATION`, and in snapshots; a node uses
the latest configuration in its log from the moment it is appended (Raft §4.1),
so command-line flags or constructor arguments can never override what a node's
log says. :class:`ConfigurationHistory` keeps the configuration entries a node
holds so that a truncated entry falls back to the one before it.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgpack

from raftpy.errors import ConfigError
from raftpy.messages import Entry, EntryKind


class MemberRole(enum.IntEnum):
    """What a member does (the roles of Dqlite's raft)."""

    VOTER = 0
    """Replicates the log, votes, and counts towards every majority."""
    STANDBY = 1
    """Replicates the log but does not vote: ready to be promoted quickly."""
    SPARE = 2
    """A known member that neither replicates nor votes."""


@dataclass(frozen=True, slots=True)
class Member:
    """One member of a configuration."""

    id: int
    role: MemberRole = MemberRole.VOTER
    address: str = ""
    """Where to reach the member; opaque to the core (the runtime reads it)."""


@dataclass(frozen=True, slots=True)
class Configuration:
    """A set of members, sorted by id. Build one with :meth:`of` or :meth:`voters_only`."""

    members: tuple[Member, ...] = ()

    def __post_init__(self) -> None:
        ids = [m.id for m in self.members]
        if ids != sorted(set(ids)):
            raise ConfigError(f"configuration members must have distinct ids, sorted: {ids}")
        for member in self.members:
            if type(member.id) is not int or member.id < 1:
                raise ConfigError(f"member ids are positive integers, got {member.id!r}")

    @classmethod
    def of(cls, members: Iterable[Member]) -> Configuration:
        """The configuration of ``members`` (in any order)."""
        return cls(tuple(sorted(members, key=lambda m: m.id)))

    @classmethod
    def voters_only(cls, voters: Iterable[int], standbys: Iterable[int] = (),
                    addresses: dict[int, str] | None = None) -> Configuration:
        """A configuration of plain ids: ``voters`` and ``standbys``."""
        addresses = addresses or {}
        members = [Member(i, MemberRole.VOTER, addresses.get(i, "")) for i in voters]
        members += [Member(i, MemberRole.STANDBY, addresses.get(i, "")) for i in standbys]
        return cls.of(members)

    @property
    def is_empty(self) -> bool:
        """Whether this is the empty configuration of a node never bootstrapped."""
        return not self.members

    @property
    def ids(self) -> frozenset[int]:
        """Every member's id."""
        return frozenset(m.id for m in self.members)

    @property
    def voters(self) -> frozenset[int]:
        """The ids of voters: the only members counted in majorities."""
        return frozenset(m.id for m in self.members if m.role is MemberRole.VOTER)

    @property
    def standbys(self) -> frozenset[int]:
        """The ids of standbys (replicated, not voting)."""
        return frozenset(m.id for m in self.members if m.role is MemberRole.STANDBY)

    @property
    def replicated(self) -> frozenset[int]:
        """Voters and standbys: the members a leader sends the log to."""
        return frozenset(m.id for m in self.members if m.role is not MemberRole.SPARE)

    def get(self, member_id: int) -> Member | None:
        """The member ``member_id``, if present."""
        for member in self.members:
            if member.id == member_id:
                return member
        return None

    def role_of(self, member_id: int) -> MemberRole | None:
        """The role of ``member_id`` (None if it is not a member)."""
        member = self.get(member_id)
        return member.role if member is not None else None

    def with_member(self, member: Member) -> Configuration:
        """This configuration with ``member`` added or replaced."""
        return Configuration.of([m for m in self.members if m.id != member.id] + [member])

    def without(self, member_id: int) -> Configuration:
        """This configuration without ``member_id``."""
        return Configuration(tuple(m for m in self.members if m.id != member_id))

    def validate(self) -> None:
        """Raise :class:`ConfigError` unless this configuration can run a cluster."""
        if not self.voters:
            raise ConfigError("a configuration needs at least one voter")

    def encode(self) -> bytes:
        """The bytes stored in a configuration entry and in snapshots."""
        out = msgpack.packb([[m.id, int(m.role), m.address] for m in self.members],
                            use_bin_type=True)
        assert isinstance(out, bytes)
        return out

    @classmethod
    def decode(cls, data: bytes) -> Configuration:
        """Parse :meth:`encode`'s output; raises :class:`ConfigError` when malformed."""
        try:
            raw = msgpack.unpackb(data, use_list=True, raw=False)
        except Exception as exc:
            raise ConfigError(f"undecodable configuration: {exc}") from None
        if type(raw) is not list:
            raise ConfigError("a configuration is a list of members")
        members = []
        for item in raw:
            if (type(item) is not list or len(item) != 3 or type(item[0]) is not int
                    or type(item[1]) is not int or type(item[2]) is not str
                    or item[1] not in _ROLES):
                raise ConfigError(f"malformed configuration member {item!r:.80}")
            members.append(Member(item[0], _ROLES[item[1]], item[2]))
        return cls(tuple(members))

    def describe(self) -> str:
        """A short human form: ``1:voter 2:voter 3:standby``."""
        return " ".join(f"{m.id}:{m.role.name.lower()}" for m in self.members) or "(empty)"


_ROLES = {int(r): r for r in MemberRole}


@dataclass(frozen=True, slots=True)
class ConfigurationState:
    """A node's configuration in force, where it sits in the log, and whether that
    entry is known committed."""

    configuration: Configuration
    index: int
    committed: bool

EMPTY = Configuration()
"""The configuration of a node whose storage holds none: it never campaigns."""


def configuration_entry(index: int, term: int, configuration: Configuration) -> Entry:
    """The log entry that carries ``configuration``."""
    return Entry(index, term, configuration.encode(), EntryKind.CONFIGURATION)


class ConfigurationHistory:
    """The configurations a node's log and snapshot hold, by index.

    ``base`` is the configuration included in the latest snapshot (with its index);
    after it come the configuration entries of the log, in order. The latest one
    is in force (Raft §4.1: on append, not on commit); when entries are cut from
    the log, the configurations they carried go with them.
    """

    __slots__ = ("_configs", "_indexes", "base", "base_index", "fallback")

    def __init__(self, base: Configuration = EMPTY, base_index: int = 0,
                 entries: Sequence[Entry] = ()) -> None:
        self.base = base
        self.base_index = base_index
        self.fallback = EMPTY
        """In force while neither the snapshot nor the log holds a configuration (a
        node built with a fixed member list)."""
        self._indexes: list[int] = []
        self._configs: list[Configuration] = []
        self.add(entries)

    @property
    def latest(self) -> Configuration:
        """The configuration in force."""
        if self._configs:
            return self._configs[-1]
        return self.fallback if self.base.is_empty else self.base

    @property
    def latest_index(self) -> int:
        """The log index of the configuration in force (the snapshot's, or 0)."""
        return self._indexes[-1] if self._indexes else self.base_index

    def at(self, index: int) -> tuple[Configuration, int]:
        """The configuration in force at log ``index`` and its own index."""
        k = bisect.bisect_right(self._indexes, index)
        if k == 0:
            return (self.fallback if self.base.is_empty else self.base), self.base_index
        return self._configs[k - 1], self._indexes[k - 1]

    def uncommitted(self, commit_index: int) -> int:
        """How many configuration entries lie beyond ``commit_index``."""
        return len(self._indexes) - bisect.bisect_right(self._indexes, commit_index)

    def add(self, entries: Sequence[Entry]) -> None:
        """Entries were appended at the end of the log."""
        for entry in entries:
            if entry.kind is EntryKind.CONFIGURATION and entry.index > self.base_index:
                self._indexes.append(entry.index)
                self._configs.append(Configuration.decode(entry.data))

    def cut_from(self, index: int) -> None:
        """Entries at ``index`` and after left the log."""
        k = bisect.bisect_left(self._indexes, index)
        del self._indexes[k:]
        del self._configs[k:]

    def compact(self, index: int, snapshot_config: Configuration | None = None,
                snapshot_config_index: int | None = None) -> None:
        """A snapshot now covers the log up to ``index``. The snapshot's own
        configuration is given when it came from elsewhere (InstallSnapshot);
        otherwise it is the one this history has at ``index``."""
        if snapshot_config is None:
            snapshot_config, snapshot_config_index = self.at(index)
        k = bisect.bisect_right(self._indexes, index)
        del self._indexes[:k]
        del self._configs[:k]
        self.base = snapshot_config
        self.base_index = snapshot_config_index if snapshot_config_index is not None else index
