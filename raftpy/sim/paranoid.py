"""Paranoid mode: after every event, re-derive from scratch what the invariant
checker keeps as running state, and check the safety properties by full rescans.

The :class:`~raftpy.sim.invariants.InvariantChecker` is incremental: it keeps a
*chain* value per log entry per node (memory and disk), the committed prefix as
a list of chains, and updates them from each Ready, persist and compaction. This
module is its slow twin, used by ``Cluster(paranoid=True)``,
``run_seed(..., paranoid=True)`` and ``python -m raftpy.sim --paranoid``:

* **the checker's model is the truth**: each live node's in-memory chains equal
  the chains recomputed from its actual log, and each node's disk chains and
  persisted HardState equal what its storage would load (memory storage);
* **log matching**, pairwise over every two live nodes' logs: if two logs hold
  an entry with the same index and term, they hold identical entries up to it;
* **state machine safety**: every node's applied entries are consecutive from
  index 1, agree with every other node's, and their chains equal the checker's
  committed prefix;
* **committed prefix**: the chain of the longest applied prefix recomputed from
  index 1 equals the checker's running value at that index;
* **election safety**: no two live nodes lead the same term, and the checker
  saw each live leader elected in its term;
* **durability** from storage: the latest committed entry is on the disk of a
  majority of the committed (or, mid-change, the appended) configuration's voters.

A failure raises :class:`~raftpy.sim.invariants.InvariantViolation` naming
"paranoid". Each rescan is O(nodes^2 * log length), so this is for tests over a
few seeds, not for soaks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from raftpy.messages import Entry
from raftpy.ready import Role
from raftpy.sim.invariants import InvariantChecker, _Chains
from raftpy.storage.memory import MemoryStorage

if TYPE_CHECKING:
    from collections.abc import Callable

    from raftpy.sim.cluster import Cluster
    from raftpy.sim.invariants import InvariantViolation

    _Fail = Callable[[str], InvariantViolation]

__all__ = ["rescan"]


def _chains_of(base: int, base_chain: int, entries: Sequence[Entry]) -> list[int]:
    """Chain values of a log from scratch: ``out[k]`` belongs to index ``base + k``."""
    out = [base_chain]
    prev = base_chain
    for offset, entry in enumerate(entries, start=1):
        if entry.index != base + offset:
            raise ValueError(f"entries not contiguous at {entry.index}")
        prev = hash((prev, entry.term, entry.data))
        out.append(prev)
    return out


def _same_chains(model: _Chains, base: int, values: list[int]) -> bool:
    """Whether the checker's ``model`` is exactly the recomputed log: the same
    snapshot index and the same chain at every index after it."""
    return model.base == base and model.values == values


def rescan(cluster: Cluster) -> None:
    """Check everything listed in the module docstring; raises on a violation."""
    checker = cluster.checker
    if checker is None:
        return
    fail = cluster._violation
    committed = checker.committed

    def base_chain(index: int) -> int:
        if index >= len(committed):
            raise fail(f"paranoid: a snapshot at {index} beyond the commit index "
                       f"{len(committed) - 1}")
        return committed[index]

    logs: dict[int, tuple[int, list[Entry]]] = {}
    disks: dict[int, list[int] | None] = {}
    for node_id in cluster.ids:
        if cluster.is_up(node_id):
            node = cluster.node(node_id)
            base = node.log.snapshot_index
            entries = node.log.entries()
            logs[node_id] = (base, entries)
            values = _chains_of(base, base_chain(base), entries)
            if not _same_chains(checker.memory[node_id], base, values):
                raise fail(f"paranoid: the checker's in-memory log of node {node_id} "
                           f"differs from its actual log")
        storage = cluster.storages[node_id]
        disks[node_id] = None
        if isinstance(storage, MemoryStorage):
            state, _ = storage.load()
            dbase = state.snapshot.index if state.snapshot is not None else 0
            dvalues = _chains_of(dbase, base_chain(dbase), state.entries)
            disks[node_id] = [dbase, *dvalues]
            if not _same_chains(checker.disk[node_id], dbase, dvalues):
                raise fail(f"paranoid: the checker's disk log of node {node_id} differs "
                           f"from its storage")
            if checker._hard[node_id] != state.hard_state:
                raise fail(f"paranoid: the checker's HardState of node {node_id} is "
                           f"{checker._hard[node_id]}, its storage holds {state.hard_state}")
    _log_matching(logs, fail)
    _state_machine(cluster, checker, fail)
    _election(cluster, checker, fail)
    _durability(checker, disks, fail)


def _log_matching(logs: dict[int, tuple[int, list[Entry]]], fail: _Fail) -> None:
    ids = sorted(logs)
    for n, a in enumerate(ids):
        base_a, entries_a = logs[a]
        for b in ids[n + 1:]:
            base_b, entries_b = logs[b]
            lo = max(base_a, base_b) + 1
            hi = min(base_a + len(entries_a), base_b + len(entries_b))
            matched = False
            for index in range(hi, lo - 1, -1):
                ea = entries_a[index - base_a - 1]
                eb = entries_b[index - base_b - 1]
                if matched or ea.term == eb.term:
                    matched = True
                    if ea != eb:
                        raise fail(f"paranoid log matching: nodes {a} and {b} agree on a "
                                   f"term past index {index} but differ at {index}")


def _state_machine(cluster: Cluster, checker: InvariantChecker, fail: _Fail) -> None:
    longest: list[Entry] = []
    for node_id in cluster.ids:
        applied = cluster.applied[node_id]
        for offset, entry in enumerate(applied, start=1):
            if entry.index != offset:
                raise fail(f"paranoid: node {node_id} applied index {entry.index} at "
                           f"position {offset}")
        shorter, longer = sorted((applied, longest), key=len)
        if longer[:len(shorter)] != shorter:
            raise fail(f"paranoid state machine safety: node {node_id} applied entries "
                       f"that differ from another node's")
        longest = longer
    chain = 0
    for entry in longest:
        chain = hash((chain, entry.term, entry.data))
        if entry.index >= len(checker.committed) or checker.committed[entry.index] != chain:
            raise fail(f"paranoid: applied entry {entry.index} is not the checker's "
                       f"committed entry there")


def _election(cluster: Cluster, checker: InvariantChecker, fail: _Fail) -> None:
    leaders: dict[int, int] = {}
    for node in cluster.live_nodes():
        if node.role is Role.LEADER:
            other = leaders.setdefault(node.current_term, node.id)
            if other != node.id:
                raise fail(f"paranoid election safety: nodes {other} and {node.id} both "
                           f"lead term {node.current_term}")
            if checker.leaders.get(node.current_term) != node.id:
                raise fail(f"paranoid: node {node.id} leads term {node.current_term} but the "
                           f"checker saw {checker.leaders.get(node.current_term)} elected")


def _durability(checker: InvariantChecker, disks: dict[int, list[int] | None],
                fail: _Fail) -> None:
    top = len(checker.committed) - 1
    want = checker.committed[top]

    def holders(among: Sequence[int]) -> int | None:
        held = 0
        for voter in among:
            disk = disks.get(voter)
            if disk is None and voter in disks:
                return None  # a storage we cannot read: skip the check
            if disk is not None:
                base, values = disk[0], disk[1:]
                if base >= top or (top - base < len(values) and values[top - base] == want):
                    held += 1
        return held

    sets = [checker._voters]
    if checker._appended_voters:
        sets.append(checker._appended_voters)
    counts = [(holders(s), len(s)) for s in sets]
    if any(held is None for held, _ in counts):
        return
    if not any(held is not None and held >= size // 2 + 1 for held, size in counts):
        raise fail(f"paranoid durability: committed entry {top} is on the disk of "
                   f"{counts[0][0]} of voters {list(sets[0])}")
