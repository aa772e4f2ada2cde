"""The storage benchmark runs end to end on a tiny budget (no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import bench_storage


def test_bench_storage_runs_and_writes_json(tmp_path: Path) -> None:
    bench_storage.main(["--batches", "1,10", "--seconds", "0.05", "--rounds", "1",
                        "--max-entries", "30", "--dir", str(tmp_path),
                        "--results-dir", str(tmp_path / "results")])
    written = json.loads((tmp_path / "results" / "storage.json").read_text())
    assert [(r["batch"], r["sync"]) for r in written["appends"]] == [(1, True), (10, True)]
    assert all(1 <= r["entries"] <= 30 and r["saves"] >= 1 for r in written["appends"])
    assert written["appends_without_fsync"]["sync"] is False
    assert written["reopen_and_load"]["entries"] == written["appends"][1]["entries"]
    assert written["hard_state"]["saves"] >= 1
    assert written["hard_state_and_entry"]["entries_per_save"] == 1
    assert list(tmp_path.iterdir()) == [tmp_path / "results"]  # the data was removed


def test_bench_storage_hard_state_only(tmp_path: Path) -> None:
    bench_storage.main(["--hard-state-only", "--seconds", "0.02", "--rounds", "2",
                        "--dir", str(tmp_path), "--results-dir", str(tmp_path / "results")])
    written = json.loads((tmp_path / "results" / "storage_hard_state.json").read_text())
    assert "appends" not in written
    assert [written[k]["entries_per_save"] for k in ("hard_state", "hard_state_and_entry")] == [
        0, 1]
    assert all(written[k]["saves"] >= 2 for k in ("hard_state", "hard_state_and_entry"))
