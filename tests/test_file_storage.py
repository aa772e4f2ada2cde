"""FileStorage: reopen round trips, truncation, compaction, identity and metadata
checks, and a RaftNode restarted from what it persisted."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest

from raftpy import Config, RaftNode
from raftpy.errors import CorruptLog, StorageError
from raftpy.messages import Entry, EntryKind, RequestVote, RequestVoteResponse
from raftpy.ready import HardState, Role, SnapshotMeta
from raftpy.storage.file import FileStorage
from raftpy.storage.metadata import HEAD_SIZE


def open_fs(path: Path, *, node_id: int = 1, cluster_id: str = "c1",
            segment_size: int = 1 << 20) -> FileStorage:
    return FileStorage(path, node_id=node_id, cluster_id=cluster_id, segment_size=segment_size)


def run(start: int, *terms: int, tag: bytes = b"") -> list[Entry]:
    return [Entry(start + n, t, b"%s%d" % (tag, start + n)) for n, t in enumerate(terms)]


def held(fs: FileStorage) -> list[tuple[int, int, bytes]]:
    state, _ = fs.load()
    return [(e.index, e.term, e.data) for e in state.entries]


def segment_names(path: Path) -> list[str]:
    return sorted(n for n in os.listdir(path) if n.endswith(".seg"))


# ---------------------------------------------------------------------- round trips

def test_a_new_directory_loads_as_a_fresh_node(tmp_path: Path) -> None:
    with open_fs(tmp_path / "d") as fs:
        state, data = fs.load()
    assert state.hard_state == HardState(0, None)
    assert state.entries == ()
    assert state.snapshot is None
    assert data is None


def test_reopen_returns_hard_state_entries_and_snapshot(tmp_path: Path) -> None:
    entries = [Entry(1, 1, b"a"), Entry(2, 1, b"", EntryKind.NOOP), Entry(3, 2, b"c" * 300),
               Entry(4, 2, b"d")]
    with open_fs(tmp_path, segment_size=64) as fs:
        fs.save(HardState(2, 3), entries[:2])
        fs.save(None, entries[2:])
        fs.compact(SnapshotMeta(2, 1), b"state at 2")
    with open_fs(tmp_path, segment_size=64) as fs:
        state, data = fs.load()
    assert state.hard_state == HardState(2, 3)
    assert state.entries == tuple(entries[2:])
    assert state.entries[0].kind is EntryKind.COMMAND
    assert state.snapshot == SnapshotMeta(2, 1)
    assert data == b"state at 2"


def test_noop_kind_and_empty_data_survive(tmp_path: Path) -> None:
    with open_fs(tmp_path) as fs:
        fs.save(HardState(1, 1), [Entry(1, 1, b"", EntryKind.NOOP)])
    with open_fs(tmp_path) as fs:
        assert fs.load()[0].entries == (Entry(1, 1, b"", EntryKind.NOOP),)


def test_one_save_writes_one_segment_however_many_entries(tmp_path: Path) -> None:
    with open_fs(tmp_path, segment_size=100) as fs:
        fs.save(None, run(1, *[1] * 50))
        assert segment_names(tmp_path) == ["log-00000000000000000001.seg"]
        fs.save(None, run(51, 1))  # the first segment is full: a new one starts at 51
        assert segment_names(tmp_path) == ["log-00000000000000000001.seg",
                                           "log-00000000000000000051.seg"]
        assert fs.last_index == 51


def test_hard_state_alone_is_durable(tmp_path: Path) -> None:
    with open_fs(tmp_path) as fs:
        fs.save(HardState(7, None))
        fs.save(HardState(7, 2))
    with open_fs(tmp_path) as fs:
        assert fs.load()[0].hard_state == HardState(7, 2)


# ---------------------------------------------------------------------- truncation

def test_conflicting_suffix_is_replaced_across_segments(tmp_path: Path) -> None:
    with open_fs(tmp_path, segment_size=40) as fs:
        for i in range(1, 11):  # one entry per save: ten segments
            fs.save(None, run(i, 1))
        assert len(segment_names(tmp_path)) == 10
        fs.save(None, run(4, 2, 2, tag=b"new"))
        assert fs.last_index == 5
        assert segment_names(tmp_path) == [f"log-{i:020d}.seg" for i in (1, 2, 3, 4)]
    with open_fs(tmp_path, segment_size=40) as fs:
        assert held(fs) == [(1, 1, b"1"), (2, 1, b"2"), (3, 1, b"3"), (4, 2, b"new4"),
                            (5, 2, b"new5")]


def test_truncation_inside_a_segment_cuts_the_file(tmp_path: Path) -> None:
    with open_fs(tmp_path) as fs:
        fs.save(None, run(1, 1, 1, 1, 1, 1))
        size = os.path.getsize(fs.segment_files[0])
        fs.save(None, run(3, 2))
        assert os.path.getsize(fs.segment_files[0]) < size
    with open_fs(tmp_path) as fs:
        assert [(i, t) for i, t, _ in held(fs)] == [(1, 1), (2, 1), (3, 2)]


def test_entries_leaving_a_gap_are_refused(tmp_path: Path) -> None:
    with open_fs(tmp_path) as fs:
        fs.save(None, run(1, 1, 1))
        with pytest.raises(StorageError, match="gap after 2"):
            fs.save(None, run(4, 1))
        with pytest.raises(StorageError, match="not contiguous at index 5"):
            fs.save(None, [Entry(3, 1), Entry(5, 1)])
        assert fs.last_index == 2


# ---------------------------------------------------------------------- snapshots

def test_compaction_deletes_only_wholly_covered_segments(tmp_path: Path) -> None:
    with open_fs(tmp_path, segment_size=1) as fs:
        for start in (1, 4, 7):  # segments 1-3, 4-6, 7-9
            fs.save(None, run(start, 1, 1, 1))
        fs.compact(SnapshotMeta(5, 1), b"s5")
        assert segment_names(tmp_path) == [f"log-{i:020d}.seg" for i in (4, 7)]
        assert fs.first_index == 6
        fs.compact(SnapshotMeta(6, 1), b"s6")
        assert segment_names(tmp_path) == ["log-00000000000000000007.seg"]
        assert sorted(n for n in os.listdir(tmp_path) if n.endswith(".snap")) == [
            "snapshot-00000000000000000006.snap"]
    with open_fs(tmp_path, segment_size=1) as fs:
        state, data = fs.load()
    assert [e.index for e in state.entries] == [7, 8, 9]
    assert (state.snapshot, data) == (SnapshotMeta(6, 1), b"s6")


def test_compaction_past_the_log_drops_it_and_appending_continues(tmp_path: Path) -> None:
    with open_fs(tmp_path) as fs:
        fs.save(None, run(1, 1, 1))
        fs.compact(SnapshotMeta(2, 1), b"s")
        fs.compact(SnapshotMeta(3, 1), b"t")  # index 3 is not held: the whole log goes
        assert segment_names(tmp_path) == []
        fs.save(None, run(4, 1))
    with open_fs(tmp_path) as fs:
        state, data = fs.load()
    assert (state.snapshot, data, [e.index for e in state.entries]) == (
        SnapshotMeta(3, 1), b"t", [4])


def test_compaction_with_a_term_the_log_contradicts_is_refused(tmp_path: Path) -> None:
    with open_fs(tmp_path) as fs:
        fs.save(None, run(1, 1, 2))
        with pytest.raises(StorageError, match="log holds term 2"):
            fs.compact(SnapshotMeta(2, 3), b"s")


def test_installed_snapshot_that_matches_the_log_keeps_what_follows(tmp_path: Path) -> None:
    with open_fs(tmp_path, segment_size=1) as fs:
        fs.save(None, run(1, 1, 1, 1, 1, 1))
        fs.save(HardState(1, None), (), (SnapshotMeta(3, 1), b"s3"))
    with open_fs(tmp_path) as fs:
        state, data = fs.load()
    assert [e.index for e in state.entries] == [4, 5]
    assert (state.snapshot, data) == (SnapshotMeta(3, 1), b"s3")


def test_installed_snapshot_that_contradicts_the_log_replaces_it(tmp_path: Path) -> None:
    with open_fs(tmp_path, segment_size=1) as fs:
        fs.save(None, run(1, 1))
        fs.save(None, run(2, 1, 1))
        fs.save(HardState(3, None), run(7, 3, 3), (SnapshotMeta(6, 2), b"s6"))
        assert segment_names(tmp_path) == ["log-00000000000000000007.seg"]
    with open_fs(tmp_path) as fs:
        state, data = fs.load()
    assert state.hard_state == HardState(3, None)
    assert [(e.index, e.term) for e in state.entries] == [(7, 3), (8, 3)]
    assert (state.snapshot, data) == (SnapshotMeta(6, 2), b"s6")


def test_opening_finishes_a_snapshot_install_cut_short(tmp_path: Path) -> None:
    # The crash hit after the snapshot file was written and before the log it
    # contradicts was deleted: opening deletes it.
    with open_fs(tmp_path) as fs:
        fs.save(None, run(1, 1, 1, 1, 1, 1))
    keep = (tmp_path / "log-00000000000000000001.seg").read_bytes()
    with open_fs(tmp_path) as fs:
        fs.save(None, (), (SnapshotMeta(3, 2), b"s"))  # entry 3 has term 1: the log goes
    (tmp_path / "log-00000000000000000001.seg").write_bytes(keep)
    with open_fs(tmp_path) as fs:
        state, _ = fs.load()
        assert state.entries == ()
        assert state.snapshot == SnapshotMeta(3, 2)
    assert segment_names(tmp_path) == []


def test_a_cut_short_install_is_finished_even_when_a_segment_starts_after_it(
        tmp_path: Path) -> None:
    # Found by the model test: entry 1 (term 2) sits alone in the first segment and
    # the log goes on in a segment starting right after the snapshot's index. The
    # first segment must still be read to see that the snapshot (term 3 at index 1)
    # contradicts the log.
    with open_fs(tmp_path, segment_size=1) as fs:
        fs.save(None, run(1, 2))
        fs.save(None, run(2, 2))
    keep = {n: (tmp_path / n).read_bytes() for n in segment_names(tmp_path)}
    with open_fs(tmp_path) as fs:
        fs.save(HardState(3, None), (), (SnapshotMeta(1, 3), b"s"))
    for name, data in keep.items():
        (tmp_path / name).write_bytes(data)
    with open_fs(tmp_path) as fs:
        state, _ = fs.load()
    assert (state.entries, state.snapshot) == ((), SnapshotMeta(1, 3))
    assert segment_names(tmp_path) == []


def test_opening_finishes_a_compaction_cut_short(tmp_path: Path) -> None:
    with open_fs(tmp_path, segment_size=1) as fs:
        for start in (1, 4, 7):
            fs.save(None, run(start, 1, 1, 1))
    keep = {n: (tmp_path / n).read_bytes() for n in segment_names(tmp_path)}
    with open_fs(tmp_path) as fs:
        fs.compact(SnapshotMeta(7, 1), b"s")
    for name, data in keep.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "log-00000000000000000001.seg").write_bytes(b"no longer read")
    with open_fs(tmp_path) as fs:
        state, _ = fs.load()
    assert [e.index for e in state.entries] == [8, 9]
    assert segment_names(tmp_path) == ["log-00000000000000000007.seg"]


def test_a_corrupt_snapshot_file_is_refused(tmp_path: Path) -> None:
    with open_fs(tmp_path) as fs:
        fs.save(None, run(1, 1, 1))
        fs.compact(SnapshotMeta(2, 1), b"snapshot bytes")
    snap = tmp_path / "snapshot-00000000000000000002.snap"
    raw = bytearray(snap.read_bytes())
    raw[-3] ^= 0x40
    snap.write_bytes(bytes(raw))
    with pytest.raises(CorruptLog) as info:
        open_fs(tmp_path)
    assert info.value.path == str(snap)
    assert "checksum" in info.value.reason


# ---------------------------------------------------------------------- identity and metadata

@pytest.mark.parametrize(("node_id", "cluster_id"), [(2, "c1"), (1, "c2"), (5, "other")])
def test_a_directory_of_another_node_or_cluster_is_refused(
        tmp_path: Path, node_id: int, cluster_id: str) -> None:
    with open_fs(tmp_path):
        pass
    with pytest.raises(StorageError) as info:
        open_fs(tmp_path, node_id=node_id, cluster_id=cluster_id)
    assert str(info.value) == (f"{tmp_path} belongs to node 1 of cluster 'c1', not to node "
                               f"{node_id} of cluster {cluster_id!r}")


def test_log_files_without_metadata_are_refused(tmp_path: Path) -> None:
    with open_fs(tmp_path) as fs:
        fs.save(None, run(1, 1))
    os.unlink(tmp_path / "metadata")
    with pytest.raises(StorageError, match="no metadata file"):
        open_fs(tmp_path)


@pytest.mark.parametrize("offset", [0, 7, 8, 16, HEAD_SIZE, -1])
def test_metadata_failing_its_checksum_is_refused(tmp_path: Path, offset: int) -> None:
    with open_fs(tmp_path) as fs:
        fs.save(HardState(4, 1))
    meta = tmp_path / "metadata"
    raw = bytearray(meta.read_bytes())
    raw[offset] ^= 0x01
    meta.write_bytes(bytes(raw))
    with pytest.raises(CorruptLog) as info:
        open_fs(tmp_path)
    assert info.value.path == str(meta)
    expected = {0: 0, 7: 0, 8: 8}.get(offset, 16)  # magic, length, else the checksum
    assert info.value.offset == expected


def test_metadata_cut_short_is_refused(tmp_path: Path) -> None:
    with open_fs(tmp_path) as fs:
        fs.save(HardState(4, 1))
    meta = tmp_path / "metadata"
    meta.write_bytes(meta.read_bytes()[:-1])
    with pytest.raises(CorruptLog, match="header says"):
        open_fs(tmp_path)


def test_a_leftover_temporary_file_is_ignored_and_removed(tmp_path: Path) -> None:
    with open_fs(tmp_path) as fs:
        fs.save(HardState(4, 1))
    (tmp_path / "metadata.tmp").write_bytes(b"half a metadata fi")
    with open_fs(tmp_path) as fs:
        assert fs.load()[0].hard_state == HardState(4, 1)
    assert not (tmp_path / "metadata.tmp").exists()


def test_a_directory_is_opened_by_one_storage_at_a_time(tmp_path: Path) -> None:
    with open_fs(tmp_path), pytest.raises(StorageError, match="in use"):
        open_fs(tmp_path)
    with open_fs(tmp_path):
        pass  # the lock went with the close


def test_a_closed_storage_refuses_calls(tmp_path: Path) -> None:
    fs = open_fs(tmp_path)
    fs.close()
    fs.close()
    with pytest.raises(StorageError, match="closed"):
        fs.save(HardState(1, None))


def test_a_failed_hard_state_sync_makes_the_storage_refuse_further_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def sync_fails(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with open_fs(tmp_path) as fs:
        fs.save(HardState(3, 1), run(1, 1))
        with monkeypatch.context() as patch:
            patch.setattr("raftpy.storage.statefile._datasync", sync_fails)
            with pytest.raises(StorageError, match=r"write failed.*Input/output error"):
                fs.save(HardState(9, None))
        with pytest.raises(StorageError, match="reopen the directory"):
            fs.save(None, run(2, 1))
    with open_fs(tmp_path) as fs:  # the slot written is blanked: the old record stands
        assert fs.load()[0].hard_state == HardState(3, 1)
        assert fs.last_index == 1


def test_a_failed_fsync_leaves_no_half_batch_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fsync_fails(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with open_fs(tmp_path) as fs:
        fs.save(None, run(1, 1))
        size = os.path.getsize(fs.segment_files[0])
        with monkeypatch.context() as patch:
            patch.setattr("raftpy.storage.segments._datasync", fsync_fails)
            with pytest.raises(StorageError, match="Input/output error"):
                fs.save(None, run(2, 1, 1))
        assert os.path.getsize(fs.segment_files[0]) == size
        with pytest.raises(StorageError, match="reopen the directory"):
            fs.load()
    with open_fs(tmp_path) as fs:
        assert held(fs) == [(1, 1, b"1")]


# ---------------------------------------------------------------------- a node restarts

def persist_all(node: RaftNode, fs: FileStorage, now: float) -> list[Entry]:
    """Drive the node's Readys through the storage; return the committed entries."""
    committed: list[Entry] = []
    while node.has_ready():
        ready = node.ready()
        if ready.must_persist():
            fs.save(ready.hard_state, ready.entries, ready.snapshot)
        committed.extend(ready.committed)
        node.advance(ready, now)
    return committed


