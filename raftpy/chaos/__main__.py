"""``python -m raftpy.chaos``: one chaos run, its report, exit status 1 on a violation."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from raftpy.chaos.nemesis import schedule
from raftpy.chaos.report import by_kind, plot, timeline
from raftpy.chaos.run import Options, Result, add_snapshot_every, run


def _say(text: str = "") -> None:
    print(text, flush=True)


def _ms(seconds: float) -> str:
    return "never" if math.isinf(seconds) else f"{seconds * 1000:.0f} ms"


def print_report(result: Result, *, show_timeline: bool = True) -> None:
    """The run's report on stdout."""
    o = result.options
    counts = result.history.counts()
    _say(f"chaos run: seed {o.seed}, {o.nodes} nodes, {o.seconds:g} s, {o.workers} clients, "
         f"{o.keys} keys, partitions {'on' if o.partitions else 'off'}")
    _say(f"ops: {len(result.history.ops)} = ok {counts['ok']}, fail {counts['fail']}, "
         f"unknown {counts['unknown']}")
    _say("nemesis:")
    for event in result.events:
        end = f"{event.end:6.2f}" if event.end is not None else "     ?"
        _say(f"  {event.start:6.2f} - {end}  {event.kind:<17} nodes {event.nodes} "
             f"{event.detail}")
    if result.verdict is not None:
        _say(f"verdict: {result.verdict.describe()}")
    if result.replicas is not None:
        r = result.replicas
        _say(f"replicas: {'equal' if r.equal else 'DIFFER'} at index {r.index} "
             f"({len(r.replicas[0].data) if r.replicas else 0} keys)")
        scope = "the whole log" if r.counted_from == 0 else f"entries after {r.counted_from}"
        lost = (f"{len(r.lost)}" if r.lost is not None else
                "not counted (a snapshot compacted the log: the final reads and the "
                "linearizability check stand for it)")
        _say(f"duplicates: {len(r.duplicates)} (applications of every put counted over "
             f"{scope}); acknowledged puts lost: {lost}")
    _say("write availability after each fault (first acknowledged write invoked after "
         "it / longest gap until 1 s after it ended):")
    for kind, gaps in sorted(by_kind(result.gaps).items()):
        firsts = ", ".join(_ms(g.first_write) for g in gaps)
        longest = max(g.longest for g in gaps)
        elected = [g.elected for g in gaps if g.elected is not None]
        election = (f"; a member knew the new leader after "
                    f"{', '.join(_ms(e) for e in elected)}" if elected else "")
        _say(f"  {kind:<17} first write {firsts}; longest gap {_ms(longest)}{election}")
    if show_timeline:
        _say("timeline (acknowledged ops/s per 0.5 s):")
        for line in timeline(result.history, result.events, o.seconds):
            _say("  " + line)
    _say(f"history: {result.root / 'history.jsonl'}" if o.keep or result.problems
         or o.root is not None else "history: (removed with the run directory; --keep keeps it)")
    if result.problems:
        _say("FAILED:")
        for problem in result.problems:
            _say(f"  {problem}")
    else:
        _say("PASSED")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raftpy.chaos",
                                     description="Jepsen-style chaos test on real processes.")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--nodes", type=int, default=3, choices=[3, 5])
    parser.add_argument("--workers", type=int, default=5)
    parser.add_argument("--keys", type=int, default=4)
    parser.add_argument("--no-partitions", action="store_true")
    parser.add_argument("--faults", default="",
                        help="comma-separated fault kinds to run, e.g. transfer "
                             "(default: all)")
    parser.add_argument("--no-early-pre-vote", action="store_true",
                        help="run the members without serve --early-pre-vote")
    parser.add_argument("--election-timeout-ms", type=float, default=150.0)
    add_snapshot_every(parser)
    parser.add_argument("--dir", type=Path, default=None,
                        help="keep data, logs, history (and a PNG) here")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    parser.add_argument("--no-timeline", action="store_true")
    parser.add_argument("--log-level", default="warning", help="of the runner")
    parser.add_argument("--server-log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    faults = tuple(k for k in args.faults.split(",") if k)
    try:
        schedule(args.seed, args.seconds, partitions=not args.no_partitions, only=faults)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    options = Options(seed=args.seed, seconds=args.seconds, nodes=args.nodes,
                      partitions=not args.no_partitions, faults=faults, workers=args.workers,
                      keys=args.keys, election_timeout_ms=args.election_timeout_ms,
                      root=args.dir, keep=args.keep or args.dir is not None,
                      server_log_level=args.server_log_level,
                      snapshot_every=args.snapshot_every,
                      early_pre_vote=not args.no_early_pre_vote)
    result = run(options)
    print_report(result, show_timeline=not args.no_timeline)
    if options.keep and plot(result.history, result.events, options.seconds,
                             result.root / "timeline.png"):
        _say(f"plot: {result.root / 'timeline.png'}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
