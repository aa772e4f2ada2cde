"""Snapshot files: ``snapshot-<index>.snap``, a checked container (see
:mod:`raftpy.storage.metadata`) whose body is ``index u64, term u64,
configuration_index u64, configuration length u32``, the encoded configuration
the snapshot includes, then the state machine's bytes. Files of the first format
(magic ``RAFTPYSN``: index and term only) are still read, with no configuration."""

from __future__ import annotations

import os
import re
import struct

from raftpy.errors import ConfigError, CorruptLog
from raftpy.membership import EMPTY, Configuration
from raftpy.ready import SnapshotMeta
from raftpy.storage.metadata import HEAD_SIZE, read_checked, write_checked

SNAP_MAGIC = b"RAFTPYS2"
_OLD_MAGIC = b"RAFTPYSN"
_META = struct.Struct("<QQ")
_CONF = struct.Struct("<QI")
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
    conf = meta.configuration.encode()
    write_checked(path, SNAP_MAGIC, [_META.pack(meta.index, meta.term),
                                     _CONF.pack(meta.configuration_index, len(conf)), conf,
                                     data], sync=sync)
    return path


def read_snapshot(path: str, index: int) -> tuple[SnapshotMeta, bytes]:
    """The snapshot in ``path``, which its name says is at ``index``."""
    try:
        body = read_checked(path, SNAP_MAGIC)
        new_format = True
    except CorruptLog as exc:
        if not exc.reason.startswith("bad magic"):
            raise
        body = read_checked(path, _OLD_MAGIC)
        new_format = False
    if len(body) < _META.size:
        raise CorruptLog(path, HEAD_SIZE, "snapshot body shorter than its index and term")
    found, term = _META.unpack_from(body)
    if found != index:
        raise CorruptLog(path, HEAD_SIZE, f"snapshot holds index {found}, its name says {index}")
    if not new_format:
        return SnapshotMeta(found, term), body[_META.size:]
    at = _META.size
    if len(body) < at + _CONF.size:
        raise CorruptLog(path, HEAD_SIZE + at, "snapshot body shorter than its configuration")
    conf_index, conf_len = _CONF.unpack_from(body, at)
    at += _CONF.size
    if len(body) < at + conf_len:
        raise CorruptLog(path, HEAD_SIZE + at, "snapshot configuration cut short")
    try:
        configuration = Configuration.decode(body[at:at + conf_len]) if conf_len else EMPTY
    except ConfigError as exc:
        raise CorruptLog(path, HEAD_SIZE + at, f"snapshot configuration: {exc}") from None
    return SnapshotMeta(found, term, configuration, conf_index), body[at + conf_len:]
