"""What a node counts and measures: the frozen snapshot
:meth:`raftpy.trio.Node.metrics` returns.

The sans-I/O core keeps only :class:`CoreCounters` (plain integers bumped where the
protocol decides something: an election started, a term adopted); it never reads a
clock. Timings (commit latency, fsync, apply, transfer) are measured by a driver
into :class:`Histogram` objects. :class:`NodeMetrics` is the typed, frozen view of
both that :meth:`raftpy.trio.runtime.Node.metrics` returns and the Prometheus
exporter (:mod:`raftpy.trio.prometheus`) publishes. ``docs/observability.md`` lists
every figure with its meaning.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from raftpy.ready import Role

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the latency histograms: 0.5 ms to 10 s, plus ``+Inf``."""


@dataclass(slots=True)
class CoreCounters:
    """Protocol decisions counted by the core (:attr:`raftpy.RaftNode.counters`).

    Bumped where the decision is taken, so a driver reads exact figures with no
    bookkeeping of its own. Counts since the node object was made (a restart starts
    from zero, as Prometheus counters expect)."""

    elections_started: int = 0
    """Real elections this node started as a candidate (a new term each)."""
    elections_won: int = 0
    """Elections this node won (it became leader)."""
    pre_votes_started: int = 0
    """Pre-vote rounds started (Raft §9.6: they do not change the term)."""
    terms_seen: int = 0
    """Times this node moved to a newer term (its own elections included)."""
    proposals: int = 0
    """Commands appended by this node as leader (``propose``/``propose_many``)."""
    snapshots_sent: int = 0
    """Snapshots this leader started sending to a lagging follower."""


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """A histogram at one moment: cumulative counts per upper bound, as Prometheus has."""

    buckets: tuple[tuple[float, int], ...]
    """``(upper_bound, observations <= upper_bound)``, the last bound being ``inf``."""
    count: int
    sum: float

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding the ``q`` quantile (``None``: empty)."""
        if self.count == 0:
            return None
        rank = q * self.count
        for bound, cumulative in self.buckets:
            if cumulative >= rank:
                return bound
        return self.buckets[-1][0]


class Histogram:
    """Observations (seconds) counted into fixed buckets; cheap to update."""

    __slots__ = ("_bounds", "_counts", "_sum")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        self._bounds = tuple(sorted(bounds))
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0

    def observe(self, value: float, count: int = 1) -> None:
        """Record ``count`` observations of ``value`` (e.g. every entry of one batch)."""
        self._counts[bisect.bisect_left(self._bounds, value)] += count
        self._sum += value * count

    def snapshot(self) -> HistogramSnapshot:
        """The frozen, cumulative view."""
        cumulative = 0
        buckets = []
        for bound, n in zip((*self._bounds, float("inf")), self._counts, strict=True):
            cumulative += n
            buckets.append((bound, cumulative))
        return HistogramSnapshot(tuple(buckets), cumulative, self._sum)


@dataclass(frozen=True, slots=True)
class PeerMetrics:
    """What this node knows of one other member."""

    node_id: int
    match_index: int | None
    """Highest index known replicated there (``None`` unless this node leads)."""
    last_contact: float | None
    """Seconds since a message from the peer arrived (``None``: never)."""
    reachable: bool | None
    """Whether the transport holds a connection to it (``None``: not known yet)."""


@dataclass(frozen=True, slots=True)
class Counters:
    """Every counter of a node (all monotonic since the node started)."""

    elections_started: int
    elections_won: int
    pre_votes_started: int
    terms_seen: int
    transfers_succeeded: int
    transfers_failed: tuple[tuple[str, int], ...]
    """``(reason, count)`` per failure reason, sorted by reason."""
    proposals: int
    commits: int
    """Log entries committed and applied here (commands, no-ops, configurations)."""
    snapshots_sent: int
    snapshots_installed: int
    snapshots_taken: int
    bytes_sent: int
    bytes_received: int
    frames_sent: int
    frames_received: int
    reconnects: int
    refused_handshakes: int
    observer_events_dropped: int

    @property
    def transfers_failed_total(self) -> int:
        """Failed transfers, whatever the reason."""
        return sum(n for _, n in self.transfers_failed)


@dataclass(frozen=True, slots=True)
class Latencies:
    """Latency histograms (seconds)."""

    commit: HistogramSnapshot
    """From a proposal reaching the leader's driver to its entry being applied there."""
    fsync: HistogramSnapshot
    """One batch written and synced by the storage (the disk task)."""
    apply: HistogramSnapshot
    """Applying one batch of committed entries to the state machine."""
    transfer: HistogramSnapshot
    """A leadership transfer from start to end, succeeded or not."""


@dataclass(frozen=True, slots=True)
class NodeMetrics:
    """A frozen snapshot of a running node's figures: :meth:`raftpy.trio.Node.metrics`."""

    node_id: int
    role: Role
    term: int
    leader_id: int | None
    commit_index: int
    applied_index: int
    persisted_index: int
    """Highest log index durable in this node's storage."""
    last_log_index: int
    peers: tuple[PeerMetrics, ...]
    counters: Counters
    latencies: Latencies
