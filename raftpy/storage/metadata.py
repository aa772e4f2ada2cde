"""Small whole files written atomically and checked on read: the metadata file
(node id, cluster id) and snapshot files share this container::

    magic   8 bytes  what the file is (b"RAFTPYMD", b"RAFTPYSN")
    length  u64      length of the body
    crc     u32      CRC32C of the 16 bytes above, then of the body
    body    length bytes

A file is replaced by writing a temporary file, fsyncing it, renaming it over
the old one and fsyncing the directory, so a crash leaves the old or the new
file, never a mix; a file that fails its checksum is therefore damage, not a
torn write, and reading it raises :class:`~raftpy.errors.CorruptLog`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from raftpy.errors import CorruptLog, StorageError
from raftpy.storage.records import crc32c

_HEAD = struct.Struct("<8sQ")
_CRC = struct.Struct("<I")
HEAD_SIZE = _HEAD.size + _CRC.size
TMP_SUFFIX = ".tmp"
META_MAGIC = b"RAFTPYMD"
FORMAT_VERSION = 2
# Format 1 kept the term and vote in the metadata file, replaced atomically on
# every change (three fsyncs); format 2 keeps them in the ``state`` file.
OLD_FORMATS = {1: "term and vote in the metadata file"}


def fsync_dir(path: str) -> None:
    """Make the directory's entries (creations, renames, removals) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_checked(path: str, magic: bytes, body: Sequence[bytes], *, sync: bool) -> None:
    """Replace ``path`` atomically by a checked file holding the concatenated ``body``."""
    length = sum(len(part) for part in body)
    head = _HEAD.pack(magic, length)
    crc = crc32c(head)
    for part in body:
        crc = crc32c(part, crc)
    tmp = path + TMP_SUFFIX
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "wb", closefd=False) as out:
            out.write(head + _CRC.pack(crc))
            for part in body:
                out.write(part)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if sync:
        fsync_dir(os.path.dirname(path) or ".")


def read_checked(path: str, magic: bytes) -> bytes:
    """The body of the checked file at ``path``; CorruptLog if it fails any check."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < HEAD_SIZE:
        raise CorruptLog(path, len(raw), f"file of {len(raw)} bytes is shorter than its header")
    found, length = _HEAD.unpack_from(raw)
    if found != magic:
        raise CorruptLog(path, 0, f"bad magic {found!r}, expected {magic!r}")
    if len(raw) != HEAD_SIZE + length:
        raise CorruptLog(path, 8, f"header says {length} body bytes, file holds "
                                  f"{len(raw) - HEAD_SIZE}")
    (crc,) = _CRC.unpack_from(raw, _HEAD.size)
    if crc32c(raw[HEAD_SIZE:], crc32c(raw[:_HEAD.size])) != crc:
        raise CorruptLog(path, _HEAD.size, "checksum mismatch")
    return raw[HEAD_SIZE:]


@dataclass(frozen=True, slots=True)
class Metadata:
    """Whose directory this is (written once, when the directory is created)."""

    node_id: int
    cluster_id: str


def write_metadata(path: str, meta: Metadata, *, sync: bool) -> None:
    """Atomically write the metadata file."""
    body: bytes = msgpack.packb({
        "format": FORMAT_VERSION, "node_id": meta.node_id, "cluster_id": meta.cluster_id,
    }, use_bin_type=True)
    write_checked(path, META_MAGIC, [body], sync=sync)


def read_metadata(path: str) -> Metadata:
    """The metadata file's contents; CorruptLog if damaged or malformed, StorageError
    if written in an older format."""
    body = read_checked(path, META_MAGIC)
    try:
        raw: Any = msgpack.unpackb(body, raw=False)
        version = raw["format"]
        if version in OLD_FORMATS:
            raise StorageError(
                f"{os.path.dirname(path) or '.'} is a format {version} data directory "
                f"({OLD_FORMATS[version]}); this raftpy reads format {FORMAT_VERSION} only")
        if version != FORMAT_VERSION:
            raise CorruptLog(path, HEAD_SIZE, f"unknown format version {version!r}")
        meta = Metadata(raw["node_id"], raw["cluster_id"])
    except StorageError:
        raise
    except Exception as exc:  # a checksummed body that does not decode: written by a bug
        raise CorruptLog(path, HEAD_SIZE, f"undecodable metadata: {exc!r}") from None
    if not (type(meta.node_id) is int and isinstance(meta.cluster_id, str)):
        raise CorruptLog(path, HEAD_SIZE, "metadata fields have the wrong types")
    return meta
