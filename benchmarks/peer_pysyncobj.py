"""PySyncObj 0.3.17 on 3 loopback processes: the peer raftpy is measured against.

Run from the repository root (needs ``pip install pysyncobj==0.3.17``)::

    python -m benchmarks.peer_pysyncobj           # full run (about 3 minutes)
    python -m benchmarks.peer_pysyncobj --quick   # a few trials of each

Settings, as comparable with raftpy as PySyncObj allows: election timeout
150-300 ms (``raftMinTimeout``/``raftMaxTimeout``), heartbeat 49 ms
(``appendEntriesPeriod``; PySyncObj requires it under a third of the minimum
timeout, raftpy uses exactly 50 ms), in-memory log (no ``journalFile``), reconnect to a
lost peer after 0.5 s (``connectionRetryTime``, default 5 s; survivors of a
crash stay connected to each other, so it does not shorten elections). Two
profiles, because PySyncObj's default batching holds new writes until the next
tick:

* ``batched``: ``appendEntriesUseBatch=True``, ``autoTickPeriod=0.05`` (defaults);
* ``unbatched-5ms``: ``appendEntriesUseBatch=False``, ``autoTickPeriod=0.005``.

Measured (see ``_netharness`` for the protocol and the clock): re-election
after SIGKILL of the leader (fresh cluster per trial), leadership transfer
(``transferLeadership()``, timed from the call on the leader's tick thread to
the target's first commit as leader), sequential commit latency (one
``@replicated(sync=True)`` call at a time, inside the leader) and pipelined
throughput (many ``@replicated`` calls with callbacks in flight, inside the
leader), for 16-byte and 1-KiB commands.

What "first commit as leader" means for PySyncObj: the leader's commit index
reaching the no-op it appends on election (``SyncObj.__noopIDx``), checked by
a tick callback, which runs right after the tick that computes the commit.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks._common import (
    RESULTS_DIR,
    cdf_points,
    print_table,
    progress,
    pyplot,
    save_figure,
    summarize,
    write_json,
)
from benchmarks._netharness import (
    NetCluster,
    child_env,
    measure_failover,
    measure_transfers,
    measure_writes,
    python_argv,
)

NAME = "peer_pysyncobj"
HEARTBEAT = 0.049  # PySyncObj asserts raftMinTimeout > 3 * appendEntriesPeriod

PROFILES: dict[str, dict[str, Any]] = {
    "batched": {"appendEntriesUseBatch": True, "autoTickPeriod": 0.05},
    "unbatched-5ms": {"appendEntriesUseBatch": False, "autoTickPeriod": 0.005},
}
COMMON_CONF: dict[str, Any] = {
    "raftMinTimeout": 0.15,
    "raftMaxTimeout": 0.30,
    "appendEntriesPeriod": HEARTBEAT,
    "connectionRetryTime": 0.5,
    "commandsQueueSize": 200_000,
    "logCompactionMinEntries": 10_000_000,  # no compaction during a run
    "logCompactionMinTime": 10_000,
}


# ---------------------------------------------------------------------- node process

def _node_main(node_id: int, ports: dict[int, int], profile: str) -> None:
    """One PySyncObj node: serve the control protocol on stdin/stdout."""
    from pysyncobj import SyncObj, SyncObjConf, replicated  # type: ignore[import-untyped]

    monotonic = time.monotonic
    leader_at: list[tuple[int, float]] = []
    commit_at: list[tuple[int, float]] = []
    actions: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
    addr = {i: f"127.0.0.1:{p}" for i, p in ports.items()}
    id_of = {a: i for i, a in addr.items()}

    def on_state_changed(old: int, new: int) -> None:
        if new == 2:  # _RAFT_STATE.LEADER
            leader_at.append((obj.raftCurrentTerm, monotonic()))

    class Bench(SyncObj):  # type: ignore[misc]
        def __init__(self) -> None:
            conf = SyncObjConf(**COMMON_CONF, **PROFILES[profile],
                               onStateChanged=on_state_changed)
            super().__init__(addr[node_id], [a for i, a in addr.items() if i != node_id], conf)
            self.count = 0

        @replicated  # type: ignore[untyped-decorator]
        def put(self, data: bytes) -> int:
            self.count += 1
            return self.count

    obj = Bench()
    committed_term = [0]

    def on_tick() -> None:
        # Runs on PySyncObj's tick thread: the only place it is safe to call into it.
        while True:
            try:
                action = actions.get_nowait()
            except queue.Empty:
                break
            action()
        if obj._isLeader():
            term = obj.raftCurrentTerm
            if term != committed_term[0] and obj.raftCommitIndex >= obj._SyncObj__noopIDx:
                committed_term[0] = term
                commit_at.append((term, monotonic()))

    obj.addOnTickCallback(on_tick)

    def run_on_tick_thread(fn: Callable[[], Any]) -> Any:
        done = threading.Event()
        box: list[Any] = []

        def action() -> None:
            box.append(fn())
            done.set()

        actions.put(action)
        notifier = getattr(obj, "_SyncObj__pipeNotifier", None)
        if notifier is not None:
            notifier.notify()  # wake the poller now rather than at the next tick
        done.wait(5)
        return box[0] if box else None

    def status() -> dict[str, Any]:
        state = obj._SyncObj__raftState
        leader = obj._getLeader()
        return {"id": node_id, "role": ("follower", "candidate", "leader")[state],
                "leader": id_of.get(leader.address) if leader is not None else None,
                "term": obj.raftCurrentTerm, "commit": obj.raftCommitIndex}

    def seq(n: int, size: int, max_seconds: float) -> dict[str, Any]:
        data = os.urandom(size)
        latencies: list[float] = []
        deadline = time.perf_counter() + max_seconds
        while len(latencies) < n and time.perf_counter() < deadline:
            began = time.perf_counter()
            try:
                obj.put(data, sync=True, timeout=10)
            except Exception:  # SyncObjException: timeout or a failure reason
                return {"latencies": latencies, "stalled": True}
            latencies.append(time.perf_counter() - began)
        return {"latencies": latencies, "stalled": False}

    def pipe(n: int, size: int, inflight: int, max_seconds: float) -> dict[str, Any]:
        data = os.urandom(size)
        window = threading.Semaphore(inflight)
        finished = threading.Event()
        counts = [0, 0]  # completed, succeeded (touched only on the tick thread)

        def callback(result: Any, err: int) -> None:
            counts[0] += 1
            counts[1] += err == 0
            window.release()
            if counts[0] == n:
                finished.set()

        began = time.perf_counter()
        deadline = began + max_seconds
        for _ in range(n):
            if not window.acquire(timeout=max(0.0, deadline - time.perf_counter())):
                break
            obj.put(data, callback=callback)
        done = finished.wait(max(0.0, deadline - time.perf_counter()))
        return {"elapsed": time.perf_counter() - began, "ok": counts[1], "stalled": not done}

    def reads(n: int) -> dict[str, Any]:
        # PySyncObj's local read: the state machine's attribute, no barrier of any
        # kind (not linearizable: a deposed leader or a lagging follower reads stale).
        latencies = []
        perf = time.perf_counter
        for _ in range(n):
            began = perf()
            obj.count  # noqa: B018
            latencies.append(perf() - began)
        began = perf()
        for _ in range(n):
            obj.count  # noqa: B018
        elapsed = perf() - began
        return {"latencies": latencies, "ops_per_s": n / elapsed if elapsed else 0.0}

    def transfer(target: int) -> dict[str, Any]:
        result: list[int] = []

        def start() -> float:
            at = monotonic()
            obj.transferLeadership(addr[target], callback=lambda res, err: result.append(err))
            return at

        at = run_on_tick_thread(start)
        return {"ok": bool(result) and result[0] == 0, "at": at}

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        op = req["op"]
        try:
            if op == "status":
                reply = status()
            elif op == "events":
                since = req.get("since", 0.0)
                reply = {"leader_at": [e for e in leader_at if e[1] > since],
                         "commit_at": [e for e in commit_at if e[1] > since]}
            elif op == "seq":
                reply = seq(req["n"], req["size"], req.get("max_seconds", 1e9))
            elif op == "pipe":
                reply = pipe(req["n"], req["size"], req["inflight"], req.get("max_seconds", 120))
            elif op == "transfer":
                reply = transfer(req["target"])
            elif op == "reads":
                reply = reads(req["n"])
            elif op == "exit":
                print(json.dumps({"bye": True}), flush=True)
                break
            else:
                reply = {"error": f"unknown op {op!r}"}
        except Exception as exc:  # report to the coordinator rather than die silently
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)
    os._exit(0)  # PySyncObj's tick thread is not a daemon; leave at once


# ---------------------------------------------------------------------- coordinator

def cluster_factory(profile: str, n: int = 3) -> Callable[[], NetCluster]:
    def spawn(node_id: int, ports: dict[int, int]) -> list[str]:
        return python_argv("benchmarks.peer_pysyncobj", "node", "--id", str(node_id),
                           "--ports", json.dumps(ports), "--profile", profile)

    env = child_env()
    return lambda: NetCluster(spawn, n, env)


def run_peer(args: argparse.Namespace, bar: Any) -> dict[str, Any]:
    """Measure every profile; returns the JSON payload."""
    profiles: dict[str, Any] = {}
    for profile in args.profiles:
        make = cluster_factory(profile)
        failover = measure_failover(make, args.failover_trials, HEARTBEAT, bar, args.seed)
        with make() as cluster:
            transfers = measure_transfers(cluster, args.transfer_trials, bar)
            writes = measure_writes(cluster, args.sizes, args.seq_n, args.pipe_n, args.inflight)
            local = None
            if args.read_n:
                local = cluster.nodes[cluster.wait_stable()].call("reads", n=args.read_n)
            bar.update()
        profiles[profile] = summarize_profile(failover, transfers, writes)
        if local is not None:
            profiles[profile]["reads"] = {"local": read_summary(local)}
        profiles[profile]["settings"] = {**COMMON_CONF, **PROFILES[profile]}
    return {"peer": "pysyncobj", "version": _version(), "profiles": profiles,
            "best": best_rows(profiles)}


def read_summary(reply: dict[str, Any]) -> dict[str, Any]:
    """Latency (µs) and throughput of one kind of read, from a node's ``reads`` reply."""
    return {"latency_us": summarize(reply["latencies"], 1e6),
            "ops_per_s": float(reply["ops_per_s"])}


