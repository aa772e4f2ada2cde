"""A deterministic simulated cluster: N nodes, a virtual clock, a faulty network.

Everything random comes from one ``random.Random(seed)``, events are ordered by
(time, sequence number), and nothing reads the wall clock, so a seed replays
the same run event for event. After every event the invariant checker runs.
"""

from __future__ import annotations

import heapq
import itertools
import random
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

from raftpy.config import Config
from raftpy.errors import NotLeader
from raftpy.membership import Configuration, ConfigurationState, MemberRole
from raftpy.messages import Entry, EntryKind, InstallSnapshot, Message
from raftpy.node import RaftNode
from raftpy.ready import (
    LeaderChanged,
    ReadIndexFailed,
    ReadIndexReady,
    Ready,
    Role,
    SnapshotMeta,
    TransferEnded,
)
from raftpy.sim.invariants import InvariantChecker, InvariantViolation
from raftpy.sim.network import NetworkConfig
from raftpy.sim.paranoid import rescan
from raftpy.sim.statemachine import decode_applied, encode_applied
from raftpy.storage.base import Storage
from raftpy.storage.bootstrap import bootstrap as bootstrap_storage
from raftpy.storage.memory import MemoryStorage

MessagePredicate = Callable[[Message], bool]

_DELIVER, _TIMER, _PERSIST, _CALL = 0, 1, 2, 3
_INF = float("inf")

# The trace checksum packs each event's kind, exact time and ids in binary (no
# float formatting on the hot path): b"D" deliver, b"T" timer, b"P" fsync done.
_pack_event = struct.Struct("<cdqqqq").pack
_kind_codes: dict[type, int] = {}


def _kind_code(kind: type) -> int:
    """A stable number for a message type (its name's CRC, so runs compare across
    processes)."""
    code = _kind_codes.get(kind)
    if code is None:
        code = _kind_codes[kind] = zlib.crc32(kind.__name__.encode())
    return code


@dataclass(slots=True)
class Read:
    """A linearizable read asked through :meth:`Cluster.read`; resolves by itself.

    ``committed_before`` is the highest index any node had committed when the read
    was asked: the answer must not be below it (or the read could miss a write
    that was acknowledged before it began)."""

    node: int
    request_id: int
    asked_at: float
    committed_before: int
    read_index: int | None = None
    answered_at: float | None = None
    failure: str | None = None

    @property
    def done(self) -> bool:
        """Answered or failed."""
        return self.read_index is not None or self.failure is not None


@dataclass(slots=True)
class Proposal:
    """A command proposed through :meth:`Cluster.propose`; resolves by itself."""

    index: int
    term: int
    leader: int
    data: bytes
    proposed_at: float
    committed_at: float | None = None
    failed: bool = False

    @property
    def committed(self) -> bool:
        """Whether this very entry (index and term) was committed."""
        return self.committed_at is not None

    @property
    def done(self) -> bool:
        """Committed, or known lost (another entry committed at its index)."""
        return self.committed or self.failed


@dataclass(slots=True)
class Transfer:
    """A leadership transfer started by :meth:`Cluster.transfer_leadership`."""

    leader: int
    target: int
    started_at: float
    ended_at: float | None = None
    succeeded: bool = False
    new_leader: int | None = None
    reason: str = ""

    @property
    def done(self) -> bool:
        """Whether the transfer has ended (either way)."""
        return self.ended_at is not None

    @property
    def duration(self) -> float | None:
        """Seconds from request to outcome, once done."""
        return None if self.ended_at is None else self.ended_at - self.started_at


