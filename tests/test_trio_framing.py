"""Frames and hellos: the sans-I/O decoder, the handshake checks, FramedStream."""

from __future__ import annotations

import struct

import msgpack
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from raftpy.errors import HandshakeRefused, ProtocolError
from raftpy.trio import handshake
from raftpy.trio.framing import DEFAULT_MAX_FRAME, FrameDecoder, FramedStream, encode_frame
from raftpy.trio.handshake import Hello, HelloReply


def test_encode_frame_prefixes_the_big_endian_length() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(b"") == b"\x00\x00\x00\x00"
    assert DEFAULT_MAX_FRAME == 16 * 1024 * 1024


def test_one_byte_at_a_time() -> None:
    decoder = FrameDecoder()
    data = encode_frame(b"hello") + encode_frame(b"") + encode_frame(b"world!")
    out: list[bytes] = []
    for i in range(len(data)):
        out += decoder.feed(data[i:i + 1])
    assert out == [b"hello", b"", b"world!"]
    assert not decoder.in_frame


def test_merged_and_split_chunks() -> None:
    decoder = FrameDecoder()
    data = encode_frame(b"a" * 10) + encode_frame(b"b" * 3) + encode_frame(b"c" * 7)
    assert decoder.feed(data[:16]) == [b"a" * 10]  # first frame and part of the second
    assert decoder.in_frame
    assert decoder.feed(data[16:21]) == [b"bbb"]  # rest of the second, header of the third
    assert decoder.feed(data[21:]) == [b"c" * 7]
    assert not decoder.in_frame


def test_frame_at_the_limit_is_accepted_one_byte_over_is_refused() -> None:
    assert FrameDecoder(max_frame=8).feed(encode_frame(b"x" * 8)) == [b"x" * 8]
    with pytest.raises(ProtocolError, match="9 bytes exceeds the 8-byte limit"):
        FrameDecoder(max_frame=8).feed(encode_frame(b"x" * 9))


def test_huge_length_prefix_is_refused_before_any_payload() -> None:
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError, match="4294967295 bytes"):
        decoder.feed(b"\xff\xff\xff\xff")
    # Nothing was allocated for the claimed size: only the 4 header bytes were ever held.
    assert decoder.in_frame


def test_frames_before_an_oversized_prefix_come_first_then_the_error() -> None:
    decoder = FrameDecoder(max_frame=4)
    assert decoder.feed(encode_frame(b"ok") + struct.pack(">I", 5) + b"abc") == [b"ok"]
    with pytest.raises(ProtocolError, match="5 bytes exceeds the 4-byte limit"):
        decoder.feed(b"")
    with pytest.raises(ProtocolError):  # out of sync for good
        decoder.feed(b"more")


def test_raising_the_limit_applies_to_bytes_already_buffered() -> None:
    # The transport reads the hello under a small limit, then raises it: a big frame
    # that arrived in the same read as the hello must not be refused.
    decoder = FrameDecoder(max_frame=8)
    assert decoder.feed(encode_frame(b"hello") + encode_frame(b"x" * 20)[:10]) == [b"hello"]
    decoder.max_frame = 100
    assert decoder.feed(encode_frame(b"x" * 20)[10:]) == [b"x" * 20]


