"""Smoke tests: each simulator benchmark runs end to end with a tiny trial count.

No wall-clock numbers are asserted; only virtual-time facts that must hold
(the measured latency never beats the protocol's lower bound, seeds replay).
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import sim_election
from benchmarks.sim_election import Setup, election_trial, transfer_trial


def test_sim_election_runs_and_writes_json(tmp_path: Path) -> None:
    payload = sim_election.main([
        "--trials", "3", "--sizes", "3", "--transfer-sizes", "3", "--speed-seconds", "0.2",
        "--no-paper", "--no-plot", "--no-progress", "--results-dir", str(tmp_path),
    ])
    written = json.loads((tmp_path / "sim_election.json").read_text())
    assert written["trials_per_setup"] == 3
    labels = [e["setup"]["label"] for e in written["election"]]
    assert labels == ["n=3 pre-vote on", "n=3 pre-vote off"]
    for election in written["election"]:
        assert election["trials"] == 3
        assert election["failed"] == 0
        assert election["leader_ms"]["n"] == 3
        assert election["leader_ms"]["min"] <= election["commit_ms"]["min"]
    assert [t["write_load"] for t in written["transfer"]] == [False, True]
    assert all(t["failed"] == 0 and t["to_commit_ms"]["n"] == 3 for t in written["transfer"])
    assert [s["check_invariants"] for s in payload["speed"]] == [True, False]
    assert all(s["events"] > 0 and s["commits"] > 0 for s in payload["speed"])


def test_election_never_beats_its_lower_bound() -> None:
    for pre_vote, round_trips in ((True, 2), (False, 1)):
        setup = Setup("t", 3, pre_vote, 0.001, 0.002)
        for seed in range(5):
            trial = election_trial(setup, seed)
            assert trial.leader is not None and trial.commit is not None
            # The voter saves before answering; the candidate's own save overlaps
            # the round trip of its vote requests.
            bound = (trial.first_timeout + round_trips * 2 * setup.delay_min
                     + setup.disk_min)
            assert trial.leader >= bound - 1e-9
            assert trial.commit >= trial.leader + 2 * setup.delay_min + setup.disk_min - 1e-9
            assert trial.rounds >= 1


def test_election_trials_replay_exactly_from_their_seed() -> None:
    setup = Setup("t", 5, True, 0.0005, 0.002)
    assert election_trial(setup, 11) == election_trial(setup, 11)
    assert transfer_trial(setup, 11, load=True) == transfer_trial(setup, 11, load=True)


def test_split_vote_counted_when_two_candidates_share_a_term() -> None:
    # 5 ms of timeout randomness and no pre-vote: followers often time out together
    # (the Raft paper's 150-155 ms line).
    setup = Setup("t", 5, False, 0.001, 0.001, timeout_min=0.150, timeout_max=0.155)
    # (Lost rounds got rarer once vote requests stopped waiting for the candidate's
    # save: the first candidate's requests now beat more of the other timeouts.)
    trials = [election_trial(setup, seed) for seed in range(10)]
    assert any(t.failed_rounds > 0 for t in trials)
    assert any(t.contested_rounds > 0 for t in trials)
    for t in trials:
        assert t.split == (t.contested_rounds + t.failed_rounds > 0)
        # Every failed round costs a term: the winner's term is the last round.
        assert t.rounds == t.failed_rounds + 1


def test_scaling_runs_and_snapshots_bound_the_stored_log(tmp_path: Path) -> None:
    from benchmarks import scaling

    payload = scaling.main([
        "--sizes", "3", "--command-sizes", "16", "--codec-sizes", "16",
        "--virtual-seconds", "0.02", "--election-trials", "2", "--lengths", "300",
        "--snapshot-every", "100", "--no-plot", "--no-progress", "--results-dir", str(tmp_path),
    ])
    assert json.loads((tmp_path / "scaling.json").read_text())["codec"][0]["size"] == 16
    (tput,) = payload["throughput"]
    assert tput["n"] == 3 and tput["commits"] > 0
    (election,) = payload["election"]
    assert election["leader_ms"]["n"] == 2
    without, with_snapshots = payload["memory"]
    assert without["snapshot_every"] is None and without["snapshots_taken"] == 0
    assert without["entries_in_storage"] == without["log_length"] >= 300
    assert with_snapshots["snapshots_taken"] > 0
    assert with_snapshots["snapshot_index"] >= 200
    assert with_snapshots["entries_in_storage"] == (
        with_snapshots["log_length"] - with_snapshots["snapshot_index"])


def test_compare_ratios_and_targets() -> None:
    from benchmarks.compare import build_table
    from benchmarks.peer_pysyncobj import best_rows

    def profile(failover: float, transfer: float, seq: float, pipe: float) -> dict[str, object]:
        stats = {"n": 1, "median": failover, "p99": 2 * failover}
        return {"failover_leader_ms": stats, "failover_commit_ms": stats,
                "transfer_commit_ms": {"n": 1, "median": transfer, "p99": transfer},
                "writes": [{"size": 16, "seq_ms": {"n": 1, "median": seq, "p99": seq},
                            "pipe_ops_per_s": pipe, "pipe_n": 1, "pipe_inflight": 1,
                            "pipe_ok": 1}]}

    peer = {"best": best_rows({"a": profile(200, 1.0, 100, 50_000),
                               "b": profile(180, 0.9, 0.4, 10_000)})}
    assert peer["best"]["seq_16B_ms.median"] == {"value": 0.4, "profile": "b"}
    assert peer["best"]["pipe_16B_ops_per_s"] == {"value": 50_000, "profile": "a"}
    ours = {"profiles": {"memory": {**profile(170, 1.5, 0.3, 120_000),
                                    "failover_early_leader_ms": {"n": 1, "median": 40,
                                                                 "p99": 60}}}}
    rows = {r["figure"]: r["raftpy"]["memory"] for r in build_table(peer, ours)}
    # Early pre-vote's re-election is compared with PySyncObj's re-election.
    assert rows["failover_early_leader_ms.median"]["ratio"] == 40 / 180
    assert rows["failover_early_leader_ms.median"]["met"] is True
    assert rows["failover_early_leader_ms.p99"]["met"] is True  # 60 <= 0.6 * 360
    assert rows["pipe_16B_ops_per_s"]["ratio"] == 120_000 / 50_000
    assert rows["pipe_16B_ops_per_s"]["met"] is True
    assert rows["seq_16B_ms.median"]["met"] is True
    assert rows["transfer_commit_ms.median"]["met"] is False  # 1.5 ms is not below 0.9
    assert rows["failover_leader_ms.median"]["met"] is True
    assert rows["failover_leader_ms.p99"]["met"] is False  # 340 > 0.6 * 360
    assert rows["pipe_1024B_ops_per_s"]["value"] is None


def test_a_stalled_write_figure_is_not_compared() -> None:
    from benchmarks.compare import build_table
    from benchmarks.peer_pysyncobj import best_rows

    writes = [{"size": 16, "seq_ms": {"n": 3, "median": 0.2, "p99": 0.3}, "seq_stalled": True,
               "pipe_ops_per_s": 900.0, "pipe_stalled": True, "pipe_n": 10, "pipe_ok": 9,
               "pipe_inflight": 10}]
    empty = {"n": 0}
    stalled = {"failover_leader_ms": empty, "failover_commit_ms": empty,
               "transfer_commit_ms": empty, "writes": writes}
    assert best_rows({"x": stalled}) == {}
    rows = {r["figure"]: r["raftpy"]["memory"]
            for r in build_table({"best": {"pipe_16B_ops_per_s": {"value": 5.0, "profile": "a"}}},
                                 {"profiles": {"memory": stalled}})}
    assert rows["pipe_16B_ops_per_s"] == {"value": None, "ratio": None, "target": "",
                                          "met": None}
