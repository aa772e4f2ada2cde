"""raftpy against PySyncObj on the same machine in the same run, with the ratios.

Run from the repository root (needs the ``bench`` extra)::

    python -m benchmarks.compare                 # both full runs, then the ratio table
    python -m benchmarks.compare --quick         # a few trials of each
    python -m benchmarks.compare --from-results  # only recompute the table from the JSONs

Runs ``benchmarks.peer_pysyncobj`` then ``benchmarks.net_raftpy`` with the same
options, and prints, for every figure, PySyncObj's best profile, each raftpy
profile, the ratio raftpy/PySyncObj and whether the issue's target is met:

* pipelined throughput >= 2x PySyncObj;
* sequential commit latency median <= PySyncObj's;
* leadership transfer median < 2 ms and below PySyncObj's best;
* re-election median <= PySyncObj's, p99 <= 0.6x PySyncObj's (also reported with
  raftpy's heartbeat set to PySyncObj's, as well as at raftpy's default);
* the pipelined figures also with ``Node.apply_many`` (100 commands per call), the
  batch API a pipelined raftpy client uses instead of one task per write.

Then the reads: latency and throughput of each kind of raftpy read (ReadIndex,
lease, follower read, the log-entry barrier, and a stale local read) against the
log-entry barrier and against PySyncObj's local read, which is **not linearizable**
(PySyncObj has no linearizable read other than a replicated call, that is a write).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from benchmarks import net_raftpy, peer_pysyncobj
from benchmarks._common import RESULTS_DIR, print_table, pyplot, save_figure, write_json
from benchmarks.peer_pysyncobj import add_common_args

NAME = "compare"

# figure key -> (label, higher is better, target check on (raftpy, pysyncobj))
FIGURES: list[tuple[str, str, bool]] = [
    ("failover_leader_ms.median", "re-election, crash -> leader, median ms", False),
    ("failover_leader_ms.p99", "re-election, crash -> leader, p99 ms", False),
    ("failover_commit_ms.median", "re-election, crash -> first commit, median ms", False),
    ("failover_commit_ms.p99", "re-election, crash -> first commit, p99 ms", False),
    ("transfer_commit_ms.median", "transfer -> first commit, median ms", False),
    ("transfer_commit_ms.p99", "transfer -> first commit, p99 ms", False),
    ("seq_16B_ms.median", "sequential 16 B, median ms", False),
    ("seq_16B_ms.p99", "sequential 16 B, p99 ms", False),
    ("seq_1024B_ms.median", "sequential 1 KiB, median ms", False),
    ("seq_1024B_ms.p99", "sequential 1 KiB, p99 ms", False),
    ("failover_eqhb_leader_ms.median",
     "re-election at PySyncObj's heartbeat, crash -> leader, median ms", False),
    ("failover_eqhb_leader_ms.p99",
     "re-election at PySyncObj's heartbeat, crash -> leader, p99 ms", False),
    ("failover_early_leader_ms.median",
     "re-election with early pre-vote (opt-in), crash -> leader, median ms", False),
    ("failover_early_leader_ms.p99",
     "re-election with early pre-vote (opt-in), crash -> leader, p99 ms", False),
    ("failover_early_commit_ms.median",
     "re-election with early pre-vote (opt-in), crash -> first commit, median ms", False),
    ("pipe_16B_ops_per_s", "pipelined 16 B, ops/s (a task per write)", True),
    ("pipe_1024B_ops_per_s", "pipelined 1 KiB, ops/s (a task per write)", True),
    ("pipe_many_16B_ops_per_s", "pipelined 16 B, ops/s (apply_many)", True),
    ("pipe_many_1024B_ops_per_s", "pipelined 1 KiB, ops/s (apply_many)", True),
]

READ_KINDS: list[tuple[str, str]] = [
    ("index", "ReadIndex on the leader"),
    ("lease", "lease read on the leader"),
    ("follower", "follower read (ReadIndex via the leader)"),
    ("log", "log-entry barrier on the leader"),
    ("stale", "raftpy local read, no barrier (not linearizable)"),
]


def peer_key(key: str) -> str:
    """The PySyncObj figure a raftpy figure is compared with."""
    return (key.replace("failover_eqhb_", "failover_").replace("failover_early_", "failover_")
            .replace("pipe_many_", "pipe_"))


def target(key: str, ours: float, theirs: float) -> tuple[str, bool | None]:
    """The issue's target for ``key`` and whether ``ours`` meets it."""
    if key.startswith("pipe_"):
        return ">= 2x", ours >= 2 * theirs
    key = key.replace("failover_eqhb_", "failover_").replace("failover_early_", "failover_")
    if key.startswith("seq_") and key.endswith(".median"):
        return "<= 1x", ours <= theirs
    if key == "transfer_commit_ms.median":
        return "< 2 ms and < peer", ours < 2.0 and ours < theirs
    if key == "failover_leader_ms.median":
        return "<= 1x", ours <= theirs
    if key == "failover_leader_ms.p99":
        return "<= 0.6x", ours <= 0.6 * theirs
    return "", None


