"""FileStorage against MemoryStorage: random sequences of appends, conflicting
overwrites, hard-state changes (alone or with entries), compactions, installed
snapshots, torn log tails, torn hard-state writes and reopenings must leave both
loading exactly the same state."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from raftpy.messages import Entry, EntryKind
from raftpy.ready import HardState, SnapshotMeta
from raftpy.storage.file import FileStorage
from raftpy.storage.memory import MemoryStorage
from raftpy.storage.records import encode_entry
from raftpy.storage.statefile import SLOT_SIZE, encode_record, read_slots

payloads = st.binary(max_size=40)
segment_sizes = st.sampled_from([1, 64, 200, 1 << 20])


class FileMatchesMemory(RuleBasedStateMachine):
    """One FileStorage and its model, driven by the same calls."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="raftpy-fs-model-")
        self.model = MemoryStorage()
        self.fs = self._open(200)
        self.top_term = 1  # the highest term used so far: new conflicting entries go above it

    def _open(self, segment_size: int) -> FileStorage:
        return FileStorage(self.dir, node_id=1, cluster_id="model",
                           segment_size=segment_size, sync=False)

    def teardown(self) -> None:
        self.fs.close()
        shutil.rmtree(self.dir)

    # ------------------------------------------------------------------ helpers

    @property
    def last(self) -> int:
        model = self.model
        return model.entries[-1].index if model.entries else model.first_index - 1

    @property
    def last_term(self) -> int:
        model = self.model
        if model.entries:
            return model.entries[-1].term
        return model.snapshot[0].term if model.snapshot else 0

    def _entries(self, start: int, term: int, data: list[bytes], noop: bool) -> list[Entry]:
        kind = EntryKind.NOOP if noop else EntryKind.COMMAND
        return [Entry(start + n, term, d, kind) for n, d in enumerate(data)]

    def _save(self, hard_state: HardState | None = None, entries: list[Entry] | None = None,
              snapshot: tuple[SnapshotMeta, bytes] | None = None) -> None:
        self.model.save(hard_state, entries or (), snapshot)
        self.fs.save(hard_state, entries or (), snapshot)

    # ------------------------------------------------------------------ rules

    @rule(data=st.lists(payloads, min_size=1, max_size=8), new_term=st.booleans(),
          noop=st.booleans())
    def append(self, data: list[bytes], new_term: bool, noop: bool) -> None:
        term = self.last_term
        if new_term or term == 0:
            self.top_term += 1
            term = self.top_term
        self._save(None, self._entries(self.last + 1, term, data, noop))

    @precondition(lambda self: bool(self.model.entries))
    @rule(back=st.integers(min_value=0), data=st.lists(payloads, min_size=1, max_size=5))
    def overwrite_suffix(self, back: int, data: list[bytes]) -> None:
        start = self.model.entries[back % len(self.model.entries)].index
        self.top_term += 1
        self._save(None, self._entries(start, self.top_term, data, False))

    @rule(term_step=st.integers(min_value=0, max_value=2),
          voted_for=st.one_of(st.none(), st.integers(min_value=1, max_value=5)))
    def hard_state(self, term_step: int, voted_for: int | None) -> None:
        self.top_term += term_step
        self._save(HardState(self.top_term, voted_for))

    @rule(term_step=st.integers(min_value=0, max_value=2),
          voted_for=st.one_of(st.none(), st.integers(min_value=1, max_value=5)),
          data=st.lists(payloads, min_size=1, max_size=4), back=st.integers(min_value=0))
    def hard_state_with_entries(self, term_step: int, voted_for: int | None,
                                data: list[bytes], back: int) -> None:
        """A new term and vote with entries of that term, in one save (a new leader's
        no-op, or a follower's first append in a term); they may overwrite a suffix."""
        self.top_term += max(term_step, 1)
        start = self.last + 1
        if self.model.entries:
            start -= back % (len(self.model.entries) + 1)
        self._save(HardState(self.top_term, voted_for),
                   self._entries(start, self.top_term, data, False))

    @rule(cut=st.integers(min_value=0), term_step=st.integers(min_value=0, max_value=2),
          voted_for=st.one_of(st.none(), st.integers(min_value=1, max_value=5)))
    def tear_a_hard_state_write(self, cut: int, term_step: int, voted_for: int | None) -> None:
        """A crash in the middle of writing a new hard state, then a restart: the
        save never returned, so the model keeps the old one."""
        path = os.path.join(self.dir, "state")
        self.fs.close()
        seq = max(slot.seq for slot in read_slots(path)) + 1
        new = HardState(self.top_term + term_step, voted_for)
        record = encode_record(seq, new)
        with open(path, "r+b") as f:
            f.seek(seq % 2 * SLOT_SIZE)
            f.write(record[:cut % len(record)])
            f.seek(seq % 2 * SLOT_SIZE)
            whole = f.read(len(record)) == record
        if whole:
            # The bytes not written were already those of the new record (e.g. the
            # last byte of its checksum, 1 in 256): the write did complete, and the
            # new state is what a restart must load.
            self.model.save(new, (), None)
            self.top_term = max(self.top_term, new.term)
        self.fs = self._open(200)

    def _files(self) -> dict[str, bytes]:
        return {path.name: path.read_bytes() for path in Path(self.dir).iterdir()
                if path.suffix in (".seg", ".snap")}

    def _crash_right_after_the_snapshot_file(self, before: dict[str, bytes]) -> None:
        """Put back every log and snapshot file the last call deleted after it wrote
        the new snapshot (as if it crashed then), and restart."""
        self.fs.close()
        for name, data in before.items():
            path = Path(self.dir, name)
            if not path.exists():
                path.write_bytes(data)
        self.fs = self._open(200)

    @precondition(lambda self: bool(self.model.entries))
    @rule(pick=st.integers(min_value=0), data=payloads, cut_short=st.booleans())
    def compact(self, pick: int, data: bytes, cut_short: bool) -> None:
        entry = self.model.entries[pick % len(self.model.entries)]
        meta = SnapshotMeta(entry.index, entry.term)
        before = self._files()
        self.model.compact(meta, data)
        self.fs.compact(meta, data)
        if cut_short:
            self._crash_right_after_the_snapshot_file(before)

    @rule(ahead=st.integers(min_value=-8, max_value=8), matching=st.booleans(), data=payloads,
          follow=st.lists(payloads, max_size=3), cut_short=st.booleans())
    def install_snapshot(self, ahead: int, matching: bool, data: bytes,
                         follow: list[bytes], cut_short: bool) -> None:
        before = self._files()
        index = max(self.last + ahead, self.model.first_index)  # newer than the snapshot held
        held = self.model.term_at(index)
        if matching and held is not None:
            term = held
        else:
            self.top_term += 1
            term = self.top_term
        meta = SnapshotMeta(index, term)
        if cut_short:
            follow = []  # the crash comes before any entry after the snapshot is written
        self._save(HardState(self.top_term, None), self._entries(index + 1, term, follow, False),
                   (meta, data))
        if cut_short:
            self._crash_right_after_the_snapshot_file(before)

    @precondition(lambda self: bool(self.model.entries))
    @rule(cut=st.integers(min_value=0))
    def tear_the_last_record(self, cut: int) -> None:
        """A crash in the middle of writing the last record, then a restart."""
        last_entry = self.model.entries[-1]
        path = self.fs.segment_files[-1]
        self.fs.close()
        size = os.path.getsize(path)
        start = size - len(encode_entry(last_entry))
        os.truncate(path, start + cut % (size - start))
        self.model.entries.pop()
        self.fs = self._open(200)

    @rule(segment_size=segment_sizes)
    def reopen(self, segment_size: int) -> None:
        self.fs.close()
        self.fs = self._open(segment_size)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def loads_the_same(self) -> None:
        assert self.fs.load() == self.model.load()
        assert self.fs.last_index == self.last
        assert self.fs.first_index == self.model.first_index


FileMatchesMemory.TestCase.settings = settings(max_examples=150, stateful_step_count=30,
                                               deadline=None)
TestFileMatchesMemory = FileMatchesMemory.TestCase
