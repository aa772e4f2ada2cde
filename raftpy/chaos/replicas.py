"""After the run: rebuild every member's key-value state from its data directory.

With every server stopped, each member's log (and snapshot) is replayed through
the same state machine the server runs, up to one common index. The replicas
must then be equal; and since every put wrote a unique value, counting how often
each put was *applied* finds duplicates (more than once) and lost acknowledged
writes (never), for the entries after the oldest snapshot.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from raftpy.kv.statemachine import KVStore
from raftpy.messages import EntryKind
from raftpy.sessions import SessionStateMachine
from raftpy.storage.file import FileStorage


class _CountingStore(KVStore):
    """A KVStore that counts the puts it applies, by (key, value)."""

    def __init__(self) -> None:
        super().__init__()
        self.puts: Counter[tuple[str, str]] = Counter()

    def apply(self, command: bytes) -> Any:
        result = super().apply(command)
        op = msgpack.unpackb(command, raw=False)
        if op[0] == "put":
            self.puts[op[1], op[2]] += 1
        return result


@dataclass(slots=True)
class Replica:
    """One member's state machine rebuilt up to ``index``."""

    node_id: int
    index: int
    data: dict[str, str]
    puts: Counter[tuple[str, str]]
    snapshot_index: int
    """Puts at or below this index are inside the snapshot: not counted."""


@dataclass(slots=True)
class ReplicaReport:
    """The comparison of every member's state."""

    index: int
    equal: bool
    replicas: list[Replica] = field(default_factory=list)
    duplicates: list[tuple[str, str, int]] = field(default_factory=list)
    """(key, value, times applied) for puts applied more than once."""
    lost: list[tuple[str, str]] | None = None
    """Acknowledged puts never applied; ``None``: not looked for (a snapshot
    compacted the log, so a put missing from the rest may be inside it)."""
    counted_from: int = 0
    """Puts were counted from this index on (0: the whole log)."""


def last_index(root: Path, node_id: int, cluster_id: str) -> int:
    """The last index in a member's log (its server must be stopped)."""
    storage = FileStorage(root / f"node{node_id}", node_id=node_id, cluster_id=cluster_id)
    try:
        return storage.last_index
    finally:
        storage.close()


def rebuild(root: Path, node_id: int, cluster_id: str, upto: int) -> Replica:
    """Replay member ``node_id``'s snapshot and log up to index ``upto``."""
    storage = FileStorage(root / f"node{node_id}", node_id=node_id, cluster_id=cluster_id)
    try:
        state, snapshot = storage.load()
    finally:
        storage.close()
    store = _CountingStore()
    machine = SessionStateMachine(store)
    snapshot_index = 0
    if state.snapshot is not None and snapshot is not None:
        machine.restore(snapshot)
        snapshot_index = state.snapshot.index
    for entry in state.entries:
        if entry.index > upto:
            break
        if entry.index <= snapshot_index or entry.kind != EntryKind.COMMAND:
            continue
        # A command the state machine refuses is refused alike on every replica.
        with contextlib.suppress(Exception):
            machine.apply(entry.data)
    return Replica(node_id, upto, dict(store.data), store.puts, snapshot_index)


def compare(root: Path, ids: list[int], cluster_id: str, upto: int,
            acknowledged: list[tuple[str, str]]) -> ReplicaReport:
    """Rebuild every member up to ``upto`` and compare; check ``acknowledged`` puts
    ((key, value) pairs) were applied exactly once."""
    replicas = [rebuild(root, i, cluster_id, upto) for i in ids]
    first = replicas[0].data
    report = ReplicaReport(upto, all(r.data == first for r in replicas), replicas)
    # Count on the replica whose snapshot is oldest: it saw the most entries.
    base = min(replicas, key=lambda r: r.snapshot_index)
    report.counted_from = base.snapshot_index
    report.duplicates = sorted((k, v, n) for (k, v), n in base.puts.items() if n > 1)
    if base.snapshot_index == 0:
        report.lost = [kv for kv in acknowledged if base.puts[kv] == 0]
    return report
