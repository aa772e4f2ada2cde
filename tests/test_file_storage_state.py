"""FileStorage's state file: a hard-state change costs one fdatasync, a write torn
at any byte leaves the old or the new hard state, damage to both slots is refused."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from raftpy.errors import CorruptLog, StorageError
from raftpy.messages import Entry
from raftpy.ready import HardState
from raftpy.storage.file import FileStorage
from raftpy.storage.metadata import META_MAGIC, write_checked
from raftpy.storage.statefile import (
    RECORD_SIZE,
    SLOT_SIZE,
    STATE_FILE_SIZE,
    encode_record,
    read_slots,
)


def open_fs(path: Path, *, sync: bool = False) -> FileStorage:
    # No fsync unless a test counts them: recovery decides the same either way.
    return FileStorage(path, node_id=1, cluster_id="c", sync=sync)


def hard_state_of(path: Path) -> HardState:
    with open_fs(path) as fs:
        return fs.load()[0].hard_state


def seqs(path: Path) -> list[int]:
    return [slot.seq for slot in read_slots(str(path / "state"))]


def flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x10
    path.write_bytes(bytes(raw))


# ---------------------------------------------------------------------- layout and syncs

def test_a_new_directory_holds_metadata_and_a_preallocated_state_file(tmp_path: Path) -> None:
    with open_fs(tmp_path):
        pass
    assert sorted(os.listdir(tmp_path)) == ["LOCK", "metadata", "state"]
    assert os.path.getsize(tmp_path / "state") == STATE_FILE_SIZE == 2 * SLOT_SIZE
    assert seqs(tmp_path) == [0, -1]  # the second slot is blank until the first save
    assert hard_state_of(tmp_path) == HardState(0, None)


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every fsync and fdatasync FileStorage makes, by kind."""
    calls: list[str] = []
    real_fsync, real_datasync = os.fsync, getattr(os, "fdatasync", os.fsync)

    def fsync(fd: int) -> None:
        calls.append("fsync")
        real_fsync(fd)

    def datasync(fd: int) -> None:
        calls.append("fdatasync")
        real_datasync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr("raftpy.storage.segments._datasync", datasync)
    monkeypatch.setattr("raftpy.storage.statefile._datasync", datasync)
    yield calls


def test_a_hard_state_change_costs_one_fdatasync_and_nothing_else(
        tmp_path: Path, syncs: list[str]) -> None:
    with open_fs(tmp_path, sync=True) as fs:
        fs.save(None, [Entry(1, 1, b"a")])  # the segment exists from now on
        meta = (tmp_path / "metadata").read_bytes()
        syncs.clear()
        fs.save(HardState(2, 1))
        assert syncs == ["fdatasync"]
        syncs.clear()
        fs.save(HardState(2, 1))  # unchanged: nothing to write
        assert syncs == []
        fs.save(HardState(3, None), [Entry(2, 3, b"b")])
        assert syncs == ["fdatasync", "fdatasync"]  # the state file, then the segment
    assert (tmp_path / "metadata").read_bytes() == meta
    assert hard_state_of(tmp_path) == HardState(3, None)


# ---------------------------------------------------------------------- alternating slots

def test_saves_alternate_between_the_slots_and_survive_reopens(tmp_path: Path) -> None:
    expected = HardState(0, None)
    for term in range(1, 41):
        with open_fs(tmp_path) as fs:
            assert fs.load()[0].hard_state == expected
            for vote in (None, term % 5 + 1)[: 1 + term % 2]:  # one or two saves per life
                expected = HardState(term, vote)
                fs.save(expected)
    assert expected == HardState(40, None)
    assert hard_state_of(tmp_path) == expected
    total = sum(1 + term % 2 for term in range(1, 41))
    assert sorted(seqs(tmp_path)) == [total - 1, total]
    assert seqs(tmp_path)[total % 2] == total  # record n lives in slot n % 2


