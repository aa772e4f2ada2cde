"""Durable storage in a directory: metadata, log segments and snapshots.

Layout of a data directory (formats in ``docs/storage.md``)::

    metadata                  node id, cluster id (written once, atomically)
    state                     term and vote, in two slots overwritten in turn
    log-<first index>.seg     the log, in segments of framed, checksummed records
    snapshot-<index>.snap     the latest snapshot (older ones are deleted)
    LOCK                      flock'ed while a FileStorage has the directory open

Every method blocks on disk I/O and returns once its data is durable; the class
keeps no thread affinity, so a Trio driver calls it through
``trio.to_thread.run_sync``. Calls must not overlap (the driver serializes them).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from raftpy.errors import CorruptLog, StorageError
from raftpy.messages import Entry
from raftpy.node import PersistentState
from raftpy.ready import HardState, SnapshotMeta
from raftpy.storage.metadata import (
    TMP_SUFFIX,
    Metadata,
    fsync_dir,
    read_metadata,
    write_metadata,
)
from raftpy.storage.records import encode_entry
from raftpy.storage.segments import Segment, recover, segment_first_index
from raftpy.storage.snapfiles import (
    read_snapshot,
    snapshot_index,
    snapshot_name,
    write_snapshot,
)
from raftpy.storage.statefile import StateFile

logger = logging.getLogger(__name__)

METADATA = "metadata"
STATE = "state"
LOCK = "LOCK"
DEFAULT_SEGMENT_SIZE = 8 * 1024 * 1024


class FileStorage:
    """A node's durable state in the directory ``path`` (created if missing).

    A new directory is stamped with ``node_id`` and ``cluster_id``; opening one
    stamped with other ids raises :class:`~raftpy.errors.StorageError`. Opening
    recovers from a crash: a torn last record is cut off, damage anywhere else
    raises :class:`~raftpy.errors.CorruptLog`. ``segment_size`` is the size at
    which the current segment is sealed and a new one started. ``sync=False``
    skips every fsync (tests and benchmarks only: nothing is durable then).
    """

    def __init__(self, path: str | os.PathLike[str], *, node_id: int, cluster_id: str,
                 segment_size: int = DEFAULT_SEGMENT_SIZE, sync: bool = True) -> None:
        if segment_size < 1:
            raise ValueError(f"segment_size must be positive, got {segment_size}")
        self.path = os.fspath(path)
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.segment_size = segment_size
        self.sync = sync
        self._segments: list[Segment] = []
        self._snapshot: SnapshotMeta | None = None
        self._broken: BaseException | None = None
        self._closed = False
        self._state: StateFile | None = None
        os.makedirs(self.path, exist_ok=True)
        self._lock_fd = _lock(self.path)
        try:
            self._open_metadata()
            self._remove_temporaries()
            self._state = self._open_state()
            self._snapshot = self._open_snapshots()
            self._segments = self._open_segments()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ the Storage protocol

    def load(self) -> tuple[PersistentState, bytes | None]:
        """See :meth:`raftpy.storage.Storage.load`."""
        self._check_usable()
        snap = self._snapshot
        start = snap.index + 1 if snap else 1
        entries: list[Entry] = []
        data = None
        try:
            for segment in self._segments:
                if segment.last_index >= start:
                    entries.extend(segment.read_entries(start))
            if snap is not None:
                data = read_snapshot(self._snapshot_path(snap.index), snap.index)[1]
        except OSError as exc:
            raise StorageError(f"{self.path}: read failed: {exc}") from exc
        assert self._state is not None
        return PersistentState(self._state.hard_state, tuple(entries), snap), data

    def save(
        self,
        hard_state: HardState | None = None,
        entries: Sequence[Entry] = (),
        snapshot: tuple[SnapshotMeta, bytes] | None = None,
    ) -> None:
        """See :meth:`raftpy.storage.Storage.save`. All ``entries`` go out in one
        write and one fsync, so callers batch as many as they can per call."""
        self._check_usable()
        self._guard(self._save, hard_state, entries, snapshot)

    def compact(self, meta: SnapshotMeta, data: bytes) -> None:
        """See :meth:`raftpy.storage.Storage.compact`: store the snapshot, then
        delete the segments it wholly covers (a segment that also holds later
        entries stays until a later snapshot covers it)."""
        self._check_usable()
        self._guard(self._compact, meta, data)

    def close(self) -> None:
        """Release the directory; further calls raise StorageError. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._state is not None:
            self._state.close()
        for segment in self._segments:
            segment.close()
        os.close(self._lock_fd)

    def __enter__(self) -> FileStorage:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------ introspection

    @property
    def first_index(self) -> int:
        """Index of the first entry :meth:`load` returns (one past the snapshot)."""
        return self._snapshot.index + 1 if self._snapshot else 1

    @property
    def last_index(self) -> int:
        """Index of the last held entry (the snapshot's if no entry follows it)."""
        if self._segments:
            return self._segments[-1].last_index
        return self._snapshot.index if self._snapshot else 0

    @property
    def segment_files(self) -> list[str]:
        """Paths of the live segment files, oldest first."""
        return [s.path for s in self._segments]

    # ------------------------------------------------------------------ writing

    def _save(self, hard_state: HardState | None, entries: Sequence[Entry],
              snapshot: tuple[SnapshotMeta, bytes] | None) -> None:
        if snapshot is not None:
            meta, data = snapshot
            self._store_snapshot(meta, data, self._term_at(meta.index) != meta.term)
        assert self._state is not None
        if hard_state is not None and hard_state != self._state.hard_state:
            self._state.write(hard_state, sync=self.sync)  # one pwrite, one fdatasync
        first = self.first_index
        entries = [e for e in entries if e.index >= first]  # the snapshot covers the rest
        if entries:
            self._append(entries)

    def _append(self, entries: list[Entry]) -> None:
        start = entries[0].index
        for offset, entry in enumerate(entries):
            if entry.index != start + offset:
                raise StorageError(f"entries to save are not contiguous at index {entry.index}")
        last = self.last_index
        if start > last + 1:
            raise StorageError(f"entries start at index {start}, leaving a gap after {last}")
        if start <= last:
            self._truncate_from(start)
        segments = self._segments
        if not segments or segments[-1].size >= self.segment_size:
            if segments:
                segments[-1].close()  # sealed: it was fsynced by the append that filled it
            segments.append(Segment.new(self.path, start))
        segments[-1].append([encode_entry(e) for e in entries], sync=self.sync)

    def _truncate_from(self, index: int) -> None:
        """Drop held entries at ``index`` and after, durably, last segment first, so
        that a crash part-way leaves a shorter but gapless log."""
        segments = self._segments
        while segments and segments[-1].first_index >= index:
            segments.pop().remove()
            if self.sync:
                fsync_dir(self.path)
        if segments and segments[-1].last_index >= index:
            segments[-1].truncate_from(index, sync=self.sync)

    def _compact(self, meta: SnapshotMeta, data: bytes) -> None:
        held = self._term_at(meta.index)
        if held is not None and held != meta.term:
            raise StorageError(f"snapshot at index {meta.index} has term {meta.term}, "
                               f"but the log holds term {held} there")
        self._store_snapshot(meta, data, False)

    def _store_snapshot(self, meta: SnapshotMeta, data: bytes, drop_log: bool) -> None:
        """Write the snapshot, then drop the segments it makes useless: all of them
        when ``drop_log`` (the log disagrees with it), else the wholly covered ones."""
        if self._snapshot is not None and meta.index <= self._snapshot.index:
            logger.debug("%s: ignoring snapshot at %d, not newer than the one at %d",
                         self.path, meta.index, self._snapshot.index)
            return
        write_snapshot(self.path, meta, data, sync=self.sync)
        old = self._snapshot
        self._snapshot = meta
        if drop_log:
            self._truncate_from(0)
        else:
            self._drop_covered()
        if old is not None:
            os.unlink(self._snapshot_path(old.index))
        if self.sync:
            fsync_dir(self.path)

    def _drop_covered(self) -> None:
        """Delete the segments whose every entry is covered by the snapshot, oldest
        first, each deletion durable before the next, so that a crash part-way
        leaves a gapless run of them behind (opening finishes the job)."""
        assert self._snapshot is not None
        while self._segments and self._segments[0].last_index <= self._snapshot.index:
            self._segments.pop(0).remove()
            if self.sync:
                fsync_dir(self.path)

    # ------------------------------------------------------------------ opening

    def _open_metadata(self) -> None:
        path = os.path.join(self.path, METADATA)
        if not os.path.exists(path):
            self._initialise(path)
            return
        meta = read_metadata(path)
        if (meta.node_id, meta.cluster_id) != (self.node_id, self.cluster_id):
            raise StorageError(
                f"{self.path} belongs to node {meta.node_id} of cluster {meta.cluster_id!r}, "
                f"not to node {self.node_id} of cluster {self.cluster_id!r}")

    def _initialise(self, meta_path: str) -> None:
        """Stamp a directory without metadata: the state file first, the metadata
        file last, each durable before the next, so that a directory with metadata
        always has its state file. A state file without metadata is therefore left
        by a crash during this, and holds nothing (term 0, no vote)."""
        leftovers = [n for n in os.listdir(self.path)
                     if segment_first_index(n) is not None or snapshot_index(n) is not None]
        if leftovers:
            raise StorageError(f"{self.path} holds {len(leftovers)} log or snapshot "
                               f"files but no metadata file: refusing to guess its owner")
        state_path = os.path.join(self.path, STATE)
        if os.path.exists(state_path):
            state = StateFile.open(state_path)
            state.close()
            if state.hard_state != HardState(0, None):
                raise StorageError(f"{self.path} holds a state file with term "
                                   f"{state.hard_state.term} but no metadata file: "
                                   f"refusing to guess its owner")
        StateFile.create(state_path, sync=self.sync)
        if self.sync:
            fsync_dir(self.path)
        write_metadata(meta_path, Metadata(self.node_id, self.cluster_id), sync=self.sync)
        if self.sync:
            # The directory may be new: its own name must be durable too, or a
            # crash could take a granted vote with it.
            fsync_dir(os.path.dirname(os.path.abspath(self.path)))
        logger.info("%s: new data directory for node %d of cluster %r", self.path,
                    self.node_id, self.cluster_id)

    def _open_state(self) -> StateFile:
        path = os.path.join(self.path, STATE)
        if not os.path.exists(path):
            raise StorageError(f"{self.path} has a metadata file but no state file: "
                               f"the term and vote are lost")
        return StateFile.open(path)

    def _remove_temporaries(self) -> None:
        for name in os.listdir(self.path):
            if name.endswith(TMP_SUFFIX):
                os.unlink(os.path.join(self.path, name))  # an atomic write cut short

    def _open_snapshots(self) -> SnapshotMeta | None:
        """The newest snapshot (checked); older ones, left by a crash, are deleted."""
        indexes = sorted(i for i in map(snapshot_index, os.listdir(self.path)) if i is not None)
        if not indexes:
            return None
        meta, _ = read_snapshot(self._snapshot_path(indexes[-1]), indexes[-1])
        for index in indexes[:-1]:
            os.unlink(self._snapshot_path(index))
        return meta

    def _open_segments(self) -> list[Segment]:
        found = sorted((i, n) for n in os.listdir(self.path)
                       if (i := segment_first_index(n)) is not None)
        snap = self._snapshot
        names = [n for _, n in found]
        firsts = [i for i, _ in found]
        if snap is not None:
            # A segment is wholly covered when the next one starts at or before the
            # snapshot's index: such leftovers of a cut-short compaction go unread.
            # The segment holding the snapshot's index itself is read, because its
            # term there tells whether the log continues the snapshot (rule 7 in docs/storage.md).
            while len(firsts) > 1 and firsts[1] <= snap.index:
                os.unlink(os.path.join(self.path, names.pop(0)))
                firsts.pop(0)
                if self.sync:
                    fsync_dir(self.path)
        segments: list[Segment] = []
        for n, (first, name) in enumerate(zip(firsts, names, strict=True)):
            segment = recover(os.path.join(self.path, name), first,
                              last=n == len(names) - 1, sync=self.sync)
            if segment is None:
                continue
            expected = segments[-1].last_index + 1 if segments else None
            if expected is not None and first != expected:
                raise _gap(segment.path, first, expected)
            segments.append(segment)
        if snap is not None:
            segments = self._reconcile(segments, snap)
        elif segments and segments[0].first_index != 1:
            raise _gap(segments[0].path, segments[0].first_index, 1)
        if self.sync:
            fsync_dir(self.path)
        return segments

    def _reconcile(self, segments: list[Segment], snap: SnapshotMeta) -> list[Segment]:
        """Finish what a crash interrupted: keep the log only if it continues the
        snapshot (holds the snapshot's entry with its term, or starts right after
        it: no segment holding that entry is left, so a compaction removed it)."""
        if not segments:
            return segments
        first, last = segments[0].first_index, segments[-1].last_index
        if first > snap.index + 1:
            raise _gap(segments[0].path, first, snap.index + 1)
        if last <= snap.index:
            logger.info("%s: dropping log %d..%d, covered by the snapshot at %d", self.path,
                        first, last, snap.index)
        elif first == snap.index + 1 or _term_in(segments, snap.index) == snap.term:
            while segments[0].last_index <= snap.index:
                segments.pop(0).remove()
            return segments
        else:
            logger.warning("%s: dropping log %d..%d, which disagrees with the snapshot at "
                           "%d", self.path, first, last, snap.index)
        for segment in reversed(segments):
            segment.remove()
            if self.sync:
                fsync_dir(self.path)
        return []

    # ------------------------------------------------------------------ helpers

    def _term_at(self, index: int) -> int | None:
        return _term_in(self._segments, index)

    def _snapshot_path(self, index: int) -> str:
        return os.path.join(self.path, snapshot_name(index))

    def _check_usable(self) -> None:
        if self._closed:
            raise StorageError(f"{self.path}: storage is closed")
        if self._broken is not None:
            raise StorageError(f"{self.path}: an earlier write failed ({self._broken}); "
                               f"reopen the directory to recover")

    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        """Run a write; an I/O error leaves memory and disk possibly out of step (and
        after a failed fsync the page cache cannot be trusted), so refuse further use."""
        try:
            fn(*args)
        except OSError as exc:
            self._broken = exc
            raise StorageError(f"{self.path}: write failed: {exc}") from exc


def _term_in(segments: list[Segment], index: int) -> int | None:
    for segment in segments:
        if segment.first_index <= index <= segment.last_index:
            return segment.term_at(index)
    return None


def _gap(path: str, first: int, expected: int) -> CorruptLog:
    return CorruptLog(path, 0, f"segment starts at index {first}, expected {expected}: "
                               f"entries are missing")


if sys.platform != "win32":
    import fcntl

    def _lock(path: str) -> int:
        fd = os.open(os.path.join(path, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StorageError(f"{path} is in use by another FileStorage") from None
        return fd
else:  # pragma: no cover - no flock on Windows: the directory is not guarded
    def _lock(path: str) -> int:
        return os.open(os.path.join(path, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
