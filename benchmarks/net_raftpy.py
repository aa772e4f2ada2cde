"""raftpy on 3 loopback processes (Trio runtime, TCP transport): the real-network figures.

Run from the repository root::

    python -m benchmarks.net_raftpy            # full run
    python -m benchmarks.net_raftpy --quick    # a few trials of each

Same harness and the same figures as ``benchmarks.peer_pysyncobj`` (see
``_netharness`` for the protocol): re-election after SIGKILL of the leader,
leadership transfer, sequential commit latency and pipelined throughput for
16-byte and 1-KiB commands, driven inside the leader process through the
public :class:`raftpy.trio.runtime.Node` API (``apply``, ``transfer_leadership``).

Settings: election timeout 150-300 ms, heartbeat 50 ms, pre-vote and check-quorum
on (the defaults). Two profiles:

* ``memory``: :class:`~raftpy.storage.memory.MemoryStorage`, the like-for-like
  row against PySyncObj's in-memory log;
* ``file-fsync``: ``raftpy.storage.file.FileStorage`` (fsync on), the durable
  setting raftpy is meant to be run with.

A profile whose pieces are missing (no TCP transport, no file storage yet) is
skipped with a message instead of failing the run. To exercise the harness
with another transport, set ``RAFTPY_BENCH_TRANSPORT=module:factory``, where
``factory(node_id, peers)`` returns a ``MessageTransport``.

"First commit as leader" for raftpy: the leader has applied the no-op it
appended on election (``Node.wait_applied``), noticed by a watcher task.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks._common import print_table, progress, write_json
from benchmarks._netharness import (
    NetCluster,
    child_env,
    measure_failover,
    measure_transfers,
    measure_writes,
    python_argv,
)
from benchmarks.peer_pysyncobj import HEARTBEAT as PEER_HEARTBEAT
from benchmarks.peer_pysyncobj import (
    add_common_args,
    apply_quick,
    best_rows,
    plot_profiles,
    print_profiles,
    read_summary,
    summarize_profile,
)

NAME = "net_raftpy"
HEARTBEAT = 0.05
PROFILES = ("memory", "file-fsync")
TRANSPORT_ENV = "RAFTPY_BENCH_TRANSPORT"
PIPE_BATCH = 100
"""Commands per ``Node.apply_many`` call in the batch-API pipelined figure."""
WRITE_TIMEOUT = 10.0
"""A sequential write not committed after this long counts as a stall."""


class _Counter:
    """The replicated state machine: counts commands (so apply costs next to nothing)."""

    def __init__(self) -> None:
        self.count = 0

    def apply(self, command: bytes) -> int:
        self.count += 1
        return self.count

    def snapshot(self) -> bytes:
        return str(self.count).encode()

    def restore(self, data: bytes) -> None:
        self.count = int(data or b"0")


def missing_pieces(profile: str) -> str | None:
    """Why ``profile`` cannot run here, or None if it can."""
    needed = ["raftpy.trio.runtime"]
    if not os.environ.get(TRANSPORT_ENV):
        needed.append("raftpy.trio.transport")
    if profile == "file-fsync":
        needed.append("raftpy.storage.file")
    for module in needed:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return f"{module} is not importable yet ({exc})"
    return None


# ---------------------------------------------------------------------- node process

def _make_storage(profile: str, data_dir: str, node_id: int) -> Any:
    if profile == "memory":
        from raftpy.storage.memory import MemoryStorage

        return MemoryStorage()
    file_storage: Any = importlib.import_module("raftpy.storage.file").FileStorage
    path = os.path.join(data_dir, f"node{node_id}")
    os.makedirs(path, exist_ok=True)
    return file_storage(path, node_id=node_id, cluster_id="bench")


async def _node_main(node_id: int, ports: dict[int, int], profile: str, data_dir: str,
                     heartbeat: float = HEARTBEAT, lease: bool = False,
                     early_pre_vote: bool = False) -> None:
    import trio

    from benchmarks.reads import sequential_latencies, throughput
    from raftpy.config import Config
    from raftpy.errors import RaftError
    from raftpy.ready import Role
    from raftpy.trio.runtime import Node, open_node

    monotonic = time.monotonic
    leader_at: list[tuple[int, float]] = []
    commit_at: list[tuple[int, float]] = []
    config = Config(election_timeout_min=0.150, election_timeout_max=0.300,
                    heartbeat_interval=heartbeat, lease_reads=lease,
                    early_pre_vote=early_pre_vote)
    peers = {i: f"127.0.0.1:{p}" for i, p in ports.items() if i != node_id}
    storage = await trio.to_thread.run_sync(_make_storage, profile, data_dir, node_id)
    transport = None
    if os.environ.get(TRANSPORT_ENV):
        module, _, factory = os.environ[TRANSPORT_ENV].partition(":")
        transport = getattr(importlib.import_module(module), factory)(node_id, peers)

    def reply(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    async def wait_commit(node: Node, term: int, index: int) -> None:
        await node.wait_applied(index)
        commit_at.append((term, monotonic()))

    async def watch(node: Node, nursery: trio.Nursery) -> None:
        # wait_changed wakes on every leader change and every applied batch.
        led = 0
        while True:
            st = node.status()
            if st.role is Role.LEADER and st.term != led:
                led = st.term
                leader_at.append((st.term, monotonic()))
                # No writes run during elections, so the no-op is the last entry.
                nursery.start_soon(wait_commit, node, st.term, st.last_log_index)
            await node.wait_changed()

    async def seq(node: Node, n: int, size: int, max_seconds: float) -> dict[str, Any]:
        data = os.urandom(size)
        latencies: list[float] = []
        deadline = time.perf_counter() + max_seconds
        while len(latencies) < n and time.perf_counter() < deadline:
            began = time.perf_counter()
            with trio.move_on_after(WRITE_TIMEOUT):
                await node.apply(data)
                latencies.append(time.perf_counter() - began)
                continue
            return {"latencies": latencies, "stalled": True}
        return {"latencies": latencies, "stalled": False}

    async def pipe(node: Node, n: int, size: int, inflight: int,
                   max_seconds: float, batch: int = 1) -> dict[str, Any]:
        data = os.urandom(size)
        ok = [0]
        errors: dict[str, int] = {}
        if batch > 1:
            return await pipe_many(node, n, data, inflight, max_seconds, batch)
        workers = max(1, min(inflight, n))

        slice_size = 100
        gates = [trio.Event() for _ in range(0, workers, slice_size)]

        async def worker(count: int, gate: trio.Event) -> None:
            await gate.wait()
            for _ in range(count):
                try:
                    await node.apply(data)
                except RaftError as exc:
                    errors[str(exc)] = errors.get(str(exc), 0) + 1
                    continue
                ok[0] += 1

        # The writer tasks (one per write in flight: Node.apply is one awaited call)
        # are created before the clock starts, as PySyncObj's harness needs no thread
        # per write; creating 10,000 Trio tasks costs ~160 ms here. They are created
        # and released a slice at a time with a checkpoint between slices: 10,000
        # tasks run back to back without one would hold the event loop for ~300 ms,
        # no heartbeat would leave, and the followers would (rightly) elect a new leader.
        with trio.move_on_after(max_seconds) as scope:
            async with trio.open_nursery() as nursery:
                for k in range(workers):
                    nursery.start_soon(worker, n // workers + (k < n % workers),
                                       gates[k // slice_size])
                    if k % slice_size == slice_size - 1:
                        await trio.sleep(0)
                began = time.perf_counter()
                for gate in gates:
                    gate.set()
                    await trio.sleep(0)
        return {"elapsed": time.perf_counter() - began, "ok": ok[0], "errors": errors,
                "stalled": scope.cancelled_caught}

    async def pipe_many(node: Node, n: int, data: bytes, inflight: int, max_seconds: float,
                        batch: int) -> dict[str, Any]:
        # The batch API: ``inflight`` writes outstanding as inflight/batch callers of
        # Node.apply_many with ``batch`` commands each, so no Trio task per write.
        ok = [0]
        errors: dict[str, int] = {}
        left = [n]

        async def worker() -> None:
            while left[0] > 0:
                count = min(batch, left[0])
                left[0] -= count
                try:
                    results = await node.apply_many([data] * count)
                except RaftError as exc:
                    errors[str(exc)] = errors.get(str(exc), 0) + count
                    continue
                for result in results:
                    if isinstance(result, BaseException):
                        errors[str(result)] = errors.get(str(result), 0) + 1
                    else:
                        ok[0] += 1

        began = time.perf_counter()
        with trio.move_on_after(max_seconds) as scope:
            async with trio.open_nursery() as nursery:
                for _ in range(max(1, min(inflight, n) // batch)):
                    nursery.start_soon(worker)
        return {"elapsed": time.perf_counter() - began, "ok": ok[0], "errors": errors,
                "stalled": scope.cancelled_caught}

    async def reads(node: Node, kind: str, n: int, concurrency: int) -> dict[str, Any]:
        """``n`` sequential reads of one kind (latencies), then ``n`` more from
        ``concurrency`` tasks (throughput). ``stale`` reads the state machine with no
        barrier at all (not linearizable); ``lease`` is ReadIndex on a cluster started
        with lease reads on."""
        counter = state_machine

        async def read() -> int:
            if kind == "log":
                await node.read_barrier(mode="log")
            elif kind != "stale":
                await node.read_barrier()
            else:
                await trio.lowlevel.checkpoint()
            return counter.count

        return {"latencies": await sequential_latencies(read, n),
                "ops_per_s": await throughput(read, n, concurrency)}

    async def transfer(node: Node, target: int) -> None:
        # The coordinator times the target's commit; a failure shows as none.
        with contextlib.suppress(RaftError):
            await node.transfer_leadership(target)

    state_machine = _Counter()
    async with open_node(node_id, peers, state_machine=state_machine, storage=storage,
                         config=config, listen=f"127.0.0.1:{ports[node_id]}",
                         transport=transport) as node, \
            trio.open_nursery() as nursery:
        nursery.start_soon(watch, node, nursery)
        reply({"ready": True})
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        buffer = b""
        while True:
            chunk = await stdin.receive_some(65536)
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                req = json.loads(line)
                op = req["op"]
                try:
                    if op == "status":
                        st = node.status()
                        out: dict[str, Any] = {
                            "id": node_id, "role": st.role.value, "leader": st.leader_id,
                            "term": st.term, "commit": st.commit_index}
                    elif op == "events":
                        since = req.get("since", 0.0)
                        out = {"leader_at": [e for e in leader_at if e[1] > since],
                               "commit_at": [e for e in commit_at if e[1] > since]}
                    elif op == "seq":
                        out = await seq(node, req["n"], req["size"],
                                        req.get("max_seconds", 1e9))
                    elif op == "pipe":
                        out = await pipe(node, req["n"], req["size"], req["inflight"],
                                         req.get("max_seconds", 1e9), req.get("batch", 1))
                    elif op == "reads":
                        out = await reads(node, req["kind"], req["n"], req["concurrency"])
                    elif op == "transfer":
                        at = monotonic()
                        nursery.start_soon(transfer, node, req["target"])
                        out = {"ok": True, "at": at}
                    elif op == "exit":
                        reply({"bye": True})
                        nursery.cancel_scope.cancel()
                        return
                    else:
                        out = {"error": f"unknown op {op!r}"}
                except Exception as exc:  # report to the coordinator rather than die
                    out = {"error": f"{type(exc).__name__}: {exc}"}
                reply(out)
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------- coordinator

def cluster_factory(profile: str, data_root: str, n: int = 3, heartbeat: float = HEARTBEAT,
                    lease: bool = False, early_pre_vote: bool = False
                    ) -> Callable[[], NetCluster]:
    counter = [0]

    def make() -> NetCluster:
        counter[0] += 1
        data_dir = os.path.join(data_root, f"run{counter[0]}")

        def spawn(node_id: int, ports: dict[int, int]) -> list[str]:
            return python_argv("benchmarks.net_raftpy", "node", "--id", str(node_id),
                               "--ports", json.dumps(ports), "--profile", profile,
                               "--data-dir", data_dir, "--heartbeat", str(heartbeat),
                               *(["--lease"] if lease else []),
                               *(["--early-pre-vote"] if early_pre_vote else []))

        return NetCluster(spawn, n, child_env())

    return make


def run_raftpy(args: argparse.Namespace, bar: Any) -> dict[str, Any]:
    """Measure every runnable profile; returns the JSON payload."""
    profiles: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="raftpy-bench-") as data_root:
        for profile in args.profiles:
            why = missing_pieces(profile)
            if why is not None:
                skipped[profile] = why
                print(f"raftpy profile {profile!r} skipped: {why}", file=sys.stderr)
                bar.update(args.failover_trials + args.transfer_trials + 1)
                continue
            make = cluster_factory(profile, data_root)
            failover = measure_failover(make, args.failover_trials, HEARTBEAT, bar, args.seed)
            with make() as cluster:
                transfers = measure_transfers(cluster, args.transfer_trials, bar)
                writes = measure_writes(cluster, args.sizes, args.seq_n, args.pipe_n,
                                        args.inflight, pipe_batch=PIPE_BATCH)
                bar.update()
            profiles[profile] = summarize_profile(failover, transfers, writes)
            if profile == "memory" and args.failover_trials:
                # The same trials with PySyncObj's heartbeat interval (issue 12: compare
                # re-election at equal heartbeats as well as at the defaults).
                equal = measure_failover(
                    cluster_factory(profile, data_root, heartbeat=PEER_HEARTBEAT),
                    args.failover_trials, PEER_HEARTBEAT, bar, args.seed)
                eq = summarize_profile(equal, [], [])
                profiles[profile]["failover_eqhb_leader_ms"] = eq["failover_leader_ms"]
                profiles[profile]["failover_eqhb_commit_ms"] = eq["failover_commit_ms"]
                profiles[profile]["failover_eqhb_heartbeat"] = PEER_HEARTBEAT
                # And with early pre-vote (opt-in, raftpy.failover): followers that
                # lose every connection to the leader stand at once.
                early = summarize_profile(measure_failover(
                    cluster_factory(profile, data_root, early_pre_vote=True),
                    args.failover_trials, HEARTBEAT, bar, args.seed), [], [])
                profiles[profile]["failover_early_leader_ms"] = early["failover_leader_ms"]
                profiles[profile]["failover_early_commit_ms"] = early["failover_commit_ms"]
            if profile == "memory" and args.read_n:
                profiles[profile]["reads"] = measure_raftpy_reads(
                    profile, data_root, args.read_n, args.read_concurrency)
            profiles[profile]["settings"] = {
                "election_timeout": [0.150, 0.300], "heartbeat": HEARTBEAT,
                "pre_vote": True, "check_quorum": True, "storage": profile}
    return {"peer": "raftpy", "version": _version(), "profiles": profiles,
            "skipped": skipped, "best": best_rows(profiles)}


def measure_raftpy_reads(profile: str, data_root: str, n: int,
                         concurrency: int) -> dict[str, Any]:
    """Every kind of read on a settled cluster: ``log`` (a marker entry through the
    leader), ``index`` (ReadIndex on the leader), ``follower`` (ReadIndex asked by a
    follower), ``stale`` (no barrier, not linearizable), and ``lease`` (ReadIndex on a
    second cluster started with lease reads on)."""
    out: dict[str, Any] = {}
    for lease in (False, True):
        with cluster_factory(profile, data_root, lease=lease)() as cluster:
            leader_id = cluster.wait_stable()
            leader = cluster.nodes[leader_id]
            follower = cluster.nodes[next(i for i in cluster.nodes if i != leader_id)]
            leader.call("seq", n=50, size=16, max_seconds=5, timeout=60)  # warm-up
            kinds = [("lease", leader, "lease")] if lease else [
                ("log", leader, "log"), ("index", leader, "index"),
                ("follower", follower, "index"), ("stale", leader, "stale")]
            for name, node, kind in kinds:
                reply = node.call("reads", kind=kind, n=n, concurrency=concurrency,
                                  timeout=300)
                out[name] = read_summary(reply)
    return out


def _version() -> str | None:
    try:
        from importlib.metadata import version

        return version("raftpy")
    except Exception:
        return None


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["node"]:
        node = argparse.ArgumentParser()
        node.add_argument("--id", type=int, required=True)
        node.add_argument("--ports", required=True)
        node.add_argument("--profile", choices=PROFILES, required=True)
        node.add_argument("--data-dir", required=True)
        node.add_argument("--heartbeat", type=float, default=HEARTBEAT)
        node.add_argument("--lease", action="store_true")
        node.add_argument("--early-pre-vote", action="store_true")
        a = node.parse_args(argv[1:])
        import trio

        if os.environ.get("RAFTPY_BENCH_LOG"):  # e.g. INFO: node logs on stderr
            import logging

            logging.basicConfig(level=os.environ["RAFTPY_BENCH_LOG"],
                                format=f"%(relativeCreated)8.1f node {a.id} %(name)s: %(message)s")

        trio.run(_node_main, a.id, {int(k): v for k, v in json.loads(a.ports).items()},
                 a.profile, a.data_dir, a.heartbeat, a.lease, a.early_pre_vote)
        return None
    parser = argparse.ArgumentParser(prog="python -m benchmarks.net_raftpy",
                                     description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--profiles", type=lambda s: s.split(","), default=list(PROFILES))
    args = parser.parse_args(argv)
    apply_quick(args)
    total = len(args.profiles) * (args.failover_trials + args.transfer_trials + 1)
    if "memory" in args.profiles:  # its re-election again at PySyncObj's heartbeat
        total += 2 * args.failover_trials  # and with early pre-vote
    total += args.failover_trials if "memory" in args.profiles else 0  # equal heartbeats
    with progress(total, "raftpy trials", args.progress) as bar:
        payload = run_raftpy(args, bar)
    if payload["profiles"]:
        print_profiles(f"raftpy {payload['version']}, 3 processes on loopback",
                       payload["profiles"])
    if payload["skipped"]:
        print_table(["profile", "skipped because"], list(payload["skipped"].items()))
    write_json(args.results_dir, NAME, payload)
    if args.plot:
        plot_profiles(f"raftpy {payload['version']}, 3 processes on loopback",
                      payload["profiles"], args.results_dir, NAME)
    return payload


if __name__ == "__main__":
    main()
