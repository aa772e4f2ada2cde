"""A connection flood at one member of a 3-process cluster under write load (issue 13).

Three ``raftpy serve`` processes on loopback; a client writes in a loop the whole
time (one put at a time, each latency recorded); after ``--phase`` seconds another
process opens ``--idle`` idle connections and ``--half`` half-handshaken ones (the
preamble and part of a hello) to the leader and runs ``--garbage`` loops that
connect, send garbage frames (half of them after a valid preamble) and reconnect;
it holds everything ``--seconds`` seconds, then exits; ``--phase`` seconds more of
writes follow. Reported: write latency p50/p99 and rate before, during and after;
the flooded process's resident memory (VmRSS, sampled every 0.25 s) before, at its
peak during and after; whether the leader or term changed.

    python -m benchmarks.flood                      # 1,000 connections (500 + 500), 10 s
    python -m benchmarks.flood --idle 100 --half 100 --garbage 10 --seconds 3

Writes ``results/flood.json``. Raises the open-file limit as far as allowed.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import trio

from benchmarks._common import RESULTS_DIR, percentile, write_json
from raftpy.demo_net import Servers
from raftpy.kv.client import KVClient
from raftpy.trio.handshake import MAGIC

CLUSTER = "flood"


# ---------------------------------------------------------------------- the flooding process

def half_hello(i: int) -> bytes:
    """The preamble, a hello frame's length prefix and only part of its payload."""
    return MAGIC + struct.pack(">I", 200) + b"\x85" + os.urandom(i % 20)


async def open_connections(port: int, conns: list[trio.SocketStream], n: int,
                           first: Callable[[int], bytes] = lambda i: b"") -> None:
    """Open ``n`` loopback connections to ``port`` one after another, appending each
    to ``conns``; the ``i``-th sends ``first(i)`` and then nothing (``b""``: idle)."""
    for i in range(n):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        data = first(i)
        if data:
            await stream.send_all(data)
        conns.append(stream)


async def garbage_loop(port: int, seed: int) -> None:
    """Forever: connect to ``port``, send five garbage frames (for odd seeds after a
    valid preamble, where the hello belongs), read, close; 10 ms, then again."""
    frame = struct.pack(">I", 20 + seed)
    while True:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all((MAGIC if seed % 2 else b"")
                                  + b"".join(frame + os.urandom(20 + seed) for _ in range(5)))
            await stream.receive_some(100)
            await stream.aclose()
        except (OSError, trio.BrokenResourceError):
            pass
        await trio.sleep(0.01)


async def flood(port: int, idle_n: int, half_n: int, garbage_n: int, seconds: float) -> None:
    """Run ``garbage_n`` :func:`garbage_loop` s, open ``idle_n`` idle connections and
    then ``half_n`` half-handshaken ones (:func:`half_hello`), print ``opened N`` and
    hold it all ``seconds``."""
    conns: list[trio.SocketStream] = []
    async with trio.open_nursery() as nursery:
        for seed in range(garbage_n):
            nursery.start_soon(garbage_loop, port, seed)
        await open_connections(port, conns, idle_n + half_n,
                               first=lambda i: half_hello(i) if i >= idle_n else b"")
        print("opened", len(conns), flush=True)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()


