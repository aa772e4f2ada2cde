"""The TCP (optionally TLS) transport between Raft members, and the client entry point.

Connections
    Each node *dials* every peer for the messages it sends, and *accepts* the
    connections its peers dial for the messages it receives: one connection per
    direction, so no one has to decide which of two crossing dials wins, and a
    connection carries data one way only (after the handshake). Messages to a
    peer travel on two lanes, each its own connection: ``bulk`` carries
    InstallSnapshot chunks, ``control`` everything else, so heartbeats never
    queue behind a snapshot (see ``docs/transport.md``).

Frames and handshake
    Every frame is a 4-byte big-endian length and a msgpack payload
    (:mod:`raftpy.trio.framing`). The dialer's first frame is a hello (protocol
    version, cluster id, node id, role, lane); the acceptor answers with its own
    identity or refuses with a reason and closes (:mod:`raftpy.trio.handshake`).
    It refuses another cluster, an unknown or its own node id, another protocol
    version. The dialer in turn refuses an answer from another cluster or
    another node id than the one configured at that address. Oversized frames,
    malformed frames, unknown message types and messages whose ``src``/``dst``
    do not match the handshake close that one connection with a logged error.

Queues
    :meth:`Transport.send` never blocks: each peer lane has a queue bounded in
    messages (``queue_size``) and bytes (``queue_bytes``). A queued heartbeat (an
    AppendEntries without entries) is replaced by a newer one; when the queue is
    full the heartbeat goes first, else the oldest message. Raft retransmits, so
    a drop costs a round trip, never safety. The writer sends whatever queued up
    in one write. Dials back off exponentially (capped, jittered). Received
    messages go to ``Transport.incoming`` (``queue_size`` deep), or to the
    ``sink`` given to :class:`Transport` (the runtime's own queue); when the
    node falls behind, readers wait, and TCP pushes back on the senders.

Clients on the same port
    A hello with role ``"client"`` is handed, after the reply, to the
    ``client_handler`` given to :class:`Transport` as a :class:`FramedStream`:
    ``await stream.receive()`` returns the next frame's payload (``None`` once the
    client hung up), ``await stream.send(payload)`` writes one frame. The
    connection is closed when the handler returns. The client side is
    :func:`raftpy.trio.client.connect_client`. Without a handler, client hellos
    are refused.

TLS
    ``ssl_context`` (server side; make it require client certificates for mutual
    authentication) wraps every accepted stream, ``client_ssl_context`` every
    dialled one. A peer whose certificate does not verify, or that speaks plain
    TCP to a TLS port, is refused and logged; the server keeps serving.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import random
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from raftpy import codec
from raftpy.errors import HandshakeRefused, ProtocolError
from raftpy.messages import AppendEntries, InstallSnapshot, Message
from raftpy.trio import handshake, identity
from raftpy.trio.framing import DEFAULT_MAX_FRAME, FramedStream, encode_frame
from raftpy.trio.peerhealth import DEFAULT_WARN_AFTER, PeerHealth
from raftpy.trio.peerloss import PeerLossDetector

logger = logging.getLogger("raftpy.transport")

_JOIN_SLOT = "join:"
"""The slot count of joining nodes (an identity string never looks like it)."""

ConnectStream = Callable[[int, "PeerAddress"], Awaitable[trio.abc.Stream]]
"""Opens a raw stream to a peer (TCP by default; tests inject memory streams)."""

ClientHandler = Callable[[FramedStream], Awaitable[None]]
"""Serves one client connection until it returns."""

# Errors that end one connection (never the transport).
_CONNECTION_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError,
                      ProtocolError, OSError)
# A write gathers queued messages up to about this many bytes.
_BATCH_BYTES = 256 * 1024
# Refused connections logged per second at most (the rest are counted).
_LOG_BURST = 20
# accept() errors caused by resource exhaustion: wait and retry rather than stop serving.
_ACCEPT_RETRY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


class MessageSink(Protocol):
    """Where received messages go: :class:`trio.MemorySendChannel` fits, and so does
    a runtime's own queue (see ``sink`` of :class:`Transport`)."""

    def send_nowait(self, msg: Message) -> None:
        """Take ``msg`` at once or raise :class:`trio.WouldBlock`."""
        ...

    async def send(self, msg: Message) -> None:
        """Take ``msg``, waiting for room."""
        ...

    def close(self) -> None:
        """No more messages will come."""
        ...


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """Where a peer listens."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _is_heartbeat(msg: Message) -> bool:
    return isinstance(msg, AppendEntries) and not msg.entries


def _lane_of(msg: Message) -> str:
    return handshake.LANE_BULK if isinstance(msg, InstallSnapshot) else handshake.LANE_CONTROL


def _weight(msg: Message) -> int:
    """Roughly the bytes ``msg`` takes queued and on the wire (cheaper than encoding it)."""
    if isinstance(msg, AppendEntries):
        return 64 + sum(24 + len(e.data) for e in msg.entries)
    if isinstance(msg, InstallSnapshot):
        return 64 + len(msg.data)
    return 64


class _Outbox:
    """A bounded FIFO of messages for one peer lane, drained by one dialer task.

    Bounded in count and in bytes. At most one heartbeat waits in it: a newer one
    supersedes the older (same or later term, later commit index), so the older
    is dropped ("coalesced") rather than sent late.
    """

    def __init__(self, capacity: int, max_bytes: int) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.bytes = 0
        self._queue: deque[tuple[Message, int]] = deque()
        self._heartbeat: Message | None = None
        self._ready = trio.Event()
        self.direct_fd: int | None = None
        """The connection's socket while its writer is idle (see ``Transport.send``)."""
        self.prefix = b""
        """The rest of a frame that a direct write sent only in part: goes out first."""

    def __len__(self) -> int:
        return len(self._queue)

    def wake(self) -> None:
        self._ready.set()

    def put(self, msg: Message) -> tuple[int, int]:
        """Queue ``msg``; returns how many older messages were dropped and coalesced."""
        coalesced = 0
        if self._heartbeat is not None and _is_heartbeat(msg):
            self._remove(self._heartbeat)
            coalesced = 1
        weight = _weight(msg)
        dropped = 0
        while self._queue and (len(self._queue) >= self.capacity
                               or self.bytes + weight > self.max_bytes):
            self._evict()
            dropped += 1
        self._queue.append((msg, weight))
        self.bytes += weight
        if _is_heartbeat(msg):
            self._heartbeat = msg
        self._ready.set()
        return dropped, coalesced

    def _remove(self, msg: Message) -> None:
        for i, (queued, weight) in enumerate(self._queue):
            if queued is msg:
                del self._queue[i]
                self.bytes -= weight
                break
        if msg is self._heartbeat:
            self._heartbeat = None

    def _evict(self) -> None:
        # The heartbeat is the cheapest loss (the next one repeats it); otherwise the
        # oldest message goes: Raft retransmits whatever is still needed.
        if self._heartbeat is not None:
            self._remove(self._heartbeat)
        else:
            self._pop()

    def _pop(self) -> Message:
        msg, weight = self._queue.popleft()
        self.bytes -= weight
        if msg is self._heartbeat:
            self._heartbeat = None
        return msg

    async def wait(self) -> None:
        """Return once the queue (or the prefix) is not empty."""
        while not self._queue and not self.prefix:
            self._ready = trio.Event()
            await self._ready.wait()

    async def take(self, max_bytes: int) -> list[Message]:
        """The oldest messages, about ``max_bytes`` in all, waiting until there is one
        (or only a :attr:`prefix` to write: then the list may be empty)."""
        await self.wait()
        batch: list[Message] = []
        total = 0
        while self._queue and (not batch or total + self._queue[0][1] <= max_bytes):
            total += self._queue[0][1]
            batch.append(self._pop())
        return batch


