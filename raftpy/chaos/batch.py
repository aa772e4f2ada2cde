"""``python -m raftpy.chaos.batch``: several chaos runs, one line each, then the
availability figures over all of them.

    python -m raftpy.chaos.batch --runs 20 --seconds 30 --first-seed 100

Runs alternate 3 and 5 nodes and partitions off/on (seed ``s`` uses
``nodes = 3 if s % 2 == 0 else 5`` and partitions when ``s % 4 >= 2``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from raftpy.chaos.report import by_kind
from raftpy.chaos.run import Options, Result, add_snapshot_every, run

TARGETS = {"kill-leader": 0.35, "pause-leader": 0.6, "transfer": 0.05}
"""Time to the first acknowledged write after the fault (seconds), issue 14."""


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return math.nan
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def summary(result: Result) -> dict[str, object]:
    """The figures of one run, as plain data."""
    counts = result.history.counts()
    replicas = result.replicas
    return {
        "seed": result.options.seed, "nodes": result.options.nodes,
        "partitions": result.options.partitions, **counts,
        "verdict": None if result.verdict is None else result.verdict.linearizable,
        "replicas_equal": None if replicas is None else replicas.equal,
        "duplicates": None if replicas is None else len(replicas.duplicates),
        "lost": None if replicas is None or replicas.lost is None else len(replicas.lost),
        "counted_from": None if replicas is None else replicas.counted_from,
        "last_index": None if replicas is None else replicas.index,
        "first_write": {kind: [round(g.first_write, 4) for g in gaps]
                        for kind, gaps in by_kind(result.gaps).items()},
        "longest_gap": {kind: [round(g.longest, 4) for g in gaps]
                        for kind, gaps in by_kind(result.gaps).items()},
        "elected": {kind: [None if g.elected is None else round(g.elected, 4) for g in gaps]
                    for kind, gaps in by_kind(result.gaps).items()},
        "transfer_ms": [round(e.transfer_ms, 2) for e in result.events
                        if e.transfer_ms is not None],
        "problems": result.problems,
    }


def _counted(row: dict[str, object]) -> str:
    """Over how much of the log puts were counted: ``all``, or the share of the
    entries after the oldest snapshot."""
    start, end = row.get("counted_from"), row.get("last_index")
    if not isinstance(start, int) or not isinstance(end, int):
        return "-"
    return "all" if start == 0 else f"{100 * (end - start) / max(end, 1):.0f}%"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raftpy.chaos.batch")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--first-seed", type=int, default=100)
    parser.add_argument("--json", type=Path, default=None, help="append one line per run")
    parser.add_argument("--election-timeout-ms", type=float, default=150.0)
    parser.add_argument("--no-early-pre-vote", action="store_true",
                        help="run the members without serve --early-pre-vote")
    add_snapshot_every(parser)
    args = parser.parse_args(argv)
    rows = []
    failed = 0
    print(f"{'seed':>5} {'nodes':>5} {'part':>4} {'ok':>6} {'fail':>5} {'unkn':>5} "
          f"{'verdict':>8} {'equal':>5} {'dups':>4} {'lost':>4} {'count':>5}  first write after "
          "kill-leader / pause-leader / transfer (ms)", flush=True)
    for seed in range(args.first_seed, args.first_seed + args.runs):
        options = Options(seed=seed, seconds=args.seconds, nodes=3 if seed % 2 == 0 else 5,
                          partitions=seed % 4 >= 2,
                          election_timeout_ms=args.election_timeout_ms,
                          early_pre_vote=not args.no_early_pre_vote,
                          snapshot_every=args.snapshot_every)
        try:
            row = summary(run(options))
        except Exception as exc:  # a broken run must not hide the others
            row = {"seed": seed, "nodes": options.nodes, "partitions": options.partitions,
                   "ok": 0, "fail": 0, "unknown": 0, "verdict": None,
                   "replicas_equal": None, "duplicates": None, "lost": None,
                   "counted_from": None, "last_index": None,
                   "first_write": {}, "longest_gap": {}, "elected": {}, "transfer_ms": [],
                   "problems": [f"crashed: {exc!r}"]}
        rows.append(row)
        failed += bool(row["problems"])
        if args.json is not None:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")
        first = row["first_write"]
        assert isinstance(first, dict)
        figures = " / ".join(",".join(f"{v * 1000:.0f}" for v in first.get(kind, []))
                             or "-" for kind in TARGETS)
        print(f"{seed:>5} {row['nodes']:>5} {'y' if row['partitions'] else 'n':>4} "
              f"{row['ok']:>6} {row['fail']:>5} {row['unknown']:>5} {row['verdict']!s:>8} "
              f"{row['replicas_equal']!s:>5} {row['duplicates']!s:>4} "
              f"{'-' if row['lost'] is None else row['lost']!s:>4} {_counted(row):>5}  "
              f"{figures}" + (f"  PROBLEMS {row['problems']}" if row["problems"] else ""),
              flush=True)
    print()
    for kind in sorted({k for r in rows for k in r["first_write"]}):  # type: ignore[attr-defined]
        values = [v for r in rows for v in r["first_write"].get(kind, [])]  # type: ignore[attr-defined]
        finite = [v for v in values if math.isfinite(v)]
        target = TARGETS.get(kind)
        met = "" if target is None else (
            f"  target {target * 1000:.0f} ms: {sum(v <= target for v in values)}/"
            f"{len(values)} met")
        print(f"{kind:<17} n={len(values):>3}  first write p50 "
              f"{_percentile(finite, 0.5) * 1000:6.0f} ms  p99 "
              f"{_percentile(finite, 0.99) * 1000:6.0f} ms  max "
              f"{max(values, default=math.nan) * 1000:6.0f} ms{met}")
        elected = [v for r in rows for v in r["elected"].get(kind, [])  # type: ignore[attr-defined]
                   if v is not None]
        if elected:
            print(f"{'':<17} {'':>5}  new leader known p50 "
                  f"{_percentile(elected, 0.5) * 1000:6.0f} ms  p99 "
                  f"{_percentile(elected, 0.99) * 1000:6.0f} ms  max "
                  f"{max(elected) * 1000:6.0f} ms")
    handovers = [v for r in rows for v in r["transfer_ms"]]  # type: ignore[attr-defined]
    if handovers:
        print(f"transfers took on the leader: p50 {_percentile(handovers, 0.5):.1f} ms, "
              f"max {max(handovers):.1f} ms")
    print(f"\n{len(rows) - failed}/{len(rows)} runs passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