def _profile_value(profile: dict[str, Any], key: str) -> float | None:
    """A figure out of one profile's summary (same keys as ``best_rows``)."""
    if key.startswith("pipe_"):
        many = key.startswith("pipe_many_")
        size = int(key.split("_")[2 if many else 1].rstrip("B"))
        field = "pipe_many" if many else "pipe"
        for w in profile["writes"]:
            if w["size"] == size and f"{field}_ops_per_s" in w \
                    and not w.get(f"{field}_stalled"):
                return float(w[f"{field}_ops_per_s"])
        return None  # not measured, or stalled (see the profile table)
    name, stat = key.rsplit(".", 1)
    if name.startswith("seq_"):
        size = int(name.split("_")[1].rstrip("B"))
        for w in profile["writes"]:
            if w["size"] == size and not w.get("seq_stalled") and stat in w["seq_ms"]:
                return float(w["seq_ms"][stat])
        return None
    value = profile.get(name, {}).get(stat)
    return None if value is None else float(value)


def build_table(peer: dict[str, Any], ours: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per figure: PySyncObj's best, each raftpy profile and the ratios."""
    rows = []
    for key, label, higher in FIGURES:
        best = peer.get("best", {}).get(peer_key(key))
        row: dict[str, Any] = {"figure": key, "label": label, "higher_is_better": higher,
                               "pysyncobj": best["value"] if best else None,
                               "pysyncobj_profile": best["profile"] if best else None,
                               "raftpy": {}}
        for name, profile in ours.get("profiles", {}).items():
            value = _profile_value(profile, key)
            entry: dict[str, Any] = {"value": value, "ratio": None, "target": "",
                                     "met": None}
            if value is not None and best and best["value"]:
                entry["ratio"] = value / best["value"]
                entry["target"], entry["met"] = target(key, value, best["value"])
            row["raftpy"][name] = entry
        rows.append(row)
    return rows


def build_reads(peer: dict[str, Any], ours: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per kind of raftpy read (memory profile), with its ratios to the
    log-entry barrier and to PySyncObj's local read; then PySyncObj's local read."""
    reads = ours.get("profiles", {}).get("memory", {}).get("reads", {})
    local = next((p["reads"]["local"] for p in peer.get("profiles", {}).values()
                  if "reads" in p), None)
    log = reads.get("log")
    rows = []
    for kind, label in READ_KINDS:
        r = reads.get(kind)
        if r is None:
            continue
        median = r["latency_us"].get("median")
        row: dict[str, Any] = {"kind": kind, "label": label, "median_us": median,
                               "p99_us": r["latency_us"].get("p99"),
                               "ops_per_s": r["ops_per_s"]}
        if log is not None and median:
            row["latency_vs_log"] = median / log["latency_us"]["median"]
            row["ops_vs_log"] = r["ops_per_s"] / log["ops_per_s"]
        if local is not None and median:
            row["latency_vs_pysyncobj_local"] = median / local["latency_us"]["median"]
            row["ops_vs_pysyncobj_local"] = r["ops_per_s"] / local["ops_per_s"]
        rows.append(row)
    if local is not None:
        rows.append({"kind": "pysyncobj-local",
                     "label": "PySyncObj local read (not linearizable)",
                     "median_us": local["latency_us"].get("median"),
                     "p99_us": local["latency_us"].get("p99"),
                     "ops_per_s": local["ops_per_s"]})
    return rows


def print_reads(rows: list[dict[str, Any]]) -> None:
    table = []
    for r in rows:
        def ratio(key: str, r: dict[str, Any] = r) -> str:
            return f"{r[key]:.2f}x" if r.get(key) is not None else "-"
        table.append([r["label"], _num(r["median_us"]), _num(r["p99_us"]),
                      _num(r["ops_per_s"]), ratio("latency_vs_log"), ratio("ops_vs_log"),
                      ratio("ops_vs_pysyncobj_local")])
    print_table(["read", "median us", "p99 us", "reads/s", "latency / log barrier",
                 "reads/s / log barrier", "reads/s / PySyncObj local"], table,
                "reads (raftpy memory profile, 3 processes on loopback)")


def print_comparison(rows: list[dict[str, Any]], profiles: Sequence[str]) -> None:
    headers = ["figure", "PySyncObj best"]
    for name in profiles:
        headers += [f"raftpy {name}", "ratio", "target"]
    table = []
    for row in rows:
        peer = row["pysyncobj"]
        cells: list[object] = [row["label"], "-" if peer is None else
                               f"{_num(peer)} ({row['pysyncobj_profile']})"]
        for name in profiles:
            entry = row["raftpy"].get(name, {})
            value, ratio = entry.get("value"), entry.get("ratio")
            met = entry.get("met")
            cells += ["-" if value is None else _num(value),
                      "-" if ratio is None else f"{ratio:.2f}x",
                      "" if met is None else f"{entry['target']} {'yes' if met else 'NO'}"]
        table.append(cells)
    print_table(headers, table, "raftpy / PySyncObj, 3 processes on loopback, same machine")


def markdown(rows: list[dict[str, Any]], reads: list[dict[str, Any]],
             profiles: Sequence[str]) -> str:
    """Both tables as Markdown, for docs/benchmarks.md (``--markdown``)."""
    head = ["figure", "PySyncObj best (profile)"]
    for name in profiles:
        head += [f"raftpy {name}", "ratio"]
    head += ["target", f"met ({' / '.join(profiles)})"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        peer = row["pysyncobj"]
        cells = [row["label"].replace("->", "→"),
                 "-" if peer is None else f"{_num(peer)} ({row['pysyncobj_profile']})"]
        wanted, met = "", []
        for name in profiles:
            entry = row["raftpy"].get(name, {})
            value, ratio = entry.get("value"), entry.get("ratio")
            cells += ["-" if value is None else _num(value),
                      "-" if ratio is None else f"{ratio:.2f}\u00d7"]
            wanted = wanted or entry.get("target", "")
            if entry.get("met") is not None:
                met.append("**yes**" if entry["met"] else "no")
        cells += [wanted.replace("<=", "≤").replace(">=", "≥"), " / ".join(met)]
        lines.append("| " + " | ".join(cells) + " |")
    if reads:
        lines += ["", "| read | median µs | p99 µs | reads/s | latency ÷ log barrier "
                  "| reads/s ÷ log barrier |", "|---|---|---|---|---|---|"]
        for r in reads:
            def ratio(key: str, r: dict[str, Any] = r) -> str:
                return f"{r[key]:.2f}\u00d7" if r.get(key) is not None else "-"
            lines.append(f"| {r['label']} | {_num(r['median_us'])} | {_num(r['p99_us'])} "
                         f"| {_num(r['ops_per_s'])} | {ratio('latency_vs_log')} "
                         f"| {ratio('ops_vs_log')} |")
    return "\n".join(lines)


def _num(value: float) -> str:
    return f"{value:,.0f}" if value >= 1000 else f"{value:.2f}"


def plot(rows: list[dict[str, Any]], profiles: Sequence[str], results_dir: Any) -> None:
    plt = pyplot()
    if plt is None or not profiles:
        return
    labels = [r["label"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) * max(1, len(profiles)) + 1.5))
    height = 0.8 / len(profiles)
    for k, name in enumerate(profiles):
        ys = [i + k * height for i in range(len(rows))]
        ratios = []
        for r in rows:
            ratio = r["raftpy"].get(name, {}).get("ratio")
            # Show "how many times better": >1 is raftpy ahead for every figure.
            if ratio is None:
                ratios.append(0.0)
            else:
                ratios.append(ratio if r["higher_is_better"] else 1 / ratio)
        # Bars grow from 1x: right of the line raftpy is ahead, left it is behind.
        ax.barh(ys, [r - 1 if r else 0.0 for r in ratios], left=1.0, height=height,
                label=f"raftpy {name}")
    ax.axvline(1.0, color="k", linewidth=1)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(rows))], labels, fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(_times_formatter())
    ax.xaxis.set_minor_formatter(_times_formatter())
    ax.set_xlabel("times better than PySyncObj's best profile (>1: raftpy ahead)")
    ax.invert_yaxis()
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    save_figure(fig, results_dir, NAME)
    plt.close(fig)


def _times_formatter() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _pos: f"{value:g}x")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare",
                                     description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--from-results", action="store_true",
                        help="read peer_pysyncobj.json and net_raftpy.json instead of running")
    parser.add_argument("--markdown", action="store_true",
                        help="also print both tables as Markdown (for docs/benchmarks.md)")
    args, rest = parser.parse_known_args(argv)
    results_dir = args.results_dir
    if args.from_results:
        peer = json.loads((results_dir / "peer_pysyncobj.json").read_text())
        ours = json.loads((results_dir / "net_raftpy.json").read_text())
    else:
        forwarded = [a for a in (sys.argv[1:] if argv is None else argv)
                     if a != "--markdown"]  # (compare's own option)
        peer = peer_pysyncobj.main(forwarded) or {}
        ours = net_raftpy.main(forwarded) or {}
    profiles = list(ours.get("profiles", {}))
    rows = build_table(peer, ours)
    print_comparison(rows, profiles)
    reads = build_reads(peer, ours)
    if reads:
        print_reads(reads)
    for profile, why in ours.get("skipped", {}).items():
        print(f"raftpy {profile}: skipped ({why})")
    if args.markdown:
        print()
        print(markdown(rows, reads, profiles))
    payload = {"pysyncobj_version": peer.get("version"), "raftpy_version": ours.get("version"),
               "rows": rows, "reads": reads, "raftpy_skipped": ours.get("skipped", {}),
               "pysyncobj_machine": peer.get("machine"), "raftpy_machine": ours.get("machine")}
    write_json(results_dir if results_dir else RESULTS_DIR, NAME, payload)
    if args.plot:
        plot(rows, profiles, results_dir)
    del rest
    return payload


if __name__ == "__main__":
    main()
