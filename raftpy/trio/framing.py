"""Length-prefixed frames: a sans-I/O decoder, the encoder, and a framed Trio stream.

A frame is a 4-byte big-endian payload length followed by the payload. The
decoder is fed whatever bytes arrived and returns the frames they complete; it
checks every length prefix against ``max_frame`` *before* buffering the payload,
so a hostile prefix ("4 GiB follow") raises :class:`ProtocolError` instead of
making anyone allocate it.

:class:`FramedStream` puts a decoder on a ``trio.abc.Stream``; it is what the
transport hands to client handlers (see :mod:`raftpy.trio.transport`).
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from collections.abc import Sequence

import trio

from raftpy.errors import ProtocolError
from raftpy.trio.identity import Identity

logger = logging.getLogger("raftpy.transport.framing")

DEFAULT_MAX_FRAME = 16 * 1024 * 1024
"""The largest payload accepted by default (16 MiB)."""

_HEADER = struct.Struct(">I")
_RECEIVE_CHUNK = 64 * 1024


def encode_frame(payload: bytes) -> bytes:
    """``payload`` prefixed with its 4-byte big-endian length."""
    if len(payload) > 0xFFFFFFFF:
        raise ProtocolError(f"a frame payload of {len(payload)} bytes does not fit 32 bits")
    return _HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Turns a byte stream, fed in arbitrary chunks, into whole frame payloads.

    ``max_frame`` may be changed between calls (the transport reads the hello
    with a small limit, then raises it).
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._need: int | None = None  # payload length of the frame being read, once known

    @property
    def in_frame(self) -> bool:
        """Whether part of a frame was received but not yet returned."""
        return self._need is not None or bool(self._buffer)

    def feed(self, data: bytes | bytearray) -> list[bytes]:
        """Add ``data``; return every frame it completes, in order.

        A length prefix over ``max_frame`` raises :class:`ProtocolError` (without
        buffering its payload); frames completed before it in the same call are
        returned first, and the next call raises (``feed(b"")`` will do). After
        that the decoder is unusable: the stream is out of sync.
        """
        self._buffer += data
        frames: list[bytes] = []
        while True:
            if self._need is None:
                if len(self._buffer) < _HEADER.size:
                    return frames
                (length,) = _HEADER.unpack_from(self._buffer)
                if length > self.max_frame:
                    if frames:
                        return frames  # the next call raises, after these are handled
                    raise ProtocolError(
                        f"frame of {length} bytes exceeds the {self.max_frame}-byte limit")
                del self._buffer[:_HEADER.size]
                self._need = length
            if len(self._buffer) < self._need:
                return frames
            frames.append(bytes(self._buffer[:self._need]))
            del self._buffer[:self._need]
            self._need = None


class FramedStream:
    """A Trio stream carrying whole frames.

    ``send(payload)`` writes one frame; ``receive()`` returns the next payload, or
    ``None`` once the other side closed the connection cleanly. An oversized
    frame or a connection closed in the middle of a frame raises
    :class:`ProtocolError`; a broken connection raises ``trio.BrokenResourceError``.
    One task may send while another receives; concurrent sends are serialized.
    """

    def __init__(self, stream: trio.abc.Stream, *, max_frame: int = DEFAULT_MAX_FRAME,
                 decoder: FrameDecoder | None = None, peer: str = "?") -> None:
        self.stream = stream
        self.decoder = decoder if decoder is not None else FrameDecoder(max_frame)
        self.peer = peer
        """A description of the other side, for log messages."""
        self.identity: Identity | None = None
        """Who the other side's TLS certificate says it is (``None`` without TLS)."""
        self._pending: deque[bytes] = deque()
        self._send_lock = trio.Lock()
        self._eof = False

    async def send(self, payload: bytes) -> None:
        """Write one frame (waits while the connection is busy with another send)."""
        frame = encode_frame(payload)
        async with self._send_lock:
            await self.stream.send_all(frame)

    async def send_many(self, payloads: Sequence[bytes]) -> None:
        """Write several frames in one ``send_all`` (one system call for a batch)."""
        data = b"".join(encode_frame(p) for p in payloads)
        if data:
            async with self._send_lock:
                await self.stream.send_all(data)

    async def receive(self) -> bytes | None:
        """The next frame's payload; ``None`` at a clean end of stream."""
        while not self._pending:
            if self.decoder.in_frame:
                # Bytes left from an earlier read, perhaps under another max_frame:
                # whole frames, or an oversized prefix that raises now.
                self._pending.extend(self.decoder.feed(b""))
                if self._pending:
                    break
                if self._eof:
                    raise ProtocolError("connection closed in the middle of a frame")
            if self._eof:
                return None
            data = await self.stream.receive_some(_RECEIVE_CHUNK)
            if not data:
                self._eof = True
                continue
            self._pending.extend(self.decoder.feed(data))
        return self._pending.popleft()

    async def aclose(self) -> None:
        """Close the underlying stream."""
        await self.stream.aclose()