def summarize_profile(failover: list[dict[str, Any]], transfers: list[dict[str, Any]],
                      writes: list[dict[str, Any]]) -> dict[str, Any]:
    """Distributions (ms) and throughput from the raw measurements."""
    return {
        "raw": {
            "failover_leader_ms": [f["leader_s"] * 1000 for f in failover
                                   if f["leader_s"] is not None],
            "transfer_commit_ms": [t["commit_s"] * 1000 for t in transfers
                                   if t["commit_s"] is not None],
            "seq_ms": {str(w["size"]): [x * 1000 for x in w["seq_latencies_s"]]
                       for w in writes},
        },
        "failover_leader_ms": summarize((f["leader_s"] for f in failover
                                         if f["leader_s"] is not None), 1000),
        "failover_commit_ms": summarize((f["commit_s"] for f in failover
                                         if f["commit_s"] is not None), 1000),
        "failover_failed": sum(f["commit_s"] is None for f in failover),
        "transfer_commit_ms": summarize((t["commit_s"] for t in transfers
                                         if t["commit_s"] is not None), 1000),
        "transfer_failed": sum(t["commit_s"] is None for t in transfers),
        "writes": [{"size": w["size"],
                    "seq_ms": summarize(w["seq_latencies_s"], 1000),
                    "seq_stalled": w["seq_stalled"], "pipe_stalled": w["pipe_stalled"],
                    "pipe_ops_per_s": w["pipe_ops_per_s"], "pipe_n": w["pipe_n"],
                    "pipe_inflight": w["pipe_inflight"], "pipe_ok": w["pipe_ok"],
                    "pipe_errors": w.get("pipe_errors", {}),
                    **{k: v for k, v in w.items() if k.startswith("pipe_many_")}}
                   for w in writes],
    }


