"""Raft's safety properties, checked after every simulated event.

Each log entry gets a *chain* value: a hash of its term, its data and the chain
of the entry before it. Two logs agree up to index ``i`` exactly when their
chains at ``i`` are equal, so every property below costs O(1) per entry:

* election safety: at most one leader per term;
* log matching: entries with the same index and term have the same chain;
* leader completeness: a new leader holds every entry committed in an earlier term;
* state machine safety: no two nodes apply different entries at one index;
* durability: every committed entry is persisted on a majority, always (so no
  crash can lose it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from raftpy.messages import Entry
from raftpy.ready import HardState, LeaderChanged, Ready


class InvariantViolation(AssertionError):
    """A Raft safety property failed; the message names the seed and event number."""

    def __init__(self, what: str, *, seed: int, event: int, now: float):
        self.what = what
        self.seed = seed
        self.event = event
        self.now = now
        super().__init__(
            f"invariant violated at event {event} (t={now:.6f}s, seed {seed}): {what}")


@dataclass(slots=True)
class _Chains:
    """Chain values of one log: ``values[k]`` belongs to index ``base + k``."""

    base: int = 0
    values: list[int] = field(default_factory=lambda: [0])

    def at(self, index: int) -> int | None:
        k = index - self.base
        return self.values[k] if 0 <= k < len(self.values) else None

    @property
    def last_index(self) -> int:
        return self.base + len(self.values) - 1

    def extend(self, entries: Sequence[Entry]) -> None:
        if entries[0].index <= self.base:
            # Storage drops entries a snapshot already covers; so do we.
            entries = [e for e in entries if e.index > self.base]
            if not entries:
                return
        k = entries[0].index - self.base
        if not 1 <= k <= len(self.values):
            raise ValueError(f"entries from {entries[0].index} do not follow a log ending "
                             f"at {self.last_index}")
        del self.values[k:]
        prev = self.values[-1]
        values = self.values
        for entry in entries:
            prev = hash((prev, entry.term, entry.data))
            values.append(prev)

    def reset_to_snapshot(self, index: int, chain: int) -> None:
        mine = self.at(index)
        if mine == chain:
            del self.values[: index - self.base]
        else:
            self.values = [chain]
        self.base = index


class InvariantChecker:
    """Watches every Ready and persist of a simulated cluster for safety violations."""

    def __init__(self, node_ids: Sequence[int], voters: Sequence[int],
                 fail: Callable[[str], InvariantViolation]) -> None:
        self._voters = tuple(voters)
        self._quorum = len(self._voters) // 2 + 1
        self._fail = fail
        self.leaders: dict[int, int] = {}
        self._seen: dict[tuple[int, int], int] = {}
        self.memory: dict[int, _Chains] = {n: _Chains() for n in node_ids}
        self.disk: dict[int, _Chains] = {n: _Chains() for n in node_ids}
        self.committed: list[int] = [0]
        self._top_committed_in: dict[int, int] = {}
        """term -> the highest index first reported committed by a node of that term."""
        self._hard: dict[int, HardState] = {n: HardState(0, None) for n in node_ids}

    @property
    def commit_index(self) -> int:
        """The highest index known committed anywhere."""
        return len(self.committed) - 1

    def on_ready(self, node_id: int, ready: Ready, term: int) -> list[Entry]:
        """Check a Ready just drained from ``node_id``; returns newly committed entries."""
        mem = self.memory[node_id]
        if ready.snapshot is not None:
            meta = ready.snapshot[0]
            self._check_snapshot(node_id, meta.index)
            mem.reset_to_snapshot(meta.index, self.committed[meta.index])
        if ready.entries:
            self._extend(node_id, mem, ready.entries)
            seen = self._seen
            for entry in ready.entries:
                chain = mem.values[entry.index - mem.base]
                key = (entry.index, entry.term)
                old = seen.setdefault(key, chain)
                if old != chain:
                    raise self._fail(
                        f"log matching: node {node_id} holds a different entry at index "
                        f"{entry.index}, term {entry.term} than another node")
        new: list[Entry] = []
        for entry in ready.committed:
            held = mem.at(entry.index)
            if held is None:
                raise self._fail(f"node {node_id} committed index {entry.index} it does not hold")
            chain = held
            if entry.index < len(self.committed):
                if self.committed[entry.index] != chain:
                    raise self._fail(
                        f"state machine safety: node {node_id} applies a different entry at "
                        f"index {entry.index} than was committed before")
            elif entry.index == len(self.committed):
                self.committed.append(chain)
                if self._top_committed_in.get(term, 0) < entry.index:
                    self._top_committed_in[term] = entry.index
                new.append(entry)
            else:
                raise self._fail(f"node {node_id} committed index {entry.index} out of order")
        if new:
            self._check_durable(f"newly committed by node {node_id}")
        for event in ready.events:
            if isinstance(event, LeaderChanged) and event.leader_id == node_id:
                self._on_elected(node_id, event.term)
        return new

    def on_persist(self, node_id: int, ready: Ready) -> None:
        """``node_id`` made ``ready`` durable."""
        disk = self.disk[node_id]
        truncated = False
        if ready.snapshot is not None:
            meta = ready.snapshot[0]
            disk.reset_to_snapshot(meta.index, self.committed[meta.index])
        hard = ready.hard_state
        if hard is not None:
            old = self._hard[node_id]
            if hard.term < old.term or (
                    hard.term == old.term and old.voted_for not in (None, hard.voted_for)):
                raise self._fail(f"node {node_id} persisted {hard} after {old}: a term went "
                                 f"back or a vote changed within a term")
            self._hard[node_id] = hard
        if ready.entries:
            truncated = ready.entries[0].index <= disk.last_index
            self._extend(node_id, disk, ready.entries)
        if truncated:
            self._check_durable(f"after node {node_id} cut its persisted log")

    def check_persisted_claim(self, node_id: int, persisted_index: int) -> None:
        """With no write in flight, a node may not believe more is durable than is."""
        disk = self.disk[node_id]
        if persisted_index > disk.last_index:
            raise self._fail(f"node {node_id} counts entries up to {persisted_index} as "
                             f"persisted, but its disk ends at {disk.last_index}")

    def _extend(self, node_id: int, chains: _Chains, entries: Sequence[Entry]) -> None:
        try:
            chains.extend(entries)
        except ValueError as exc:
            raise self._fail(f"node {node_id}: {exc}") from None

    def on_compact(self, node_id: int, index: int, *, memory: bool, disk: bool) -> None:
        """``node_id`` dropped entries up to ``index`` behind a snapshot."""
        self._check_snapshot(node_id, index)
        if memory:
            self.memory[node_id].reset_to_snapshot(index, self.committed[index])
        if disk:
            self.disk[node_id].reset_to_snapshot(index, self.committed[index])

    def on_restore(self, node_id: int, index: int, applied: Sequence[Entry]) -> None:
        """``node_id`` restored a snapshot at ``index`` holding ``applied``: it must be
        exactly the committed prefix."""
        chain = 0
        for expected, entry in enumerate(applied, start=1):
            if entry.index != expected:
                raise self._fail(f"node {node_id} restored a snapshot with a gap at {expected}")
            chain = hash((chain, entry.term, entry.data))
        if len(applied) != index or chain != self.committed[index]:
            raise self._fail(f"state machine safety: node {node_id} restored a snapshot at "
                             f"{index} that differs from the committed log")

    def on_restart(self, node_id: int) -> None:
        """``node_id`` restarted: its memory is exactly its disk again."""
        disk = self.disk[node_id]
        self.memory[node_id] = _Chains(disk.base, list(disk.values))

    def _check_snapshot(self, node_id: int, index: int) -> None:
        if index > self.commit_index:
            raise self._fail(f"node {node_id} has a snapshot at {index}, beyond the commit "
                             f"index {self.commit_index}")

    def _on_elected(self, node_id: int, term: int) -> None:
        other = self.leaders.setdefault(term, node_id)
        if other != node_id:
            raise self._fail(f"election safety: nodes {other} and {node_id} both lead term {term}")
        # Raft §3.6.3: entries committed in earlier terms. A leader of an older term
        # may still win late, with votes cast before a newer term committed more;
        # it can never commit anything itself, so it need not hold those.
        top = max((i for t, i in self._top_committed_in.items() if t < term), default=0)
        mem = self.memory[node_id]
        chain = mem.at(top)
        if top >= mem.base and chain != self.committed[top]:
            raise self._fail(
                f"leader completeness: new leader {node_id} of term {term} lacks committed "
                f"entry {top}")

    def _check_durable(self, when: str) -> None:
        top = self.commit_index
        want = self.committed[top]
        holders = 0
        for voter in self._voters:
            d = self.disk[voter]
            if d.base > top or d.at(top) == want:
                holders += 1
        if holders < self._quorum:
            raise self._fail(
                f"durability: committed entry {top} is persisted on {holders} nodes, fewer "
                f"than a majority ({when})")
