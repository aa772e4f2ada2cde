"""Observers: typed events from a running node, and the runtime's own measurements.

``async with node.observe() as events: async for event in events: ...`` yields
:data:`Observation` events (leader and role changes, peers becoming unreachable or
reachable again, transfers, snapshots, configuration changes). Each subscriber has
a bounded buffer; the driver task only appends to it, never waits for a consumer.

Drop policy: **drop oldest**. When a subscriber's buffer is full, the oldest
buffered event is discarded to make room for the new one, so a slow consumer
always sees the most recent state changes; every discarded event is counted in
:attr:`EventStream.dropped` and in the node's ``observer_events_dropped`` counter
(:meth:`Node.metrics`).

:class:`RuntimeObserver` is the one object the runtime calls at its hook points
(a batch drained, a batch applied, an fsync done, a snapshot taken): it turns
those into events and into the runtime-measured parts of :class:`NodeMetrics`.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from raftpy.membership import Configuration
from raftpy.metrics import (
    Counters,
    Histogram,
    Latencies,
    NodeMetrics,
    PeerMetrics,
)
from raftpy.ready import (
    ConfigurationChanged,
    LeaderChanged,
    Ready,
    Role,
    SnapshotMeta,
    TransferEnded,
)

if TYPE_CHECKING:
    from raftpy.node import RaftNode

DEFAULT_BUFFER = 256
"""Events buffered per subscriber before the oldest are dropped."""


@dataclass(frozen=True, slots=True)
class LeaderChange:
    """The leader this node knows of changed (``leader_id is None``: none known)."""

    at: float
    term: int
    leader_id: int | None
    previous: int | None


@dataclass(frozen=True, slots=True)
class RoleChange:
    """This node's role changed."""

    at: float
    term: int
    role: Role
    previous: Role


@dataclass(frozen=True, slots=True)
class PeerUnreachable:
    """The transport lost, or could not make, its connection to ``peer``."""

    at: float
    peer: int
    reason: str


@dataclass(frozen=True, slots=True)
class PeerReachable:
    """The transport (re)connected to ``peer``."""

    at: float
    peer: int


@dataclass(frozen=True, slots=True)
class TransferStarted:
    """This leader started handing leadership to ``target``."""

    at: float
    term: int
    target: int


@dataclass(frozen=True, slots=True)
class TransferFinished:
    """A transfer this node started ended; ``reason`` says how."""

    at: float
    target: int
    succeeded: bool
    new_leader: int | None
    reason: str
    duration: float


@dataclass(frozen=True, slots=True)
class SnapshotTaken:
    """This node compacted its log into a snapshot at ``index``."""

    at: float
    index: int
    term: int


@dataclass(frozen=True, slots=True)
class SnapshotInstalled:
    """This node restored its state machine from a snapshot sent by the leader."""

    at: float
    index: int
    term: int


@dataclass(frozen=True, slots=True)
class ConfigurationChange:
    """The configuration in force changed or committed (see
    :class:`raftpy.ready.ConfigurationChanged`)."""

    at: float
    index: int
    committed: bool
    configuration: Configuration


Observation = (LeaderChange | RoleChange | PeerUnreachable | PeerReachable | TransferStarted
               | TransferFinished | SnapshotTaken | SnapshotInstalled | ConfigurationChange)
"""Every event :meth:`Node.observe` yields."""


class EventStream:
    """One subscriber's bounded buffer; iterate it with ``async for``.

    Iteration ends when the node closes. See the module docstring for the drop policy.
    """

    def __init__(self, buffer: int) -> None:
        if buffer < 1:
            raise ValueError("an observer needs a buffer of at least 1 event")
        self._events: deque[Observation] = deque()
        self._buffer = buffer
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False
        self.dropped = 0
        """Events discarded (oldest first) because this subscriber fell behind."""

    def _offer(self, event: Observation) -> bool:
        """Buffer ``event``; returns False if an older one had to be dropped."""
        kept = True
        if len(self._events) >= self._buffer:
            self._events.popleft()
            self.dropped += 1
            kept = False
        self._events.append(event)
        if self._lot:
            self._lot.unpark_all()
        return kept

    def _close(self) -> None:
        self._closed = True
        self._lot.unpark_all()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Observation:
        while not self._events:
            if self._closed:
                raise StopAsyncIteration
            await self._lot.park()
        await trio.lowlevel.checkpoint()
        return self._events.popleft()

    def pending(self) -> int:
        """Events buffered and not yet read."""
        return len(self._events)


