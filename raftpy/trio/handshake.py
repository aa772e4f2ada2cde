"""The hello exchanged at the start of every connection.

Both sides start with :data:`MAGIC` (8 bytes), so that a raftpy node dialling
something else (an HTTP server, say) says "not a raftpy node at HOST:PORT", and a
node refuses, with one clear log line, a client that speaks another protocol.
Then the side that connects sends a :class:`Hello` (protocol version, cluster id,
its node id, its role and, for peers, the lane); the side that accepts answers
with a :class:`HelloReply`: either its own cluster and node id, or a refusal
with a reason, after which it closes the connection. Both are msgpack maps in
one frame. The checks are plain functions so they can be tested without I/O.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import msgpack
import trio

from raftpy.errors import HandshakeRefused, ProtocolError
from raftpy.trio.framing import FramedStream, encode_frame

PROTOCOL_VERSION = 2
"""Bumped on any incompatible change of the frames or messages (2: :data:`MAGIC`)."""

MAGIC = b"RAFTPY/2\r\n"
"""The first bytes each side sends on a connection (inside TLS, when on): the name
and the protocol version. Nothing else starts so: a TLS record starts with 0x16, a
frame's length prefix with 0x00, HTTP with a method or ``HTTP/``. The line end
makes line-based servers (HTTP, SMTP, Redis...) answer at once with an error
instead of waiting for more, so a dialler learns quickly that it is in the wrong
place."""

MAX_HELLO = 4096
"""The frame limit while reading a hello (before the peer is known)."""

ROLE_PEER = "peer"
ROLE_CLIENT = "client"
ROLE_JOIN = "join"
"""A node with a join token and no certificate yet, asking for one (``docs/security.md``)."""
LANE_CONTROL = "control"
"""Every message except snapshot chunks: votes, AppendEntries, heartbeats, responses."""
LANE_BULK = "bulk"
"""InstallSnapshot chunks, on their own connection so that heartbeats never wait behind them."""

ROLES = (ROLE_PEER, ROLE_CLIENT, ROLE_JOIN)
LANES = (LANE_CONTROL, LANE_BULK)


@dataclass(frozen=True, slots=True)
class Hello:
    """What a connecting side says first."""

    cluster_id: str
    node_id: int | None
    """The sender's member id; ``None`` for a client."""
    role: str = ROLE_PEER
    lane: str = LANE_CONTROL
    version: int = PROTOCOL_VERSION
    address: str | None = None
    """Where the sender listens for its peers (``host:port``), if it says: a node that
    joins knows nobody, and learns the leader's address from the leader's hello."""


@dataclass(frozen=True, slots=True)
class HelloReply:
    """The accepting side's answer: its identity, or ``ok=False`` and why."""

    ok: bool
    cluster_id: str = ""
    node_id: int | None = None
    reason: str = ""
    version: int = PROTOCOL_VERSION


def encode_hello(hello: Hello) -> bytes:
    """The frame payload of ``hello``."""
    fields: dict[str, Any] = {"raftpy": hello.version, "cluster": hello.cluster_id,
                              "node": hello.node_id, "role": hello.role, "lane": hello.lane}
    if hello.address is not None:
        fields["address"] = hello.address
    out: bytes = msgpack.packb(fields, use_bin_type=True)
    return out


def encode_reply(reply: HelloReply) -> bytes:
    """The frame payload of ``reply``."""
    return msgpack.packb({"raftpy": reply.version, "ok": reply.ok, "cluster": reply.cluster_id,
                          "node": reply.node_id, "reason": reply.reason}, use_bin_type=True)


def _map(payload: bytes, what: str) -> dict[str, Any]:
    try:
        fields = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError,
            TypeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"{what} is not valid msgpack: {exc}") from exc
    if type(fields) is not dict or type(fields.get("raftpy")) is not int:
        raise ProtocolError(f"{what} is not a raftpy hello")
    return fields


def _field(fields: dict[str, Any], name: str, kind: type, what: str,
           optional: bool = False) -> Any:
    value = fields.get(name)
    if value is None and optional:
        return None
    if type(value) is not kind:
        raise ProtocolError(f"{what}: field {name!r} must be {kind.__name__}, got {value!r:.40}")
    return value


def decode_hello(payload: bytes) -> Hello:
    """Parse a hello; anything malformed raises :class:`ProtocolError`."""
    fields = _map(payload, "hello")
    role = _field(fields, "role", str, "hello")
    lane = _field(fields, "lane", str, "hello")
    if role not in ROLES:
        raise ProtocolError(f"hello: unknown role {role!r:.40}")
    if lane not in LANES:
        raise ProtocolError(f"hello: unknown lane {lane!r:.40}")
    node_id = _field(fields, "node", int, "hello", optional=(role != ROLE_PEER))
    address = _field(fields, "address", str, "hello", optional=True)
    return Hello(cluster_id=_field(fields, "cluster", str, "hello"), node_id=node_id,
                 role=role, lane=lane, version=fields["raftpy"], address=address)


