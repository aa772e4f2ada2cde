"""Framed, checksummed records: the unit of the on-disk log.

A record is a 12-byte header and a payload::

    length  u32  payload length in bytes
    crc     u32  CRC32C of the payload
    hcrc    u32  CRC32C of the 8 bytes before it (length and crc)

The header has its own checksum so that a damaged ``length`` is caught as
damage instead of being followed past the end of the file, where it would look
like a torn (and so silently cut) tail. The payload is the msgpack list
``[index, term, kind, data]`` of one :class:`~raftpy.messages.Entry`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import google_crc32c
import msgpack

from raftpy.messages import Entry, EntryKind

HEADER = struct.Struct("<III")
_LENGTH_AND_CRC = struct.Struct("<II")
_KINDS = {int(k): k for k in EntryKind}


def crc32c(data: bytes, value: int = 0) -> int:
    """CRC32C (Castagnoli) of ``data``, continuing from the CRC ``value`` of earlier bytes."""
    return int(google_crc32c.extend(value, data))


def encode_entry(entry: Entry) -> bytes:
    """The record (header and payload) holding ``entry``."""
    payload: bytes = msgpack.packb([entry.index, entry.term, int(entry.kind), entry.data],
                                   use_bin_type=True)
    head = _LENGTH_AND_CRC.pack(len(payload), crc32c(payload))
    return head + struct.pack("<I", crc32c(head)) + payload


def decode_entry(payload: bytes) -> Entry:
    """The entry a payload that passed its checksum holds; ValueError if malformed."""
    try:
        raw: Any = msgpack.unpackb(payload, raw=False, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ValueError(f"undecodable entry: {exc}") from None
    if not (isinstance(raw, list) and len(raw) == 4):
        raise ValueError("entry is not a list of 4 fields")
    index, term, kind, data = raw
    if not (type(index) is int and type(term) is int and index >= 1 and term >= 0):
        raise ValueError("entry index or term is not a valid integer")
    if kind not in _KINDS or not isinstance(data, bytes):
        raise ValueError("entry kind or data is invalid")
    return Entry(index, term, data, _KINDS[kind])


@dataclass(frozen=True, slots=True)
class Damage:
    """Why the record at ``offset`` cannot be read, and whether it may be a torn tail
    (nothing but that record, or zeros, follows it in the file)."""

    offset: int
    reason: str
    maybe_torn: bool


@dataclass(frozen=True, slots=True)
class Scan:
    """What a scan of a record area found: each good record's offset and payload
    span, and the first damage, if any (scanning stops there)."""

    offsets: list[int]
    payloads: list[tuple[int, int]]
    end: int
    damage: Damage | None


def _zeros_from(buf: bytes, start: int) -> bool:
    return buf.count(0, start) == len(buf) - start


def scan(buf: bytes, start: int) -> Scan:
    """Walk the records of ``buf`` from ``start``, checking every checksum."""
    offsets: list[int] = []
    payloads: list[tuple[int, int]] = []
    pos = start
    size = len(buf)
    damage = None
    while pos < size:
        if size - pos < HEADER.size:
            damage = Damage(pos, "record header cut short by the end of the file", True)
            break
        length, crc, hcrc = HEADER.unpack_from(buf, pos)
        if crc32c(buf[pos:pos + 8]) != hcrc:
            # A torn write can leave zeros (a size extended before its data); any
            # other bytes here mean the header itself was damaged.
            damage = Damage(pos, "record header checksum mismatch", _zeros_from(buf, pos))
            break
        body = pos + HEADER.size
        end = body + length
        if end > size:
            damage = Damage(pos, f"record of {length} bytes runs past the end of the file",
                            True)
            break
        if crc32c(buf[body:end]) != crc:
            damage = Damage(pos, "record checksum mismatch", _zeros_from(buf, end))
            break
        offsets.append(pos)
        payloads.append((body, end))
        pos = end
    return Scan(offsets, payloads, pos, damage)
