"""How long the linearizability checker takes on large generated histories.

Each history comes from clients running random operations against one in-memory
dict: every operation takes effect at a random instant inside its interval, so the
history is linearizable by construction. Workloads:

- ``put/get``: puts and gets only;
- ``mixed``: also deletes and compare-and-sets, with 1% of operations failed and 1%
  of unknown outcome (half of those take effect, possibly after the client gave up);
- ``one key``: the mixed workload on a single key (no partitioning to help);
- ``violation``: the mixed workload with one get's result (in the second half)
  changed to a value never written: the time to find that it is not linearizable;
- ``violation, one key``: the same on the one-key history: proving a violation means
  exploring every way of reaching it, which is where concurrency on a key costs most.

    python -m benchmarks.linearizability_check            # 5,000 operations
    python -m benchmarks.linearizability_check --quick    # 1,000 operations

Prints a table (wall-clock and CPU seconds: the latter is the better figure on a
busy machine) and writes ``results/linearizability_check.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from benchmarks._common import RESULTS_DIR, print_table, write_json
from raftpy.testing import KVModel, Operation, Outcome, check


def generate(operations: int, clients: int, keys: int, seed: int, *, mixed: bool = True,
             unknown: float = 0.01, failed: float = 0.01) -> list[Operation]:
    """A linearizable key-value history of ``operations`` operations by ``clients``
    concurrent clients over ``keys`` keys (see the module docstring)."""
    rng = random.Random(seed)
    # Each client runs its operations back to back: invoke after a short think time,
    # take effect somewhere inside the call, return a little later.
    planned: list[tuple[float, bool, Operation]] = []
    clock = [0.0] * clients
    written = 0
    for n in range(operations):
        client = n % clients
        invoke = clock[client] + rng.uniform(0.0, 1.0)
        effect = invoke + rng.uniform(0.0, 2.0)
        complete = effect + rng.uniform(0.0, 2.0)
        clock[client] = complete
        value: Any = None
        roll = rng.random()
        if roll < 0.45:
            kind = "get"
        elif roll < 0.9 or not mixed:
            written += 1
            kind, value = "put", f"v{written}"
        elif roll < 0.95:
            kind = "delete"
        else:
            # Expect a recent value, so that some swaps succeed and some do not.
            written += 1
            kind, value = "cas", (f"v{max(1, written - rng.randrange(1, 20))}", f"v{written}")
        outcome = Outcome.OK
        applies = True
        roll = rng.random()
        if roll < failed:
            outcome, applies = Outcome.FAIL, False
        elif roll < failed + unknown:
            # An unknown operation may take effect well after the client gave up, or never.
            outcome, applies = Outcome.UNKNOWN, rng.random() < 0.5
            effect += rng.uniform(0.0, 20.0)
        planned.append((effect, applies, Operation(
            id=n, client=client, kind=kind, key=f"k{rng.randrange(keys)}", value=value,
            outcome=outcome, invoke=invoke, complete=complete)))

    data: dict[Hashable, Any] = {}
    results: dict[int, Any] = {}
    for _, applies, op in sorted(planned, key=lambda p: (p[0], p[2].id)):
        if applies:
            results[op.id] = apply_to_dict(data, op)
    return [dataclasses.replace(op, result=results.get(op.id))
            if op.outcome is Outcome.OK else op for _, _, op in planned]


def apply_to_dict(data: dict[Hashable, Any], op: Operation) -> Any:
    """Apply ``op`` to ``data`` and return its result, as :class:`KVModel` specifies."""
    if op.kind == "get":
        return data.get(op.key)
    if op.kind == "put":
        data[op.key] = op.value
        return None
    if op.kind == "delete":
        return data.pop(op.key, None) is not None
    expected, new = op.value
    if data.get(op.key) == expected:
        data[op.key] = new
        return True
    return False


def break_one_read(history: list[Operation], seed: int) -> list[Operation]:
    """The history with one successful get (in its second half) answering a value
    no operation ever wrote."""
    rng = random.Random(seed)
    reads = [i for i, op in enumerate(history)
             if op.kind == "get" and op.outcome is Outcome.OK and i >= len(history) // 2]
    target = rng.choice(reads)
    broken = list(history)
    broken[target] = dataclasses.replace(history[target], result="never written")
    return broken


def run(operations: int, clients: int, keys: int, seed: int,
        repeat: int) -> list[dict[str, Any]]:
    """Time each workload (best of ``repeat`` runs); returns one row per workload."""
    workloads = [
        ("put/get", generate(operations, clients, keys, seed, mixed=False, unknown=0.0,
                             failed=0.0), True),
        ("mixed", generate(operations, clients, keys, seed), True),
        ("one key", generate(operations, clients, 1, seed), True),
    ]
    workloads.append(("violation", break_one_read(workloads[1][1], seed), False))
    workloads.append(("violation, one key", break_one_read(workloads[2][1], seed), False))
    rows = []
    for name, history, expected in workloads:
        times, cpu = [], []
        # The one-key violation takes long enough that one run is measure enough.
        for _ in range(1 if name == "violation, one key" else repeat):
            started, started_cpu = time.perf_counter(), time.process_time()
            result = check(history, KVModel())
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
            if result.ok != expected:
                raise SystemExit(f"{name}: expected ok={expected}, got\n{result}")
        rows.append({
            "workload": name, "operations": len(history), "clients": clients,
            "keys": 1 if "one key" in name else keys,
            "unknown": sum(op.outcome is Outcome.UNKNOWN for op in history),
            "failed": sum(op.outcome is Outcome.FAIL for op in history),
            "linearizable": result.ok, "best_s": min(times), "runs_s": times,
            "best_cpu_s": min(cpu),
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.linearizability_check",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--operations", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--keys", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per workload, best kept (the one-key violation runs once)")
    parser.add_argument("--quick", action="store_true", help="1,000 operations, one run")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    operations = 1000 if args.quick else args.operations
    repeat = 1 if args.quick else args.repeat
    rows = run(operations, args.clients, args.keys, args.seed, repeat)
    print_table(["workload", "operations", "clients", "keys", "unknown", "failed",
                 "linearizable", "seconds", "CPU seconds"],
                [[r["workload"], r["operations"], r["clients"], r["keys"], r["unknown"],
                  r["failed"], r["linearizable"], r["best_s"], r["best_cpu_s"]] for r in rows],
                title=f"check(history, KVModel()), best of {repeat}")
    write_json(args.results_dir, "linearizability_check",
               {"seed": args.seed, "repeat": repeat, "workloads": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
