"""Storage in memory: for tests and the simulator (the simulator decides what a
crash loses by when it calls :meth:`MemoryStorage.save`)."""

from __future__ import annotations

from collections.abc import Sequence

from raftpy.messages import Entry
from raftpy.node import PersistentState
from raftpy.ready import HardState, SnapshotMeta


class MemoryStorage:
    """Holds exactly what was saved; nothing else survives a simulated crash."""

    def __init__(self) -> None:
        self.hard_state = HardState(0, None)
        self.entries: list[Entry] = []
        self.snapshot: tuple[SnapshotMeta, bytes] | None = None

    @property
    def first_index(self) -> int:
        """Index of the first held entry."""
        return self.snapshot[0].index + 1 if self.snapshot else 1

    def load(self) -> tuple[PersistentState, bytes | None]:
        """See :meth:`raftpy.storage.Storage.load`."""
        meta = self.snapshot[0] if self.snapshot else None
        state = PersistentState(self.hard_state, tuple(self.entries), meta)
        return state, self.snapshot[1] if self.snapshot else None

    def save(
        self,
        hard_state: HardState | None = None,
        entries: Sequence[Entry] = (),
        snapshot: tuple[SnapshotMeta, bytes] | None = None,
    ) -> None:
        """See :meth:`raftpy.storage.Storage.save`."""
        if snapshot is not None:
            meta = snapshot[0]
            held = self.term_at(meta.index)
            keep = held == meta.term
            self.snapshot = snapshot
            self.entries = [e for e in self.entries if keep and e.index > meta.index]
        if hard_state is not None:
            self.hard_state = hard_state
        if not entries:
            return
        first = self.first_index
        if entries[0].index < first:
            entries = [e for e in entries if e.index >= first]  # the snapshot covers the rest
        if entries:
            cut = entries[0].index - first
            del self.entries[max(cut, 0):]
            self.entries.extend(entries)

    def compact(self, meta: SnapshotMeta, data: bytes) -> None:
        """See :meth:`raftpy.storage.Storage.compact`."""
        self.snapshot = (meta, data)
        self.entries = [e for e in self.entries if e.index > meta.index]

    def term_at(self, index: int) -> int | None:
        """Term of the held entry at ``index`` (or of the snapshot)."""
        if self.snapshot and index == self.snapshot[0].index:
            return self.snapshot[0].term
        offset = index - self.first_index
        if 0 <= offset < len(self.entries):
            return self.entries[offset].term
        return None