@given(st.lists(st.binary(max_size=300), max_size=8), st.data())
def test_any_chunking_decodes_the_same_frames(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder(max_frame=300)
    out: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += decoder.feed(stream[start:end])
    assert out == payloads
    assert not decoder.in_frame


@given(st.lists(st.binary(max_size=64), max_size=20), st.integers(0, 100))
def test_random_bytes_give_frames_or_protocol_error_only(chunks: list[bytes],
                                                         max_frame: int) -> None:
    decoder = FrameDecoder(max_frame=max_frame)
    fed = 0
    returned = 0
    try:
        for chunk in chunks:
            fed += len(chunk)
            frames = decoder.feed(chunk)
            assert all(len(f) <= max_frame for f in frames)
            returned += sum(4 + len(f) for f in frames)
            assert returned <= fed
    except ProtocolError as exc:
        assert "exceeds" in str(exc)


# ---------------------------------------------------------------------- handshake


def test_hello_round_trips() -> None:
    for hello in (Hello("c", 3), Hello("c", 3, lane=handshake.LANE_BULK),
                  Hello("c", None, role=handshake.ROLE_CLIENT)):
        assert handshake.decode_hello(handshake.encode_hello(hello)) == hello
    reply = HelloReply(ok=False, cluster_id="c", node_id=2, reason="why")
    assert handshake.decode_reply(handshake.encode_reply(reply)) == reply


@pytest.mark.parametrize("payload", [
    b"",
    b"\xc1",
    msgpack.packb([1, 2, 3]),
    msgpack.packb({"raftpy": "1"}),
    msgpack.packb({"raftpy": 1, "cluster": "c", "node": 1, "role": "admin", "lane": "control"}),
    msgpack.packb({"raftpy": 1, "cluster": "c", "node": 1, "role": "peer", "lane": "fast"}),
    msgpack.packb({"raftpy": 1, "cluster": "c", "node": None, "role": "peer",
                   "lane": "control"}),
    msgpack.packb({"raftpy": 1, "cluster": b"c", "node": 1, "role": "peer", "lane": "control"}),
    msgpack.packb({"raftpy": 1, "cluster": "c", "node": True, "role": "peer",
                   "lane": "control"}),
])
def test_malformed_hello_is_a_protocol_error(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        handshake.decode_hello(payload)


@pytest.mark.parametrize(("hello", "reason"), [
    (Hello("c", 2), None),
    (Hello("c", None, role=handshake.ROLE_CLIENT), None),
    (Hello("other", 2), "cluster 'other' is not 'c'"),
    (Hello("c", 9), "node 9 is not a configured peer"),
    (Hello("c", 1), "node 1 is this node itself"),
    (Hello("c", 2, version=1), "protocol version 1 is not 2"),
])
def test_check_hello(hello: Hello, reason: str | None) -> None:
    assert handshake.check_hello(hello, cluster_id="c", node_id=1, peer_ids={2, 3},
                                 serves_clients=True) == reason


def test_client_hello_refused_without_client_service() -> None:
    hello = Hello("c", None, role=handshake.ROLE_CLIENT)
    assert handshake.check_hello(hello, cluster_id="c", node_id=1, peer_ids={2},
                                 serves_clients=False) == "this node serves no clients"


@pytest.mark.parametrize(("reply", "match"), [
    (HelloReply(ok=False, cluster_id="c", node_id=2, reason="go away"), "go away"),
    (HelloReply(ok=True, cluster_id="x", node_id=2), "belongs to cluster 'x'"),
    (HelloReply(ok=True, cluster_id="c", node_id=3), "node 2 is served by node 3"),
    (HelloReply(ok=True, cluster_id="c", node_id=2, version=7), "version 7"),
])
def test_check_reply_refuses(reply: HelloReply, match: str) -> None:
    with pytest.raises(HandshakeRefused, match=match):
        handshake.check_reply(reply, cluster_id="c", expected_node=2)


def test_check_reply_accepts_the_expected_node() -> None:
    handshake.check_reply(HelloReply(ok=True, cluster_id="c", node_id=2), cluster_id="c",
                          expected_node=2)


# ---------------------------------------------------------------------- FramedStream


async def test_framed_stream_round_trip_and_clean_eof() -> None:
    left, right = trio.testing.memory_stream_pair()
    a, b = FramedStream(left), FramedStream(right)
    await a.send(b"one")
    await a.send(b"two")
    assert await b.receive() == b"one"
    assert await b.receive() == b"two"
    await a.aclose()
    assert await b.receive() is None
    assert await b.receive() is None


async def test_framed_stream_eof_inside_a_frame_is_a_protocol_error() -> None:
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(encode_frame(b"complete") + encode_frame(b"truncated")[:7])
    await left.aclose()
    b = FramedStream(right)
    assert await b.receive() == b"complete"
    with pytest.raises(ProtocolError, match="middle of a frame"):
        await b.receive()


async def test_framed_stream_hello_then_a_big_frame_in_one_read() -> None:
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(encode_frame(b"hello") + encode_frame(b"b" * 5000))
    framed = FramedStream(right, max_frame=4096)
    assert await framed.receive() == b"hello"
    framed.decoder.max_frame = 10_000
    assert await framed.receive() == b"b" * 5000


async def test_framed_stream_refuses_an_oversized_frame() -> None:
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(struct.pack(">I", 1001))
    with pytest.raises(ProtocolError, match="exceeds the 1000-byte limit"):
        await FramedStream(right, max_frame=1000).receive()
