"""With snapshots on, the log held in memory and in storage stays bounded."""

from benchmarks.memory_bounded import run


def test_log_stays_bounded_by_snapshot_interval_plus_trailing() -> None:
    result = run(entries=20_000, snapshot_every=2_000, trailing=100, batch=500,
                 show_progress=False)
    assert result["state_machines_agree"] is True
    samples = result["samples"]
    assert isinstance(samples, list) and samples
    for sample in samples:
        assert sample["memory_log_entries"] <= 2_000 + 100 + 500 + 1
        assert sample["stored_entries"] <= 2_000 + 500 + 1