class Transport:
    """Carries Raft messages between this node and its peers over TCP (or TLS).

    ``peers`` maps every *other* member's id to its address. Received messages
    appear on ``incoming``; :meth:`send` queues one for its ``dst``.
    :meth:`run` serves and dials until cancelled. See the module docstring.
    """

    def __init__(
        self,
        node_id: int,
        cluster_id: str,
        peers: dict[int, PeerAddress],
        *,
        ssl_context: ssl.SSLContext | None = None,
        client_ssl_context: ssl.SSLContext | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        queue_size: int = 1024,
        queue_bytes: int = 64 * 1024 * 1024,
        connect_stream: ConnectStream | None = None,
        client_handler: ClientHandler | None = None,
        connect_timeout: float = 5.0,
        handshake_timeout: float = 5.0,
        backoff_min: float = 0.05,
        backoff_max: float = 2.0,
        check_peer_host: bool = False,
        rng: random.Random | None = None,
        sink: MessageSink | None = None,
        advertise: str | None = None,
        max_pending: int = 128,
        max_clients: int = 512,
        max_clients_per_identity: int = 64,
        unreachable_warning_after: float = DEFAULT_WARN_AFTER,
        join_handler: ClientHandler | None = None,
        max_joins: int = 8,
    ) -> None:
        if queue_size < 1 or max_frame < handshake.MAX_HELLO:
            raise ValueError("queue_size must be >= 1 and max_frame >= 4096")
        if not 0 < backoff_min <= backoff_max:
            raise ValueError("need 0 < backoff_min <= backoff_max")
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.peers = {peer: addr for peer, addr in peers.items() if peer != node_id}
        self.advertise = advertise
        """This node's own ``host:port``, sent in every hello (see :meth:`update_peers`)."""
        self._admit: frozenset[int] | None = frozenset(self.peers)
        self._admit_what = "a configured peer"
        self._learned: dict[int, PeerAddress] = {}
        self._dialers: dict[int, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None
        self.ssl_context = ssl_context
        self.client_ssl_context = client_ssl_context
        self.max_frame = max_frame
        self.client_handler = client_handler
        self.join_handler = join_handler
        """Serves hellos of role ``join`` (TLS only, no certificate yet): a node with a
        join token asking for its certificate (:mod:`raftpy.kv.joining`)."""
        self.connect_timeout = connect_timeout
        self.handshake_timeout = handshake_timeout
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.check_peer_host = check_peer_host
        self._connect_stream = connect_stream if connect_stream is not None else open_tcp
        self._rng = rng if rng is not None else random.Random()
        self._incoming_send: MessageSink
        self._incoming_send, self.incoming = trio.open_memory_channel[Message](queue_size)
        if sink is not None:
            # The reading task hands each message straight to its consumer: one task
            # switch less per message than a channel with a task draining it.
            self._incoming_send = sink
        self._queue_size = queue_size
        self._queue_bytes = queue_bytes
        self._outboxes = {(peer, lane): _Outbox(queue_size, queue_bytes)
                          for peer in self.peers for lane in handshake.LANES}
        self._connected: set[tuple[int, str]] = set()
        self._inbound: dict[tuple[int, str], trio.CancelScope] = {}
        self._peer_back: dict[int, trio.Event] = {}
        """Set when a peer dials us: our dialers to it stop backing off."""
        self._stats: dict[str, int] = dict.fromkeys(_STAT_NAMES, 0)
        self.peer_health = PeerHealth(node_id, warn_after=unreachable_warning_after)
        """Reachability of each peer; logs it once, and a WARNING only past
        ``unreachable_warning_after`` seconds (:mod:`raftpy.trio.peerhealth`)."""
        if min(max_pending, max_clients, max_clients_per_identity, max_joins) < 1:
            raise ValueError("connection limits must be >= 1")
        self.max_pending = max_pending
        """Connections still in their handshake; one more closes the oldest of them."""
        self.max_clients = max_clients
        self.max_joins = max_joins
        """Nodes joining with a token served at once (they show no certificate yet;
        each may take at most twice ``handshake_timeout``)."""
        """Client connections served at once; more are refused in the handshake."""
        self.max_clients_per_identity = max_clients_per_identity
        """Of those, per client certificate identity (with TLS)."""
        self._pending: dict[int, trio.CancelScope] = {}
        self._next_pending = 0
        self._clients: dict[str, int] = {}
        self._log_window = -1e9
        self._log_count = 0
        self._log_suppressed = 0
        self.peer_loss: PeerLossDetector | None = None
        """Set (by the runtime, for early pre-vote) to hear when every connection to
        a peer is gone: the control lane then redials at once after a loss."""

    # ------------------------------------------------------------------ public

    def send(self, msg: Message) -> None:
        """Queue ``msg`` for ``msg.dst``; never blocks (see the module docstring)."""
        outbox = self._outboxes.get((msg.dst, _lane_of(msg)))
        if outbox is None:
            self._count("dropped_unknown_peer")
            logger.debug("node %d: no address for node %d, dropping %s", self.node_id, msg.dst,
                         type(msg).__name__)
            return
        # direct_fd is None whenever a prefix waits (see _write_now and _pump).
        if outbox.direct_fd is not None and not outbox \
                and self._write_now(outbox, outbox.direct_fd, msg):
            return
        dropped, coalesced = outbox.put(msg)
        if dropped:
            self._count("dropped_queue_full", dropped)
        if coalesced:
            self._count("coalesced_heartbeats", coalesced)

    def _write_now(self, outbox: _Outbox, fd: int, msg: Message) -> bool:
        """Write ``msg`` straight to an idle plain-TCP connection, from the caller's task.

        The writer task would do the same write one scheduler round later; on the
        critical path of a commit or a transfer every message paid that round (about
        a tenth of a millisecond on a busy 2-core machine). Only while the writer
        waits for work with nothing queued, so frames never interleave; whatever the
        socket does not take now becomes the :attr:`_Outbox.prefix` the writer sends
        first. Returns False (queue it) if the connection looks broken: the writer
        notices and reconnects.
        """
        payload = codec.encode(msg)
        if len(payload) > self.max_frame:
            self._drop_too_large(msg, len(payload))
            return True
        frame = encode_frame(payload)
        try:
            written = os.write(fd, frame)
        except BlockingIOError:
            written = 0
        except OSError:
            outbox.direct_fd = None
            return False
        self._count("frames_sent")
        self._count("bytes_sent", len(frame))
        self._count("direct_writes")
        if written < len(frame):
            self._count("direct_writes_cut_short")
            outbox.prefix = frame[written:]
            outbox.direct_fd = None
            outbox.wake()
        return True

    def _drop_too_large(self, msg: Message, size: int) -> None:
        self._count("dropped_too_large")
        logger.error("node %d: %s to node %d is %d bytes, over the %d-byte frame limit: "
                     "dropped", self.node_id, type(msg).__name__, msg.dst, size, self.max_frame)

    def stats(self) -> dict[str, int]:
        """Counters since start: frames and bytes each way, drops, connections, refusals."""
        out = dict(self._stats)
        out["queued"] = sum(len(o) for o in self._outboxes.values())
        out["peers_connected"] = len({peer for peer, lane in self._connected
                                      if lane == handshake.LANE_CONTROL})
        return out

    def update_peers(self, peers: dict[int, PeerAddress], *, admit: Collection[int] | None,
                     what: str = "a member") -> None:
        """Dial ``peers`` from now on (new ones at once; connections to the peers left
        out are closed), and accept inbound peer connections only from ``admit``
        (``None``: from any node id; the refusal names them as ``what``).

        The runtime calls this whenever the configuration in force changes. A node
        admitted but without a configured address (a joining node does not know the
        leader yet) is dialled at the address its own hello announced.
        """
        self._admit = None if admit is None else frozenset(admit)
        self._admit_what = what
        wanted = {p: a for p, a in peers.items() if p != self.node_id}
        for peer, address in self._learned.items():
            if peer not in wanted and (admit is None or peer in admit):
                wanted[peer] = address
        for peer in [p for p in self.peers if wanted.get(p) != self.peers[p]]:
            self._drop_peer(peer)
        for peer, address in wanted.items():
            if peer not in self.peers:
                self._add_peer(peer, address)
        if admit is not None:
            for (peer, _), scope in list(self._inbound.items()):
                if peer not in admit:
                    logger.info("node %d: closing the connection from node %d: it is not %s",
                                self.node_id, peer, what)
                    scope.cancel()

    def _add_peer(self, peer: int, address: PeerAddress) -> None:
        logger.info("node %d: peer %d is at %s", self.node_id, peer, address)
        self.peers[peer] = address
        for lane in handshake.LANES:
            self._outboxes[(peer, lane)] = _Outbox(self._queue_size, self._queue_bytes)
        if self._nursery is not None:
            self._nursery.start_soon(self._run_peer, peer, address)

    def _drop_peer(self, peer: int) -> None:
        logger.info("node %d: no longer dialling node %d", self.node_id, peer)
        self.peer_health.forget(peer)
        del self.peers[peer]
        for lane in handshake.LANES:
            self._outboxes.pop((peer, lane), None)
        scope = self._dialers.pop(peer, None)
        if scope is not None:
            scope.cancel()

    async def _run_peer(self, peer: int, address: PeerAddress) -> None:
        """Both lanes' dialers of one peer, until it is dropped (or the transport stops)."""
        with trio.CancelScope() as scope:
            self._dialers[peer] = scope
            try:
                async with trio.open_nursery() as nursery:
                    for lane in handshake.LANES:
                        outbox = self._outboxes.get((peer, lane))
                        if outbox is not None:
                            nursery.start_soon(self._dial_loop, peer, lane, outbox, address)
            finally:
                if self._dialers.get(peer) is scope:
                    del self._dialers[peer]

    def connected(self, peer: int) -> bool:
        """Whether the outgoing control connection to ``peer`` is up."""
        return (peer, handshake.LANE_CONTROL) in self._connected

    async def run(
        self,
        listeners: Sequence[trio.abc.Listener[Any]] | None = None,
        *,
        client_listeners: Sequence[trio.abc.Listener[Any]] | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept on ``listeners`` and dial every peer until cancelled.

        With ``client_listeners`` (may be empty: no client service on this
        transport's sockets), ``listeners`` admit peers only and
        ``client_listeners`` clients (and joining nodes) only, so that the two can
        be firewalled apart; a hello of the wrong kind is refused with a reason.
        The listeners stay open when this returns; their owner closes them.
        """
        peer_only = None if client_listeners is None else "peer"
        try:
            async with trio.open_nursery() as nursery:
                for listener in listeners or ():
                    nursery.start_soon(self._serve, listener, nursery, peer_only)
                for listener in client_listeners or ():
                    nursery.start_soon(self._serve, listener, nursery, "client")
                for peer, address in self.peers.items():
                    nursery.start_soon(self._run_peer, peer, address)
                self._nursery = nursery
                task_status.started()
        finally:
            self._nursery = None
            self._incoming_send.close()

    async def accept_stream(self, stream: trio.abc.Stream, only: str | None = None) -> None:
        """Handle one inbound connection until it ends; the stream is closed on return.

        ``only``: ``"peer"`` or ``"client"`` when it came to a dedicated listener
        (see :meth:`run`).

        Never raises for a misbehaving peer: every refusal is logged and counted.
        """
        name = _remote_name(stream)
        key = self._next_pending
        self._next_pending += 1
        try:
            with trio.CancelScope() as scope:
                # Bounded: a flood of silent or half-done handshakes evicts its own oldest
                # members, while a peer's handshake (milliseconds) gets through.
                self._pending[key] = scope
                if len(self._pending) > self.max_pending:
                    oldest = next(iter(self._pending))
                    self._pending.pop(oldest).cancel()
                    self._count("evicted_pending")
                await self._accept(stream, name, key, only)
            if scope.cancelled_caught:
                logger.info("node %d: closed connection from %s: more than %d handshakes "
                            "pending", self.node_id, name, self.max_pending)
        except HandshakeRefused as exc:
            # Counted where refused, before telling the peer (so a test sees it at once).
            self._log_refusal(logging.WARNING, "node %d: refused connection from %s: %s",
                              self.node_id, name, exc.reason)
        except ProtocolError as exc:
            self._count("protocol_errors")
            self._log_refusal(logging.ERROR, "node %d: closing connection from %s: %s",
                              self.node_id, name, exc)
        except trio.TooSlowError:
            self._count("refused")
            self._log_refusal(logging.WARNING,
                              "node %d: refused connection from %s: no hello within %.1fs",
                              self.node_id, name, self.handshake_timeout)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            logger.info("node %d: connection from %s ended: %s", self.node_id, name,
                        _why(exc))
        except Exception:
            # A failing client handler must not take the server down with it.
            logger.exception("node %d: error serving %s", self.node_id, name)
        finally:
            self._pending.pop(key, None)
            await close_quietly(stream)

    # ------------------------------------------------------------------ accepting

    async def _serve(self, listener: trio.abc.Listener[Any], nursery: trio.Nursery,
                     only: str | None = None) -> None:
        while True:
            try:
                stream = await listener.accept()
            except trio.ClosedResourceError:
                return
            except OSError as exc:
                if exc.errno not in _ACCEPT_RETRY_ERRNOS:
                    raise
                logger.error("node %d: accept failed (%s), retrying", self.node_id, exc)
                await trio.sleep(0.1)
                continue
            nursery.start_soon(self.accept_stream, stream, only)

    async def _accept(self, raw: trio.abc.Stream, name: str, pending: int,
                      only: str | None = None) -> None:
        stream = raw
        with trio.fail_after(self.handshake_timeout):
            if self.ssl_context is not None:
                first = bytes(await raw.receive_some(1))
                if first and first != _TLS_HANDSHAKE_RECORD:
                    # Plain TCP on a TLS port: if it is raftpy, read its hello and say
                    # why in the plain protocol, so that a client can tell its operator
                    # instead of retrying.
                    head, rest = await _read_preamble(raw, first)
                    if head != handshake.MAGIC:
                        raise ProtocolError("not a raftpy peer or client: "
                                            + handshake.describe_first_bytes(head))
                    self._count("refused")
                    self._count("refused_tls")
                    refusal = "this member requires TLS"
                    plain = FramedStream(raw, max_frame=handshake.MAX_HELLO, peer=name)
                    plain._pending.extend(plain.decoder.feed(rest))
                    await plain.receive()
                    await raw.send_all(handshake.MAGIC + encode_frame(handshake.encode_reply(
                        handshake.HelloReply(ok=False, cluster_id=self.cluster_id,
                                             node_id=self.node_id, reason=refusal))))
                    raise HandshakeRefused(refusal)
                stream = trio.SSLStream(_Replayed(raw, first), self.ssl_context,
                                        server_side=True)
                try:
                    await stream.do_handshake()
                except trio.BrokenResourceError as exc:
                    self._count("refused")
                    self._count("refused_tls")
                    raise HandshakeRefused(f"TLS handshake failed: {_why(exc)}") from exc
            magic, rest = await _read_preamble(stream)
            if magic != handshake.MAGIC:
                if not magic:
                    raise trio.BrokenResourceError("closed before the hello")
                raise ProtocolError("not a raftpy peer or client: "
                                    + handshake.describe_first_bytes(magic))
            framed = FramedStream(stream, max_frame=handshake.MAX_HELLO, peer=name)
            if rest:  # the hello, usually: it came in the same write
                framed._pending.extend(framed.decoder.feed(rest))
            payload = await framed.receive()
            if payload is None:
                raise trio.BrokenResourceError("closed before the hello")
            hello = handshake.decode_hello(payload)
            reason = handshake.check_hello(
                hello, cluster_id=self.cluster_id, node_id=self.node_id,
                peer_ids=self._admit, serves_clients=self.client_handler is not None,
                what=self._admit_what)
            if reason is None and hello.role == handshake.ROLE_PEER \
                    and hello.node_id not in self.peers and self.check_peer_host:
                reason = f"node {hello.node_id} has no configured address to check"
            if reason is None and hello.role == handshake.ROLE_PEER and self.check_peer_host:
                reason = self._check_host(hello, raw)
            if reason is None and hello.role == handshake.ROLE_JOIN \
                    and (self.join_handler is None or self.ssl_context is None):
                reason = "this member issues no certificates (it has no CA key)"
            if reason is None and self.ssl_context is not None \
                    and hello.role != handshake.ROLE_JOIN:
                # The certificate, not the hello, says who this is (docs/security.md).
                # (A node joining with a token has none yet: its join handler checks
                # the token instead.)
                try:
                    framed.identity = identity.of_stream(stream)
                except ValueError as exc:
                    reason = str(exc)
                else:
                    reason = identity.check_hello(framed.identity, cluster_id=self.cluster_id,
                                                  role=hello.role, node_id=hello.node_id)
                if reason is not None:
                    self._count("refused_identity")
            if reason is None and only is not None and hello.role not in _LISTENER_ROLES[only] \
                    and not (only == "peer" and framed.identity is not None
                             and framed.identity.kind == identity.KIND_NODE):
                # (A member may use the client protocol on the peer listener: handovers
                # and joins forwarded to the leader do.)
                reason = f"this is the {only} listener; {hello.role}s connect to the " \
                         f"{'peer' if only == 'client' else 'client'} listener"
            if reason is None and hello.role == handshake.ROLE_JOIN:
                reason = self._join_slot_problem()
            elif reason is None and hello.role != handshake.ROLE_PEER:
                reason = self._client_slot_problem(framed.identity)
            if reason is not None:
                self._count("refused")
                await stream.send_all(handshake.MAGIC + encode_frame(handshake.encode_reply(
                    handshake.HelloReply(ok=False, cluster_id=self.cluster_id,
                                         node_id=self.node_id, reason=reason))))
                raise HandshakeRefused(reason)
            # The preamble goes with the reply: one write each way (lockstep test
            # streams would deadlock on a separate one).
            await stream.send_all(handshake.MAGIC + encode_frame(handshake.encode_reply(
                handshake.HelloReply(ok=True, cluster_id=self.cluster_id,
                                     node_id=self.node_id))))
            self._pending.pop(pending, None)
        framed.decoder.max_frame = self.max_frame
        if hello.role != handshake.ROLE_PEER:
            handler = self.client_handler if hello.role == handshake.ROLE_CLIENT \
                else self.join_handler
            assert handler is not None
            self._count("client_connections" if hello.role == handshake.ROLE_CLIENT
                        else "join_connections")
            joining = hello.role == handshake.ROLE_JOIN
            slots = (_JOIN_SLOT,) if joining else (str(framed.identity), "")
            for slot in slots:
                self._clients[slot] = self._clients.get(slot, 0) + 1
            try:
                if joining:
                    # A joining node shows no certificate: it may not hold a slot
                    # for longer than an exchange takes (one certificate signed, one
                    # token spent through the log), nor take the clients' slots.
                    with trio.move_on_after(2 * self.handshake_timeout):
                        await handler(framed)
                else:
                    await handler(framed)
            finally:
                for slot in slots:
                    self._clients[slot] -= 1
                    if not self._clients[slot]:
                        del self._clients[slot]
            return
        assert hello.node_id is not None
        if hello.node_id not in self.peers and hello.address is not None:
            # Admitted without a known address (this node waits to be added and knows
            # nobody yet): answer it at the address it announced.
            try:
                learned = peer_address(hello.address)
            except ValueError:
                learned = None
            if learned is not None and hello.node_id not in self.peers:
                self._learned[hello.node_id] = learned
                self._add_peer(hello.node_id, learned)
        key = (hello.node_id, hello.lane)
        back = self._peer_back.pop(hello.node_id, None)
        if back is not None:
            back.set()
        # A peer that restarted may leave its old connection half-open: the new one wins.
        old = self._inbound.pop(key, None)
        if old is not None:
            old.cancel()
        self._count("accepted")
        logger.info("node %d: node %d connected (%s) from %s", self.node_id, hello.node_id,
                    hello.lane, name, extra={"peer": hello.node_id})
        loss = self.peer_loss
        with trio.CancelScope() as scope:
            self._inbound[key] = scope
            if loss is not None:
                loss.up(hello.node_id)
            try:
                await self._receive_messages(framed, hello.node_id)
            finally:
                if self._inbound.get(key) is scope:
                    del self._inbound[key]
                if loss is not None:
                    loss.down(hello.node_id)

    def _log_refusal(self, level: int, message: str, *args: Any) -> None:
        # At most _LOG_BURST refusals a second reach the log: a flood of garbage
        # connections must not become a flood of log lines. The rest are counted.
        now = trio.current_time()
        if now - self._log_window >= 1.0:
            if self._log_suppressed:
                logger.warning("node %d: %d more refused connections not logged in the "
                               "last %.0f s", self.node_id, self._log_suppressed,
                               now - self._log_window)
            self._log_window, self._log_count, self._log_suppressed = now, 0, 0
        if self._log_count < _LOG_BURST:
            self._log_count += 1
            logger.log(level, message, *args)
        else:
            self._log_suppressed += 1
            self._count("refusals_not_logged")

    def _join_slot_problem(self) -> str | None:
        # Joining nodes are unauthenticated until their token is checked: a budget
        # of their own, so that they can never crowd out clients or admins.
        if self._clients.get(_JOIN_SLOT, 0) >= self.max_joins:
            self._count("refused_busy")
            return f"too many joining nodes at once ({self.max_joins})"
        return None

    def _client_slot_problem(self, who: identity.Identity | None) -> str | None:
        # Clients have their own budget: however many there are, peers still connect.
        if self._clients.get("", 0) >= self.max_clients:
            self._count("refused_busy")
            return f"too many client connections ({self.max_clients})"
        if who is not None and self._clients.get(str(who), 0) >= self.max_clients_per_identity:
            self._count("refused_busy")
            return f"too many client connections for {who} ({self.max_clients_per_identity})"
        return None

    def _check_host(self, hello: handshake.Hello, raw: trio.abc.Stream) -> str | None:
        assert hello.node_id is not None
        configured = self.peers[hello.node_id].host
        remote = _remote_host(raw)
        try:
            expected = ipaddress.ip_address(configured)
        except ValueError:
            return None  # a host name: nothing reliable to compare with
        if remote is None or ipaddress.ip_address(remote) == expected:
            return None
        return f"node {hello.node_id} is configured at {configured}, not {remote}"

    async def _receive_messages(self, framed: FramedStream, peer: int) -> None:
        while True:
            payload = await framed.receive()
            if payload is None:
                return
            msg = codec.decode(payload)
            if msg.src != peer or msg.dst != self.node_id:
                raise ProtocolError(f"node {peer} sent a message from {msg.src} to {msg.dst}")
            self._count("frames_received")
            self._count("bytes_received", len(payload) + 4)
            try:
                # Without waiting when there is room: a blocking send yields to the
                # scheduler once per frame, and a read often brings hundreds.
                try:
                    self._incoming_send.send_nowait(msg)
                except trio.WouldBlock:
                    await self._incoming_send.send(msg)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # nobody listens any more: the node is shutting down

    # ------------------------------------------------------------------ dialling

    def _backoff(self, failures: int) -> float:
        # Capped exponential backoff with "equal jitter": at least half the step, so
        # dialers that failed together spread out without ever retrying at once.
        step = min(self.backoff_max, self.backoff_min * float(2 ** min(failures, 32)))
        return step / 2 + self._rng.uniform(0, step / 2)

    async def _dial_loop(self, peer: int, lane: str, outbox: _Outbox,
                         address: PeerAddress) -> None:
        failures = 0
        ever_connected = False
        control = lane == handshake.LANE_CONTROL
        after_loss = redial_now = False
        # With early pre-vote the control lane dials every peer at once and keeps the
        # connection: a vote request must not wait for a connect and a handshake
        # (followers never talk to each other otherwise).
        eager = self.peer_loss is not None and lane == handshake.LANE_CONTROL
        while True:
            if not (redial_now or eager):
                await outbox.wait()  # dial lazily: an idle bulk lane holds no connection
            framed: FramedStream | None = None
            try:
                framed = await self._dial(peer, address, lane)
            except HandshakeRefused as exc:
                self._count("handshake_failures")
                logger.error("node %d: %s (node %d, %s) refused us: %s", self.node_id, address,
                             peer, lane, exc.reason, extra={"peer": peer})
                if control:
                    self.peer_health.failed(peer, address, f"refused: {exc.reason}")
            except _CONNECTION_ERRORS as exc:
                self._count("connect_failures")
                if control:  # one INFO line per outage, a WARNING if it lasts
                    self.peer_health.failed(peer, address, _why(exc))
                else:
                    logger.debug("node %d: cannot connect to node %d at %s (%s): %s",
                                 self.node_id, peer, address, lane, _why(exc),
                                 extra={"peer": peer})
            loss = self.peer_loss if control else None
            if framed is None and after_loss and loss is not None:
                loss.reconnect_failed(peer)
            after_loss = redial_now = False
            if framed is not None:
                self._count("reconnects" if ever_connected else "connects")
                ever_connected = True
                failures = 0
                self._connected.add((peer, lane))
                if control:
                    self.peer_health.connected(peer, address)
                if loss is not None:
                    loss.up(peer)
                up_since = trio.current_time()
                try:
                    reason = await self._pump(framed, outbox)
                finally:
                    self._connected.discard((peer, lane))
                    if loss is not None:
                        loss.down(peer)
                    await close_quietly(framed.stream)
                logger.info("node %d: connection to node %d (%s) lost: %s", self.node_id,
                            peer, lane, reason, extra={"peer": peer})
                if control:
                    self.peer_health.lost(peer, reason)
                if loss is not None:
                    # Redial at once (a dead peer refuses within a millisecond), but
                    # back off after a connection that lasted less than a backoff.
                    after_loss = True
                    redial_now = trio.current_time() - up_since >= self.backoff_min
                    if redial_now:
                        continue
            # Back off, unless the peer dials us meanwhile: it is evidently up again
            # (else a member restarted after a long outage would wait up to
            # backoff_max before anyone sends it a vote, and so hold up elections).
            back = self._peer_back.setdefault(peer, trio.Event())
            failures += 1
            with trio.move_on_after(self._backoff(failures - 1)):
                await back.wait()
                failures = 0

    async def _dial(self, peer: int, address: PeerAddress, lane: str) -> FramedStream:
        with trio.fail_after(self.connect_timeout):
            stream = await self._connect_stream(peer, address)
        try:
            with trio.fail_after(self.handshake_timeout):
                if self.client_ssl_context is not None:
                    stream = trio.SSLStream(stream, self.client_ssl_context,
                                            server_hostname=address.host)
                    await stream.do_handshake()
                    check_server_identity(stream, self.cluster_id, peer)
                framed = await handshake.say_hello(stream, handshake.Hello(
                    cluster_id=self.cluster_id, node_id=self.node_id, role=handshake.ROLE_PEER,
                    lane=lane, address=self.advertise), expected_node=peer, name=str(address))
        except BaseException:
            await close_quietly(stream)
            raise
        return framed

    async def _pump(self, framed: FramedStream, outbox: _Outbox) -> str:
        """Write queued messages until the connection fails; returns why it ended."""
        reason = "closed"
        async with trio.open_nursery() as nursery:
            async def watch() -> None:
                # The acceptor never writes after its reply, so any read result means
                # the connection is over: learn it now, not at the next failed write.
                nonlocal reason
                try:
                    data = await framed.receive()
                    reason = "closed by the peer" if data is None else "unexpected data"
                except _CONNECTION_ERRORS as exc:
                    reason = _why(exc)
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            # Plain TCP only: a TLS stream's bytes must go through its SSL object.
            fd = framed.stream.socket.fileno() if type(framed.stream) is trio.SocketStream \
                else None
            try:
                while True:
                    outbox.direct_fd = fd  # no prefix here: the last round wrote it
                    try:
                        batch = await outbox.take(_BATCH_BYTES)
                    finally:
                        outbox.direct_fd = None
                    if outbox.prefix:
                        prefix, outbox.prefix = outbox.prefix, b""
                        await framed.stream.send_all(prefix)
                    # Whatever queued up meanwhile goes out in one write (one syscall).
                    payloads = []
                    for msg in batch:
                        payload = codec.encode(msg)
                        if len(payload) <= self.max_frame:
                            payloads.append(payload)
                        else:
                            self._drop_too_large(msg, len(payload))
                    await framed.send_many(payloads)
                    self._count("frames_sent", len(payloads))
                    self._count("bytes_sent", sum(len(p) + 4 for p in payloads))
            except _CONNECTION_ERRORS as exc:
                reason = _why(exc)
                self._count("send_failures")
                nursery.cancel_scope.cancel()
        return reason

    def _count(self, name: str, n: int = 1) -> None:
        self._stats[name] += n


_STAT_NAMES = (
    "direct_writes", "direct_writes_cut_short",
    "frames_sent", "frames_received", "bytes_sent", "bytes_received",
    "dropped_queue_full", "coalesced_heartbeats", "dropped_unknown_peer", "dropped_too_large",
    "send_failures",
    "connects", "reconnects", "connect_failures", "handshake_failures",
    "accepted", "client_connections", "join_connections", "refused", "refused_tls",
    "refused_identity", "refused_busy", "evicted_pending", "refusals_not_logged", "protocol_errors",
)


_LISTENER_ROLES = {
    "peer": (handshake.ROLE_PEER,),
    "client": (handshake.ROLE_CLIENT, handshake.ROLE_JOIN),
}
"""Who each kind of dedicated listener admits (``client_listeners`` of :meth:`Transport.run`)."""

_TLS_HANDSHAKE_RECORD = b"\x16"
"""The first byte of a TLS ClientHello record."""


class _Replayed(trio.abc.Stream):
    """``stream`` with ``prefix`` (bytes already read from it) put back in front."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            size = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            await trio.lowlevel.checkpoint()
            return data
        return await self._stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._stream.aclose()


async def _read_preamble(stream: trio.abc.Stream, have: bytes = b"") -> tuple[bytes, bytes]:
    """The first ``len(MAGIC)`` bytes (fewer if the stream ends) and what came with them.

    Reads whole chunks: a stranger's request (a TLS ClientHello, an HTTP request) is
    read in full, so closing on it ends the connection with a FIN the other side
    reads as a refusal, not with a reset."""
    data = have
    while len(data) < len(handshake.MAGIC):
        chunk = await stream.receive_some(handshake.MAX_HELLO)
        if not chunk:
            break
        data += chunk
    return data[:len(handshake.MAGIC)], data[len(handshake.MAGIC):]


def check_server_identity(stream: trio.SSLStream[Any], cluster_id: str,
                          expected_node: int | None) -> None:
    """Raise :class:`HandshakeRefused` unless the TLS server at the other end of
    ``stream`` holds a node certificate of ``cluster_id`` (of ``expected_node``
    when given): checked before the hello, so an impostor learns nothing."""
    try:
        reason = identity.check_server(identity.of_stream(stream), cluster_id=cluster_id,
                                       expected_node=expected_node)
    except ValueError as exc:
        reason = f"the server's {exc}" if str(exc).startswith("the certificate") else str(exc)
    if reason is not None:
        raise HandshakeRefused(reason)


def peer_address(address: str | PeerAddress | tuple[str, int]) -> PeerAddress:
    """A :class:`PeerAddress` from ``"host:port"`` (``"[v6]:port"``) or a pair."""
    if isinstance(address, PeerAddress):
        return address
    if isinstance(address, tuple):
        return PeerAddress(address[0], int(address[1]))
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    return PeerAddress(host.strip("[]"), int(port))


async def open_tcp(peer: int, address: PeerAddress) -> trio.abc.Stream:
    """The default ``connect_stream``: a TCP connection to ``address``."""
    return await trio.open_tcp_stream(address.host, address.port)


def _sockets(stream: Any) -> Iterator[Any]:
    while stream is not None:
        sock = getattr(stream, "socket", None)
        if sock is not None:
            yield sock
        stream = getattr(stream, "transport_stream", None)


def _remote_host(stream: trio.abc.Stream) -> str | None:
    for sock in _sockets(stream):
        try:
            return str(sock.getpeername()[0])
        except OSError:
            return None
    return None


def _remote_name(stream: trio.abc.Stream) -> str:
    for sock in _sockets(stream):
        try:
            host, port = sock.getpeername()[:2]
        except (OSError, ValueError):
            break
        return f"{host}:{port}"
    return type(stream).__name__


def _why(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    text = str(exc) or type(exc).__name__
    if isinstance(exc, trio.BrokenResourceError) and cause is not None:
        text = f"{text} ({cause})" if str(exc) else str(cause) or type(cause).__name__
    return text


async def close_quietly(stream: trio.abc.AsyncResource) -> None:
    """Close ``stream`` (at most 1 s, even when cancelled), ignoring a broken connection."""
    with (trio.CancelScope(shield=True), trio.move_on_after(1),
          contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError)):
        await stream.aclose()
