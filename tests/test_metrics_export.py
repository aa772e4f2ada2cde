"""The Prometheus rendering of NodeMetrics, and the error when the extra is missing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from raftpy import Role, cli
from raftpy.demo_net import _free_ports
from raftpy.metrics import Counters, Histogram, Latencies, NodeMetrics, PeerMetrics
from raftpy.trio import prometheus


def sample() -> NodeMetrics:
    commit = Histogram((0.001, 0.01))
    commit.observe(0.0005, count=2)
    commit.observe(0.005)
    empty = Histogram((0.001, 0.01)).snapshot()
    return NodeMetrics(
        node_id=1, role=Role.LEADER, term=4, leader_id=1, commit_index=10, applied_index=10,
        persisted_index=11, last_log_index=11,
        peers=(PeerMetrics(2, 11, 0.25, True), PeerMetrics(3, None, None, False)),
        counters=Counters(
            elections_started=2, elections_won=1, pre_votes_started=3, terms_seen=4,
            transfers_succeeded=1, transfers_failed=(("timed out", 2),), proposals=9,
            commits=10, snapshots_sent=0, snapshots_installed=0, snapshots_taken=1,
            bytes_sent=100, bytes_received=50, frames_sent=7, frames_received=5, reconnects=1,
            refused_handshakes=0, observer_events_dropped=3),
        latencies=Latencies(commit=commit.snapshot(), fsync=empty, apply=empty,
                            transfer=empty))


def test_render_writes_every_figure_in_the_text_format() -> None:
    pytest.importorskip("prometheus_client")
    text = prometheus.render(sample).decode()
    expected = [
        "raftpy_term 4.0", "raftpy_leader_id 1.0", "raftpy_is_leader 1.0",
        'raftpy_role{role="leader"} 1.0', 'raftpy_role{role="follower"} 0.0',
        "raftpy_commit_index 10.0", "raftpy_persisted_index 11.0",
        'raftpy_peer_match_index{peer="2"} 11.0', 'raftpy_peer_last_contact_seconds{peer="2"} 0.25',
        'raftpy_peer_reachable{peer="3"} 0.0',
        "raftpy_elections_started_total 2.0", "raftpy_pre_votes_started_total 3.0",
        'raftpy_transfers_total{outcome="failed",reason="timed out"} 2.0',
        'raftpy_transfers_total{outcome="succeeded",reason=""} 1.0',
        "raftpy_observer_events_dropped_total 3.0",
        'raftpy_commit_latency_seconds_bucket{le="0.001"} 2.0',
        'raftpy_commit_latency_seconds_bucket{le="0.01"} 3.0',
        'raftpy_commit_latency_seconds_bucket{le="+Inf"} 3.0',
        "raftpy_commit_latency_seconds_count 3.0",
        "raftpy_transport_reconnects_total 1.0",
    ]
    lines = set(text.splitlines())
    assert [e for e in expected if e not in lines] == []
    assert 'raftpy_peer_match_index{peer="3"}' not in text  # unknown: left out


def test_a_missing_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails
    with pytest.raises(prometheus.MetricsUnavailable, match=r"pip install 'raftpy\[metrics\]'"):
        prometheus.require_prometheus()
    port, metrics_port = _free_ports(2)
    data = tmp_path / "d"
    code = cli.main(["serve", "--id", "1", "--listen", f"127.0.0.1:{port}", "--data-dir",
                     str(data), "--bootstrap", "--metrics", f"127.0.0.1:{metrics_port}"])
    assert code == cli.EXIT_FAILED
    assert "pip install 'raftpy[metrics]'" in capsys.readouterr().err
    assert not data.exists()  # nothing was created


def test_a_metrics_port_in_use_names_the_address_and_creates_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("prometheus_client")
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        (port,) = _free_ports(1)
        data = tmp_path / "d"
        code = cli.main(["serve", "--id", "1", "--listen", f"127.0.0.1:{port}", "--data-dir",
                         str(data), "--bootstrap", "--metrics", f"127.0.0.1:{taken}"])
    assert code == cli.EXIT_FAILED
    assert f"--metrics: cannot listen on 127.0.0.1:{taken}" in capsys.readouterr().err
    assert not data.exists()