def best_rows(profiles: dict[str, Any]) -> dict[str, Any]:
    """Each figure's best value over the profiles, and which profile gave it."""
    best: dict[str, Any] = {}

    def take(key: str, value: float, profile: str, lower_is_better: bool = True) -> None:
        old = best.get(key)
        better = old is None or (value < old["value"] if lower_is_better
                                 else value > old["value"])
        if better:
            best[key] = {"value": value, "profile": profile}

    for name, p in profiles.items():
        for fig in ("failover_leader_ms", "failover_commit_ms", "transfer_commit_ms"):
            if p[fig].get("n"):
                take(f"{fig}.median", p[fig]["median"], name)
                take(f"{fig}.p99", p[fig]["p99"], name)
        for w in p["writes"]:
            # A stalled run has no figure worth comparing.
            if w["seq_ms"].get("n") and not w.get("seq_stalled"):
                take(f"seq_{w['size']}B_ms.median", w["seq_ms"]["median"], name)
                take(f"seq_{w['size']}B_ms.p99", w["seq_ms"]["p99"], name)
            if not w.get("pipe_stalled"):
                take(f"pipe_{w['size']}B_ops_per_s", w["pipe_ops_per_s"], name, False)
    return best


def print_profiles(title: str, profiles: dict[str, Any]) -> None:
    rows: list[list[object]] = []
    for name, p in profiles.items():
        for fig, label in (("failover_leader_ms", "failover -> leader ms"),
                           ("failover_commit_ms", "failover -> commit ms"),
                           ("transfer_commit_ms", "transfer -> commit ms")):
            d = p[fig]
            rows.append([name, label, d.get("n", 0), d.get("median", float("nan")),
                         d.get("p95", float("nan")), d.get("p99", float("nan")),
                         d.get("max", float("nan"))])
        for w in p["writes"]:
            d = w["seq_ms"]
            stalled = " STALLED" if w.get("seq_stalled") else ""
            rows.append([name, f"sequential {w['size']} B ms{stalled}", d.get("n", 0),
                         d.get("median", float("nan")), d.get("p95", float("nan")),
                         d.get("p99", float("nan")), d.get("max", float("nan"))])
            stalled = (f" STALLED after {w['pipe_ok']} ok" if w.get("pipe_stalled") else "")
            rows.append([name, f"pipelined {w['size']} B ops/s{stalled}", w["pipe_n"],
                         w["pipe_ops_per_s"], "", "", ""])
    print_table(["profile", "figure", "n", "median", "p95", "p99", "max"], rows, title)


