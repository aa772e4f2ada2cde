"""The msgpack wire codec: round trips, and one clear error for bad input."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftpy import (
    AppendEntries,
    AppendEntriesResponse,
    Configuration,
    Entry,
    EntryKind,
    InstallSnapshot,
    InstallSnapshotResponse,
    Member,
    MemberRole,
    ProtocolError,
    ReadIndex,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
    decode,
    encode,
)

ints = st.integers(min_value=0, max_value=2**63 - 1)
small = st.integers(min_value=0, max_value=1000)


members = st.builds(Member, id=st.integers(min_value=1, max_value=1000),
                    role=st.sampled_from(MemberRole), address=st.text(max_size=20))
configurations = st.lists(members, max_size=5, unique_by=lambda m: m.id).map(
    Configuration.of)


@st.composite
def entry_payload(draw: st.DrawFn, kind: EntryKind) -> bytes:
    if kind is EntryKind.CONFIGURATION:
        return draw(configurations).encode()
    return draw(st.binary(max_size=64))


@st.composite
def append_entries(draw: st.DrawFn) -> AppendEntries:
    prev = draw(small)
    n = draw(st.integers(min_value=0, max_value=5))
    kinds = [draw(st.sampled_from(EntryKind)) for _ in range(n)]
    entries = tuple(Entry(prev + 1 + k, draw(small), draw(entry_payload(kind)), kind)
                    for k, kind in enumerate(kinds))
    return AppendEntries(term=draw(ints), src=draw(small), dst=draw(small),
                         prev_log_index=prev, prev_log_term=draw(ints), entries=entries,
                         leader_commit=draw(ints), read_round=draw(ints))


messages = st.one_of(
    st.builds(RequestVote, term=ints, src=small, dst=small, last_log_index=ints,
              last_log_term=ints, pre_vote=st.booleans(), disrupt_leader=st.booleans()),
    st.builds(RequestVoteResponse, term=ints, src=small, dst=small,
              vote_granted=st.booleans(), pre_vote=st.booleans()),
    append_entries(),
    st.builds(AppendEntriesResponse, term=ints, src=small, dst=small, success=st.booleans(),
              match_index=ints, reject_index=ints, conflict_index=ints, conflict_term=ints,
              read_round=ints),
    st.builds(TimeoutNow, term=ints, src=small, dst=small, last_log_index=ints,
              last_log_term=ints),
    st.builds(InstallSnapshot, term=ints, src=small, dst=small, last_included_index=ints,
              last_included_term=ints, offset=ints, data=st.binary(max_size=256),
              done=st.booleans(),
              configuration=st.one_of(st.just(b""), configurations.map(Configuration.encode)),
              configuration_index=ints),
    st.builds(InstallSnapshotResponse, term=ints, src=small, dst=small,
              last_included_index=ints, next_offset=ints, success=st.booleans()),
    st.builds(ReadIndex, term=ints, src=small, dst=small, request_id=ints),
    st.builds(ReadIndexResponse, term=ints, src=small, dst=small, request_id=ints,
              read_index=ints, success=st.booleans()),
)


@given(messages)
def test_every_message_round_trips(msg: object) -> None:
    assert decode(encode(msg)) == msg  # type: ignore[arg-type]


@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode(data)


@given(st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
                    | st.binary() | st.text(),
                    lambda inner: st.lists(inner, max_size=10), max_leaves=30))
def test_random_msgpack_values_decode_or_raise_protocol_error(value: object) -> None:
    with contextlib.suppress(ProtocolError):
        decode(msgpack.packb(value))


@pytest.mark.parametrize(("value", "match"), [
    ([99, 1, 1, 2], "unknown message type"),
    ([], "non-empty"),
    ({"a": 1}, "array"),
    ([5, 1, 1, 2, 3], "needs 6 fields"),
    ([5, -1, 1, 2, 3, 4], "term must be a non-negative integer"),
    ([5, 1, 1, 2, 3, "x"], "last_log_term"),
    ([2, 1, 1, 2, 1, False], "vote_granted must be a boolean"),
    ([3, 1, 1, 2, 0, 0, [[2, 1, 0, b""]], 0, 0], "not contiguous"),
    ([3, 1, 1, 2, 0, 0, [[1, 1, 7, b""]], 0, 0], "unknown entry kind"),
    ([3, 1, 1, 2, 0, 0, [[1, 1, 0, "text"]], 0, 0], "entry data must be bytes"),
    ([3, 1, 1, 2, 0, 0, "nope", 0, 0], "entries must be a list"),
    ([3, 1, 1, 2, 0, 0, [], 0], "needs 9 fields"),
    ([9, 1, 1, 2, 5, 3, "yes"], "success must be a boolean"),
])
def test_malformed_messages_are_refused_with_a_clear_error(value: object, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        decode(msgpack.packb(value))


def test_truncated_and_trailing_bytes_are_refused() -> None:
    data = encode(TimeoutNow(term=1, src=1, dst=2, last_log_index=3, last_log_term=1))
    with pytest.raises(ProtocolError):
        decode(data[:-1])
    with pytest.raises(ProtocolError):
        decode(data + b"\x00")


def test_encoding_a_foreign_object_is_refused() -> None:
    with pytest.raises(ProtocolError):
        encode("not a message")  # type: ignore[arg-type]


def test_a_configuration_entry_that_does_not_decode_is_refused() -> None:
    msg = AppendEntries(term=1, src=1, dst=2, prev_log_index=0, prev_log_term=0,
                        entries=(Entry(1, 1, b"\x93garbage", EntryKind.CONFIGURATION),),
                        leader_commit=0)
    with pytest.raises(ProtocolError, match="configuration entry"):
        decode(encode(msg))
    bad_member = Entry(1, 1, msgpack.packb([[0, 0, ""]]), EntryKind.CONFIGURATION)
    with pytest.raises(ProtocolError, match="member ids are positive"):
        decode(encode(AppendEntries(term=1, src=1, dst=2, prev_log_index=0, prev_log_term=0,
                                    entries=(bad_member,), leader_commit=0)))
