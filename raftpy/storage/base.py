"""The interface a storage backend offers the drivers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from raftpy.messages import Entry
from raftpy.node import PersistentState
from raftpy.ready import HardState, SnapshotMeta


class Storage(Protocol):
    """Durable home of one node's state. Every method returns once its data is durable."""

    def load(self) -> tuple[PersistentState, bytes | None]:
        """What the node restarts from, and the snapshot's bytes if there is one."""
        ...

    def save(
        self,
        hard_state: HardState | None = None,
        entries: Sequence[Entry] = (),
        snapshot: tuple[SnapshotMeta, bytes] | None = None,
    ) -> None:
        """Persist one :class:`~raftpy.ready.Ready`'s worth of state, in this order:
        snapshot (dropping the entries it covers), hard state, then entries (which
        replace any held entries at or after ``entries[0].index``)."""
        ...

    def compact(self, meta: SnapshotMeta, data: bytes) -> None:
        """Store a locally taken snapshot and drop the entries it covers."""
        ...
