"""Command line: ``python -m raftpy.sim --seeds 1000`` (soak) or ``--seed N`` (replay)."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

from raftpy.sim.fuzz import run_seed, trace_of


def main(argv: list[str] | None = None) -> int:
    """Run seeds and print a summary; exit status 1 if any seed failed."""
    parser = argparse.ArgumentParser(prog="python -m raftpy.sim", description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--seed", type=int, help="replay one seed and print its trace tail")
    group.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    parser.add_argument("--start", type=int, default=0, help="first seed of the soak")
    parser.add_argument("--no-membership", dest="membership", action="store_false",
                        help="plans draw no membership changes (add, promote, demote, "
                             "remove, replace), as before they existed")
    parser.add_argument("--safety-time", type=float, default=5.0,
                        help="virtual seconds of faults per seed")
    parser.add_argument("--paranoid", action="store_true",
                        help="after every event, also recheck everything by slow full "
                             "rescans (raftpy.sim.paranoid): tests the incremental checker")
    parser.add_argument("--trace-lines", type=int, default=60,
                        help="trace lines to print when replaying a seed")
    args = parser.parse_args(argv)

    if args.seed is not None:
        report = run_seed(args.seed, safety_time=args.safety_time, record_trace=True,
                          membership=args.membership, paranoid=args.paranoid)
        print("\n".join(trace_of(args.seed)[-args.trace_lines:]))
        print(f"\nseed {report.seed}: {report.plan}")
        print(f"events {report.events}, trace hash {report.trace_hash:08x}, "
              f"proposals {report.committed}/{report.proposals} committed, "
              f"transfers {report.transfers_succeeded}/{report.transfers} succeeded")
        print(f"stable majorities: {report.liveness_windows}, longest wait for a committing "
              f"leader {report.worst_leader_wait * 1000:.1f} ms")
        print("OK" if report.ok else f"FAILED: {report.failure}")
        return 0 if report.ok else 1

    started = time.perf_counter()
    faults: Counter[str] = Counter()
    failures = []
    events = proposals = committed = transfers = transfers_ok = windows = 0
    worst = (0.0, -1, 0.0)  # wait, seed, window start
    for seed in range(args.start, args.start + args.seeds):
        report = run_seed(seed, safety_time=args.safety_time, membership=args.membership,
                          paranoid=args.paranoid)
        faults.update(report.faults)
        events += report.events
        proposals += report.proposals
        committed += report.committed
        transfers += report.transfers
        transfers_ok += report.transfers_succeeded
        windows += report.liveness_windows
        worst = max(worst, (report.worst_leader_wait, seed, report.worst_window_start))
        if not report.ok:
            failures.append(report)
            print(f"seed {seed} FAILED: {report.failure}\n  replay: python -m raftpy.sim "
                  f"--seed {seed}", file=sys.stderr)
        done = seed - args.start + 1
        if done % 50 == 0 or done == args.seeds:
            print(f"  {done}/{args.seeds} seeds, {len(failures)} failed", file=sys.stderr)
    wall = time.perf_counter() - started
    print(f"runs: {args.seeds}  violations: {len(failures)}  wall: {wall:.1f}s  "
          f"events: {events} ({events / wall:,.0f} simulated events/s)")
    print(f"proposals: {proposals} ({committed} committed)  transfers: {transfers} "
          f"({transfers_ok} succeeded)")
    print(f"stable majorities: {windows}; longest wait for a committing leader after one "
          f"formed: {worst[0] * 1000:.1f} ms (seed {worst[1]}, window from t={worst[2]:.3f}s)")
    print("faults fired: " + ", ".join(f"{k}={v}" for k, v in sorted(faults.items())))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