class Cluster:
    """``n`` voters (ids ``1..n``) and ``learners`` non-voters after them.

    Drive it with :meth:`step`, :meth:`run_for` and :meth:`run_until`; inject
    faults with :meth:`partition`, :meth:`isolate`, :meth:`cut` (one way),
    :meth:`cut_both`, :meth:`crash`, :meth:`restart`, :meth:`pause`,
    :meth:`jump_clock`, :meth:`hold` and the :class:`NetworkConfig`.
    """

    def __init__(
        self,
        n: int = 3,
        seed: int = 0,
        config: Config | None = None,
        *,
        learners: int = 0,
        network: NetworkConfig | None = None,
        record_trace: bool = False,
        check_invariants: bool = True,
        snapshot_every: int | None = None,
        storage_factory: Callable[[int], Storage] | None = None,
        bootstrap: bool = True,
        paranoid: bool = False,
    ) -> None:
        """``paranoid``: after every event, also re-derive the invariant checker's
        running state from scratch and check the safety properties by full rescans
        (:mod:`raftpy.sim.paranoid`; slow, for tests of the checker itself)."""
        if n < 1:
            raise ValueError(f"a cluster needs at least one voter, got n={n}")
        self.seed = seed
        self.config = config if config is not None else Config()
        self.network = network if network is not None else NetworkConfig()
        self._initial_voters = tuple(range(1, n + 1))
        self._initial_standbys = tuple(range(n + 1, n + learners + 1))
        self.ids = self._initial_voters + self._initial_standbys
        """Every node ever started here, removed ones included."""
        self._committed_configuration: Configuration | None = None
        self.now = 0.0
        self.events = 0
        """How many events have been processed."""
        self.rng = random.Random(seed)
        self.trace: list[str] = []
        self.record_trace = record_trace
        self.fault_counts: Counter[str] = Counter()
        self.snapshot_every = (snapshot_every if snapshot_every is not None
                               else self.config.snapshot_threshold)
        self._storage_factory = storage_factory
        self.storages: dict[int, Storage] = {
            i: storage_factory(i) if storage_factory is not None else MemoryStorage()
            for i in self.ids}
        self.bootstrapped = bootstrap
        """Whether the nodes' storage was bootstrapped (else: fixed member lists)."""
        if bootstrap:
            first = Configuration.voters_only(self._initial_voters, self._initial_standbys,
                                              {i: f"sim:{i}" for i in self.ids})
            for storage in self.storages.values():
                bootstrap_storage(storage, first)
        self.snapshots: dict[int, tuple[SnapshotMeta, bytes] | None] = dict.fromkeys(self.ids)
        """Each node's latest durable snapshot (what it sends to lagging followers)."""
        self.applied: dict[int, list[Entry]] = {i: [] for i in self.ids}
        self.proposals: list[Proposal] = []
        self.transfers: list[Transfer] = []
        self.reads: list[Read] = []
        self._pending_reads: dict[tuple[int, int], Read] = {}
        self._read_ids = itertools.count(1)
        self.held: list[Message] = []
        self._holds: list[MessagePredicate] = []
        self._blocked: set[tuple[int, int]] = set()
        self._link_clock: dict[tuple[int, int], float] = {}
        self._paused: dict[int, list[Message | Ready]] = {}
        """Paused nodes and what waits for each (deliveries, finished fsyncs), in order."""
        self._clock_offset = dict.fromkeys(self.ids, 0.0)
        self._clock_floor = dict.fromkeys(self.ids, 0.0)
        self.topology_changed_at = 0.0
        """When the last partition, cut, heal, crash, restart, pause, resume, clock
        jump, hold or release happened (what a liveness window must not contain)."""
        self.topology_changes = 0
        """How many such changes there have been."""
        self._queue: list[tuple[float, int, int, object, object]] = []
        self._seq = itertools.count()
        self._nodes: dict[int, RaftNode | None] = dict.fromkeys(self.ids)
        self._epoch = dict.fromkeys(self.ids, 0)
        self._timer_at = dict.fromkeys(self.ids, _INF)
        self._timer_gen = dict.fromkeys(self.ids, 0)
        self._disk_busy_until = dict.fromkeys(self.ids, 0.0)
        self._disk_pending = dict.fromkeys(self.ids, 0)
        self._pending_by_index: dict[int, list[Proposal]] = {}
        self._committed_terms: list[int] = [0]
        self._trace_crc = 0
        self.paranoid = paranoid and check_invariants
        self.checker: InvariantChecker | None = (
            InvariantChecker(self.ids, self._initial_voters, self._violation,
                             fallback=() if bootstrap else None)
            if check_invariants else None
        )
        if self.checker is not None and bootstrap:
            for node_id in self.ids:
                state, _ = self.storages[node_id].load()
                self.checker.on_bootstrap(node_id, state.hard_state, state.entries)
        for node_id in self.ids:
            self._start(node_id)

    # ------------------------------------------------------------------ queries

    @property
    def voters(self) -> tuple[int, ...]:
        """The voters of the latest committed configuration (the initial ones until
        a change commits)."""
        conf = self._committed_configuration
        return tuple(sorted(conf.voters)) if conf is not None else self._initial_voters

    @property
    def learners(self) -> tuple[int, ...]:
        """The standbys (replicated non-voters) of the latest committed configuration."""
        conf = self._committed_configuration
        return tuple(sorted(conf.standbys)) if conf is not None else self._initial_standbys

    @property
    def members(self) -> tuple[int, ...]:
        """Every member (any role) of the latest committed configuration."""
        conf = self._committed_configuration
        if conf is None:
            return self._initial_voters + self._initial_standbys
        return tuple(sorted(conf.ids))

    def configuration(self, node_id: int) -> ConfigurationState:
        """The configuration in force on live ``node_id`` (its index, and whether it
        knows it committed)."""
        return self.node(node_id).configuration

    def node(self, node_id: int) -> RaftNode:
        """The live node ``node_id`` (raises ``KeyError`` if it is crashed)."""
        node = self._nodes[node_id]
        if node is None:
            raise KeyError(f"node {node_id} is crashed")
        return node

    def is_up(self, node_id: int) -> bool:
        """Whether ``node_id`` is running (not crashed)."""
        return self._nodes[node_id] is not None

    def is_paused(self, node_id: int) -> bool:
        """Whether ``node_id`` is stopped by :meth:`pause` (it still counts as up)."""
        return node_id in self._paused

    def waiting(self, node_id: int) -> list[Message]:
        """The messages that reached paused ``node_id``, in the order it will get them."""
        return [item for item in self._paused.get(node_id, ()) if not isinstance(item, Ready)]

    def clock_of(self, node_id: int) -> float:
        """The time on ``node_id``'s own clock: cluster time plus its jumps."""
        offset = self._clock_offset[node_id]
        if not offset:
            return self.now
        return max(self.now + offset, self._clock_floor[node_id])

    def link_open(self, src: int, dst: int) -> bool:
        """Whether messages from ``src`` to ``dst`` currently get through the cuts."""
        return (src, dst) not in self._blocked

    @property
    def holding(self) -> bool:
        """Whether any :meth:`hold` rule is active."""
        return bool(self._holds)

    def live_nodes(self) -> list[RaftNode]:
        """Every running node, by id."""
        return [n for n in self._nodes.values() if n is not None]

    def leader(self) -> int | None:
        """The id of the leader of the highest term among live nodes, or None."""
        best: RaftNode | None = None
        for node in self.live_nodes():
            if node.role is Role.LEADER and (best is None or node.current_term > best.current_term):
                best = node
        return best.id if best is not None else None

    @property
    def trace_hash(self) -> int:
        """A checksum of every event so far: equal runs have equal hashes."""
        return self._trace_crc

    # ------------------------------------------------------------------ client calls

    def propose(self, command: bytes, node_id: int | None = None) -> Proposal:
        """Propose ``command`` to the leader (or to ``node_id``); raises ``NotLeader``
        (also when the target is paused: a stopped process answers no client)."""
        target = node_id if node_id is not None else self.leader()
        if target is None or target in self._paused:
            raise NotLeader(target or 0, None)
        node = self.node(target)
        pos = node.propose(command, self.clock_of(target))
        proposal = Proposal(pos.index, pos.term, target, command, self.now)
        self.proposals.append(proposal)
        if pos.index < len(self._committed_terms):
            # A stale leader took it at an index the cluster already committed.
            proposal.failed = True
        else:
            self._pending_by_index.setdefault(pos.index, []).append(proposal)
        self._after(target)
        return proposal

    def read(self, node_id: int | None = None) -> Read:
        """Ask ``node_id`` (default: the leader) for a linearizable read index
        (ReadIndex; a follower asks its leader). Raises ``NotLeader`` when the node
        knows no leader, or is paused."""
        target = node_id if node_id is not None else self.leader()
        if target is None or target in self._paused:
            raise NotLeader(target or 0, None)
        node = self.node(target)
        request_id = next(self._read_ids)
        read = Read(target, request_id, self.now, len(self._committed_terms) - 1)
        node.read_index(request_id, self.clock_of(target))
        self.reads.append(read)
        self._pending_reads[(target, request_id)] = read
        self._after(target)
        return read

    def transfer_leadership(self, target: int | None = None) -> Transfer:
        """Ask the current leader to hand over to ``target`` (None: the best voter)."""
        leader = self.leader()
        if leader is None or leader in self._paused:
            raise NotLeader(leader or 0, None)
        chosen = self.node(leader).transfer_leadership(target, self.clock_of(leader))
        transfer = Transfer(leader, chosen, self.now)
        self.transfers.append(transfer)
        self._note(f"transfer requested: {leader} -> {chosen}")
        self._after(leader)
        return transfer

    # ------------------------------------------------------------------ membership

    def add_node(self, node_id: int | None = None, role: MemberRole = MemberRole.SPARE) -> int:
        """Start a fresh node (empty storage: it waits to be contacted) and have the
        leader add it with ``role`` (a voter is caught up first). Returns its id;
        raises what :meth:`raftpy.RaftNode.add_member` raises (``NotLeader``...),
        in which case the fresh node keeps running, unknown to the cluster."""
        leader = self._leader_for_call()
        new_id = node_id if node_id is not None else max(self.ids) + 1
        if new_id in self._nodes:
            raise ValueError(f"node {new_id} exists already")
        self.ids = (*self.ids, new_id)
        self.storages[new_id] = (self._storage_factory(new_id)
                                 if self._storage_factory is not None else MemoryStorage())
        self.snapshots[new_id] = None
        self.applied[new_id] = []
        self._clock_offset[new_id] = 0.0
        self._clock_floor[new_id] = 0.0
        self._nodes[new_id] = None
        self._epoch[new_id] = 0
        self._timer_at[new_id] = _INF
        self._timer_gen[new_id] = 0
        self._disk_busy_until[new_id] = 0.0
        self._disk_pending[new_id] = 0
        if self.checker is not None:
            self.checker.add_node(new_id)
        self._start(new_id)
        self.fault_counts["member_add"] += 1
        self._note(f"start node {new_id}; add it as {role.name.lower()}")
        self.node(leader).add_member(new_id, f"sim:{new_id}", role, now=self.clock_of(leader))
        self._after(leader)
        return new_id

    def assign_role(self, node_id: int, role: MemberRole) -> None:
        """Have the leader give ``node_id`` another role (a voter is caught up first)."""
        leader = self._leader_for_call()
        self.node(leader).assign_role(node_id, role, now=self.clock_of(leader))
        self.fault_counts[f"member_{role.name.lower()}"] += 1
        self._note(f"assign {node_id} the role {role.name.lower()}")
        self._after(leader)

    def remove_node(self, node_id: int) -> None:
        """Have the leader remove ``node_id``; the node itself keeps running (crash it
        to stop it), as a decommissioned process might."""
        leader = self._leader_for_call()
        self.node(leader).remove_member(node_id, now=self.clock_of(leader))
        self.fault_counts["member_remove"] += 1
        self._note(f"remove {node_id}")
        self._after(leader)

    def _leader_for_call(self) -> int:
        leader = self.leader()
        if leader is None or leader in self._paused:
            raise NotLeader(leader or 0, None)
        return leader

    def at(self, delay: float, action: Callable[[], None]) -> None:
        """Run ``action`` ``delay`` virtual seconds from now, as an event."""
        self._push(self.now + delay, _CALL, action, None)

    # ------------------------------------------------------------------ running

    def step(self) -> bool:
        """Process one event (a delivery, a timer, a finished fsync); False if none."""
        queue = self._queue
        if not queue:
            return False
        when, _, kind, a, b = heapq.heappop(queue)
        self.now = when
        self.events += 1
        if kind == _DELIVER:
            self._deliver(a)  # type: ignore[arg-type]
        elif kind == _TIMER:
            node_id: int = a  # type: ignore[assignment]
            node = self._nodes[node_id]
            if b == self._timer_gen[node_id] and node is not None:
                due = self._timer_at[node_id]
                self._timer_at[node_id] = _INF
                if node_id not in self._paused:  # resume() ticks a paused node
                    self._trace_crc = zlib.crc32(_pack_event(b"T", when, node_id, 0, 0, 0),
                                                 self._trace_crc)
                    clock = self.clock_of(node_id)
                    if clock < due:  # (due - offset) + offset rounded down by an ulp
                        self._clock_floor[node_id] = clock = due
                    node.tick(clock)
                    self._after(node_id)
        elif kind == _PERSIST:
            node_id = a  # type: ignore[assignment]
            epoch: int = b[0]  # type: ignore[index]
            ready: Ready = b[1]  # type: ignore[index]
            if epoch == self._epoch[node_id]:
                deferred = self._paused.get(node_id)
                if deferred is not None:
                    deferred.append(ready)
                else:
                    self._complete_persist(node_id, ready)
        else:
            a()  # type: ignore[operator]
        if self.paranoid:
            rescan(self)
        return True

    def run_for(self, seconds: float) -> None:
        """Process every event in the next ``seconds`` of virtual time."""
        end = self.now + seconds
        queue = self._queue
        step = self.step
        while queue and queue[0][0] <= end:
            step()
        self.now = end

    def run_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Run until ``predicate()`` holds (True) or ``timeout`` virtual seconds pass (False)."""
        end = self.now + timeout
        queue = self._queue
        step = self.step
        while not predicate():
            if not queue or queue[0][0] > end:
                self.now = max(self.now, end)
                return predicate()
            step()
        return True

    def wait_for_leader(self, timeout: float = 5.0) -> int:
        """Run until there is a leader and return it; raises ``TimeoutError``."""
        if not self.run_until(lambda: self.leader() is not None, timeout):
            raise TimeoutError(f"no leader within {timeout}s (seed {self.seed})")
        leader = self.leader()
        assert leader is not None
        return leader

    # ------------------------------------------------------------------ faults

    def partition(self, *groups: Iterable[int]) -> None:
        """Cut the network between the groups (nodes not named form one more group)."""
        sets = [set(g) for g in groups]
        named = set().union(*sets) if sets else set()
        rest = set(self.ids) - named
        if rest:
            sets.append(rest)
        self._blocked = {(a, b) for ga in sets for gb in sets if ga is not gb
                         for a in ga for b in gb}
        self.fault_counts["partition"] += 1
        self._topology_changed(f"partition {[sorted(s) for s in sets]}")

    def isolate(self, node_id: int) -> None:
        """Cut ``node_id`` off from every other node."""
        self.partition({node_id})

    def heal(self) -> None:
        """Remove every partition and cut."""
        self._blocked = set()
        self._topology_changed("heal")

    def cut(self, src: int, dst: int) -> None:
        """Block messages from ``src`` to ``dst`` only (a one-way link failure);
        messages already in flight are lost when they arrive."""
        self._check_link(src, dst)
        self._blocked.add((src, dst))
        self.fault_counts["cut_one_way"] += 1
        self._topology_changed(f"cut {src} -> {dst}")

    def cut_both(self, a: int, b: int) -> None:
        """Block the link between ``a`` and ``b`` both ways (a partial partition:
        each still reaches every other node). With ``Config.early_pre_vote`` the
        cut resets the link's connections: each end hears of it shortly after
        (:meth:`connection_lost`)."""
        self._check_link(a, b)
        self._blocked.update(((a, b), (b, a)))
        self.fault_counts["cut_link"] += 1
        self._topology_changed(f"cut {a} <-> {b}")
        self._report_connection_loss(a, (b,))
        self._report_connection_loss(b, (a,))

    def connection_lost(self, node_id: int, peer: int, lost_at: float | None = None) -> None:
        """Tell ``node_id`` that its driver lost every connection to ``peer`` and
        could not reconnect (:meth:`RaftNode.leader_connection_lost`). ``lost_at``
        is when, in cluster time (default: now). Nothing happens to a node that is
        down or paused (a paused process notices nothing)."""
        node = self._nodes.get(node_id)
        if node is None or node_id in self._paused:
            return
        offset = self._clock_offset[node_id]
        since = (self.now if lost_at is None else lost_at) + offset
        self.fault_counts["connection_lost"] += 1
        self._hash(f"L{self.now:.9f}/{node_id}/{peer}")
        if node.leader_connection_lost(peer, self.clock_of(node_id), lost_at=since):
            self._note(f"{node_id} lost leader {peer}: early pre-vote")
        self._after(node_id)

    def _report_connection_loss(self, lost: int, peers: Iterable[int]) -> None:
        """With early pre-vote on, each of ``peers`` hears that its connections to
        ``lost`` are gone after a transport's detection delay (a reset and one
        refused reconnect: about a millisecond)."""
        if not self.config.early_pre_vote:
            return
        at = self.now
        for peer in peers:
            if peer != lost:
                self.at(self.rng.uniform(0.0005, 0.003),
                        partial(self.connection_lost, peer, lost, at))

    def restore(self, src: int, dst: int) -> None:
        """Reopen the link from ``src`` to ``dst`` (cut by any means)."""
        self._check_link(src, dst)
        self._blocked.discard((src, dst))
        self.fault_counts["restore_one_way"] += 1
        self._topology_changed(f"restore {src} -> {dst}")

    def restore_both(self, a: int, b: int) -> None:
        """Reopen the link between ``a`` and ``b`` both ways."""
        self._check_link(a, b)
        self._blocked.difference_update(((a, b), (b, a)))
        self.fault_counts["restore_link"] += 1
        self._topology_changed(f"restore {a} <-> {b}")

    def pause(self, node_id: int) -> None:
        """Stop ``node_id`` like SIGSTOP: it keeps its memory and stays up, but handles
        nothing and sends nothing. Deliveries to it and its finished fsyncs wait, in
        order, until :meth:`resume`; its timers do not fire (resume ticks it)."""
        self.node(node_id)  # raises KeyError if crashed
        if node_id in self._paused:
            raise ValueError(f"node {node_id} is already paused")
        self._paused[node_id] = []
        self.fault_counts["pause"] += 1
        self._topology_changed(f"pause {node_id}")

    def resume(self, node_id: int) -> None:
        """Continue a paused node: replay what waited for it in order, then tick it at
        once (its timers are overdue)."""
        deferred = self._paused.pop(node_id, None)
        if deferred is None:
            raise ValueError(f"node {node_id} is not paused")
        self.fault_counts["resume"] += 1
        self._topology_changed(f"resume {node_id} ({len(deferred)} deferred)")
        for item in deferred:
            if self._nodes[node_id] is None:
                break
            if isinstance(item, Ready):
                self._complete_persist(node_id, item)
            else:
                self._step_node(item)
        if self._nodes[node_id] is not None:
            self._trace_crc = zlib.crc32(_pack_event(b"T", self.now, node_id, 0, 0, 0),
                                         self._trace_crc)
            self.node(node_id).tick(self.clock_of(node_id))
            self._after(node_id)

    def jump_clock(self, node_id: int, seconds: float) -> None:
        """Move ``node_id``'s clock ``seconds`` forward: from now on it reads cluster time
        plus all its jumps (so its timers fire early, in cluster time)."""
        if seconds <= 0:
            raise ValueError(f"a clock only jumps forward, got {seconds}")
        self._clock_offset[node_id] += seconds
        self.fault_counts["clock_jump"] += 1
        self._topology_changed(f"clock of {node_id} jumps {seconds:.6f}s")
        if self._nodes[node_id] is not None:
            self._timer_at[node_id] = _INF  # re-arm in cluster time
            self._after(node_id)

    def set_network(self, network: NetworkConfig) -> None:
        """Change the fault settings from now on."""
        self.network = network

    def crash(self, node_id: int) -> None:
        """Stop ``node_id``; whatever it had not yet persisted is lost (and, if it was
        paused, whatever waited for it). With ``Config.early_pre_vote`` its peers
        hear of the lost connections shortly after (:meth:`connection_lost`)."""
        node = self.node(node_id)
        self._nodes[node_id] = None
        self._paused.pop(node_id, None)
        self._epoch[node_id] += 1
        self._disk_pending[node_id] = 0
        self._timer_gen[node_id] += 1
        self._timer_at[node_id] = _INF
        self.fault_counts["crash"] += 1
        self._topology_changed(
            f"crash {node_id} (was {node.role.value}, term {node.current_term})")
        if self._storage_factory is not None:
            # A crashed process keeps no file open: restart() reopens from the disk.
            _close(self.storages[node_id])
        for transfer in self.transfers:
            if transfer.leader == node_id and not transfer.done:
                self._end_transfer(transfer, False, None, "leader crashed")
        for key in [k for k in self._pending_reads if k[0] == node_id]:
            self._pending_reads.pop(key).failure = "node crashed"
        self._report_connection_loss(node_id, self.ids)

    def restart(self, node_id: int) -> None:
        """Start ``node_id`` again from exactly what it persisted."""
        if self._nodes[node_id] is not None:
            raise ValueError(f"node {node_id} is running")
        self.fault_counts["restart"] += 1
        self._topology_changed(f"restart {node_id}")
        self.applied[node_id] = []
        if self.checker is not None:
            self.checker.on_restart(node_id)
        if self._storage_factory is not None:
            self.storages[node_id] = self._storage_factory(node_id)
        self._start(node_id)

    def close(self) -> None:
        """Close every storage that can be closed (file-backed ones hold a lock)."""
        for storage in self.storages.values():
            _close(storage)

    def hold(self, predicate: MessagePredicate) -> None:
        """Hold back every message matching ``predicate`` until :meth:`release`."""
        self._holds.append(predicate)
        self.topology_changed_at = self.now
        self.topology_changes += 1

    def release(self, predicate: MessagePredicate | None = None) -> int:
        """Stop holding, and deliver the held messages matching ``predicate`` (all if
        None) now, in the order they were held. Returns how many were released."""
        self._holds = []
        self.topology_changed_at = self.now
        self.topology_changes += 1
        keep: list[Message] = []
        go: list[Message] = []
        for msg in self.held:
            (go if predicate is None or predicate(msg) else keep).append(msg)
        self.held = keep
        for msg in go:
            self._push(self.now, _DELIVER, msg, None)
        return len(go)

    def drop_held(self, predicate: MessagePredicate | None = None) -> int:
        """Lose the held messages matching ``predicate`` (all if None), as if the
        network had dropped them. Returns how many were lost."""
        keep = [m for m in self.held if predicate is not None and not predicate(m)]
        lost = len(self.held) - len(keep)
        self.held = keep
        self.fault_counts["held_dropped"] += lost
        return lost

    # ------------------------------------------------------------------ internals

    def _start(self, node_id: int) -> None:
        state, snapshot = self.storages[node_id].load()
        self.snapshots[node_id] = (
            (state.snapshot, snapshot) if state.snapshot is not None and snapshot is not None
            else None)
        fixed = None if self.bootstrapped else Configuration.voters_only(
            self._initial_voters, self._initial_standbys)
        node = RaftNode(
            node_id, configuration=fixed, config=self.config, state=state,
            rng=random.Random(self.rng.getrandbits(64)), now=self.clock_of(node_id),
            trace=self.trace.append if self.record_trace else None)
        node.set_snapshot_source(self._snapshot_source(node_id))
        self._nodes[node_id] = node
        if snapshot is not None and state.snapshot is not None:
            self.applied[node_id] = self._restore(node_id, state.snapshot.index, snapshot)
        self._after(node_id)

    def _complete_persist(self, node_id: int, ready: Ready) -> None:
        self._disk_pending[node_id] -= 1
        self._trace_crc = zlib.crc32(_pack_event(b"P", self.now, node_id, 0, 0, 0),
                                     self._trace_crc)
        self._finish_persist(node_id, ready)
        self._after(node_id)

    def _check_link(self, a: int, b: int) -> None:
        if a == b or a not in self._nodes or b not in self._nodes:
            raise ValueError(f"no link between {a} and {b}")

    def _topology_changed(self, what: str) -> None:
        self.topology_changed_at = self.now
        self.topology_changes += 1
        self._note(what)

    def _push(self, when: float, kind: int, a: object, b: object) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), kind, a, b))

    def _send(self, msg: Message) -> None:
        net = self.network
        rng = self.rng
        if net.drop and rng.random() < net.drop:
            self.fault_counts["drop"] += 1
            return
        # rng.uniform(delay_min, delay_max), inlined (the same draw and arithmetic)
        when = self.now + (net.delay_min + (net.delay_max - net.delay_min) * rng.random())
        if net.reorder and rng.random() < net.reorder:
            # Overtaken by later messages on its link: only this fault reorders.
            self.fault_counts["reorder"] += 1
            when += rng.uniform(0, net.reorder_delay)
        else:
            # Links are FIFO like a TCP connection: never overtake an earlier message.
            link = (msg.src, msg.dst)
            last = self._link_clock.get(link, 0.0)
            if last > when:
                when = last
            self._link_clock[link] = when
        heapq.heappush(self._queue, (when, next(self._seq), _DELIVER, msg, None))
        if net.duplicate and rng.random() < net.duplicate:
            self.fault_counts["duplicate"] += 1
            self._push(self.now + rng.uniform(net.delay_min, net.delay_max + net.reorder_delay),
                       _DELIVER, msg, None)

    def _deliver(self, msg: Message) -> None:
        dst = msg.dst
        if self._blocked and (msg.src, dst) in self._blocked:
            self.fault_counts["partition_drop"] += 1
            return
        for predicate in self._holds:
            if predicate(msg):
                self.fault_counts["hold"] += 1
                self.held.append(msg)
                return
        node = self._nodes[dst]
        if node is None:
            self.fault_counts["to_crashed"] += 1
            return
        if self._paused:
            deferred = self._paused.get(dst)
            if deferred is not None:
                self.fault_counts["to_paused"] += 1
                deferred.append(msg)
                return
        self._step_node(msg)

    def _step_node(self, msg: Message) -> None:
        dst = msg.dst
        node = self._nodes[dst]
        if node is None:
            raise KeyError(f"node {dst} is crashed")
        kind = type(msg)
        code = _kind_codes.get(kind)
        self._trace_crc = zlib.crc32(
            _pack_event(b"D", self.now, code if code is not None else _kind_code(kind),
                        msg.src, dst, msg.term), self._trace_crc)
        if kind is InstallSnapshot:
            self.fault_counts["install_snapshot"] += 1
        node.step(msg, self.clock_of(dst) if self._clock_offset[dst] else self.now)
        self._after(dst)

    def _after(self, node_id: int) -> None:
        """Drain the node's output and (re)arm its timer."""
        node = self._nodes[node_id]
        if node is None:
            return
        while node.has_ready():
            self._handle_ready(node_id, node, node.ready())
        deadline = node.next_deadline()
        if deadline != self._timer_at[node_id]:
            self._timer_at[node_id] = deadline
            gen = self._timer_gen[node_id] = self._timer_gen[node_id] + 1
            if deadline != _INF:
                offset = self._clock_offset[node_id]  # node time -> cluster time
                if offset:
                    deadline -= offset
                heapq.heappush(self._queue, (deadline if deadline > self.now else self.now,
                                             next(self._seq), _TIMER, node_id, gen))

    def _handle_ready(self, node_id: int, node: RaftNode, ready: Ready) -> None:
        checker = self.checker
        if checker is not None:
            is_leader = node.role is Role.LEADER
            # The checker looks at uncommitted configurations of leaders only.
            checker.on_ready(node_id, ready, node.current_term, is_leader=is_leader,
                             commit_index=node.commit_index, voters=node.voters,
                             uncommitted_configurations=node.configurations_after(
                                 checker.commit_index) if is_leader else 0)
        terms = self._committed_terms
        for entry in ready.committed:
            if entry.index == len(terms):
                terms.append(entry.term)
                self._resolve_proposals(entry)
                if entry.kind is EntryKind.CONFIGURATION:
                    self._committed_configuration = Configuration.decode(entry.data)
        for msg in ready.messages:
            if checker is not None:
                checker.on_send(node_id, msg)
            self._send(msg)
        for event in ready.events:
            if isinstance(event, TransferEnded):
                for transfer in self.transfers:
                    if transfer.leader == node_id and not transfer.done \
                            and transfer.target == event.target:
                        self._end_transfer(transfer, event.succeeded, event.new_leader,
                                           event.reason)
            elif isinstance(event, ReadIndexReady | ReadIndexFailed):
                self._end_read(node_id, event)
            elif isinstance(event, LeaderChanged) and event.leader_id == node_id:
                self._note(f"{node_id} is leader of term {event.term}")
                if self.checker is not None:
                    mine = (node_id, node.current_term, node.voters)
                    for other in self.live_nodes():
                        if other.role is Role.LEADER and other.id != node_id:
                            self.checker.check_leaders_overlap(
                                mine, (other.id, other.current_term, other.voters))
        if ready.hard_state is not None or ready.entries or ready.snapshot is not None \
                or self._disk_pending[node_id]:  # ready.must_persist(), inlined
            # Batches reach the disk in order; an empty batch still waits its turn so
            # that its acknowledgements never overtake an earlier fsync.
            net = self.network
            # rng.uniform(disk_min, disk_max), inlined (the same draw and arithmetic)
            done = self.now + (net.disk_min + (net.disk_max - net.disk_min) * self.rng.random())
            busy = self._disk_busy_until[node_id]
            if busy > done:
                done = busy
            self._disk_busy_until[node_id] = done
            self._disk_pending[node_id] += 1
            self._push(done, _PERSIST, node_id, (self._epoch[node_id], ready))
        else:
            self._finish_persist(node_id, ready)

    def _finish_persist(self, node_id: int, ready: Ready) -> None:
        node = self.node(node_id)
        checker = self.checker
        if ready.hard_state is not None or ready.entries or ready.snapshot is not None:
            self.storages[node_id].save(ready.hard_state, ready.entries, ready.snapshot)
            if ready.snapshot is not None:
                self.snapshots[node_id] = ready.snapshot
            if checker is not None:
                checker.on_persist(node_id, ready)
        for msg in ready.messages_after_persist:
            if checker is not None:
                checker.on_send(node_id, msg)
            self._send(msg)
        if ready.snapshot is not None:
            meta, data = ready.snapshot
            self.applied[node_id] = self._restore(node_id, meta.index, data)
        if ready.committed:
            self.applied[node_id].extend(ready.committed)
        node.advance(ready, self.clock_of(node_id) if self._clock_offset[node_id] else self.now)
        if checker is not None and not self._disk_pending[node_id]:
            checker.check_persisted_claim(node_id, node.log.persisted_index)
        if self.snapshot_every is not None:
            self._maybe_snapshot(node_id, node)

    def _maybe_snapshot(self, node_id: int, node: RaftNode) -> None:
        latest = self.snapshots[node_id]
        last = latest[0].index if latest is not None else 0
        applied = node.applied_index
        assert self.snapshot_every is not None
        if applied - last < self.snapshot_every or applied > node.log.persisted_index \
                or self._disk_pending[node_id]:
            return  # only snapshot what is durable and applied, with no batch in flight
        snapshot = (node.snapshot_meta(applied), self._snapshot_bytes(node_id, applied))
        if self.checker is not None:
            self.checker.check_snapshot_meta(node_id, snapshot[0])
        self.storages[node_id].compact(*snapshot)
        self.snapshots[node_id] = snapshot
        keep_from = max(applied - self.config.snapshot_trailing, node.log.snapshot_index)
        node.compact(keep_from)
        if self.checker is not None:
            self.checker.on_compact(node_id, applied, memory=False, disk=True)
            if keep_from > 0:
                self.checker.on_compact(node_id, keep_from, memory=True, disk=False)
        self.fault_counts["snapshot"] += 1

    def _snapshot_bytes(self, node_id: int, index: int) -> bytes:
        # The simulated state machine is the list of applied entries.
        return encode_applied([e for e in self.applied[node_id] if e.index <= index])

    def _restore(self, node_id: int, index: int, data: bytes) -> list[Entry]:
        applied = decode_applied(data)
        if self.checker is not None:
            self.checker.on_restore(node_id, index, applied)
        return applied

    def _snapshot_source(self, node_id: int) -> Callable[[], tuple[SnapshotMeta, bytes] | None]:
        def source() -> tuple[SnapshotMeta, bytes] | None:
            return self.snapshots[node_id]

        return source

    def _resolve_proposals(self, entry: Entry) -> None:
        waiting = self._pending_by_index.pop(entry.index, None)
        if not waiting:
            return
        for proposal in waiting:
            if proposal.term == entry.term and entry.kind is EntryKind.COMMAND:
                proposal.committed_at = self.now
            else:
                proposal.failed = True

    def _end_transfer(self, transfer: Transfer, succeeded: bool, new_leader: int | None,
                      reason: str) -> None:
        transfer.ended_at = self.now
        transfer.succeeded = succeeded
        transfer.new_leader = new_leader
        transfer.reason = reason
        self._note(f"transfer {transfer.leader} -> {transfer.target} ended: {reason}")

    def _note(self, what: str) -> None:
        self._hash(f"N{self.now:.9f}/{what}")
        if self.record_trace:
            self.trace.append(f"[{self.now:.3f}] sim {what}")

    def _hash(self, what: str) -> None:
        self._trace_crc = zlib.crc32(what.encode(), self._trace_crc)

    def _end_read(self, node_id: int, event: ReadIndexReady | ReadIndexFailed) -> None:
        read = self._pending_reads.pop((node_id, event.request_id), None)
        if read is None:
            return
        read.answered_at = self.now
        if isinstance(event, ReadIndexFailed):
            read.failure = event.reason
            return
        read.read_index = event.read_index
        if event.read_index < read.committed_before:
            # Raft §6.4: a read index below an index committed before the read was
            # asked lets the read miss an acknowledged write (a stale read).
            raise self._violation(
                f"stale read: node {node_id} answered read {event.request_id} (asked at "
                f"{read.asked_at:.6f}s) with read index {event.read_index}, but index "
                f"{read.committed_before} was committed before it was asked")
        self.fault_counts["read_answered"] += 1

    def _violation(self, what: str) -> InvariantViolation:
        return InvariantViolation(what, seed=self.seed, event=self.events, now=self.now)


def _close(storage: Storage) -> None:
    close = getattr(storage, "close", None)
    if callable(close):
        close()
