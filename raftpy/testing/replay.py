"""``python -m raftpy.testing.replay SCHEDULE``: replay a schedule exactly.

``SCHEDULE`` is the JSON a failing :class:`raftpy.testing.fuzzing.ClusterStateMachine`
example prints (or ``@file`` to read it from a file). The replay checks Raft's
invariants after every event and the recovery after the faults stop; it prints
each step's outcome and the decision trace's tail, and exits 1 on a failure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raftpy.sim.invariants import InvariantViolation
from raftpy.testing.schedule import RecoveryFailed, apply_step, recover, schedule_from_json


def main(argv: list[str] | None = None) -> int:
    """Replay one schedule; exit status 0 if it passes, 1 if it fails, 2 if unreadable."""
    parser = argparse.ArgumentParser(prog="python -m raftpy.testing.replay",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("schedule", help="the schedule's JSON, or @FILE")
    parser.add_argument("--trace-lines", type=int, default=40,
                        help="decision trace lines to print on a failure")
    args = parser.parse_args(argv)
    text = args.schedule
    try:
        if text.startswith("@"):
            text = Path(text[1:]).read_text()
        setup, steps = schedule_from_json(text)
    except (OSError, ValueError) as exc:
        print(f"cannot read the schedule: {exc}", file=sys.stderr)
        return 2
    cluster = setup.build(record_trace=True)
    print(f"setup: {setup}")
    try:
        for number, step in enumerate(steps, start=1):
            outcome = apply_step(cluster, step)
            print(f"[{cluster.now:9.3f}] step {number}: {step} -> {outcome}")
        recover(cluster)
    except (InvariantViolation, RecoveryFailed) as exc:
        print("\n".join(cluster.trace[-args.trace_lines:]))
        print(f"FAILED: {exc}")
        return 1
    print(f"OK: {len(steps)} steps, {cluster.events} events, invariants held, recovered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
