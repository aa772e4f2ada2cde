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
_PAYLOAD_START = b"\x94"  # msgpack: a list of 4 items


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
    if type(kind) is not int or kind not in _KINDS or not isinstance(data, bytes):
        raise ValueError("entry kind or data is invalid")
    return Entry(index, term, data, _KINDS[kind])


@dataclass(frozen=True, slots=True)
class Damage:
    """Why the record at ``offset`` cannot be read, and whether it may be a torn
    tail: no intact record follows it in the file."""

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


def _record_at(buf: bytes, pos: int) -> tuple[int, int] | str:
    """The payload span of the intact record at ``pos``, or why there is none."""
    size = len(buf)
    if size - pos < HEADER.size:
        return "record header cut short by the end of the file"
    length, crc, hcrc = HEADER.unpack_from(buf, pos)
    if crc32c(buf[pos:pos + 8]) != hcrc:
        return "record header checksum mismatch"
    body = pos + HEADER.size
    end = body + length
    if end > size:
        return f"record of {length} bytes runs past the end of the file"
    if crc32c(buf[body:end]) != crc:
        return "record checksum mismatch"
    return body, end


def intact_record_after(buf: bytes, pos: int) -> bool:
    """Whether an intact record starts anywhere after ``pos``.

    Damage followed by an intact record is in the middle of the log, never a torn
    write. Every payload is a msgpack list of 4 (first byte 0x94), so only the
    places 12 bytes before such a byte need a look.
    """
    hit = buf.find(_PAYLOAD_START, pos + 1 + HEADER.size)
    while hit != -1:
        if not isinstance(_record_at(buf, hit - HEADER.size), str):
            return True
        hit = buf.find(_PAYLOAD_START, hit + 1)
    return False


def scan(buf: bytes, start: int) -> Scan:
    """Walk the records of ``buf`` from ``start``, checking every checksum."""
    offsets: list[int] = []
    payloads: list[tuple[int, int]] = []
    pos = start
    damage = None
    while pos < len(buf):
        found = _record_at(buf, pos)
        if isinstance(found, str):
            damage = Damage(pos, found, not intact_record_after(buf, pos))
            break
        offsets.append(pos)
        payloads.append(found)
        pos = found[1]
    return Scan(offsets, payloads, pos, damage)
