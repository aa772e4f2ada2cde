"""Helpers shared by the tests: core nodes driven by hand, simulated clusters, and the
Trio runtime on an in-memory network under virtual time (:class:`Cluster`)."""

from __future__ import annotations

import random
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from typing import Any

import msgpack
import trio
import trio.testing

from raftpy import Config, Entry, Message, PersistentState, RaftNode, Ready
from raftpy.errors import NotLeader
from raftpy.membership import Configuration, Member, MemberRole
from raftpy.ready import HardState
from raftpy.sim import Cluster as SimCluster
from raftpy.statemachine import StateMachine
from raftpy.storage.memory import MemoryStorage
from raftpy.trio.membership import Membership
from raftpy.trio.runtime import Node, open_node
from raftpy.trio.transport import PeerAddress


def make_node(node_id: int = 1, voters: tuple[int, ...] = (1, 2, 3), *, term: int = 0,
              voted_for: int | None = None, entries: tuple[Entry, ...] = (),
              config: Config | None = None, learners: tuple[int, ...] = (),
              now: float = 0.0) -> RaftNode:
    """A node restarted from the given persisted state, with a fixed RNG."""
    return RaftNode(node_id, voters, learners=learners, config=config or Config(),
                    state=PersistentState(HardState(term, voted_for), entries),
                    rng=random.Random(node_id), now=now)


def drain(node: RaftNode, now: float = 0.0) -> tuple[list[Message], list[Ready]]:
    """Persist-and-advance everything the node has; return all messages it sent."""
    sent: list[Message] = []
    readies: list[Ready] = []
    while node.has_ready():
        ready = node.ready()
        readies.append(ready)
        sent.extend(ready.messages)
        sent.extend(ready.messages_after_persist)
        node.advance(ready, now)
    return sent, readies


def entries(*terms: int, start: int = 1) -> tuple[Entry, ...]:
    """Entries with the given terms at consecutive indexes from ``start``."""
    return tuple(Entry(start + n, t, b"e%d" % (start + n)) for n, t in enumerate(terms))


def settled_cluster(n: int = 3, seed: int = 7, **kwargs: object) -> tuple[SimCluster, int]:
    """A simulated cluster with a leader that has committed a write, given 100 ms to
    settle; returns it and the leader's id."""
    cluster = SimCluster(n=n, seed=seed, record_trace=True, **kwargs)  # type: ignore[arg-type]
    leader = cluster.wait_for_leader()
    proposal = cluster.propose(b"warm-up")
    assert cluster.run_until(lambda: proposal.committed, 1.0)
    cluster.run_for(0.1)
    return cluster, leader


# ------------------------------------------------- the Trio runtime on an in-memory network

CONFIG = Config(election_timeout_min=0.150, election_timeout_max=0.300, heartbeat_interval=0.050)
#: CONFIG with a snapshot every 5 entries (2 kept behind it): a member that lost its
#: disk catches up from a snapshot.
SNAPSHOT_CONFIG = replace(CONFIG, snapshot_threshold=5, snapshot_trailing=2)


def addr(node_id: int) -> str:
    """The (never dialled) address of member ``node_id`` on the fake network."""
    return f"10.0.0.{node_id}:7000"


def initial(*voters: int) -> Configuration:
    """A first configuration of the given voters at their :func:`addr`."""
    return Configuration.of(Member(i, MemberRole.VOTER, addr(i)) for i in voters)


def roles(m: Membership) -> dict[int, MemberRole]:
    """Each member's role in a :class:`Membership` view."""
    return {s.id: s.role for s in m.members}


class Recorder:
    """A state machine that records every command and answers with its position."""

    def __init__(self) -> None:
        self.commands: list[bytes] = []

    def apply(self, command: bytes) -> Any:
        if command == b"boom":
            raise ValueError("boom refused")
        self.commands.append(command)
        return len(self.commands)

    def snapshot(self) -> bytes:
        return msgpack.packb(self.commands)

    def restore(self, data: bytes) -> None:
        self.commands = list(msgpack.unpackb(data))


