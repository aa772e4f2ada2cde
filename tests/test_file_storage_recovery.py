"""Crash recovery of FileStorage's log: a torn tail is cut at every possible byte,
damage anywhere else is refused with the file and offset, never accepted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from raftpy.errors import CorruptLog
from raftpy.messages import Entry
from raftpy.storage.file import FileStorage
from raftpy.storage.records import encode_entry
from raftpy.storage.segments import SEG_HEADER_SIZE, segment_name

# Three segments (one per save): 1-3, 4-6 and 7-9; the last record is the largest.
BATCHES = [[Entry(i, 1, b"a" * (7 * i)) for i in range(1, 4)],
           [Entry(i, 2, b"b" * (5 * i)) for i in range(4, 7)],
           [Entry(7, 2, b"c"), Entry(8, 3, b"d" * 40), Entry(9, 3, b"e" * 150)]]
ALL = [e for batch in BATCHES for e in batch]
LAST = segment_name(7)


def open_fs(path: Path) -> FileStorage:
    # No fsync: recovery takes the same decisions, and hundreds of reopens stay fast.
    return FileStorage(path, node_id=1, cluster_id="c", segment_size=1, sync=False)


def record_starts(batch: list[Entry]) -> list[int]:
    """Where each entry's record starts in its segment, from the documented format."""
    starts, pos = [], SEG_HEADER_SIZE
    for entry in batch:
        starts.append(pos)
        pos += len(encode_entry(entry))
    return starts


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The files of a data directory holding ``BATCHES``."""
    path = tmp_path_factory.mktemp("pristine")
    with open_fs(path) as fs:
        for batch in BATCHES:
            fs.save(None, batch)
    assert sorted(n for n in os.listdir(path) if n.endswith(".seg")) == [
        segment_name(1), segment_name(4), LAST]
    return {name: (path / name).read_bytes() for name in os.listdir(path) if name != "LOCK"}


def lay_out(path: Path, files: dict[str, bytes]) -> None:
    """Make ``path`` hold exactly ``files``."""
    path.mkdir(exist_ok=True)
    for name in os.listdir(path):
        os.unlink(path / name)
    for name, data in files.items():
        (path / name).write_bytes(data)


def recovered(path: Path) -> list[Entry]:
    with open_fs(path) as fs:
        return list(fs.load()[0].entries)


def test_the_pristine_log_reads_back(tmp_path: Path, pristine: dict[str, bytes]) -> None:
    lay_out(tmp_path, pristine)
    assert recovered(tmp_path) == ALL
    assert len(pristine[LAST]) == record_starts(BATCHES[2])[-1] + len(encode_entry(ALL[-1]))


def test_a_tail_torn_at_every_offset_of_the_last_record_is_cut_off(
        tmp_path: Path, pristine: dict[str, bytes]) -> None:
    start = record_starts(BATCHES[2])[-1]
    for cut in range(start, len(pristine[LAST])):
        lay_out(tmp_path, {**pristine, LAST: pristine[LAST][:cut]})
        assert recovered(tmp_path) == ALL[:-1], f"cut at {cut}"
        assert os.path.getsize(tmp_path / LAST) == start, f"cut at {cut}"
    # After the cut the log carries on: the lost entry can be written again.
    with open_fs(tmp_path) as fs:
        fs.save(None, [ALL[-1]])
    assert recovered(tmp_path) == ALL


def test_a_new_segment_torn_at_every_offset_is_removed(
        tmp_path: Path, pristine: dict[str, bytes]) -> None:
    lay_out(tmp_path, pristine)
    with open_fs(tmp_path) as fs:
        fs.save(None, [Entry(10, 3, b"f" * 30)])
    newest = segment_name(10)
    full = (tmp_path / newest).read_bytes()
    for cut in range(len(full)):
        lay_out(tmp_path, {**pristine, newest: full[:cut]})
        assert recovered(tmp_path) == ALL, f"cut at {cut}"
        assert not (tmp_path / newest).exists(), f"cut at {cut}"


@pytest.mark.parametrize("zeros", [1, 11, 12, 13, 200, 4096])
def test_zeros_after_the_last_record_are_cut_off(
        tmp_path: Path, pristine: dict[str, bytes], zeros: int) -> None:
    # A crash after the file grew but before its new data reached the disk.
    lay_out(tmp_path, {**pristine, LAST: pristine[LAST] + bytes(zeros)})
    assert recovered(tmp_path) == ALL
    assert os.path.getsize(tmp_path / LAST) == len(pristine[LAST])


def test_a_last_record_of_zeros_is_cut_off(tmp_path: Path, pristine: dict[str, bytes]) -> None:
    start = record_starts(BATCHES[2])[-1]
    data = pristine[LAST]
    lay_out(tmp_path, {**pristine, LAST: data[:start] + bytes(len(data) - start)})
    assert recovered(tmp_path) == ALL[:-1]


def test_every_flipped_byte_of_the_last_record_cuts_just_that_record(
        tmp_path: Path, pristine: dict[str, bytes]) -> None:
    start = record_starts(BATCHES[2])[-1]
    for pos in range(start, len(pristine[LAST])):
        data = bytearray(pristine[LAST])
        data[pos] ^= 1 << (pos % 8)
        lay_out(tmp_path, {**pristine, LAST: bytes(data)})
        assert recovered(tmp_path) == ALL[:-1], f"flip at {pos}"


def test_every_flipped_byte_anywhere_else_is_refused_with_file_and_offset(
        tmp_path: Path, pristine: dict[str, bytes]) -> None:
    cases = 0
    for first, batch in zip((1, 4, 7), BATCHES, strict=True):
        name = segment_name(first)
        starts = record_starts(batch)
        is_last = name == LAST
        end = starts[-1] if is_last else len(pristine[name])  # the last record: see above
        for pos in range(end):
            data = bytearray(pristine[name])
            data[pos] ^= 1 << (pos % 8)
            lay_out(tmp_path, {**pristine, name: bytes(data)})
            with pytest.raises(CorruptLog) as info:
                recovered(tmp_path)
            expected = max((s for s in starts if s <= pos), default=0)
            assert (info.value.path, info.value.offset) == (str(tmp_path / name), expected), \
                f"flip at {name}:{pos}: {info.value}"
            cases += 1
    assert cases == sum(len(d) for n, d in pristine.items() if n.endswith(".seg")) - (
        len(pristine[LAST]) - record_starts(BATCHES[2])[-1])


def test_a_torn_segment_before_the_last_is_refused(
        tmp_path: Path, pristine: dict[str, bytes]) -> None:
    middle = segment_name(4)
    start = record_starts(BATCHES[1])[-1]
    lay_out(tmp_path, {**pristine, middle: pristine[middle][:start + 5]})
    with pytest.raises(CorruptLog) as info:
        recovered(tmp_path)
    assert (info.value.path, info.value.offset) == (str(tmp_path / middle), start)


def test_a_missing_segment_is_refused(tmp_path: Path, pristine: dict[str, bytes]) -> None:
    lay_out(tmp_path, {n: d for n, d in pristine.items() if n != segment_name(4)})
    with pytest.raises(CorruptLog, match="starts at index 7, expected 4") as info:
        recovered(tmp_path)
    assert info.value.path == str(tmp_path / LAST)


def test_a_log_not_starting_at_one_without_a_snapshot_is_refused(
        tmp_path: Path, pristine: dict[str, bytes]) -> None:
    lay_out(tmp_path, {n: d for n, d in pristine.items() if n != segment_name(1)})
    with pytest.raises(CorruptLog, match="starts at index 4, expected 1"):
        recovered(tmp_path)


def test_damage_followed_by_intact_records_in_the_last_segment_is_refused(
        tmp_path: Path, pristine: dict[str, bytes]) -> None:
    # Zeros where entry 8 was, entry 9 intact after it: not a torn write.
    starts = record_starts(BATCHES[2])
    data = pristine[LAST]
    lay_out(tmp_path, {**pristine,
                       LAST: data[:starts[1]] + bytes(starts[2] - starts[1]) + data[starts[2]:]})
    with pytest.raises(CorruptLog) as info:
        recovered(tmp_path)
    assert (info.value.offset, info.value.reason) == (starts[1], "record header checksum mismatch")
