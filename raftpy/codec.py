"""The msgpack wire codec: every message round-trips; bad input is a ProtocolError.

A message is a msgpack array ``[type_tag, term, src, dst, *fields]``; an entry
inside AppendEntries is ``[index, term, kind, data]``. Decoding checks the tag,
the arity and the type of every field, so that the core only ever sees
well-formed messages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from raftpy.errors import ConfigError, ProtocolError
from raftpy.membership import Configuration
from raftpy.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    ReadIndex,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)

# Wire tags are part of the protocol: never renumber, only add.
_TAGS: dict[type, int] = {
    RequestVote: 1,
    RequestVoteResponse: 2,
    AppendEntries: 3,
    AppendEntriesResponse: 4,
    TimeoutNow: 5,
    InstallSnapshot: 6,
    InstallSnapshotResponse: 7,
    ReadIndex: 8,
    ReadIndexResponse: 9,
}
_KINDS = {int(k): k for k in EntryKind}
_MAX_INT = (1 << 63) - 1


def _fields(msg: Message) -> list[Any]:
    if isinstance(msg, AppendEntries):
        return [3, msg.term, msg.src, msg.dst, msg.prev_log_index, msg.prev_log_term,
                [[e.index, e.term, int(e.kind), e.data] for e in msg.entries],
                msg.leader_commit, msg.read_round]
    if isinstance(msg, AppendEntriesResponse):
        return [4, msg.term, msg.src, msg.dst, msg.success, msg.match_index, msg.reject_index,
                msg.conflict_index, msg.conflict_term, msg.read_round]
    if isinstance(msg, RequestVote):
        return [1, msg.term, msg.src, msg.dst, msg.last_log_index, msg.last_log_term,
                msg.pre_vote, msg.disrupt_leader]
    if isinstance(msg, RequestVoteResponse):
        return [2, msg.term, msg.src, msg.dst, msg.vote_granted, msg.pre_vote]
    if isinstance(msg, TimeoutNow):
        return [5, msg.term, msg.src, msg.dst, msg.last_log_index, msg.last_log_term]
    if isinstance(msg, InstallSnapshot):
        return [6, msg.term, msg.src, msg.dst, msg.last_included_index, msg.last_included_term,
                msg.offset, msg.data, msg.done, msg.configuration, msg.configuration_index]
    if isinstance(msg, InstallSnapshotResponse):
        return [7, msg.term, msg.src, msg.dst, msg.last_included_index, msg.next_offset,
                msg.success]
    if isinstance(msg, ReadIndex):
        return [8, msg.term, msg.src, msg.dst, msg.request_id]
    if isinstance(msg, ReadIndexResponse):
        return [9, msg.term, msg.src, msg.dst, msg.request_id, msg.read_index, msg.success]
    raise ProtocolError(f"cannot encode {type(msg).__name__}: not a raftpy message")


def encode(msg: Message) -> bytes:
    """Serialize one message to bytes."""
    return msgpack.packb(_fields(msg), use_bin_type=True)


def to_wire(msg: Message) -> list[Any]:
    """The msgpack-ready list for ``msg`` (to embed it in a larger frame)."""
    return _fields(msg)


def _int(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value <= _MAX_INT:
        raise ProtocolError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def _bool(value: Any, what: str) -> bool:
    if type(value) is not bool:
        raise ProtocolError(f"{what} must be a boolean, got {value!r}")
    return value


def _bytes(value: Any, what: str) -> bytes:
    if type(value) is not bytes:
        raise ProtocolError(f"{what} must be bytes, got {type(value).__name__}")
    return value


def _entry(raw: Any) -> Entry:
    if type(raw) is not list or len(raw) != 4:
        raise ProtocolError(f"an entry must be [index, term, kind, data], got {raw!r:.80}")
    kind = _KINDS.get(raw[2]) if type(raw[2]) is int else None
    if kind is None:
        raise ProtocolError(f"unknown entry kind {raw[2]!r}")
    data = _bytes(raw[3], "entry data")
    if kind is EntryKind.CONFIGURATION:
        _configuration(data, "configuration entry")
    return Entry(_int(raw[0], "entry index"), _int(raw[1], "entry term"), data, kind)


def _configuration(data: bytes, what: str) -> bytes:
    """Check that ``data`` is an encoded configuration (the core decodes it later)."""
    try:
        Configuration.decode(data)
    except ConfigError as exc:
        raise ProtocolError(f"{what}: {exc}") from None
    return data


def _append_entries(f: list[Any]) -> AppendEntries:
    entries = f[6]
    if type(entries) is not list:
        raise ProtocolError("AppendEntries.entries must be a list")
    decoded = tuple(_entry(e) for e in entries)
    prev = _int(f[4], "prev_log_index")
    for n, e in enumerate(decoded):
        if e.index != prev + 1 + n:
            raise ProtocolError(f"AppendEntries entries are not contiguous after {prev}")
    return AppendEntries(term=_int(f[1], "term"), src=_int(f[2], "src"), dst=_int(f[3], "dst"),
                         prev_log_index=prev, prev_log_term=_int(f[5], "prev_log_term"),
                         entries=decoded, leader_commit=_int(f[7], "leader_commit"),
                         read_round=_int(f[8], "read_round"))


def _head(f: list[Any]) -> dict[str, int]:
    return {"term": _int(f[1], "term"), "src": _int(f[2], "src"), "dst": _int(f[3], "dst")}


_DECODERS: dict[int, tuple[int, Callable[[list[Any]], Message]]] = {
    1: (8, lambda f: RequestVote(**_head(f), last_log_index=_int(f[4], "last_log_index"),
                                 last_log_term=_int(f[5], "last_log_term"),
                                 pre_vote=_bool(f[6], "pre_vote"),
                                 disrupt_leader=_bool(f[7], "disrupt_leader"))),
    2: (6, lambda f: RequestVoteResponse(**_head(f), vote_granted=_bool(f[4], "vote_granted"),
                                         pre_vote=_bool(f[5], "pre_vote"))),
    3: (9, _append_entries),
    4: (10, lambda f: AppendEntriesResponse(
        **_head(f), success=_bool(f[4], "success"), match_index=_int(f[5], "match_index"),
        reject_index=_int(f[6], "reject_index"), conflict_index=_int(f[7], "conflict_index"),
        conflict_term=_int(f[8], "conflict_term"), read_round=_int(f[9], "read_round"))),
    5: (6, lambda f: TimeoutNow(**_head(f), last_log_index=_int(f[4], "last_log_index"),
                                last_log_term=_int(f[5], "last_log_term"))),
    6: (11, lambda f: InstallSnapshot(
        **_head(f), last_included_index=_int(f[4], "last_included_index"),
        last_included_term=_int(f[5], "last_included_term"), offset=_int(f[6], "offset"),
        data=_bytes(f[7], "data"), done=_bool(f[8], "done"),
        configuration=_configuration(_bytes(f[9], "configuration"), "InstallSnapshot")
        if f[9] != b"" else b"",
        configuration_index=_int(f[10], "configuration_index"))),
    7: (7, lambda f: InstallSnapshotResponse(
        **_head(f), last_included_index=_int(f[4], "last_included_index"),
        next_offset=_int(f[5], "next_offset"), success=_bool(f[6], "success"))),
    8: (5, lambda f: ReadIndex(**_head(f), request_id=_int(f[4], "request_id"))),
    9: (7, lambda f: ReadIndexResponse(
        **_head(f), request_id=_int(f[4], "request_id"), read_index=_int(f[5], "read_index"),
        success=_bool(f[6], "success"))),
}


def from_wire(fields: Any) -> Message:
    """Build a message from its decoded msgpack list, validating every field."""
    if type(fields) is not list or not fields:
        raise ProtocolError("a message must be a non-empty msgpack array")
    tag = fields[0]
    spec = _DECODERS.get(tag) if type(tag) is int else None
    if spec is None:
        raise ProtocolError(f"unknown message type tag {tag!r}")
    arity, build = spec
    if len(fields) != arity:
        raise ProtocolError(f"message type {tag} needs {arity} fields, got {len(fields)}")
    return build(fields)


def decode(data: bytes) -> Message:
    """Parse one message; any malformed input raises :class:`ProtocolError`."""
    try:
        fields = msgpack.unpackb(data, use_list=True, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError,
            TypeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not a valid msgpack message: {exc}") from exc
    return from_wire(fields)