def test_large_terms_and_votes_round_trip(tmp_path: Path) -> None:
    for hard_state in (HardState(2**64 - 1, 2**63 - 1), HardState(7, -3), HardState(8, 0)):
        with open_fs(tmp_path) as fs:
            fs.save(hard_state)
        assert hard_state_of(tmp_path) == hard_state


def test_a_hard_state_the_format_cannot_hold_is_refused_before_writing(tmp_path: Path) -> None:
    with open_fs(tmp_path) as fs:
        fs.save(HardState(5, 2))
        with pytest.raises(StorageError, match="does not fit"):
            fs.save(HardState(2**64, None))
        fs.save(HardState(6, None))  # nothing was written: the storage is still usable
    assert hard_state_of(tmp_path) == HardState(6, None)


# ---------------------------------------------------------------------- torn writes

OLD, CURRENT, NEW = HardState(3, 1), HardState(4, 2), HardState(5, None)


def torn_variants(old: bytes, new: bytes, cut: int) -> dict[str, bytes]:
    """What a slot can hold after a write of ``new`` over ``old`` stopped after
    ``cut`` bytes: the bytes reached the disk in order, out of order, or the
    rest of the sector was left zeroed or scrambled."""
    return {
        "new prefix": new[:cut] + old[cut:],
        "new suffix": old[:cut] + new[cut:],
        "prefix then zeros": new[:cut] + bytes(RECORD_SIZE - cut),
        "prefix then garbage": new[:cut] + bytes(b ^ 0xA5 for b in new[cut:]),
    }


def test_a_state_write_torn_at_every_byte_leaves_the_old_or_the_new_hard_state(
        tmp_path: Path) -> None:
    with open_fs(tmp_path) as fs:
        fs.save(OLD)
        fs.save(CURRENT)
    before = (tmp_path / "state").read_bytes()
    with open_fs(tmp_path) as fs:
        fs.save(NEW)
    after = (tmp_path / "state").read_bytes()

    # The write changed only the record of one slot: the one holding the older record.
    changed = [i for i in range(STATE_FILE_SIZE) if before[i] != after[i]]
    start = changed[0] // SLOT_SIZE * SLOT_SIZE
    assert all(start <= i < start + RECORD_SIZE for i in changed)
    old_slot = [s for s in read_slots(str(tmp_path / "state")) if s.offset == start]
    assert (start, old_slot[0].hard_state) == (SLOT_SIZE, NEW)  # seq 3 -> slot 1
    old, new = before[start:start + RECORD_SIZE], after[start:start + RECORD_SIZE]
    assert new == encode_record(3, NEW) and old == encode_record(1, OLD)

    cases = 0
    for cut in range(RECORD_SIZE + 1):
        for how, slot in torn_variants(old, new, cut).items():
            torn = before[:start] + slot + before[start + RECORD_SIZE:]
            (tmp_path / "state").write_bytes(torn)
            expected = NEW if slot == new else CURRENT
            assert hard_state_of(tmp_path) == expected, f"{how}, {cut} bytes"
            # Life goes on: the next save overwrites the torn slot, not the good one.
            with open_fs(tmp_path) as fs:
                fs.save(HardState(9, 3))
            assert hard_state_of(tmp_path) == HardState(9, 3), f"{how}, {cut} bytes"
            cases += 1
    assert cases == 4 * (RECORD_SIZE + 1)


def test_both_slots_damaged_is_refused_with_the_file_and_offset(tmp_path: Path) -> None:
    with open_fs(tmp_path) as fs:
        fs.save(OLD)
        fs.save(CURRENT)
    state = tmp_path / "state"
    flip(state, 20)
    assert hard_state_of(tmp_path) == OLD  # the newer record (slot 0) is damaged
    flip(state, SLOT_SIZE + 20)
    with pytest.raises(CorruptLog) as info:
        open_fs(tmp_path)
    assert (info.value.path, info.value.offset) == (str(state), 0)
    assert info.value.reason == (f"no valid slot (offset 0: record checksum mismatch; "
                                 f"offset {SLOT_SIZE}: record checksum mismatch)")


