"""Snapshot files: ``snapshot-<index>.snap``, a checked container (see
:mod:`raftpy.storage.metadata`) whose body is ``index u64, term u64`` then the
state machine's bytes."""

from __future__ import annotations

import os
import re
import struct

from raftpy.errors import CorruptLog
from raftpy.ready import SnapshotMeta
from raftpy.storage.metadata import HEAD_SIZE, read_checked, write_checked

SNAP_MAGIC = b"RAFTPYSN"
_META = struct.Struct("<QQ")
_NAME = re.compile(r"^snapshot-(\d{20})\.snap$")


def snapshot_name(index: int) -> str:
    """The file name of the snapshot at ``index`` (zero-padded so names sort by index)."""
    return f"snapshot-{index:020d}.snap"


def snapshot_index(name: str) -> int | None:
    """The index a snapshot file name stands for, or None if it is not one."""
    match = _NAME.match(name)
    return int(match.group(1)) if match else None


def write_snapshot(directory: str, meta: SnapshotMeta, data: bytes, *, sync: bool) -> str:
    """Durably write a snapshot file; returns its path."""
    path = os.path.join(directory, snapshot_name(meta.index))
    write_checked(path, SNAP_MAGIC, [_META.pack(meta.index, meta.term), data], sync=sync)
    return path


def read_snapshot(path: str, index: int) -> tuple[SnapshotMeta, bytes]:
    """The snapshot in ``path``, which its name says is at ``index``."""
    body = read_checked(path, SNAP_MAGIC)
    if len(body) < _META.size:
        raise CorruptLog(path, HEAD_SIZE, "snapshot body shorter than its index and term")
    found, term = _META.unpack_from(body)
    if found != index:
        raise CorruptLog(path, HEAD_SIZE, f"snapshot holds index {found}, its name says {index}")
    return SnapshotMeta(found, term), body[_META.size:]
