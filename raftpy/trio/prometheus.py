"""A Prometheus endpoint for a running node (the optional ``raftpy[metrics]`` extra).

:func:`serve_metrics` answers ``GET /metrics`` on ``host:port`` with the text format
of ``prometheus-client``, built from :meth:`Node.metrics` at each scrape. The HTTP
server is a small Trio task in the caller's nursery (no threads); it reads the
node's state between two awaits of the driver, so every scrape is consistent.
``raftpy serve --metrics HOST:PORT`` runs it. ``docs/observability.md`` lists the
metric names.

``prometheus-client`` is imported only when the exporter is used:
:func:`require_prometheus` raises :class:`MetricsUnavailable` with the install
command when it is missing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import trio

from raftpy.metrics import HistogramSnapshot, NodeMetrics

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

logger = logging.getLogger("raftpy.metrics")

_MAX_REQUEST = 8192
_REQUEST_TIMEOUT = 5.0
_MAX_CONNECTIONS = 16
"""Scrapes served at once; more are closed at once (a scraper needs one)."""


class MetricsUnavailable(ImportError):
    """``prometheus-client`` is not installed."""


def require_prometheus() -> None:
    """Raise :class:`MetricsUnavailable` unless ``prometheus-client`` can be imported."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise MetricsUnavailable(
            "the Prometheus exporter needs prometheus-client: "
            "pip install 'raftpy[metrics]'") from None


class NodeCollector:
    """A ``prometheus-client`` collector reading one node's :class:`NodeMetrics`."""

    def __init__(self, get_metrics: Callable[[], NodeMetrics]) -> None:
        require_prometheus()
        self._get_metrics = get_metrics

    def collect(self) -> Iterator[Metric]:
        """The metric families of one scrape."""
        from prometheus_client.metrics_core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        m = self._get_metrics()

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"raftpy_{name}", doc, value=value)

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"raftpy_{name}", doc, value=value)

        yield gauge("node_id", "This member's id.", m.node_id)
        yield gauge("term", "The current Raft term.", m.term)
        yield gauge("leader_id", "The leader this node knows of (-1: none).",
                    -1 if m.leader_id is None else m.leader_id)
        yield gauge("is_leader", "1 if this node leads, else 0.", int(m.leader_id == m.node_id))
        role = GaugeMetricFamily("raftpy_role", "1 for this node's role.", labels=["role"])
        for name in ("follower", "candidate", "leader"):
            role.add_metric([name], int(m.role.value == name))
        yield role
        yield gauge("commit_index", "Highest log index known committed.", m.commit_index)
        yield gauge("applied_index", "Highest log index applied to the state machine.",
                    m.applied_index)
        yield gauge("persisted_index", "Highest log index durable in local storage.",
                    m.persisted_index)
        yield gauge("last_log_index", "Index of the last log entry held.", m.last_log_index)
        match = GaugeMetricFamily("raftpy_peer_match_index",
                                  "Highest index known replicated on a peer (leader only).",
                                  labels=["peer"])
        contact = GaugeMetricFamily("raftpy_peer_last_contact_seconds",
                                    "Seconds since a message from the peer arrived.",
                                    labels=["peer"])
        reachable = GaugeMetricFamily("raftpy_peer_reachable",
                                      "1 if the transport is connected to the peer.",
                                      labels=["peer"])
        for peer in m.peers:
            label = [str(peer.node_id)]
            if peer.match_index is not None:
                match.add_metric(label, peer.match_index)
            if peer.last_contact is not None:
                contact.add_metric(label, peer.last_contact)
            if peer.reachable is not None:
                reachable.add_metric(label, int(peer.reachable))
        yield match
        yield contact
        yield reachable

        c = m.counters
        yield counter("elections_started_total", "Elections started as a candidate.",
                      c.elections_started)
        yield counter("elections_won_total", "Elections won.", c.elections_won)
        yield counter("pre_votes_started_total", "Pre-vote rounds started.", c.pre_votes_started)
        yield counter("terms_seen_total", "Moves to a newer term.", c.terms_seen)
        transfers = CounterMetricFamily("raftpy_transfers", "Leadership transfers ended.",
                                        labels=["outcome", "reason"])
        transfers.add_metric(["succeeded", ""], c.transfers_succeeded)
        for reason, n in c.transfers_failed:
            transfers.add_metric(["failed", reason], n)
        yield transfers
        yield counter("proposals_total", "Commands proposed by this node as leader.",
                      c.proposals)
        yield counter("commits_total", "Log entries committed and applied here.", c.commits)
        yield counter("snapshots_sent_total", "Snapshots sent to lagging followers.",
                      c.snapshots_sent)
        yield counter("snapshots_installed_total", "Snapshots received and installed.",
                      c.snapshots_installed)
        yield counter("snapshots_taken_total", "Snapshots taken locally (log compaction).",
                      c.snapshots_taken)
        yield counter("transport_bytes_sent_total", "Bytes written to peers.", c.bytes_sent)
        yield counter("transport_bytes_received_total", "Bytes read from peers.",
                      c.bytes_received)
        yield counter("transport_frames_sent_total", "Frames written to peers.", c.frames_sent)
        yield counter("transport_frames_received_total", "Frames read from peers.",
                      c.frames_received)
        yield counter("transport_reconnects_total", "Connections to peers made again.",
                      c.reconnects)
        yield counter("transport_refused_handshakes_total", "Inbound handshakes refused.",
                      c.refused_handshakes)
        yield counter("observer_events_dropped_total",
                      "Observer events dropped because a subscriber fell behind.",
                      c.observer_events_dropped)

        lat = m.latencies
        for name, doc, snap in (
            ("commit_latency_seconds", "Proposal to applied on the leader.", lat.commit),
            ("fsync_seconds", "Writing and syncing one batch to storage.", lat.fsync),
            ("apply_seconds", "Applying one batch of committed entries.", lat.apply),
            ("transfer_seconds", "Leadership transfers, start to end.", lat.transfer),
        ):
            yield HistogramMetricFamily(f"raftpy_{name}", doc, buckets=_buckets(snap),
                                        sum_value=snap.sum)