def plot_profiles(title: str, profiles: dict[str, Any], results_dir: Path, name: str) -> None:
    """CDFs of re-election, transfer and sequential latency, one line per profile."""
    plt = pyplot()
    if plt is None or not profiles:
        return
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    for profile, p in profiles.items():
        raw = p.get("raw", {})
        for ax, values in ((axes[0], raw.get("failover_leader_ms", [])),
                           (axes[1], raw.get("transfer_commit_ms", []))):
            if values:
                ax.step(*cdf_points(values), where="post", label=profile)
        for size, values in raw.get("seq_ms", {}).items():
            if values:
                axes[2].step(*cdf_points(values), where="post", label=f"{profile}, {size} B")
    for ax, what in zip(axes, ("SIGKILL of the leader -> new leader (ms)",
                               "transfer -> new leader's first commit (ms)",
                               "sequential write latency (ms)"), strict=True):
        ax.set_xlabel(what)
        ax.set_ylabel("cumulative fraction")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    axes[2].set_xscale("log")
    fig.suptitle(title)
    save_figure(fig, results_dir, name)
    plt.close(fig)


def _version() -> str | None:
    try:
        from importlib.metadata import version

        return version("pysyncobj")
    except Exception:
        return None


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Options shared by the real-network benchmarks."""
    parser.add_argument("--quick", action="store_true", help="a few trials of each figure")
    parser.add_argument("--failover-trials", type=int, default=30)
    parser.add_argument("--transfer-trials", type=int, default=100)
    parser.add_argument("--seq-n", type=int, default=1000, help="sequential writes per size")
    parser.add_argument("--pipe-n", type=int, default=10_000, help="pipelined writes per size")
    parser.add_argument("--inflight", type=int, default=10_000,
                        help="pipelined writes outstanding at once")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                        default=[16, 1024], help="command sizes in bytes")
    parser.add_argument("--read-n", type=int, default=2000,
                        help="reads of each kind (sequential, then as many concurrent)")
    parser.add_argument("--read-concurrency", type=int, default=100,
                        help="concurrent readers for the read throughput figures")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.add_argument("--no-plot", dest="plot", action="store_false")


def apply_quick(args: argparse.Namespace) -> None:
    if args.quick:
        args.failover_trials = min(args.failover_trials, 3)
        args.transfer_trials = min(args.transfer_trials, 10)
        args.seq_n = min(args.seq_n, 100)
        args.pipe_n = min(args.pipe_n, 2000)
        args.inflight = min(args.inflight, args.pipe_n)
        args.read_n = min(args.read_n, 200)


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["node"]:
        node = argparse.ArgumentParser()
        node.add_argument("--id", type=int, required=True)
        node.add_argument("--ports", required=True)
        node.add_argument("--profile", choices=sorted(PROFILES), required=True)
        a = node.parse_args(argv[1:])
        _node_main(a.id, {int(k): v for k, v in json.loads(a.ports).items()}, a.profile)
        return None
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peer_pysyncobj",
                                     description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--profiles", type=lambda s: s.split(","), default=list(PROFILES))
    args = parser.parse_args(argv)
    apply_quick(args)
    try:
        import pysyncobj  # noqa: F401
    except ImportError:
        print("pysyncobj is not installed: pip install pysyncobj==0.3.17", file=sys.stderr)
        return None
    total = len(args.profiles) * (args.failover_trials + args.transfer_trials + 1)
    with progress(total, "pysyncobj trials", args.progress) as bar:
        payload = run_peer(args, bar)
    print_profiles(f"PySyncObj {payload['version']}, 3 processes on loopback", payload["profiles"])
    write_json(args.results_dir, NAME, payload)
    if args.plot:
        plot_profiles(f"PySyncObj {payload['version']}, 3 processes on loopback",
                      payload["profiles"], args.results_dir, NAME)
    return payload


if __name__ == "__main__":
    main()
