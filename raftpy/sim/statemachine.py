"""The simulator's state machine: the list of applied entries, and its snapshot form."""

from __future__ import annotations

import msgpack

from raftpy.messages import Entry, EntryKind


def encode_applied(entries: list[Entry]) -> bytes:
    """Snapshot bytes of a list of applied entries."""
    return msgpack.packb([[e.index, e.term, int(e.kind), e.data] for e in entries])


def decode_applied(data: bytes) -> list[Entry]:
    """Inverse of :func:`encode_applied`."""
    return [Entry(i, t, d, EntryKind(k)) for i, t, k, d in msgpack.unpackb(data)]