def _buckets(snap: HistogramSnapshot) -> list[tuple[str, float]]:
    return [("+Inf" if bound == float("inf") else repr(bound), count)
            for bound, count in snap.buckets]


def render(get_metrics: Callable[[], NodeMetrics]) -> bytes:
    """One scrape's body in the Prometheus text format."""
    from prometheus_client.exposition import generate_latest

    return generate_latest(NodeCollector(get_metrics))


async def serve_metrics(get_metrics: Callable[[], NodeMetrics],
                        listeners: list[trio.SocketListener], *,
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Answer ``GET /metrics`` on ``listeners`` until cancelled (other paths: 404).

    Open the listeners first (``trio.open_tcp_listeners``) so that a port in use is
    reported before anything starts."""
    require_prometheus()
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    busy = trio.Semaphore(_MAX_CONNECTIONS)

    async def handle(stream: trio.SocketStream) -> None:
        try:
            # A flood of scrapers must not take the file descriptors the member
            # needs for its peers: past the limit a connection is closed at once.
            busy.acquire_nowait()
        except trio.WouldBlock:
            with trio.CancelScope(shield=True):
                await stream.aclose()
            return
        try:
            with trio.move_on_after(_REQUEST_TIMEOUT):
                request = await _read_request(stream)
                if request is None:
                    return
                method, path = request
                if method == "GET" and path.split("?", 1)[0] in ("/metrics", "/"):
                    await _respond(stream, "200 OK", CONTENT_TYPE_LATEST, render(get_metrics))
                else:
                    await _respond(stream, "404 Not Found", "text/plain; charset=utf-8",
                                   b"try /metrics\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            logger.debug("metrics request failed: %s", exc)
        finally:
            busy.release()
            with trio.CancelScope(shield=True):
                await stream.aclose()

    for listener in listeners:
        sockname = listener.socket.getsockname()
        logger.info("serving metrics on http://%s:%d/metrics", sockname[0], sockname[1])
    task_status.started()
    await trio.serve_listeners(handle, listeners)


async def _read_request(stream: trio.SocketStream) -> tuple[str, str] | None:
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
        chunk = await stream.receive_some(4096)
        if not chunk:
            return None
        data += chunk
        if len(data) > _MAX_REQUEST:
            return None
    parts = data.split(b"\r\n", 1)[0].split()
    if len(parts) < 2:
        return None
    return parts[0].decode("latin-1"), parts[1].decode("latin-1")


async def _respond(stream: trio.SocketStream, status: str, content_type: str,
                   body: bytes) -> None:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode("latin-1")
    await stream.send_all(head + body)
