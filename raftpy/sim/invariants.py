"""Raft's safety properties, checked after every simulated event.

Each log entry gets a *chain* value: a hash of its term, its data and the chain
of the entry before it. Two logs agree up to index ``i`` exactly when their
chains at ``i`` are equal, so every property below costs O(1) per entry.

The checker keeps, per node, its in-memory log (``memory``), its disk log
(``disk``), its persisted HardState and every vote it ever persisted, and
enforces:

Cluster-wide safety (Raft Figure 3.2):

* election safety: at most one leader per term;
* log matching: entries with the same index and term have the same chain;
* leader completeness: a new leader holds every entry committed in an earlier term;
* state machine safety: no two nodes apply different entries at one index, and
  the cluster's commit index grows one entry at a time (no gap);
* durability: every committed entry is persisted on a majority, always (so no
  crash can lose it), checked whenever something commits or a disk log is cut.

Per node, on every Ready, persist, compaction, restore and restart:

* a node commits only entries it holds; a snapshot (received, taken or
  restored) covers only committed entries, and a restored state machine is
  exactly the committed prefix;
* entries handed out (in memory or on disk) follow the log they extend;
* persisted HardState: the term never goes back, the vote never changes
  within a term;
* with no write in flight, a node never counts more entries as persisted than
  its disk holds;
* leader append-only (Raft §3.5): while a node leads, its new entries start
  right after its last entry: it never cuts or rewrites its own log;
* leader commit rule (Raft §3.6.2): a leader advances its commit index only to
  an entry of its current term (earlier entries commit with it). This catches
  commit-by-counting when it happens, before a Figure 8 schedule turns it into
  a lost committed entry;
* exactly-once, in-order apply: committed entries handed out start at the
  node's applied index + 1 and are consecutive; a received snapshot moves the
  applied index forward (never back); a restart resets it to the snapshot's index;
* the node's commit index never moves back while it runs (reset on restart).

Membership (Raft chapter 4), with configurations read from the entries
themselves:

* durability above is measured against the voters of the latest *committed*
  configuration (a configuration entry commits with the entries after it);
* a leader never counts a non-voter: whatever it commits is on a majority of the
  voters of the configuration in force on it, and it was elected by votes
  (durably) granted by a majority of those voters;
* at most one uncommitted configuration entry in any leader's log;
* two leaders alive at once (of different terms) have configurations whose
  majorities overlap;
* committed configurations form one history on every node: they are log entries,
  so state machine safety covers them;
* a node's configuration in force is the latest configuration entry in its log
  from the moment it is appended (the committed one behind its snapshot when it
  holds none), never one that waits for the commit;
* a leader appends a configuration entry only once an entry of its own term is
  committed (the 2015 correction to single-server changes);
* a member promoted to voter holds entries already (it was caught up first);
* a snapshot (taken or received) records the committed configuration in force
  at its index, and that configuration's index.

Promises are durable when they leave (:meth:`InvariantChecker.on_send`, for
every message the moment the simulator releases it to the network):

* a granted real vote for candidate ``c`` in term ``T``: the voter has
  persisted ``voted_for = c`` in term ``T``;
* a successful AppendEntriesResponse of term ``T`` acknowledging ``match_index``:
  the persisted term is at least ``T`` and the disk log holds the acknowledged
  entries: it reaches ``match_index`` and its chain there equals the node's
  in-memory chain there when the acknowledgement was made (or a disk snapshot
  covers ``match_index``);
* AppendEntries, InstallSnapshot and TimeoutNow (a leader speaking for its
  term ``T``): the persisted term is at least ``T``.

Together with "a node leads term ``T`` only once it has persisted its vote for
itself in ``T``" (checked when it reports its election), these give "a node's
persisted term is never below a term it acted on". Other messages carry no
durable promise (see :meth:`InvariantChecker.on_send`); a candidate's RequestVote
leaves before its save.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from raftpy.membership import Configuration
from raftpy.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    InstallSnapshot,
    Message,
    RequestVoteResponse,
    TimeoutNow,
)
from raftpy.ready import HardState, LeaderChanged, Ready, SnapshotMeta


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
    configs: list[tuple[int, frozenset[int]]] = field(default_factory=list)
    """(index, voters) of the configuration entries held past ``base``, in order."""

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
        values = self.values
        first = entries[0].index
        k = first - self.base
        if not 1 <= k <= len(values):
            raise ValueError(f"entries from {first} do not follow a log ending "
                             f"at {self.last_index}")
        if k < len(values):
            del values[k:]
        configs = self.configs
        while configs and configs[-1][0] >= first:
            configs.pop()
        prev = values[-1]
        append = values.append
        configuration = EntryKind.CONFIGURATION
        for entry in entries:
            prev = hash((prev, entry.term, entry.data))
            append(prev)
            if entry.kind is configuration:
                configs.append((entry.index, Configuration.decode(entry.data).voters))

    def reset_to_snapshot(self, index: int, chain: int) -> None:
        mine = self.at(index)
        if mine == chain:
            del self.values[: index - self.base]
            self.configs = [c for c in self.configs if c[0] > index]
        else:
            self.values = [chain]
            self.configs = []
        self.base = index

    def copy(self) -> _Chains:
        return _Chains(self.base, list(self.values), list(self.configs))


class InvariantChecker:
    """Watches every Ready and persist of a simulated cluster for safety violations."""

    def __init__(self, node_ids: Sequence[int], voters: Sequence[int],
                 fail: Callable[[str], InvariantViolation], *,
                 fallback: Sequence[int] | None = None) -> None:
        """``voters``: the first configuration's; ``fallback``: the voters a node
        whose log holds no configuration uses (``voters`` unless the storage is
        bootstrapped, where it is none)."""
        self._voters = tuple(voters)
        self._quorum = len(self._voters) // 2 + 1
        self._fail = fail
        self.leaders: dict[int, int] = {}
        self._seen: dict[tuple[int, int], int] = {}
        self.memory: dict[int, _Chains] = {}
        self.disk: dict[int, _Chains] = {}
        self.committed: list[int] = [0]
        self._entry_terms_committed: set[int] = set()
        """The terms of the entries known committed."""
        self._top_committed_in: dict[int, int] = {}
        """term -> the highest index first reported committed by a node of that term."""
        self._hard: dict[int, HardState] = {}
        self._votes_cast: dict[int, dict[int, int]] = {}
        """node -> {term: candidate} for every vote the node ever persisted."""
        self._pending_acks: dict[int, dict[int, tuple[Message, int | None]]] = {}
        """node -> id(ack) -> (ack, in-memory chain at its match_index when made)."""
        self.applied: dict[int, int] = {}
        """Each node's applied index, as seen from the entries it handed out."""
        self._commit: dict[int, int] = {}
        self._grants: dict[tuple[int, int], set[int]] = {}
        """(term, candidate) -> the voters that released a vote for it."""
        self._appended_voters: tuple[int, ...] | None = None
        """Voters of a configuration appended after the committed one: during a
        single-server change a majority of either is a quorum a leader may use."""
        self.committed_configuration: Configuration | None = None
        """The latest configuration seen committed (None: still the initial voters)."""
        self._committed_configs: list[tuple[int, Configuration | None, frozenset[int]]] = [
            (0, None, frozenset(voters if fallback is None else fallback))]
        """(index, configuration, voters) of every committed configuration entry, in
        order, after the one nodes fall back to when their log holds none."""
        for node_id in node_ids:
            self.add_node(node_id)

    def add_node(self, node_id: int) -> None:
        """A node joins the simulation with empty storage."""
        self.memory[node_id] = _Chains()
        self.disk[node_id] = _Chains()
        self._hard[node_id] = HardState(0, None)
        self._votes_cast[node_id] = {}
        self._pending_acks[node_id] = {}
        self.applied[node_id] = 0
        self._commit[node_id] = 0

    def on_bootstrap(self, node_id: int, hard_state: HardState, entries: Sequence[Entry]) -> None:
        """``node_id``'s storage was bootstrapped before it started."""
        self.on_persist(node_id, Ready(hard_state=hard_state, entries=list(entries)))
        self.on_restart(node_id)

    @property
    def commit_index(self) -> int:
        """The highest index known committed anywhere."""
        return len(self.committed) - 1

    def on_ready(self, node_id: int, ready: Ready, term: int, *, is_leader: bool = False,
                 commit_index: int | None = None, voters: frozenset[int] | None = None,
                 uncommitted_configurations: int = 0) -> list[Entry]:
        """Check a Ready just drained from ``node_id``; returns newly committed entries.

        ``is_leader``, ``commit_index``, ``voters`` (of the configuration in force)
        and ``uncommitted_configurations`` (configuration entries in its log past
        the cluster's commit index: a new leader may not know yet that earlier ones
        committed) describe the node right after the drain."""
        mem = self.memory[node_id]
        changes: list[tuple[Entry, frozenset[int]]] = []
        if is_leader and uncommitted_configurations > 1:
            raise self._fail(f"one change at a time: leader {node_id} of term {term} holds "
                             f"{uncommitted_configurations} uncommitted configurations")
        if commit_index is not None:
            if commit_index < self._commit[node_id]:
                raise self._fail(f"node {node_id} moved its commit index back from "
                                 f"{self._commit[node_id]} to {commit_index}")
            self._commit[node_id] = commit_index
        if ready.snapshot is not None:
            meta = ready.snapshot[0]
            self._check_snapshot(node_id, meta.index)
            self.check_snapshot_meta(node_id, meta)
            mem.reset_to_snapshot(meta.index, self.committed[meta.index])
            if meta.index < self.applied[node_id]:
                raise self._fail(f"node {node_id} restores a snapshot at {meta.index} after "
                                 f"applying up to {self.applied[node_id]}: its state "
                                 f"machine would go back")
            self.applied[node_id] = meta.index
        if ready.entries:
            if is_leader and ready.entries[0].index != mem.last_index + 1:
                raise self._fail(
                    f"leader append-only: leader {node_id} of term {term} hands out entries "
                    f"from {ready.entries[0].index}, but its log ends at {mem.last_index}: "
                    f"it cuts or rewrites its own entries")
            held_before = self.voters_in_force(mem)
            self._extend(node_id, mem, ready.entries)
            first = ready.entries[0].index
            if first <= mem.base or (mem.configs and mem.configs[-1][0] >= first):
                # Configuration entries may be among the new ones (extend() records
                # those past the snapshot; no other entry needs this loop).
                for entry in ready.entries:
                    if entry.kind is EntryKind.CONFIGURATION:
                        if is_leader and entry.term == term:
                            changes.append((entry, held_before))
                        if entry.index > self.commit_index:
                            self._appended_voters = tuple(sorted(
                                Configuration.decode(entry.data).voters))
            seen = self._seen
            values = mem.values
            base = mem.base
            for entry in ready.entries:
                index = entry.index
                chain = values[index - base]
                old = seen.setdefault((index, entry.term), chain)
                if old != chain:
                    raise self._fail(
                        f"log matching: node {node_id} holds a different entry at index "
                        f"{entry.index}, term {entry.term} than another node")
        if voters is not None:
            expected = mem.configs[-1][1] if mem.configs else self.voters_in_force(mem)
            if voters is not expected and voters != expected:
                raise self._fail(
                    f"configuration in force: node {node_id} counts voters {sorted(voters)}, "
                    f"but the latest configuration in its log has {sorted(expected)}")
        if ready.messages:
            self._note_acks(node_id, mem, ready.messages)
        if ready.messages_after_persist:
            self._note_acks(node_id, mem, ready.messages_after_persist)
        if ready.committed:
            self._check_apply_order(node_id, ready.committed)
            top = ready.committed[-1]
            if is_leader and top.term != term:
                # Raft §3.6.2: only entries of the current term are committed by
                # counting; earlier ones commit with them (Figure 3.7).
                raise self._fail(
                    f"leader commit rule: leader {node_id} of term {term} advanced its "
                    f"commit index to {top.index}, an entry of term {top.term}")
        new: list[Entry] = []
        values = mem.values
        for entry in ready.committed:
            k = entry.index - mem.base
            held = values[k] if 0 <= k < len(values) else None  # mem.at(entry.index)
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
                self._entry_terms_committed.add(entry.term)
                if self._top_committed_in.get(term, 0) < entry.index:
                    self._top_committed_in[term] = entry.index
                new.append(entry)
                if entry.kind is EntryKind.CONFIGURATION:
                    configuration = Configuration.decode(entry.data)
                    self._use_committed(configuration)
                    self._committed_configs.append(
                        (entry.index, configuration, configuration.voters))
            else:
                raise self._fail(f"node {node_id} committed index {entry.index} out of order")
        if new:
            # (the reasons are only formatted for a failure)
            self._check_durable(lambda: f"newly committed by node {node_id}")
            if is_leader and voters is not None:
                self._check_durable(lambda: f"committed by leader {node_id} counting its "
                                    f"voters {sorted(voters)}", voters)
        for entry, held_before in changes:  # after the commits this Ready reports
            self._check_change_allowed(node_id, term, entry, held_before)
        if ready.events:
            for event in ready.events:
                if isinstance(event, LeaderChanged) and event.leader_id == node_id:
                    self._on_elected(node_id, event.term, voters)
        return new

    def voters_in_force(self, chains: _Chains) -> frozenset[int]:
        """The voters of the latest configuration in a log (the committed one behind
        its snapshot when it holds none past it)."""
        if chains.configs:
            return chains.configs[-1][1]
        return self._committed_configuration_at(chains.base)[2]

    def _committed_configuration_at(
            self, index: int) -> tuple[int, Configuration | None, frozenset[int]]:
        history = self._committed_configs
        k = len(history) - 1
        while history[k][0] > index:
            k -= 1
        return history[k]

    def _check_change_allowed(self, node_id: int, term: int, entry: Entry,
                              voters_before: frozenset[int]) -> None:
        """Leader ``node_id`` of ``term`` appends configuration ``entry``."""
        if entry.index > 1 and term not in self._entry_terms_committed:
            raise self._fail(
                f"2015 correction: leader {node_id} of term {term} appends a configuration "
                f"at {entry.index} before any entry of its term is committed")
        for promoted in sorted(Configuration.decode(entry.data).voters - voters_before):
            disk = self.disk.get(promoted)
            if promoted != node_id and (disk is None or disk.last_index == 0):
                raise self._fail(
                    f"promotion without catch-up: leader {node_id} makes node {promoted} "
                    f"a voter at index {entry.index}, but its disk holds no entry")

    def check_snapshot_meta(self, node_id: int, meta: SnapshotMeta) -> None:
        """A snapshot at ``meta.index`` (taken or received by ``node_id``) records the
        committed configuration in force there, with its index."""
        index, configuration, _ = self._committed_configuration_at(meta.index)
        if configuration is None:
            return  # a fixed member list, not in the log: nothing to record
        if meta.configuration != configuration or meta.configuration_index != index:
            raise self._fail(
                f"snapshot configuration: node {node_id}'s snapshot at {meta.index} records "
                f"{meta.configuration.describe()} of index {meta.configuration_index}, but "
                f"the configuration committed there is {configuration.describe()} of "
                f"index {index}")

    def _use_committed(self, configuration: Configuration) -> None:
        self.committed_configuration = configuration
        self._appended_voters = None
        self._voters = tuple(sorted(configuration.voters))
        self._quorum = len(self._voters) // 2 + 1

    def check_leaders_overlap(self, first: tuple[int, int, frozenset[int]],
                              second: tuple[int, int, frozenset[int]]) -> None:
        """Two nodes lead at once, ``(id, term, voters)`` each: any majority of one's
        voters must meet any majority of the other's (single-server changes keep
        that true), or both could commit conflicting entries."""
        (a, ta, va), (b, tb, vb) = first, second
        if len(va) // 2 + 1 + len(vb) // 2 + 1 <= len(va | vb):
            # Unless the older leader can commit nothing any more: a leader left
            # behind by two changes (paused meanwhile, fuzz seed 7201) still holds
            # its old configuration, but a majority of it has persisted a later term
            # and will never accept its AppendEntries (terms only grow on disk).
            older_term, older_voters = (ta, va) if ta < tb else (tb, vb)
            behind = sum(1 for v in older_voters
                         if v in self._hard and self._hard[v].term <= older_term)
            if behind < len(older_voters) // 2 + 1:
                return
            raise self._fail(f"leaders {a} (term {ta}, voters {sorted(va)}) and {b} (term "
                             f"{tb}, voters {sorted(vb)}) have majorities that need not "
                             f"overlap")

    def _check_apply_order(self, node_id: int, committed: Sequence[Entry]) -> None:
        expected = self.applied[node_id] + 1
        for entry in committed:
            if entry.index != expected:
                raise self._fail(
                    f"exactly-once apply: node {node_id} hands out committed entry "
                    f"{entry.index} to apply, expected {expected} (applied up to "
                    f"{self.applied[node_id]})")
            expected += 1
        self.applied[node_id] = expected - 1

    def _note_acks(self, node_id: int, mem: _Chains, messages: Sequence[Message]) -> None:
        """Remember what each successful acknowledgement in a Ready vouches for: the
        node's in-memory chain at ``match_index`` now (the log may change before the
        acknowledgement is released, after the fsync)."""
        pending = self._pending_acks[node_id]
        for msg in messages:
            if type(msg) is AppendEntriesResponse and msg.success:
                pending[id(msg)] = (msg, self._chain_at(mem, msg.match_index))

    def _chain_at(self, chains: _Chains, index: int) -> int | None:
        if index < chains.base and index < len(self.committed):
            return self.committed[index]  # behind a snapshot, hence committed
        return chains.at(index)

    def on_send(self, node_id: int, msg: Message) -> None:
        """``node_id`` releases ``msg`` to the network: what it promises must be durable.

        Checked: granted real votes, successful AppendEntriesResponses, and a
        leader's AppendEntries, InstallSnapshot and TimeoutNow (see the module
        docstring). Not checked, and why that is safe:

        * a real RequestVote asks and promises nothing: the candidate's own vote
          counts nowhere until durable, and it leads only once its vote is
          (checked when it reports its election). If a crash makes it forget the term
          it asked in, it returns to an older one; a vote it casts later is still
          one per term, because each vote is made durable before it is sent, and
          the voters that granted the forgotten candidacy may grant it again only
          to the same candidate, which then leads with a durable vote.
        * rejections (RequestVoteResponse not granted, AppendEntriesResponse not
          successful) promise nothing; their term only tells a stale node to step
          down. That term came from a node that holds it, or is the sender's own
          candidacy (see above).
        * pre-vote requests and answers change nobody's term or vote (Raft §9.6):
          a granted pre-vote echoes a term nobody adopted.
        * InstallSnapshotResponse acknowledges chunks held in memory only; the
          promise that a snapshot is installed is the successful
          AppendEntriesResponse sent after it is persisted, which is checked.
        """
        kind = type(msg)
        if kind is AppendEntries or kind is InstallSnapshot or kind is TimeoutNow:
            if self._hard[node_id].term < msg.term:
                self._check_term_durable(node_id, msg)  # raises
        elif kind is AppendEntriesResponse:
            assert isinstance(msg, AppendEntriesResponse)
            if msg.success:
                self._check_ack_durable(node_id, msg)
        elif kind is RequestVoteResponse:
            assert isinstance(msg, RequestVoteResponse)
            if msg.vote_granted and not msg.pre_vote \
                    and self._votes_cast[node_id].get(msg.term) != msg.dst:
                raise self._fail(
                    f"vote not durable: node {node_id} grants its vote to {msg.dst} in term "
                    f"{msg.term}, but has persisted {self._hard[node_id]}")
            if msg.vote_granted and not msg.pre_vote:
                self._grants.setdefault((msg.term, msg.dst), set()).add(node_id)

    def _check_term_durable(self, node_id: int, msg: Message) -> None:
        hard = self._hard[node_id]
        if hard.term < msg.term:
            raise self._fail(
                f"term not durable: node {node_id} sends {type(msg).__name__} of term "
                f"{msg.term} to {msg.dst}, but has persisted term {hard.term}")

    def _check_ack_durable(self, node_id: int, msg: AppendEntriesResponse) -> None:
        self._check_term_durable(node_id, msg)
        index = msg.match_index
        noted = self._pending_acks[node_id].pop(id(msg), None)
        chain = noted[1] if noted is not None and noted[0] is msg \
            else self._chain_at(self.memory[node_id], index)
        disk = self.disk[node_id]
        if index <= disk.base:
            return  # covered by the node's durable snapshot
        if chain is None or disk.at(index) != chain:
            where = (f"its disk ends at {disk.last_index}" if index > disk.last_index
                     else "its disk holds other entries there")
            raise self._fail(
                f"ack not durable: node {node_id} acknowledges entries up to {index} "
                f"(term {msg.term}) to {msg.dst}, but {where}")

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
            if hard.voted_for is not None:
                self._votes_cast[node_id][hard.term] = hard.voted_for
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
        self.memory[node_id] = disk.copy()
        self._pending_acks[node_id] = {}  # acks of batches lost in the crash
        self.applied[node_id] = disk.base
        self._commit[node_id] = disk.base

    def _check_snapshot(self, node_id: int, index: int) -> None:
        if index > self.commit_index:
            raise self._fail(f"node {node_id} has a snapshot at {index}, beyond the commit "
                             f"index {self.commit_index}")

    def _on_elected(self, node_id: int, term: int, voters: frozenset[int] | None = None) -> None:
        other = self.leaders.setdefault(term, node_id)
        if other != node_id:
            raise self._fail(f"election safety: nodes {other} and {node_id} both lead term {term}")
        if self._votes_cast[node_id].get(term) != node_id:
            # Else a crash could make it forget the term and win it again, with
            # another log under the same (index, term) (log matching).
            raise self._fail(f"vote not durable: node {node_id} leads term {term}, but "
                             f"has persisted {self._hard[node_id]}")
        if voters is not None:
            # Only voters of its configuration count, itself included by its durable
            # vote for itself (a leader never counts a standby's or a stranger's vote).
            granted = self._grants.get((term, node_id), set()) & voters
            if node_id in voters and self._votes_cast[node_id].get(term) == node_id:
                granted.add(node_id)
            if len(granted) < len(voters) // 2 + 1:
                raise self._fail(f"node {node_id} leads term {term} with votes from "
                                 f"{sorted(granted)}, not a majority of its voters "
                                 f"{sorted(voters)}")
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

    def _holders_among(self, among: Sequence[int]) -> int:
        """How many of ``among`` hold the latest committed entry on disk."""
        top = len(self.committed) - 1
        want = self.committed[top]
        held = 0
        disks = self.disk
        for voter in among:
            d = disks.get(voter)
            if d is not None:
                k = top - d.base
                if k < 0 or (k < len(d.values) and d.values[k] == want):
                    held += 1
        return held

    def _check_durable(self, when: str | Callable[[], str],
                       voters: Iterable[int] | None = None) -> None:
        among = tuple(voters) if voters is not None else self._voters
        holders = self._holders_among(among)
        if voters is None and holders < len(among) // 2 + 1 and self._appended_voters:
            # Mid-change: the voters of the configuration being added are a quorum
            # too (their majorities overlap the committed configuration's).
            among = self._appended_voters
            holders = self._holders_among(among)
        if holders < len(among) // 2 + 1:
            raise self._fail(
                f"durability: committed entry {self.commit_index} is persisted on {holders} "
                f"nodes, fewer than a majority ({when if isinstance(when, str) else when()})")
