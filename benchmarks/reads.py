"""Read latency and throughput: ReadIndex, lease, follower reads and the log barrier.

Three nodes in one process over loopback TCP (memory storage), so the figures are
relative: every kind of read is measured on the same cluster in the same run.

    python -m benchmarks.reads                 # 2,000 sequential reads of each kind
    python -m benchmarks.reads --n 500 --concurrency 100

Kinds: ``log`` (a marker entry committed through the leader: the barrier before
ReadIndex), ``index`` (ReadIndex on the leader: one heartbeat round, no write),
``follower`` (ReadIndex asked by a follower of its leader), ``lease`` (a leader
lease, Raft §6.4.1: no round at all, a separate cluster with ``lease_reads``)
and ``stale`` (no barrier: what PySyncObj's local read is; not linearizable).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import trio

from raftpy import Config
from raftpy.storage.memory import MemoryStorage
from raftpy.trio.runtime import Node, open_node


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    def apply(self, command: bytes) -> int:
        self.n += 1
        return self.n

    def snapshot(self) -> bytes:
        return str(self.n).encode()

    def restore(self, data: bytes) -> None:
        self.n = int(data)


async def _cluster(nursery: trio.Nursery, config: Config) -> dict[int, Node]:
    listeners = {i: await trio.open_tcp_listeners(0, host="127.0.0.1") for i in (1, 2, 3)}
    ports = {i: ls[0].socket.getsockname()[1] for i, ls in listeners.items()}
    nodes: dict[int, Node] = {}

    async def run(node_id: int, task_status: trio.TaskStatus[None]) -> None:
        peers = {p: f"127.0.0.1:{ports[p]}" for p in ports if p != node_id}
        async with open_node(node_id, peers, state_machine=_Counter(),
                             storage=MemoryStorage(), config=config,
                             listen=listeners[node_id], cluster_id="bench-reads",
                             rng=random.Random(node_id)) as node:
            nodes[node_id] = node
            task_status.started()
            await trio.sleep_forever()

    for node_id in ports:
        await nursery.start(run, node_id)
    return nodes


async def _leader(nodes: dict[int, Node]) -> Node:
    while True:
        for node in nodes.values():
            if node.is_leader:
                await node.apply(b"warm-up")
                await trio.sleep(0.2)
                return node
        await trio.sleep(0.01)


async def sequential_latencies(read: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    latencies = []
    for _ in range(n):
        began = time.perf_counter()
        await read()
        latencies.append(time.perf_counter() - began)
    return latencies


async def throughput(read: Callable[[], Awaitable[Any]], n: int, concurrency: int) -> float:
    done = [0]

    async def worker(count: int) -> None:
        for _ in range(count):
            await read()
            done[0] += 1

    began = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for k in range(concurrency):
            nursery.start_soon(worker, n // concurrency + (k < n % concurrency))
    return done[0] / (time.perf_counter() - began)


async def _measure(n: int, concurrency: int) -> list[tuple[str, list[float], float]]:
    rows: list[tuple[str, list[float], float]] = []
    for lease in (False, True):
        async with trio.open_nursery() as nursery:
            nodes = await _cluster(nursery, Config(lease_reads=lease))
            leader = await _leader(nodes)
            follower = next(node for node in nodes.values() if node is not leader)

            async def stale() -> None:
                await trio.lowlevel.checkpoint()

            kinds: dict[str, Callable[[], Awaitable[Any]]] = (
                {"lease": leader.read_barrier} if lease else {
                    "log": partial(leader.read_barrier, mode="log"),
                    "index": leader.read_barrier,
                    "follower": follower.read_barrier,
                    "stale": stale,
                })
            for name, read in kinds.items():
                latencies = await sequential_latencies(read, n)
                rate = await throughput(read, n, concurrency)
                rows.append((name, latencies, rate))
            nursery.cancel_scope.cancel()
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reads",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="reads of each kind")
    parser.add_argument("--concurrency", type=int, default=100,
                        help="concurrent readers for the throughput figure")
    args = parser.parse_args(argv)
    rows = trio.run(_measure, args.n, args.concurrency)
    print(f"{'read':<10} {'median µs':>10} {'p99 µs':>10} {'reads/s':>10}   "
          f"({args.n} sequential; {args.concurrency} concurrent readers)")
    for name, latencies, rate in rows:
        ordered = sorted(latencies)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        print(f"{name:<10} {statistics.median(latencies) * 1e6:>10.0f} {p99 * 1e6:>10.0f} "
              f"{rate:>10.0f}")


if __name__ == "__main__":
    main()
