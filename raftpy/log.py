"""The in-memory Raft log: entries after the latest snapshot, and what is durable."""

from __future__ import annotations

from collections.abc import Sequence

from raftpy.messages import Entry


class RaftLog:
    """Entries ``snapshot_index + 1 .. last_index`` plus bookkeeping for the driver.

    ``_unstable_from`` is the first index not yet handed to the driver for
    persisting; ``persisted_index`` is the last index the driver confirmed durable.
    """

    __slots__ = ("_entries", "_unstable_from", "persisted_index", "snapshot_index",
                 "snapshot_term")

    def __init__(self, entries: Sequence[Entry] = (), snapshot_index: int = 0,
                 snapshot_term: int = 0) -> None:
        self.snapshot_index = snapshot_index
        self.snapshot_term = snapshot_term
        self._entries: list[Entry] = [e for e in entries if e.index > snapshot_index]
        for offset, entry in enumerate(self._entries):
            if entry.index != snapshot_index + 1 + offset:
                raise ValueError(f"log entries are not contiguous at index {entry.index}")
        self.persisted_index = self.last_index
        self._unstable_from = self.last_index + 1

    @property
    def last_index(self) -> int:
        """Index of the last entry (or of the snapshot when the log is empty)."""
        return self.snapshot_index + len(self._entries)

    @property
    def last_term(self) -> int:
        """Term of the last entry (or of the snapshot when the log is empty)."""
        return self._entries[-1].term if self._entries else self.snapshot_term

    @property
    def first_index(self) -> int:
        """Index of the first entry still held (``snapshot_index + 1``)."""
        return self.snapshot_index + 1

    def term_at(self, index: int) -> int | None:
        """Term of the entry at ``index``; None if compacted away or beyond the end."""
        if index == self.snapshot_index:
            return self.snapshot_term
        offset = index - self.snapshot_index - 1
        if 0 <= offset < len(self._entries):
            return self._entries[offset].term
        return None

    def entry(self, index: int) -> Entry:
        """The entry at ``index``, which must be held."""
        return self._entries[index - self.snapshot_index - 1]

    def slice(self, start: int, stop: int, max_count: int | None = None,
              max_bytes: int | None = None) -> list[Entry]:
        """Entries ``start .. stop-1`` (at least one if any), capped by count and bytes."""
        lo = start - self.snapshot_index - 1
        hi = stop - self.snapshot_index - 1
        if max_count is not None:
            hi = min(hi, lo + max_count)
        out = self._entries[lo:hi]
        if max_bytes is not None and len(out) > 1:
            size = 0
            for n, entry in enumerate(out):
                size += len(entry.data) + 16
                if size > max_bytes and n > 0:
                    return out[:n]
        return out

    def first_index_of_term(self, index: int) -> int:
        """The first index of the run of entries with the same term as ``index``."""
        term = self.term_at(index)
        while index > self.first_index and self.term_at(index - 1) == term:
            index -= 1
        return index

    def last_index_of_term(self, term: int) -> int | None:
        """The last index whose entry has ``term``, if the log holds one."""
        for entry in reversed(self._entries):
            if entry.term == term:
                return entry.index
            if entry.term < term:
                break
        return None

    def append(self, entry: Entry) -> None:
        """Append one entry at the end (the leader's path)."""
        self._entries.append(entry)

    def merge(self, entries: Sequence[Entry]) -> int | None:
        """Add a follower's received entries: skip those already held, cut the log at
        the first conflict (Raft §3.5) and append the rest. Callers guarantee that
        the entries start at most one past the end and that no committed entry is cut.
        Returns the first index appended (None if every entry was held already).
        """
        for n, entry in enumerate(entries):
            if entry.index <= self.snapshot_index:
                continue  # covered by the snapshot, hence committed and matching
            existing = self.term_at(entry.index)
            if existing == entry.term:
                continue
            if existing is not None:
                self.truncate_from(entry.index)
            self._entries.extend(entries[n:])
            return entry.index
        return None

    def truncate_from(self, index: int) -> None:
        """Drop entries at ``index`` and after."""
        del self._entries[index - self.snapshot_index - 1:]
        self._unstable_from = min(self._unstable_from, index)
        self.persisted_index = min(self.persisted_index, index - 1)

    def take_unstable(self) -> list[Entry]:
        """Entries not yet handed out for persisting; they count as handed out now."""
        start = self._unstable_from
        last = self.snapshot_index + len(self._entries)  # last_index, inlined (hot path)
        self._unstable_from = last + 1
        if start > last:
            return []
        return self._entries[max(start - self.snapshot_index - 1, 0):]

    def has_unstable(self) -> bool:
        """Whether :meth:`take_unstable` would return entries."""
        return self._unstable_from <= self.snapshot_index + len(self._entries)

    def persisted(self, last: Entry) -> None:
        """The driver made entries up to ``last`` durable (if ``last`` is still held)."""
        if last.index > self.persisted_index and self.term_at(last.index) == last.term:
            self.persisted_index = min(last.index, self._unstable_from - 1)

    def compact(self, index: int, term: int) -> None:
        """Forget entries up to ``index`` (covered by a snapshot at ``index``/``term``)."""
        if index <= self.snapshot_index:
            return
        if index >= self.last_index or self.term_at(index) != term:
            # Nothing after the snapshot survives: what was persisted or handed out
            # beyond it belonged to the dropped tail and must not count any more.
            self._entries = []
            self.persisted_index = index
            self._unstable_from = index + 1
        else:
            del self._entries[: index - self.snapshot_index]
            self.persisted_index = max(self.persisted_index, index)
            self._unstable_from = max(self._unstable_from, index + 1)
        self.snapshot_index = index
        self.snapshot_term = term

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[Entry]:
        """A copy of the held entries."""
        return list(self._entries)
