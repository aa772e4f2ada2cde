"""Memory stays bounded with snapshots: three nodes apply 1,000,000 small entries.

Three ``RaftNode``s are driven directly (messages delivered at once, storage in
memory with compaction), with a constant-size state machine (a counter and a
running checksum), so that everything that could grow with history is the
library's: the in-memory log, the stored log, the progress records. Every
``--snapshot-every`` applied entries each node snapshots its state machine and
compacts, keeping ``snapshot_trailing`` entries for slightly lagging followers.

    python -m benchmarks.memory_bounded              # 1,000,000 entries, ~1-2 min
    python -m benchmarks.memory_bounded --quick      # 100,000 entries

Prints, every 10% of the run, the entries held in memory and in storage and the
process's traced Python memory; writes ``results/memory_bounded.json``.
"""

from __future__ import annotations

import argparse
import random
import struct
import time
import tracemalloc
import zlib
from functools import partial
from pathlib import Path

from benchmarks._common import RESULTS_DIR, print_table, progress, write_json
from raftpy import Config, Message, RaftNode, Ready, Role
from raftpy.ready import SnapshotMeta
from raftpy.storage import MemoryStorage

_STATE = struct.Struct("<QI")


class Counter:
    """A state machine of constant size: how many commands, and their CRC."""

    def __init__(self) -> None:
        self.count = 0
        self.crc = 0

    def apply(self, data: bytes) -> None:
        self.count += 1
        self.crc = zlib.crc32(data, self.crc)

    def snapshot(self) -> bytes:
        return _STATE.pack(self.count, self.crc)

    def restore(self, data: bytes) -> None:
        self.count, self.crc = _STATE.unpack(data)


def run(entries: int, snapshot_every: int, trailing: int, batch: int,
        show_progress: bool = True) -> dict[str, object]:
    config = Config(snapshot_threshold=snapshot_every, snapshot_trailing=trailing)
    ids = (1, 2, 3)
    nodes = {i: RaftNode(i, ids, config=config, rng=random.Random(i)) for i in ids}
    storages = {i: MemoryStorage() for i in ids}
    machines = {i: Counter() for i in ids}
    last_snapshot = dict.fromkeys(ids, 0)
    wire: list[Message] = []
    now = 0.0

    def handle(i: int, ready: Ready) -> None:
        wire.extend(ready.messages)
        storages[i].save(ready.hard_state, ready.entries, ready.snapshot)
        wire.extend(ready.messages_after_persist)
        if ready.snapshot is not None:
            machines[i].restore(ready.snapshot[1])
        for entry in ready.committed:
            if entry.data:
                machines[i].apply(entry.data)
        node = nodes[i]
        node.advance(ready, now)
        applied = node.applied_index
        if applied - last_snapshot[i] >= snapshot_every and applied <= node.log.persisted_index:
            term = node.log.term_at(applied)
            assert term is not None
            storages[i].compact(SnapshotMeta(applied, term), machines[i].snapshot())
            node.compact(max(applied - trailing, node.log.snapshot_index))
            last_snapshot[i] = applied

    def settle() -> None:
        while True:
            for i, node in nodes.items():
                while node.has_ready():
                    handle(i, node.ready())
            if not wire:
                return
            batch_msgs = wire[:]
            wire.clear()
            for msg in batch_msgs:
                nodes[msg.dst].step(msg, now)

    while not any(n.role is Role.LEADER for n in nodes.values()):
        now += 0.01
        for node in nodes.values():
            node.tick(now)
        settle()
    leader = next(n for n in nodes.values() if n.role is Role.LEADER)
    for i, node in nodes.items():
        node.set_snapshot_source(partial(getattr, storages[i], "snapshot"))

    tracemalloc.start()
    samples = []
    started = time.perf_counter()
    command = b"x" * 16
    with progress(entries, "entries", show_progress) as bar:
        proposed = 0
        while proposed < entries:
            count = min(batch, entries - proposed)
            leader.propose_many([command] * count, now)
            proposed += count
            settle()
            now += 0.001
            for node in nodes.values():  # heartbeats carry the commit index on
                node.tick(now)
            settle()
            bar.update(count)
            if proposed % max(entries // 10, batch) < batch or proposed == entries:
                current, peak = tracemalloc.get_traced_memory()
                samples.append({
                    "applied": min(n.applied_index for n in nodes.values()),
                    "memory_log_entries": max(len(n.log) for n in nodes.values()),
                    "stored_entries": max(len(s.entries) for s in storages.values()),
                    "traced_mib": current / 2**20,
                    "peak_traced_mib": peak / 2**20,
                })
    wall = time.perf_counter() - started
    tracemalloc.stop()
    now += config.heartbeat  # one more heartbeat: followers learn the last commit index
    for node in nodes.values():
        node.tick(now)
    settle()
    agree = len({(m.count, m.crc) for m in machines.values()}) == 1
    return {"entries": entries, "snapshot_every": snapshot_every, "trailing": trailing,
            "wall_s": wall, "entries_per_s": entries / wall, "samples": samples,
            "state_machines_agree": agree}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory_bounded",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 entries")
    parser.add_argument("--snapshot-every", type=int, default=10_000)
    parser.add_argument("--trailing", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    entries = 100_000 if args.quick else args.entries
    result = run(entries, args.snapshot_every, args.trailing, args.batch,
                 not args.no_progress)
    samples = result["samples"]
    assert isinstance(samples, list)
    print_table(["applied", "entries in memory log (max node)", "entries in storage",
                 "traced MiB", "peak traced MiB"],
                [[s["applied"], s["memory_log_entries"], s["stored_entries"],
                  f"{s['traced_mib']:.1f}", f"{s['peak_traced_mib']:.1f}"] for s in samples])
    print(f"\n{entries:,} entries in {result['wall_s']:.1f} s "
          f"({result['entries_per_s']:,.0f} entries/s, 3 nodes in one process); "
          f"state machines agree: {result['state_machines_agree']}")
    write_json(args.results_dir, "memory_bounded", result)
    return 0 if result["state_machines_agree"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