class _Timed:
    """Proposals in flight on a leader, for the commit latency (one entry per batch)."""

    __slots__ = ("_batches",)

    def __init__(self) -> None:
        self._batches: deque[tuple[int, int, float]] = deque()

    def proposed(self, last_index: int, count: int, now: float) -> None:
        self._batches.append((last_index, count, now))

    def applied(self, index: int, now: float, histogram: Histogram) -> None:
        batches = self._batches
        while batches and batches[0][0] <= index:
            _, count, at = batches.popleft()
            histogram.observe(now - at, count)

    def clear(self) -> None:
        self._batches.clear()


class RuntimeObserver:
    """The runtime's measurements and the observers' hub of one node."""

    def __init__(self, node_id: int, raft: RaftNode) -> None:
        self.node_id = node_id
        self._subscribers: list[EventStream] = []
        self._seen = (raft.role, raft.leader_id, raft.transfer_target)
        self._closed = False
        self.commit_latency = Histogram()
        self.fsync_latency = Histogram()
        self.apply_latency = Histogram()
        self.transfer_latency = Histogram()
        self._in_flight = _Timed()
        self.commits = 0
        self.snapshots_installed = 0
        self.snapshots_taken = 0
        self.transfers_succeeded = 0
        self.transfers_failed: Counter[str] = Counter()
        self.dropped = 0
        self.reachable: dict[int, bool] = {}

    # ------------------------------------------------------------------ subscribers

    @asynccontextmanager
    async def observe(self, buffer: int = DEFAULT_BUFFER) -> AsyncIterator[EventStream]:
        """A new subscriber for the duration of the ``async with`` block."""
        stream = EventStream(buffer)
        if self._closed:
            stream._close()
        self._subscribers.append(stream)
        try:
            yield stream
        finally:
            self._subscribers.remove(stream)

    def publish(self, event: Observation) -> None:
        """Hand ``event`` to every subscriber (never blocks)."""
        for stream in self._subscribers:
            if not stream._offer(event):
                self.dropped += 1

    def close(self) -> None:
        """The node stopped: subscribers' iterations end once their buffers are read."""
        self._closed = True
        for stream in self._subscribers:
            stream._close()

    # ------------------------------------------------------------------ runtime hooks

    def drained(self, raft: RaftNode, ready: Ready) -> None:
        """The driver took ``ready`` from the core: publish what changed."""
        seen = (raft.role, raft.leader_id, raft.transfer_target)
        if seen == self._seen and not ready.events:
            return  # the common case: nothing to publish
        now = trio.current_time()
        if seen != self._seen:
            role, leader, target = self._seen
            self._seen = seen
            if raft.role is not role:
                if role is Role.LEADER:
                    self._in_flight.clear()  # what it proposed may never commit here
                self.publish(RoleChange(now, raft.current_term, raft.role, role))
            if raft.leader_id != leader:
                self.publish(LeaderChange(now, raft.current_term, raft.leader_id, leader))
            if raft.transfer_target is not None and raft.transfer_target != target:
                self.publish(TransferStarted(now, raft.current_term, raft.transfer_target))
        for event in ready.events:
            if isinstance(event, TransferEnded):
                self._transfer_ended(event, now)
            elif isinstance(event, ConfigurationChanged):
                self.publish(ConfigurationChange(now, event.index, event.committed,
                                                 event.configuration))
            elif isinstance(event, LeaderChanged):
                pass  # seen through the state comparison above

    def _transfer_ended(self, event: TransferEnded, now: float) -> None:
        duration = event.ended_at - event.started_at
        self.transfer_latency.observe(duration)
        if event.succeeded:
            self.transfers_succeeded += 1
        else:
            self.transfers_failed[_reason_class(event.reason)] += 1
        self.publish(TransferFinished(now, event.target, event.succeeded, event.new_leader,
                                      event.reason, duration))

    def proposed(self, last_index: int, count: int, now: float) -> None:
        """A leader appended ``count`` proposals ending at ``last_index``."""
        self._in_flight.proposed(last_index, count, now)

    def applied(self, ready: Ready, started: float) -> None:
        """The committed entries of ``ready`` were applied (the work began at ``started``)."""
        now = trio.current_time()
        self.apply_latency.observe(now - started)
        self.commits += len(ready.committed)
        self._in_flight.applied(ready.committed[-1].index, now, self.commit_latency)

    def persisted(self, seconds: float) -> None:
        """The storage wrote and synced one batch in ``seconds``."""
        self.fsync_latency.observe(seconds)

    def snapshot_installed(self, meta: SnapshotMeta) -> None:
        """The state machine was restored from a snapshot the leader sent."""
        self.snapshots_installed += 1
        self.publish(SnapshotInstalled(trio.current_time(), meta.index, meta.term))

    def snapshot_taken(self, meta: SnapshotMeta) -> None:
        """The log was compacted into a snapshot taken here."""
        self.snapshots_taken += 1
        self.publish(SnapshotTaken(trio.current_time(), meta.index, meta.term))

    def peer_reachability(self, peer: int, reachable: bool, reason: str) -> None:
        """The transport's view of ``peer`` changed (see :mod:`raftpy.trio.peerhealth`)."""
        self.reachable[peer] = reachable
        now = trio.current_time()
        self.publish(PeerReachable(now, peer) if reachable else PeerUnreachable(now, peer, reason))

    # ------------------------------------------------------------------ snapshot

    def metrics(self, raft: RaftNode, *, applied_index: int, last_contact: Mapping[int, float],
                transport_stats: Callable[[], dict[str, int]] | None) -> NodeMetrics:
        """The frozen :class:`NodeMetrics` of the node right now."""
        now = trio.current_time()
        peers = []
        for peer in sorted((raft.voters | raft.learners) - {raft.id}):
            progress = raft.progress.get(peer)
            seen = last_contact.get(peer)
            peers.append(PeerMetrics(
                node_id=peer, match_index=progress.match_index if progress else None,
                last_contact=None if seen is None else max(0.0, now - seen),
                reachable=self.reachable.get(peer)))
        stats: dict[str, Any] = transport_stats() if transport_stats is not None else {}
        core = raft.counters
        counters = Counters(
            elections_started=core.elections_started, elections_won=core.elections_won,
            pre_votes_started=core.pre_votes_started, terms_seen=core.terms_seen,
            transfers_succeeded=self.transfers_succeeded,
            transfers_failed=tuple(sorted(self.transfers_failed.items())),
            proposals=core.proposals, commits=self.commits,
            snapshots_sent=core.snapshots_sent, snapshots_installed=self.snapshots_installed,
            snapshots_taken=self.snapshots_taken,
            bytes_sent=stats.get("bytes_sent", 0), bytes_received=stats.get("bytes_received", 0),
            frames_sent=stats.get("frames_sent", 0),
            frames_received=stats.get("frames_received", 0),
            reconnects=stats.get("reconnects", 0), refused_handshakes=stats.get("refused", 0),
            observer_events_dropped=self.dropped)
        return NodeMetrics(
            node_id=raft.id, role=raft.role, term=raft.current_term, leader_id=raft.leader_id,
            commit_index=raft.commit_index, applied_index=applied_index,
            persisted_index=raft.log.persisted_index, last_log_index=raft.log.last_index,
            peers=tuple(peers), counters=counters,
            latencies=Latencies(commit=self.commit_latency.snapshot(),
                                fsync=self.fsync_latency.snapshot(),
                                apply=self.apply_latency.snapshot(),
                                transfer=self.transfer_latency.snapshot()))


def _reason_class(reason: str) -> str:
    """A transfer failure reason without the node ids in it (a bounded label set)."""
    if reason.startswith("node ") and reason.endswith(" became leader instead"):
        return "another node became leader"
    return reason
