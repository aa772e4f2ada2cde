"""Coverage-guided fuzz targets for every decoder that reads bytes from outside.

Each target takes arbitrary bytes and may only end normally or raise the one error
type the decoder documents; anything else (another exception, a hang, an
unbounded allocation) is a bug. ``fuzz/run.py TARGET SECONDS`` runs one under
atheris; ``make fuzz SECONDS=N`` runs them all. Not part of ``make test``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import msgpack

from raftpy import codec
from raftpy.errors import ProtocolError
from raftpy.kv import joining, protocol
from raftpy.storage import records
from raftpy.trio import handshake
from raftpy.trio.framing import FrameDecoder

MAX_FRAME = 4096


def frames(data: bytes) -> None:
    """The frame reader, fed in chunks cut where the first byte says: ProtocolError only,
    and never a payload over ``max_frame``."""
    decoder = FrameDecoder(MAX_FRAME)
    step = (data[0] % 16 + 1) if data else 1
    try:
        for i in range(1, len(data), step):
            for payload in decoder.feed(data[i:i + step]):
                assert len(payload) <= MAX_FRAME, len(payload)
    except ProtocolError:
        return
    assert len(decoder._buffer) <= MAX_FRAME + 4, len(decoder._buffer)


def handshake_hello(data: bytes) -> None:
    """The hello and hello-reply parsers: ProtocolError only; what parses re-encodes."""
    try:
        hello = handshake.decode_hello(data)
    except ProtocolError:
        pass
    else:
        assert handshake.decode_hello(handshake.encode_hello(hello)) == hello
    try:
        reply = handshake.decode_reply(data)
    except ProtocolError:
        pass
    else:
        assert handshake.decode_reply(handshake.encode_reply(reply)) == reply


def message_codec(data: bytes) -> None:
    """The Raft message codec: ProtocolError only; a decoded message round-trips."""
    try:
        msg = codec.decode(data)
    except ProtocolError:
        return
    assert codec.decode(codec.encode(msg)) == msg


def kv_protocol(data: bytes) -> None:
    """The KV request and response parsers: BadRequest / ValueError only."""
    try:
        request = protocol.decode_request(data)
    except protocol.BadRequest:
        pass
    else:
        assert request["op"] in protocol.OPS
    with contextlib.suppress(ValueError):
        protocol.decode_response(data)


def storage_records(data: bytes) -> None:
    """The log record scanner and entry parser: a scan never raises, it reports damage;
    an entry payload that passed its checksum raises ValueError only if malformed."""
    found = records.scan(data, 0)
    assert found.end <= len(data)
    for start, end in found.payloads:
        try:
            entry = records.decode_entry(data[start:end])
        except ValueError:
            continue
        assert records.decode_entry(records.encode_entry(entry)[12:]) == entry
    # Arbitrary bytes as a payload too (the checksum rarely passes by chance).
    with contextlib.suppress(ValueError):
        records.decode_entry(data)


def join_token(data: bytes) -> None:
    """The join token parser (ValueError only; what parses re-encodes) and the join
    request parser a member runs on a certless connection (ProtocolError only)."""
    try:
        token = joining.JoinToken.decode(data.decode("latin-1"))
    except ValueError:
        pass
    else:
        assert joining.JoinToken.decode(token.encode()) == token
    try:
        request = msgpack.unpackb(data, raw=False)
    except Exception:
        return
    with contextlib.suppress(ProtocolError):
        joining._join_request(request)
    with contextlib.suppress(ValueError):
        joining.JoinToken.decode(joining.TOKEN_PREFIX + data.decode("latin-1"))


TARGETS: dict[str, Callable[[bytes], None]] = {
    "frames": frames,
    "handshake": handshake_hello,
    "codec": message_codec,
    "kv": kv_protocol,
    "records": storage_records,
    "join": join_token,
}