async def start_flooder(nursery: trio.Nursery, port: int, idle_n: int, half_n: int,
                        garbage_n: int, seconds: float) -> tuple[trio.Process, int]:
    """Run :func:`flood` in a process of its own (``python -m benchmarks.flood
    --flooder``, from the repository's root) in ``nursery``; return once all its
    connections are open: the process (it exits after ``seconds``) and how many it
    opened. Raises RuntimeError with its stderr if it failed first."""
    flooder: trio.Process = await nursery.start(partial(
        trio.run_process,
        [sys.executable, "-m", "benchmarks.flood", "--flooder", str(port),
         str(idle_n), str(half_n), str(garbage_n), str(seconds)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False,
        cwd=Path(__file__).resolve().parent.parent, preexec_fn=raise_fd_limit))
    assert flooder.stdout is not None and flooder.stderr is not None
    line = b""
    while not line.endswith(b"\n"):
        chunk = await flooder.stdout.receive_some(100)
        if not chunk:
            break
        line += chunk
    opened = line.decode().split()
    if not opened:
        problem = await flooder.stderr.receive_some(10000)
        raise RuntimeError(f"the flooding process failed: {problem.decode()[-2000:]}")
    return flooder, int(opened[1]) if len(opened) > 1 else 0


# ---------------------------------------------------------------------- measuring

def raise_fd_limit() -> int:
    """Raise the soft open-file limit to the hard one (root: to 65536 at least)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(hard, 65536) if os.geteuid() == 0 else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _latency_summary(values: list[float], seconds: float) -> dict[str, float]:
    ordered = sorted(values)
    return {"writes": len(values), "per_s": len(values) / seconds if seconds else 0.0,
            "p50_ms": percentile(ordered, 50) * 1000 if ordered else float("nan"),
            "p99_ms": percentile(ordered, 99) * 1000 if ordered else float("nan"),
            "max_ms": ordered[-1] * 1000 if ordered else float("nan")}


async def _run(servers: Servers, args: argparse.Namespace) -> dict[str, Any]:
    phases = ("before", "during", "after")
    latencies: dict[str, list[float]] = {p: [] for p in phases}
    rss: dict[str, list[float]] = {p: [] for p in phases}
    durations: dict[str, float] = {}
    phase = "before"
    async with KVClient(servers.addresses, cluster_id=CLUSTER, timeout=30) as client:
        with trio.fail_after(60):
            while True:
                try:
                    await client.put("warm", "up")
                    break
                except Exception:
                    await trio.sleep(0.2)
        statuses = await client.statuses()
        leader_status = next(s for s in statuses.values()
                             if isinstance(s, dict) and s.get("role") == "leader")
        leader, term = int(leader_status["node_id"]), int(leader_status["term"])
        pid = servers.procs[leader].pid
        port = servers.ports[leader]
        failures = 0

        async def write() -> None:
            nonlocal failures
            n = 0
            while True:
                start = trio.current_time()
                try:
                    await client.put(f"k{n % 100}", "v" * 100)
                except Exception:
                    failures += 1
                    continue
                latencies[phase].append(trio.current_time() - start)
                n += 1

        async def sample() -> None:
            while True:
                rss[phase].append(rss_mb(pid))
                await trio.sleep(0.25)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            nursery.start_soon(sample)
            start = trio.current_time()
            await trio.sleep(args.phase)
            durations["before"] = trio.current_time() - start
            phase = "during"
            start = trio.current_time()
            flooder, opened = await start_flooder(nursery, port, args.idle, args.half,
                                                  args.garbage, args.seconds)
            await flooder.wait()
            durations["during"] = trio.current_time() - start
            phase = "after"
            start = trio.current_time()
            await trio.sleep(args.phase)
            durations["after"] = trio.current_time() - start
            nursery.cancel_scope.cancel()
        after = await client.statuses()
    terms = sorted({int(s["term"]) for s in after.values() if isinstance(s, dict)})
    leaders = sorted({s.get("leader_id") for s in after.values() if isinstance(s, dict)},
                     key=str)
    return {
        "flooded": {"node": leader, "role": "leader", "port": port},
        "connections": {"idle": args.idle, "half_handshaken": args.half,
                        "garbage_loops": args.garbage, "seconds": args.seconds,
                        "opened": opened},
        "phase_seconds": durations,
        "leader_changed": terms != [term] or leaders != [leader],
        "term_before": term, "terms_after": terms, "leaders_after": leaders,
        "write_failures": failures,
        "latency": {p: _latency_summary(latencies[p], durations[p]) for p in phases},
        "rss_mb": {"before": statistics.median(rss["before"]),
                   "during_peak": max(rss["during"]),
                   "after": rss["after"][-1]},
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=500)
    parser.add_argument("--half", type=int, default=500)
    parser.add_argument("--garbage", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0, help="flood duration")
    parser.add_argument("--phase", type=float, default=5.0,
                        help="seconds of writes before and after the flood")
    parser.add_argument("--election-timeout-ms", type=float, default=150.0,
                        help="the members' minimum election timeout (raftpy serve's default)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--flooder", nargs=5, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.flooder is not None:
        port, idle_n, half_n, garbage_n, seconds = args.flooder
        trio.run(flood, int(port), int(idle_n), int(half_n), int(garbage_n), float(seconds))
        return {}
    fd_limit = raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="raftpy-flood-") as root:
        servers = Servers(Path(root), 3, cluster_id=CLUSTER, log_level="warning",
                          election_timeout_ms=args.election_timeout_ms)
        try:
            for node_id in servers.ids:
                servers.start(node_id)
            result = trio.run(_run, servers, args)
        finally:
            servers.stop_all()
    result["fd_limit"] = fd_limit
    result["election_timeout_ms"] = args.election_timeout_ms
    lat, mem = result["latency"], result["rss_mb"]
    print(f"flood at node {result['flooded']['node']} (leader): {args.idle} idle + "
          f"{args.half} half-handshaken connections, {args.garbage} garbage loops, "
          f"{args.seconds:g} s; leader changed: {result['leader_changed']}")
    for p in ("before", "during", "after"):
        print(f"  writes {p:<6}: {lat[p]['per_s']:7.0f}/s  p50 {lat[p]['p50_ms']:6.2f} ms  "
              f"p99 {lat[p]['p99_ms']:7.2f} ms  max {lat[p]['max_ms']:7.1f} ms")
    print(f"  RSS of the flooded process: before {mem['before']:.1f} MiB, peak during "
          f"{mem['during_peak']:.1f} MiB, after {mem['after']:.1f} MiB")
    write_json(args.results_dir, "flood", result)
    return result


if __name__ == "__main__":
    main()
