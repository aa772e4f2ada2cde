"""How raftpy's costs grow with cluster size, command size and log length.

Run from the repository root::

    python -m benchmarks.scaling            # about a minute
    python -m benchmarks.scaling --quick

Four sections, all in one process (no network, so the 2-core machine's other
load matters only for the wall-clock columns):

* **Throughput vs cluster size and command size** (simulator, 3 to 9 voters,
  16 B and 1 KiB commands, a steady offered load of one command per
  0.1 virtual ms): commits per virtual second, commit latency in virtual time,
  and the CPU cost of the protocol core, in wall-clock microseconds per
  committed command for the whole cluster (every node runs in this process)
  and simulator events per commit. The simulator does not encode messages, so
  command size shows up only in the codec section.
* **Codec vs command size**: encode + decode of an AppendEntries carrying 64
  entries, per entry and in MB/s. This is the part of the real runtime's cost
  that grows with command size.
* **Election latency vs cluster size** (simulator, pre-vote on), as in
  ``benchmarks.sim_election``.
* **Memory per node vs log length**, with and without snapshots
  (``Cluster(snapshot_every=N)``): entries held in the node's in-memory log and
  in its storage, their bytes (distinct ``Entry`` objects, shared between the
  two, counted once), and the snapshot's size. The simulator's state machine is
  the list of every applied command, so its snapshot grows with the history; a
  real state machine's snapshot grows with its state instead.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._common import (
    RESULTS_DIR,
    print_table,
    progress,
    pyplot,
    save_figure,
    summarize,
    write_json,
)
from benchmarks.sim_election import Setup, election_trial
from raftpy.codec import decode, encode
from raftpy.errors import LeadershipTransferInProgress, NotLeader
from raftpy.messages import AppendEntries, Entry
from raftpy.sim import Cluster

NAME = "scaling"


# ---------------------------------------------------------------------- throughput

def throughput(n: int, size: int, virtual_seconds: float, per_tick: int = 1,
               tick: float = 0.0001) -> dict[str, Any]:
    """Steady writes into an ``n``-node simulated cluster; costs per commit."""
    cluster = Cluster(n=n, seed=1, check_invariants=False)
    cluster.wait_for_leader()
    command = b"x" * size

    def load() -> None:
        with contextlib.suppress(NotLeader, LeadershipTransferInProgress):
            for _ in range(per_tick):
                cluster.propose(command)
        cluster.at(tick, load)

    cluster.at(tick, load)
    cluster.run_for(0.2)  # warm up
    leader = cluster.leader()
    assert leader is not None
    first = len(cluster.proposals)
    commit0 = cluster.node(leader).commit_index
    events0 = cluster.events
    gc.collect()
    began = time.perf_counter()
    cluster.run_for(virtual_seconds)
    wall = time.perf_counter() - began
    commits = cluster.node(leader).commit_index - commit0
    latencies = [p.committed_at - p.proposed_at for p in cluster.proposals[first:]
                 if p.committed_at is not None]
    return {
        "n": n, "size": size, "offered_per_virtual_s": per_tick / tick,
        "commits": commits,
        "commits_per_virtual_s": commits / virtual_seconds,
        "commit_latency_virtual_ms": summarize(latencies, 1000),
        "wall_us_per_commit": wall / max(1, commits) * 1e6,
        "events_per_commit": (cluster.events - events0) / max(1, commits),
    }


# ---------------------------------------------------------------------- codec

def codec_cost(size: int, entries: int = 64, rounds: int = 300) -> dict[str, Any]:
    """Encode and decode one AppendEntries of ``entries`` commands of ``size`` bytes."""
    msg = AppendEntries(term=3, src=1, dst=2, prev_log_index=1000, prev_log_term=3,
                        entries=tuple(Entry(1001 + i, 3, bytes(size)) for i in range(entries)),
                        leader_commit=1000)
    wire = encode(msg)
    began = time.perf_counter()
    for _ in range(rounds):
        decode(encode(msg))
    took = time.perf_counter() - began
    per_entry = took / (rounds * entries)
    return {"size": size, "entries_per_message": entries, "wire_bytes": len(wire),
            "us_per_entry": per_entry * 1e6,
            "entries_per_s": 1 / per_entry,
            "mb_per_s": len(wire) * rounds / took / 1e6}


# ---------------------------------------------------------------------- memory

def _entry_bytes(entries: Sequence[Entry], seen: set[int]) -> int:
    total = 0
    for entry in entries:
        if id(entry) not in seen:
            seen.add(id(entry))
            total += sys.getsizeof(entry) + sys.getsizeof(entry.data)
    return total


def memory(lengths: Sequence[int], snapshot_every: int | None, size: int = 100,
           bar: Any = None) -> list[dict[str, Any]]:
    """Grow one 3-node cluster's log and sample node 1's footprint at ``lengths``."""
    cluster = Cluster(n=3, seed=2, check_invariants=False, snapshot_every=snapshot_every)
    cluster.wait_for_leader()
    command = b"y" * size
    out = []
    written = 0
    for target in sorted(lengths):
        while written < target:
            leader = cluster.leader() or cluster.wait_for_leader()
            batch = min(200, target - written)
            for _ in range(batch):
                cluster.propose(command, leader)
            written += batch
            cluster.run_for(0.002)
        cluster.run_for(0.2)  # let every node apply, persist and snapshot
        node = cluster.node(1)
        log = node.log
        held = log.slice(log.first_index, log.last_index + 1)
        storage = cluster.storages[1]
        seen: set[int] = set()
        entry_bytes = _entry_bytes(held, seen) + _entry_bytes(storage.entries, seen)
        list_bytes = sys.getsizeof(held) + sys.getsizeof(storage.entries)
        snapshot = storage.snapshot
        out.append({
            "snapshot_every": snapshot_every, "log_length": log.last_index,
            "command_size": size,
            "entries_in_memory_log": log.last_index - log.snapshot_index,
            "entries_in_storage": len(storage.entries),
            "log_bytes": entry_bytes + list_bytes,
            "snapshot_index": snapshot[0].index if snapshot else 0,
            "snapshot_bytes": len(snapshot[1]) if snapshot else 0,
            "snapshots_taken": cluster.fault_counts["snapshot"],
        })
        if bar is not None:
            bar.update()
    return out


# ---------------------------------------------------------------------- driver

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                        default=[3, 4, 5, 6, 7, 8, 9], help="cluster sizes")
    parser.add_argument("--command-sizes", type=lambda s: [int(x) for x in s.split(",")],
                        default=[16, 1024])
    parser.add_argument("--codec-sizes", type=lambda s: [int(x) for x in s.split(",")],
                        default=[16, 256, 1024, 4096, 16384])
    parser.add_argument("--virtual-seconds", type=float, default=1.0,
                        help="measured virtual time per throughput run")
    parser.add_argument("--election-trials", type=int, default=300)
    parser.add_argument("--lengths", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1000, 10_000, 30_000, 100_000], help="log lengths")
    parser.add_argument("--snapshot-every", type=int, default=1000)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--no-plot", dest="plot", action="store_false")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)
    if args.quick:
        args.virtual_seconds = min(args.virtual_seconds, 0.2)
        args.election_trials = min(args.election_trials, 30)
        args.lengths = [x for x in args.lengths if x <= 10_000] or [1000]
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    total = (len(args.sizes) * len(args.command_sizes) + len(args.codec_sizes)
             + len(args.sizes) * args.election_trials + 2 * len(args.lengths))
    with progress(total, "scaling", args.progress) as bar:
        tput = []
        for n in args.sizes:
            for size in args.command_sizes:
                tput.append(throughput(n, size, args.virtual_seconds))
                bar.update()
        codec = []
        for size in args.codec_sizes:
            codec.append(codec_cost(size))
            bar.update()
        elections = []
        for n in args.sizes:
            setup = Setup(f"n={n}", n, True, 0.0005, 0.002)
            trials = []
            for seed in range(args.election_trials):
                trials.append(election_trial(setup, seed, check_invariants=False))
                bar.update()
            elections.append({
                "n": n,
                "leader_ms": summarize((t.leader for t in trials if t.leader is not None), 1000),
                "commit_ms": summarize((t.commit for t in trials if t.commit is not None), 1000),
                "split_vote_rate": sum(t.split for t in trials) / len(trials),
                "failed_round_rate": sum(t.failed_rounds > 0 for t in trials) / len(trials)})
        mem = memory(args.lengths, None, bar=bar) + memory(args.lengths, args.snapshot_every,
                                                           bar=bar)
    _print(tput, codec, elections, mem)
    payload = {"throughput": tput, "codec": codec, "election": elections, "memory": mem}
    write_json(args.results_dir, NAME, payload)
    if args.plot:
        _plot(payload, args.results_dir)
    return payload


def _print(tput: list[dict[str, Any]], codec: list[dict[str, Any]],
           elections: list[dict[str, Any]], mem: list[dict[str, Any]]) -> None:
    print_table(
        ["n", "command B", "commits/virtual s", "latency p50 ms", "latency p99 ms",
         "wall us/commit", "events/commit"],
        [[t["n"], t["size"], t["commits_per_virtual_s"],
          t["commit_latency_virtual_ms"].get("median", float("nan")),
          t["commit_latency_virtual_ms"].get("p99", float("nan")),
          t["wall_us_per_commit"], t["events_per_commit"]] for t in tput],
        "Simulated throughput (offered 10,000 commands per virtual second)")
    print_table(["command B", "wire B / 64 entries", "us/entry", "entries/s", "MB/s"],
                [[c["size"], c["wire_bytes"], c["us_per_entry"], c["entries_per_s"],
                  c["mb_per_s"]] for c in codec],
                "Codec: encode + decode of one AppendEntries with 64 entries")
    print_table(["n", "leader p50 ms", "leader p99 ms", "commit p50 ms", "commit p99 ms",
                 "split %", "2+ terms %"],
                [[e["n"], e["leader_ms"]["median"], e["leader_ms"]["p99"],
                  e["commit_ms"]["median"], e["commit_ms"]["p99"],
                  f"{100 * e['split_vote_rate']:.1f}", f"{100 * e['failed_round_rate']:.1f}"]
                 for e in elections],
                "Election latency vs cluster size (simulator, pre-vote on, 150-300 ms)")
    print_table(["snapshots", "log length", "entries in log", "entries in storage",
                 "log KiB", "snapshot index", "snapshot KiB"],
                [["off" if m["snapshot_every"] is None else f"every {m['snapshot_every']}",
                  m["log_length"], m["entries_in_memory_log"], m["entries_in_storage"],
                  m["log_bytes"] / 1024, m["snapshot_index"], m["snapshot_bytes"] / 1024]
                 for m in mem],
                "Memory per node vs log length (100-byte commands, node 1)")


def _plot(payload: dict[str, Any], results_dir: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    ax = axes[0][0]
    sizes = sorted({t["size"] for t in payload["throughput"]})
    for size in sizes:
        rows = [t for t in payload["throughput"] if t["size"] == size]
        ax.plot([t["n"] for t in rows], [t["wall_us_per_commit"] for t in rows], "o-",
                label=f"{size} B commands")
    ax.set_title("protocol CPU per commit, whole cluster in one process")
    ax.set_xlabel("voters")
    ax.set_ylabel("wall-clock us per committed command")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.grid(alpha=0.3)
    ax = axes[0][1]
    codec = payload["codec"]
    ax.loglog([c["size"] for c in codec], [c["us_per_entry"] for c in codec], "o-")
    ax.set_title("codec: encode + decode, 64 entries per AppendEntries")
    ax.set_xlabel("command bytes")
    ax.set_ylabel("us per entry")
    ax.grid(alpha=0.3, which="both")
    ax = axes[1][0]
    el = payload["election"]
    for key, label in (("leader_ms", "crash -> leader"), ("commit_ms", "crash -> commit")):
        ax.plot([e["n"] for e in el], [e[key]["median"] for e in el], "o-",
                label=f"{label}, median")
        ax.plot([e["n"] for e in el], [e[key]["p99"] for e in el], "s--",
                label=f"{label}, p99")
    ax.set_title("election latency (simulator, pre-vote on, 150-300 ms)")
    ax.set_xlabel("voters")
    ax.set_ylabel("ms")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[1][1]
    for every in sorted({m["snapshot_every"] or 0 for m in payload["memory"]}):
        rows = [m for m in payload["memory"] if (m["snapshot_every"] or 0) == every]
        label = "no snapshots" if not every else f"snapshot every {every}"
        ax.loglog([m["log_length"] for m in rows], [m["log_bytes"] / 1024 for m in rows],
                  "o-", label=f"log, {label}")
        if every:
            ax.loglog([m["log_length"] for m in rows],
                      [max(m["snapshot_bytes"], 1) / 1024 for m in rows], "s:",
                      label=f"snapshot (sim state machine = full history), {label}")
    ax.set_title("memory per node vs log length (100-byte commands)")
    ax.set_xlabel("log length (entries)")
    ax.set_ylabel("KiB")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    save_figure(fig, results_dir, NAME)
    plt.close(fig)


if __name__ == "__main__":
    main(sys.argv[1:])