def decode_reply(payload: bytes) -> HelloReply:
    """Parse a hello reply; anything malformed raises :class:`ProtocolError`."""
    fields = _map(payload, "hello reply")
    return HelloReply(ok=_field(fields, "ok", bool, "hello reply"),
                      cluster_id=_field(fields, "cluster", str, "hello reply"),
                      node_id=_field(fields, "node", int, "hello reply", optional=True),
                      reason=_field(fields, "reason", str, "hello reply"),
                      version=fields["raftpy"])


def check_hello(hello: Hello, *, cluster_id: str, node_id: int,
                peer_ids: Collection[int] | None, serves_clients: bool,
                what: str = "a configured peer") -> str | None:
    """Why the accepting node ``node_id`` must refuse ``hello``, or ``None`` to accept.

    ``peer_ids`` are the members admitted (``None``: any node id, for a node that
    knows no configuration yet and waits to be added); ``what`` names them in the
    refusal ("a member of the configuration at index 7")."""
    if hello.version != PROTOCOL_VERSION:
        return f"protocol version {hello.version} is not {PROTOCOL_VERSION}"
    if hello.cluster_id != cluster_id:
        return f"cluster {hello.cluster_id!r:.80} is not {cluster_id!r}"
    if hello.role == ROLE_CLIENT:
        return None if serves_clients else "this node serves no clients"
    if hello.role == ROLE_JOIN:
        return None  # the transport checks whether it issues certificates
    if hello.node_id == node_id:
        return f"node {hello.node_id} is this node itself"
    if peer_ids is not None and hello.node_id not in peer_ids:
        return f"node {hello.node_id} is not {what}"
    return None


def describe_first_bytes(data: bytes) -> str:
    """What a connection that did not start with :data:`MAGIC` seems to speak, for
    the log line refusing it."""
    if data.startswith(b"\x16\x03"):
        return "a TLS handshake (this node does not use TLS)"
    if data[:4] in (b"GET ", b"POST", b"HEAD", b"PUT ", b"HTTP", b"OPTI", b"DELE", b"CONN"):
        return f"HTTP ({data!r:.40})"
    if data[:1] == b"\x00":
        return f"frames without the raftpy preamble, an older raftpy? ({data!r:.40})"
    return f"unknown bytes {data!r:.40}"


def check_reply(reply: HelloReply, *, cluster_id: str, expected_node: int | None) -> None:
    """Raise :class:`HandshakeRefused` unless ``reply`` accepts us and is who we dialled."""
    if not reply.ok:
        raise HandshakeRefused(reply.reason or "no reason given")
    if reply.version != PROTOCOL_VERSION:
        raise HandshakeRefused(f"the server speaks protocol version {reply.version}")
    if reply.cluster_id != cluster_id:
        raise HandshakeRefused(f"the server belongs to cluster {reply.cluster_id!r:.80}, "
                               f"not {cluster_id!r}")
    if expected_node is not None and reply.node_id != expected_node:
        raise HandshakeRefused(f"the address of node {expected_node} is served by node "
                               f"{reply.node_id}")


async def receive_exactly(stream: trio.abc.Stream, size: int) -> bytes:
    """Up to ``size`` bytes: fewer only if the other side closed first."""
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


async def say_hello(stream: trio.abc.Stream, hello: Hello, *, expected_node: int | None,
                    name: str = "?") -> FramedStream:
    """Send ``hello`` on a fresh connection and check the reply (the dialling side).

    Returns the stream framed (with the small hello frame limit: raise
    ``decoder.max_frame`` before reading anything bigger). Raises
    :class:`HandshakeRefused` when refused or answered by the wrong node/cluster.
    """
    await stream.send_all(MAGIC + encode_frame(encode_hello(hello)))
    magic = await receive_exactly(stream, len(MAGIC))
    if magic != MAGIC:
        if not magic:
            raise trio.BrokenResourceError("closed during the handshake")
        raise HandshakeRefused(f"not a raftpy node at {name} (it answered {magic!r:.40})")
    framed = FramedStream(stream, max_frame=MAX_HELLO, peer=name)
    payload = await framed.receive()
    if payload is None:
        raise trio.BrokenResourceError("closed during the handshake")
    check_reply(decode_reply(payload), cluster_id=hello.cluster_id, expected_node=expected_node)
    return framed