class FakeNetwork:
    """Delivers messages at once between transports that are up and not cut off."""

    def __init__(self) -> None:
        self.transports: dict[int, FakeTransport] = {}
        self.cut: set[int] = set()
        self.sent: list[tuple[float, Message]] = []

    def transport(self, node_id: int) -> FakeTransport:
        return FakeTransport(self, node_id)


class FakeTransport:
    """The runtime-facing surface of raftpy.trio.transport.Transport, in memory. It
    records what the runtime tells it about peers (``update_peers``) but delivers to
    any transport on its network, admitted or not."""

    def __init__(self, network: FakeNetwork, node_id: int) -> None:
        self.network = network
        self.node_id = node_id
        self._send, self.incoming = trio.open_memory_channel[Message](1024)
        self.running = False
        self.peers: dict[int, PeerAddress] = {}
        self.admit: frozenset[int] | None = frozenset()
        self.updates: list[tuple[frozenset[int], frozenset[int] | None, str]] = []
        network.transports[node_id] = self

    def send(self, msg: Message) -> None:
        net = self.network
        net.sent.append((trio.current_time(), msg))
        dst = net.transports.get(msg.dst)
        if dst is None or not dst.running or {msg.src, msg.dst} & net.cut:
            return
        with suppress(trio.WouldBlock):
            dst._send.send_nowait(msg)

    def update_peers(self, peers: dict[int, PeerAddress], *, admit: Any,
                     what: str = "") -> None:
        self.peers = dict(peers)
        self.admit = None if admit is None else frozenset(admit)
        self.updates.append((frozenset(peers), self.admit, what))

    async def run(self, listeners: Any = None, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.running = True
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self.running = False


class GatedStorage(MemoryStorage):
    """A disk that can hang. Runs in a worker thread when the node has
    ``inline_save_budget=0`` (the runtime calls only a plain ``MemoryStorage`` inline
    then; with inline saves a hung save would hang the test's own event loop);
    records every save, and while ``gate`` is closed a save
    blocks until it opens (``blocked`` is set, ``blocked_saves`` counts them); with
    ``entries_only`` set, a save of the hard state alone passes the closed gate."""

    def __init__(self) -> None:
        super().__init__()
        self.saves: list[tuple[int, Any]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.blocked = threading.Event()
        self.blocked_saves = 0
        self.entries_only = False

    def save(self, hard_state: Any = None, entries: Any = (), snapshot: Any = None) -> None:
        if not self.gate.is_set() and (entries or not self.entries_only):
            self.blocked_saves += 1
            self.blocked.set()
            self.gate.wait()
        self.saves.append((len(entries), hard_state))
        super().save(hard_state, entries, snapshot)

    async def wait_blocked(self) -> None:
        """Return once a save has blocked at the closed gate."""
        while not self.blocked.is_set():
            await trio.sleep(0.001)


class Cluster:
    """Runtime nodes on a :class:`FakeNetwork` in one nursery, each startable and
    stoppable; ``ids`` are the members ``1..n`` that :func:`cluster` starts.

    In fixed mode (the default) a member of ``ids`` starts with the others' addresses
    as its ``peers``. With ``membership=True`` a node learns its configuration only from
    what :meth:`start` passes on (``bootstrap=``, ``join=``, ``peers=``) or from its
    storage, and :meth:`leader` waits for a leader's no-op to commit, so that
    membership changes may go at once.

    ``storages`` gives some nodes their storage (any other gets a fresh
    ``MemoryStorage`` at its first start, kept across restarts); ``machine`` makes each
    start's state machine (kept in ``machines``). A subclass may put the nodes on
    another network: :meth:`address` and :meth:`network_options`."""

    def __init__(self, nursery: trio.Nursery, n: int = 3, config: Config = CONFIG, *,
                 membership: bool = False,
                 storages: Mapping[int, MemoryStorage] | None = None,
                 machine: Callable[[], StateMachine] = Recorder) -> None:
        self.nursery = nursery
        self.ids = list(range(1, n + 1))
        self.config = config
        self.membership = membership
        self.machine = machine
        self.network = FakeNetwork()
        self.storages: dict[int, MemoryStorage] = dict(storages or {})
        self.machines: dict[int, Any] = {}
        self.transports: dict[int, FakeTransport] = {}
        self.nodes: dict[int, Node] = {}
        self._stops: dict[int, trio.CancelScope] = {}

    async def start(self, node_id: int, **kwargs: Any) -> Node:
        """Start (or restart) ``node_id``; ``kwargs`` go to ``open_node``."""
        storage = self.storages.setdefault(node_id, MemoryStorage())
        if not self.membership and "peers" not in kwargs:
            kwargs["peers"] = {p: self.address(p) for p in self.ids if p != node_id}

        async def run(task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
            with trio.CancelScope() as scope:
                self._stops[node_id] = scope
                machine = self.machines[node_id] = self.machine()
                async with open_node(node_id, state_machine=machine, storage=storage,
                                     config=self.config, rng=random.Random(node_id),
                                     **self.network_options(node_id, machine),
                                     **kwargs) as node:
                    self.nodes[node_id] = node
                    task_status.started(node)
                    await trio.sleep_forever()

        node: Node = await self.nursery.start(run)
        return node

    def address(self, node_id: int) -> str:
        """Member ``node_id``'s address as its peers know it: :func:`addr`."""
        return addr(node_id)

    def network_options(self, node_id: int, machine: Any) -> dict[str, Any]:
        """``open_node`` arguments that put ``node_id`` on the network: a new
        :class:`FakeTransport` on ``network`` (kept in ``transports``)."""
        transport = self.transports[node_id] = self.network.transport(node_id)
        return {"transport": transport}

    def stop(self, node_id: int) -> None:
        self._stops.pop(node_id).cancel()
        del self.nodes[node_id]

    async def leader(self, exclude: int | None = None) -> Node:
        """The running leader of the highest term other than ``exclude``, once there is
        one (membership mode: once a read barrier through it shows its no-op
        committed)."""
        while True:
            leaders = [n for n in self.nodes.values() if n.is_leader and n.id != exclude]
            if leaders:
                node = max(leaders, key=lambda n: n.status().term)
                if not self.membership:
                    return node
                try:
                    await node.read_barrier()  # its no-op is committed: changes may go
                except NotLeader:
                    continue
                return node
            await trio.sleep(0.01)


@asynccontextmanager
async def cluster(n: int = 3, config: Config = CONFIG, *, membership: bool = False,
                  storages: Mapping[int, MemoryStorage] | None = None,
                  machine: Callable[[], StateMachine] = Recorder,
                  node_options: Mapping[str, Any] | None = None) -> AsyncIterator[Cluster]:
    """A :class:`Cluster` with members ``1..n`` started (with ``membership=True``,
    bootstrapped with all of them as voters) with ``node_options`` for ``open_node``;
    everything is cancelled on exit."""
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, n, config, membership=membership, storages=storages,
                    machine=machine)
        first = {"bootstrap": initial(*c.ids)} if c.membership else {}
        for node_id in c.ids:
            await c.start(node_id, **first, **(node_options or {}))
        yield c
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def gated_cluster(clock: trio.testing.MockClock
                        ) -> AsyncIterator[tuple[Cluster, dict[int, GatedStorage], Node]]:
    """Three members on :class:`GatedStorage` disks and their leader, once it has
    committed ``b"before"`` at index 1; yields the cluster, the disks and the leader.

    Virtual time jumps once the loop has been idle for 5 ms of real time (``clock``'s
    autojump threshold), so a normal save in its worker thread (well under a
    millisecond) sees no jump, and a hung one sees virtual time run on."""
    clock.autojump_threshold = 0.005
    disks = {i: GatedStorage() for i in (1, 2, 3)}
    async with cluster(storages=disks, node_options={"inline_save_budget": 0}) as c:
        with trio.fail_after(10):
            leader = await c.leader()
            assert await leader.apply(b"before") == 1
        yield c, disks, leader