def test_a_single_node_restarts_from_its_directory(tmp_path: Path) -> None:
    config = Config()
    with open_fs(tmp_path) as fs:
        node = RaftNode(1, [1], config=config, rng=random.Random(1))
        now = node.next_deadline()
        node.tick(now)
        persist_all(node, fs, now)
        assert node.role is Role.LEADER
        term = node.current_term
        node.propose_many([b"x", b"y", b"z"], now)
        committed = persist_all(node, fs, now)
        assert [e.data for e in committed if e.kind is EntryKind.COMMAND] == [b"x", b"y", b"z"]
        before = node.log.entries()

    with open_fs(tmp_path) as fs:
        state, snapshot = fs.load()
        restarted = RaftNode(1, [1], config=config, state=state, rng=random.Random(2))
        assert snapshot is None
        assert restarted.current_term == term
        assert restarted.log.entries() == before
        now = restarted.next_deadline()
        restarted.tick(now)
        committed = persist_all(restarted, fs, now)
        assert restarted.role is Role.LEADER
        assert restarted.current_term == term + 1
        # The new term's no-op commits everything the first life wrote.
        assert [e.index for e in committed] == list(range(1, len(before) + 2))
        assert restarted.commit_index == len(before) + 1


def test_a_restarted_voter_remembers_its_vote(tmp_path: Path) -> None:
    config = Config(pre_vote=False)
    with open_fs(tmp_path) as fs:
        node = RaftNode(1, [1, 2, 3], config=config, rng=random.Random(1))
        node.step(RequestVote(term=5, src=2, dst=1, last_log_index=0, last_log_term=0), 0.0)
        ready = node.ready()
        fs.save(ready.hard_state, ready.entries, ready.snapshot)
        assert ready.messages_after_persist == [
            RequestVoteResponse(term=5, src=1, dst=2, vote_granted=True)]
        node.advance(ready, 0.0)

    with open_fs(tmp_path) as fs:
        state, _ = fs.load()
    assert state.hard_state == HardState(5, 2)
    restarted = RaftNode(1, [1, 2, 3], config=config, state=state, rng=random.Random(1))
    restarted.step(RequestVote(term=5, src=3, dst=1, last_log_index=0, last_log_term=0), 0.0)
    sent = restarted.ready()
    assert sent.messages + sent.messages_after_persist == [
        RequestVoteResponse(term=5, src=1, dst=3, vote_granted=False)]


def test_a_node_restarts_from_its_snapshot_and_the_entries_after_it(tmp_path: Path) -> None:
    with open_fs(tmp_path, segment_size=64) as fs:
        node = RaftNode(1, [1], rng=random.Random(1))
        now = node.next_deadline()
        node.tick(now)
        persist_all(node, fs, now)
        node.propose_many([b"a", b"b", b"c"], now)
        persist_all(node, fs, now)
        applied = node.commit_index
        fs.compact(SnapshotMeta(applied, node.log.term_at(applied) or 0), b"abc")
        node.propose_many([b"d", b"e"], now)
        persist_all(node, fs, now)
        after = node.log.entries()[applied:]
        term = node.current_term

    with open_fs(tmp_path, segment_size=64) as fs:
        state, snapshot = fs.load()
    assert snapshot == b"abc"
    restarted = RaftNode(1, [1], state=state, rng=random.Random(2))
    assert restarted.current_term == term
    assert (restarted.log.snapshot_index, restarted.log.snapshot_term) == (applied, term)
    assert restarted.log.entries() == after
    assert [e.data for e in after] == [b"d", b"e"]
