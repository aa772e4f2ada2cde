"""FileStorage throughput: entries appended per second with fsync batching.

Run from the repository root::

    python -m benchmarks.bench_storage            # about 20 s
    python -m benchmarks.bench_storage --quick    # about 5 s
    python -m benchmarks.bench_storage --hard-state-only --seconds 3   # about 6 s

Every ``save(entries=...)`` costs one fdatasync however many entries it carries,
so a driver that hands the storage a whole Ready's worth of entries at once
amortizes the disk's sync latency. For each batch size (1 entry per save is
"one fsync per entry") the script appends entries of ``--size`` bytes for about
``--seconds`` and reports entries/s, saves/s and the latency of one save. More
rows: the same appends without fsync (``sync=False``: the CPU cost of framing,
checksums and ``write``); a hard-state save (a new term and vote: one slot of
the state file overwritten, one fdatasync), the cost paid before granting a
vote or starting an election; and a hard-state save carrying one entry (a new
leader's first Ready: two fdatasyncs). Last, the time to reopen and ``load()``
the log written by the largest batch. ``--hard-state-only`` runs just the two
hard-state rows.

The data directory is a fresh temporary directory under ``--dir`` (default: the
system's temporary directory); its filesystem is recorded, since a tmpfs makes
fsync free and the numbers meaningless.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._common import RESULTS_DIR, print_table, summarize, write_json
from raftpy.messages import Entry
from raftpy.ready import HardState
from raftpy.storage.file import FileStorage

NAME = "storage"


def filesystem_of(path: str) -> str:
    """The type of the filesystem ``path`` lives on (from /proc/mounts), or "unknown"."""
    real = os.path.realpath(path)
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                mount_point, fs_type = line.split()[1:3]
                inside = mount_point == "/" or real == mount_point or real.startswith(
                    mount_point + "/")
                if inside and len(mount_point) > len(best):
                    best, kind = mount_point, fs_type
    except OSError:
        pass
    return kind


class Appender:
    """Appends batches of ``batch`` entries to its own FileStorage, in time slices."""

    def __init__(self, directory: str, batch: int, size: int, max_entries: int,
                 sync: bool) -> None:
        self.batch = batch
        self.size = size
        self.sync = sync
        self.max_entries = max_entries
        self.payload = os.urandom(size)
        self.next_index = 1
        self.latencies: list[float] = []
        self.elapsed = 0.0
        self.fs = FileStorage(directory, node_id=1, cluster_id="bench", sync=sync)

    def run_for(self, seconds: float) -> None:
        """Append for about ``seconds`` (at least one save), unless the quota is used up."""
        started = time.perf_counter()
        deadline = started + seconds
        while self.next_index <= self.max_entries:
            index = self.next_index
            entries = [Entry(i, 1, self.payload) for i in range(index, index + self.batch)]
            t0 = time.perf_counter()
            self.fs.save(None, entries)
            t1 = time.perf_counter()
            self.latencies.append(t1 - t0)
            self.next_index += self.batch
            if t1 >= deadline:
                break
        self.elapsed += time.perf_counter() - started

    def result(self) -> dict[str, Any]:
        """Totals over every slice."""
        self.fs.close()
        appended = self.next_index - 1
        elapsed = self.elapsed or float("nan")
        return {
            "batch": self.batch, "sync": self.sync, "entries": appended,
            "saves": len(self.latencies), "seconds": self.elapsed,
            "entries_per_s": appended / elapsed, "saves_per_s": len(self.latencies) / elapsed,
            "mb_per_s": appended * self.size / elapsed / 1e6,
            "save_ms": summarize(self.latencies, 1000.0),
        }


class HardStateSaver:
    """Saves a new term and vote (as a node does when it votes or starts an
    election), with ``entries`` new entries in the same save when non-zero (a new
    leader's first Ready), in time slices like :class:`Appender`."""

    def __init__(self, directory: str, entries: int, size: int) -> None:
        self.entries = entries
        self.payload = os.urandom(size)
        self.term = 0
        self.latencies: list[float] = []
        self.fs = FileStorage(directory, node_id=1, cluster_id="bench")

    def run_for(self, seconds: float) -> None:
        """Save for about ``seconds`` (at least once)."""
        deadline = time.perf_counter() + seconds
        while True:
            self.term += 1
            start = (self.term - 1) * self.entries + 1
            entries = [Entry(i, self.term, self.payload)
                       for i in range(start, start + self.entries)]
            t0 = time.perf_counter()
            self.fs.save(HardState(self.term, 2), entries)
            t1 = time.perf_counter()
            self.latencies.append(t1 - t0)
            if t1 >= deadline:
                break

    def result(self) -> dict[str, Any]:
        """Totals over every slice."""
        self.fs.close()
        return {"entries_per_save": self.entries, "saves": len(self.latencies),
                "save_ms": summarize(self.latencies, 1000.0)}


def load_run(directory: str) -> dict[str, Any]:
    """Reopen (recovery scan) and load the whole log."""
    t0 = time.perf_counter()
    with FileStorage(directory, node_id=1, cluster_id="bench") as fs:
        t1 = time.perf_counter()
        state, _ = fs.load()
    t2 = time.perf_counter()
    count = len(state.entries)
    return {"entries": count, "open_s": t1 - t0, "load_s": t2 - t1,
            "entries_per_s": count / (t2 - t0) if t2 > t0 else 0.0}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns what it wrote to JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="1,10,100,1000",
                        help="entries per save, comma-separated (default: 1,10,100,1000)")
    parser.add_argument("--size", type=int, default=128, help="entry payload bytes (128)")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per row (3)")
    parser.add_argument("--max-entries", type=int, default=200_000,
                        help="stop a row after this many entries (200000)")
    parser.add_argument("--dir", default=None, help="parent of the temporary data directory")
    parser.add_argument("--rounds", type=int, default=10,
                        help="interleaved time slices per row (10)")
    parser.add_argument("--quick", action="store_true", help="0.5 s per row")
    parser.add_argument("--hard-state-only", action="store_true",
                        help="only the two hard-state rows (results in storage_hard_state.json)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    seconds = 0.5 if args.quick else args.seconds
    batches = [] if args.hard_state_only else [int(b) for b in args.batches.split(",")]
    parent = tempfile.mkdtemp(prefix="raftpy-bench-storage-", dir=args.dir)
    fs_type = filesystem_of(parent)
    if fs_type in ("tmpfs", "ramfs"):
        print(f"warning: {parent} is on {fs_type}: fsync costs nothing there",
              file=sys.stderr)
    try:
        appenders = [Appender(os.path.join(parent, f"sync-{n}"), batch, args.size,
                              args.max_entries, True) for n, batch in enumerate(batches)]
        if batches:
            appenders.append(Appender(os.path.join(parent, "nosync"), max(batches), args.size,
                                      args.max_entries, False))
        savers = [HardStateSaver(os.path.join(parent, f"hard-state-{n}"), n, args.size)
                  for n in (0, 1)]
        # Interleaved slices: the shared disk's fsync latency drifts over time, and
        # every row should see the same mix of good and bad moments.
        runners: list[Appender | HardStateSaver] = [*appenders, *savers]
        for _ in range(args.rounds):
            for runner in runners:
                runner.run_for(seconds / args.rounds)
        rows = [a.result() for a in appenders]
        hard_state, hard_state_and_entry = (s.result() for s in savers)
        if batches:
            nosync = rows.pop()
            loaded = load_run(os.path.join(parent, f"sync-{batches.index(max(batches))}"))
    finally:
        shutil.rmtree(parent, ignore_errors=True)

    for label, row in (("hard state (term+vote) save", hard_state),
                       ("hard state + 1 entry save", hard_state_and_entry)):
        ms = row["save_ms"]
        print(f"{label}: median {ms['median']:.2f} ms, p99 {ms['p99']:.2f} ms "
              f"over {row['saves']} saves ({fs_type})")
    payload: dict[str, Any] = {
        "entry_bytes": args.size, "seconds_per_row": seconds, "filesystem": fs_type,
        "rounds": args.rounds, "hard_state": hard_state,
        "hard_state_and_entry": hard_state_and_entry}
    if not batches:
        write_json(args.results_dir, NAME + "_hard_state", payload)
        return payload

    baseline = rows[0]["entries_per_s"] if batches[0] == 1 else float("nan")
    table = [[r["batch"], "yes", r["entries"], r["entries_per_s"], r["saves_per_s"],
              r["save_ms"]["median"], r["save_ms"]["p99"], r["entries_per_s"] / baseline]
             for r in rows]
    table.append([nosync["batch"], "no", nosync["entries"], nosync["entries_per_s"],
                  nosync["saves_per_s"], nosync["save_ms"]["median"], nosync["save_ms"]["p99"],
                  nosync["entries_per_s"] / baseline])
    print_table(["entries/save", "fsync", "entries", "entries/s", "saves/s", "save p50 ms",
                 "save p99 ms", "x vs 1/save"], table,
                title=f"FileStorage appends, {args.size} B entries, {fs_type} ({parent})")
    print(f"reopen + load of {loaded['entries']} entries: open {loaded['open_s']*1000:.0f} ms, "
          f"load {loaded['load_s']*1000:.0f} ms ({loaded['entries_per_s']:,.0f} entries/s)")
    payload.update(appends=rows, appends_without_fsync=nosync, reopen_and_load=loaded)
    write_json(args.results_dir, NAME, payload)
    return payload


if __name__ == "__main__":
    main()