@pytest.mark.parametrize("offset", [0, 8, 16, 24, 28, 36, RECORD_SIZE - 1])
def test_a_damaged_slot_falls_back_to_the_other(tmp_path: Path, offset: int) -> None:
    with open_fs(tmp_path) as fs:
        fs.save(OLD)  # seq 1, slot 1
        fs.save(CURRENT)  # seq 2, slot 0
    flip(tmp_path / "state", offset)  # the newer record: as if its write was torn
    assert hard_state_of(tmp_path) == OLD
    with open_fs(tmp_path) as fs:
        fs.save(NEW)
    flip(tmp_path / "state", SLOT_SIZE + offset)  # now the older record is damaged
    assert hard_state_of(tmp_path) == NEW


def test_a_fresh_state_file_with_its_only_record_damaged_is_refused(tmp_path: Path) -> None:
    with open_fs(tmp_path):
        pass
    flip(tmp_path / "state", 9)
    with pytest.raises(CorruptLog, match="offset 4096: slot never written"):
        open_fs(tmp_path)


@pytest.mark.parametrize("size", [0, RECORD_SIZE, STATE_FILE_SIZE - 1, STATE_FILE_SIZE + 1])
def test_a_state_file_of_the_wrong_size_is_refused(tmp_path: Path, size: int) -> None:
    with open_fs(tmp_path) as fs:
        fs.save(OLD)
    state = tmp_path / "state"
    state.write_bytes(state.read_bytes().ljust(size, b"\0")[:size])
    with pytest.raises(CorruptLog, match=f"state file is {size} bytes, expected 8192") as info:
        open_fs(tmp_path)
    assert info.value.path == str(state)


def test_a_checksummed_record_in_the_wrong_slot_is_refused(tmp_path: Path) -> None:
    with open_fs(tmp_path):
        pass
    state = tmp_path / "state"
    raw = state.read_bytes()
    state.write_bytes(raw[:SLOT_SIZE] + encode_record(2, NEW) + raw[SLOT_SIZE + RECORD_SIZE:])
    with pytest.raises(CorruptLog, match="record 2 belongs in slot 0, found in 1") as info:
        open_fs(tmp_path)
    assert info.value.offset == SLOT_SIZE


# ---------------------------------------------------------------------- the directory

def test_metadata_without_a_state_file_is_refused(tmp_path: Path) -> None:
    with open_fs(tmp_path) as fs:
        fs.save(OLD)
    os.unlink(tmp_path / "state")
    with pytest.raises(StorageError, match="no state file: the term and vote are lost"):
        open_fs(tmp_path)


def test_a_blank_state_file_without_metadata_is_an_interrupted_creation(
        tmp_path: Path) -> None:
    with open_fs(tmp_path):
        pass
    os.unlink(tmp_path / "metadata")  # the crash came before the metadata file
    with open_fs(tmp_path) as fs:
        fs.save(OLD)
    assert hard_state_of(tmp_path) == OLD


def test_a_state_file_with_a_term_but_no_metadata_is_refused(tmp_path: Path) -> None:
    with open_fs(tmp_path) as fs:
        fs.save(OLD)
    os.unlink(tmp_path / "metadata")
    with pytest.raises(StorageError, match="state file with term 3 but no metadata"):
        open_fs(tmp_path)


def test_a_format_1_directory_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    body = msgpack.packb({"format": 1, "node_id": 1, "cluster_id": "c", "term": 4,
                          "voted_for": 2}, use_bin_type=True)
    write_checked(str(tmp_path / "metadata"), META_MAGIC, [body], sync=False)
    with pytest.raises(StorageError) as info:
        open_fs(tmp_path)
    assert not isinstance(info.value, CorruptLog)
    assert str(info.value) == (f"{tmp_path} is a format 1 data directory (term and vote in "
                               f"the metadata file); this raftpy reads format 2 only")
