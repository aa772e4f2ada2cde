"""Reassembly of a snapshot sent in chunks (InstallSnapshot with offsets)."""

from __future__ import annotations

from raftpy.ready import SnapshotMeta


class SnapshotReceiver:
    """Collects the chunks of one snapshot, in order."""

    __slots__ = ("_chunks", "meta", "size", "source")

    def __init__(self, meta: SnapshotMeta, source: tuple[int, int]) -> None:
        self.meta = meta
        self.source = source
        """(leader id, leader term) whose chunks these are."""
        self._chunks: list[bytes] = []
        self.size = 0

    def add(self, offset: int, data: bytes) -> bool:
        """Add the chunk at ``offset``; False if it leaves a gap (the leader resends)."""
        if offset == self.size:
            self._chunks.append(data)
            self.size += len(data)
            return True
        return offset < self.size  # a duplicate of a chunk we have

    def data(self) -> bytes:
        """The whole snapshot."""
        return b"".join(self._chunks)
