"""Run one Raft node under Trio: the driver task that owns the sans-I/O core.

One task (the *driver*) feeds the :class:`~raftpy.node.RaftNode` its local
requests (proposals, reads, transfers) and timers: it waits for the next request
but never past ``node.next_deadline()``: timers come straight from
``trio.current_time()``, with no fixed tick. Wire messages run to completion: the
transport task that decoded one steps the core with it (``Node._deliver``), with
no hand-over to the driver. After each step the node's
:class:`~raftpy.ready.Ready` batches are drained and what may leave at once is sent.
A batch that must be persisted goes to the *disk task*, which writes batches in
order (in a worker thread) and then finishes each: sends what had to wait for the
persist, restores a received snapshot, applies committed entries, resolves the
callers waiting on them, advances; batches that queued up during a write are
written together by the next one (group commit). The driver meanwhile goes on
handling requests and timers, so a slow fsync (hundreds of milliseconds happen on
virtual disks) never stops a leader's heartbeats. With in-memory storage batches finish inline.

Everything runs in a nursery owned by :func:`open_node`; leaving the ``async
with`` block cancels and joins every task, closes the listeners and closes the
storage.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, Protocol

import trio

from raftpy.config import Config
from raftpy.errors import (
    InvalidTransferTarget,
    LeadershipTransferInProgress,
    NodeClosed,
    NotLeader,
    TransferFailed,
)
from raftpy.logfmt import core_trace, log_context
from raftpy.membership import Configuration
from raftpy.messages import Entry, EntryKind, Message
from raftpy.metrics import NodeMetrics
from raftpy.node import RaftNode
from raftpy.ready import (
    HardState,
    LeaderChanged,
    ReadIndexFailed,
    ReadIndexReady,
    Ready,
    Role,
    SnapshotMeta,
    TransferEnded,
)
from raftpy.roles import RoleTargets
from raftpy.statemachine import StateMachine as StateMachine  # re-exported: its old home
from raftpy.storage.base import Storage
from raftpy.storage.memory import MemoryStorage
from raftpy.trio.autoroles import AutoRoles, run_auto_roles
from raftpy.trio.framing import FramedStream
from raftpy.trio.inlinesaves import DEFAULT_BUDGET as DEFAULT_INLINE_BUDGET
from raftpy.trio.inlinesaves import InlineSaves
from raftpy.trio.membership import MembershipCalls, _Change, prepare_storage
from raftpy.trio.observe import DEFAULT_BUFFER, EventStream, RuntimeObserver
from raftpy.trio.peerloss import PeerLossDetector

logger = logging.getLogger("raftpy.runtime")

_BARRIER = b""
"""The command of a read barrier: empty commands never reach the state machine."""

_MAX_BATCH = 256
"""Most inputs handled per driver round (one round, one fsync)."""

_MAX_ROUND_COMMANDS = 1024
"""Commands (``apply_many`` batches count each of theirs) beyond which the driver
stops taking more requests in a round: a round runs without yielding, and tens of
thousands of proposals in one would hold the event loop past an election timeout."""

_MAX_DISK_BACKLOG = 64
"""Batches waiting for the disk beyond which the driver stops taking local requests
(messages and timers are still handled)."""


class MessageTransport(Protocol):
    """What the runtime needs from a transport (:class:`raftpy.trio.transport.Transport`
    or a test double)."""

    @property
    def incoming(self) -> trio.MemoryReceiveChannel[Message]:
        """Messages received from peers, already decoded and validated."""
        ...

    def send(self, msg: Message) -> None:
        """Queue ``msg`` for ``msg.dst``; never blocks (drops when the queue is full)."""
        ...

    async def run(
        self,
        listeners: list[trio.abc.Listener[Any]] | None = None,
        *,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve and connect until cancelled."""
        ...


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """What this node knows about one other member."""

    node_id: int
    address: str | None
    match_index: int | None
    """Highest log index known replicated on the peer (``None`` unless this node leads)."""
    last_contact: float | None
    """Seconds since a message from the peer arrived (``None``: never)."""


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """A frozen snapshot of a running node, as returned by :meth:`Node.status`."""

    node_id: int
    role: Role
    term: int
    leader_id: int | None
    leader_address: str | None
    commit_index: int
    applied_index: int
    last_log_index: int
    transfer_target: int | None
    peers: tuple[PeerStatus, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (str keys, ints, strings, None), e.g. for JSON or msgpack."""
        return {
            "node_id": self.node_id, "role": self.role.value, "term": self.term,
            "leader_id": self.leader_id, "leader_address": self.leader_address,
            "commit_index": self.commit_index, "applied_index": self.applied_index,
            "last_log_index": self.last_log_index, "transfer_target": self.transfer_target,
            "peers": [{"node_id": p.node_id, "address": p.address,
                       "match_index": p.match_index, "last_contact": p.last_contact}
                      for p in self.peers],
        }


class _Reply:
    """Where the driver leaves the outcome of one local request; one caller waits.

    Parks the caller with Trio's low-level primitives rather than a ``trio.Event``:
    one of these is made per write, and with thousands of writes in flight the
    Event's parking lot was a measurable share of the leader's time.
    """

    __slots__ = ("_waiter", "done", "error", "followers", "value")

    def __init__(self, followers: Sequence[_Reply] = ()) -> None:
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None
        self.followers = followers
        """Replies resolved together with this one (readers sharing a barrier)."""
        self._waiter: trio.lowlevel.Task | None = None

    def resolve(self, value: Any) -> None:
        if not self.done:
            self.value = value
            self._finish()
        for follower in self.followers:
            follower.resolve(value)

    def fail(self, error: BaseException) -> None:
        if not self.done:
            self.error = error
            self._finish()
        for follower in self.followers:
            follower.fail(error)

    def _finish(self) -> None:
        self.done = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            trio.lowlevel.reschedule(waiter)

    def _abort(self, _: Any) -> trio.lowlevel.Abort:
        self._waiter = None  # the caller was cancelled; the outcome is dropped
        return trio.lowlevel.Abort.SUCCEEDED

    async def wait(self) -> Any:
        if self.done:
            await trio.lowlevel.checkpoint()
        else:
            self._waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort)
        if self.error is not None:
            raise self.error
        return self.value


class _BatchReply(_Reply):
    """The outcome of one :meth:`Node.apply_many`: one result per command, the caller
    woken once, when the last of them is settled."""

    __slots__ = ("remaining", "results")

    def __init__(self, count: int) -> None:
        super().__init__()
        self.results: list[Any] = [None] * count
        self.remaining = count

    def settle(self, position: int, value: Any) -> None:
        if self.done:
            return
        if isinstance(value, NodeClosed):
            self.fail(value)
            return
        self.results[position] = value
        self.remaining -= 1
        if not self.remaining:
            self.resolve(self.results)


class _Slot:
    """One command of an :meth:`Node.apply_many` batch, waiting at its log index."""

    __slots__ = ("batch", "position")

    def __init__(self, batch: _BatchReply, position: int) -> None:
        self.batch = batch
        self.position = position

    def resolve(self, value: Any) -> None:
        self.batch.settle(self.position, value)

    def fail(self, error: BaseException) -> None:
        self.batch.settle(self.position, error)


_Waiter = _Reply | _Slot
"""Who waits for one proposed entry."""


@dataclass(frozen=True, slots=True)
class _Propose:
    command: bytes
    reply: _Reply


@dataclass(frozen=True, slots=True)
class _ProposeMany:
    commands: Sequence[bytes]
    reply: _BatchReply


@dataclass(frozen=True, slots=True)
class _Barrier:
    reply: _Reply
    mode: ReadMode = "index"


@dataclass(frozen=True, slots=True)
class _Transfer:
    target: int | None
    reply: _Reply


ReadMode = Literal["index", "log"]
"""How :meth:`Node.read_barrier` confirms a read: ``"index"`` (ReadIndex, Raft
§6.4: one round of heartbeats, no log write; followers ask their leader) or
``"log"`` (commit a marker entry through the leader)."""

_WAKE = None
"""The inbox token that tells the driver wire messages are waiting."""


class _WireQueue:
    """Wire messages waiting for the driver, who takes them ahead of local requests.

    They wait here, not in the inbox: with thousands of callers blocked on a full
    inbox, a peer's acknowledgement queued behind them would be handled only after
    all of them, and the leader would stall (or fail its check-quorum) with
    proposals piling up. The TCP transport's reading tasks put messages here
    directly (it is their ``sink``): no task sits in between, so a message costs
    no extra task switch on its way to the driver. ``wake`` tells the driver.
    """

    def __init__(self, limit: int) -> None:
        self.messages: deque[Message] = deque()
        self.wake: Callable[[], None] = lambda: None
        self.deliver: Callable[[Message], None] | None = None
        """Run to completion: set by the running node, steps the core at once in
        the task that received the message (``None``: queue for the driver)."""
        self._limit = limit
        self._room = trio.Event()
        self._closed = False

    def send_nowait(self, msg: Message) -> None:
        if self._closed:
            raise trio.ClosedResourceError
        deliver = self.deliver
        if deliver is not None and not self.messages:
            deliver(msg)
            return
        if len(self.messages) >= self._limit:
            raise trio.WouldBlock
        self.messages.append(msg)
        self.wake()

    async def send(self, msg: Message) -> None:
        while len(self.messages) >= self._limit and not self._closed:
            # Back-pressure: the reader stops reading, and TCP pushes back on the peer.
            self._room = trio.Event()
            await self._room.wait()
        self.send_nowait(msg)

    def take_all(self) -> deque[Message]:
        messages, self.messages = self.messages, deque()
        self._room.set()
        return messages

    def close(self) -> None:
        self._closed = True
        self._room.set()

_Input = _Propose | _ProposeMany | _Barrier | _Transfer | _Change | None


@dataclass(frozen=True, slots=True)
class _Compaction:
    """A snapshot taken locally, queued for the disk task behind earlier batches."""

    meta: SnapshotMeta
    data: bytes


_MAX_GROUP = 1024
"""Most batches the disk task writes with one ``save`` (group commit)."""


def _merge_batches(group: Sequence[Ready]) -> tuple[HardState | None, Sequence[Entry]]:
    """The state that persisting ``group`` in order leaves: the last hard state, and
    the entries, a later batch's replacing an earlier one's from its first index on
    (as :meth:`~raftpy.storage.base.Storage.save` does)."""
    if len(group) == 1:
        return group[0].hard_state, group[0].entries
    hard_state: HardState | None = None
    entries: list[Entry] = []
    for ready in group:
        if ready.hard_state is not None:
            hard_state = ready.hard_state
        if ready.entries:
            first = ready.entries[0].index
            if entries and first <= entries[-1].index:
                del entries[max(0, first - entries[0].index):]
            entries.extend(ready.entries)
    return hard_state, entries


def _timed(fn: Callable[..., Any], *args: Any) -> float:
    """Call ``fn``; the seconds it took (in a worker thread: thread switches aside)."""
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def format_address(address: Any) -> str:
    """``host:port`` for a ``(host, port)`` pair or anything with ``host``/``port``."""
    if isinstance(address, str):
        return address
    if isinstance(address, tuple):
        return f"{address[0]}:{address[1]}"
    return f"{address.host}:{address.port}"


def parse_address(text: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6); raises ``ValueError``."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


class Node(MembershipCalls):
    """A running Raft member; get one from :func:`open_node`.

    The coroutine methods may be called from any task; each is handed to the
    driver task, which feeds the protocol core. The membership calls
    (:meth:`add_member`, :meth:`assign_role`, :meth:`remove_member`,
    :meth:`members`) live in :mod:`raftpy.trio.membership`.
    """

    def __init__(
        self,
        raft: RaftNode,
        *,
        transport: MessageTransport,
        storage: Storage,
        state_machine: StateMachine,
        addresses: Mapping[int, str],
        snapshot: tuple[SnapshotMeta, bytes] | None,
        inbox_size: int,
        wire: _WireQueue | None = None,
        inline_saves: InlineSaves | None = None,
    ) -> None:
        self.id = raft.id
        self._raft = raft
        self._transport = transport
        self._storage = storage
        self._sm = state_machine
        self._addresses = dict(addresses)
        self._snapshot = snapshot
        self._applied = raft.applied_index
        self._inbox_send, self._inbox = trio.open_memory_channel[_Input](inbox_size)
        self._wire = wire if wire is not None else _WireQueue(inbox_size)
        self._wire.wake = self._wake
        self._wake_pending = False
        self._sleep_until = float("inf")
        self._failure: BaseException | None = None
        """What failed while a receiving task stepped the core (the driver raises it)."""
        """When the driver's current wait ends (a message stepped in a reading task
        that moves the core's deadline earlier wakes it)."""
        self._waiting: dict[int, list[tuple[int, _Waiter]]] = {}
        self._reads: dict[int, list[_Reply]] = {}
        """ReadIndex requests of the core -> the readers waiting for their answer."""
        self._read_ids = itertools.count(1)
        self._transfer_reply: tuple[int, _Reply] | None = None
        self._last_contact: dict[int, float] = {}
        self._changed = trio.Event()
        self._closed = False
        self._inline_io = type(storage) is MemoryStorage
        self._inline_saves = inline_saves if inline_saves is not None else InlineSaves()
        """Whether a save of another storage may run on the event loop (see
        :mod:`raftpy.trio.inlinesaves`)."""
        self._disk_send, self._disk_jobs = trio.open_memory_channel[Ready | _Compaction](
            float("inf"))
        self._disk_pending = 0
        """Jobs queued for the disk task or being written (bounded by the driver)."""
        self._queued_commit_top = 0
        """The last committed entry a batch queued for the disk task carried (applied
        when it is finished, unless a leader applied it earlier: :meth:`_apply_early`)."""
        self._queued_snapshots = 0
        """Snapshots queued for the disk task (restored when finished)."""
        self._disk_progress = trio.Event()
        self._compacting = False
        self.listen_addresses: list[tuple[str, int]] = []
        """The ``(host, port)`` pairs this node listens on (filled in once running)."""
        self.client_listen_addresses: list[tuple[str, int]] = []
        """Where clients connect when they have listeners of their own (``client_listen``)."""
        raft.set_snapshot_source(lambda: self._snapshot)
        self._init_membership(addresses)
        self._observer = RuntimeObserver(self.id, raft)
        health = getattr(transport, "peer_health", None)
        if health is not None:
            health.listeners.append(self._observer.peer_reachability)

    # ------------------------------------------------------------------ public API

    @property
    def leader_id(self) -> int | None:
        """The leader this node knows of, if any."""
        return self._raft.leader_id

    @property
    def term(self) -> int:
        """The current term, as this node knows it."""
        return self._raft.current_term

    @property
    def is_leader(self) -> bool:
        """Whether this node is the leader (as far as it knows)."""
        return self._raft.role is Role.LEADER

    def address_of(self, node_id: int | None) -> str | None:
        """The configured ``host:port`` of a member (``None`` if unknown)."""
        return None if node_id is None else self._addresses.get(node_id)

    async def apply(self, command: bytes) -> Any:
        """Replicate ``command``; once committed, return what the state machine's
        ``apply`` returned for it on this node (or raise what it raised).

        Raises :class:`NotLeader` (with the leader's id and address when known) if
        this node does not lead, or if the proposal was overwritten by another
        leader's entry (it did not commit); :class:`LeadershipTransferInProgress`
        while handing over. If the caller is cancelled, the command may still commit.
        """
        if not isinstance(command, bytes) or not command:
            raise ValueError("a command must be non-empty bytes (empty ones mark read barriers)")
        reply = _Reply()
        await self._submit(_Propose(command, reply))
        return await reply.wait()

    async def apply_many(self, commands: Sequence[bytes]) -> list[Any]:
        """Replicate several commands with one call (one request to the driver, one
        wake-up of the caller): a pipelined client needs no task per write.

        Returns, in order, for each command what :meth:`apply` would have returned,
        or the exception it would have raised (the state machine's error, or
        :class:`NotLeader` for a command that was proposed but overwritten by
        another leader's entry: it did not commit). Raises :class:`NotLeader` or
        :class:`LeadershipTransferInProgress` if none was proposed, and
        :class:`NodeClosed` at shutdown. The commands are appended to the log in
        order, contiguously; if the caller is cancelled, they may still commit.
        """
        commands = list(commands)
        for command in commands:
            if not isinstance(command, bytes) or not command:
                raise ValueError("a command must be non-empty bytes "
                                 "(empty ones mark read barriers)")
        if not commands:
            await trio.lowlevel.checkpoint()
            return []
        reply = _BatchReply(len(commands))
        await self._submit(_ProposeMany(commands, reply))
        results: list[Any] = await reply.wait()
        return results

    async def read_barrier(self, mode: ReadMode = "index") -> None:
        """Return once the local state machine reflects every write that committed
        before the call (a linearizable read may then read it directly).

        ``mode="index"`` (the default) uses ReadIndex: the leader confirms it still
        leads with one round of heartbeats and no log write, and a follower asks
        its leader for the index, then waits until it has applied it, so reads can
        be served by any member. ``mode="log"`` commits a marker entry through the
        leader instead (the leader only). Concurrent callers share one round or
        one marker. Raises :class:`NotLeader` (no leader known, or leadership
        changed before the read was confirmed) or :class:`NodeClosed`.
        """
        reply = _Reply()
        await self._submit(_Barrier(reply, mode))
        index = await reply.wait()
        if mode == "index":
            await self.wait_applied(index)

    async def transfer_leadership(self, target: int | None = None) -> int:
        """Hand leadership to ``target`` (``None``: the most up-to-date voter) and
        return the new leader's id once it is known.

        Raises :class:`TransferFailed` if the target did not take over in time,
        :class:`NotLeader`, :class:`InvalidTransferTarget` or
        :class:`LeadershipTransferInProgress`.
        """
        reply = _Reply()
        await self._submit(_Transfer(target, reply))
        leader: int = await reply.wait()
        return leader

    async def wait_leader(self) -> int:
        """Wait until a leader is known (to this node) and return its id."""
        while True:
            leader = self._raft.leader_id
            if leader is not None:
                return leader
            await self._wait_changed()

    async def wait_applied(self, index: int) -> None:
        """Wait until the state machine has applied ``index``."""
        while self._applied < index:
            await self._wait_changed()

    async def wait_changed(self) -> None:
        """Wait for the next change of known leader or applied index (or a
        transfer's end); then read :meth:`status`. Raises :class:`NodeClosed` at shutdown."""
        await self._wait_changed()

    def status(self) -> NodeStatus:
        """Role, term, leader, indexes and what this node knows of each peer."""
        raft = self._raft
        now = trio.current_time()
        peers = []
        for peer in sorted((raft.voters | raft.learners) - {self.id}):
            pr = raft.progress.get(peer)
            seen = self._last_contact.get(peer)
            peers.append(PeerStatus(
                node_id=peer, address=self._addresses.get(peer),
                match_index=pr.match_index if pr is not None else None,
                last_contact=None if seen is None else max(0.0, now - seen)))
        return NodeStatus(
            node_id=self.id, role=raft.role, term=raft.current_term, leader_id=raft.leader_id,
            leader_address=self.address_of(raft.leader_id), commit_index=raft.commit_index,
            applied_index=self._applied, last_log_index=raft.log.last_index,
            transfer_target=raft.transfer_target, peers=tuple(peers))

    def metrics(self) -> NodeMetrics:
        """Counters, latency histograms and state of this node (``docs/observability.md``)."""
        return self._observer.metrics(
            self._raft, applied_index=self._applied, last_contact=self._last_contact,
            transport_stats=getattr(self._transport, "stats", None))

    def observe(self, buffer: int = DEFAULT_BUFFER) -> AbstractAsyncContextManager[EventStream]:
        """Subscribe to this node's events: ``async with node.observe() as events:
        async for event in events: ...`` (:mod:`raftpy.trio.observe`). At most
        ``buffer`` events wait for the reader; then the oldest are dropped (and
        counted). Iteration ends when the node stops."""
        return self._observer.observe(buffer)

    # ------------------------------------------------------------------ plumbing

    async def _submit(self, item: _Input) -> None:
        if self._closed:
            raise NodeClosed(self.id)
        try:
            # Without a scheduler round trip when there is room: the caller checkpoints
            # in ``_Reply.wait`` anyway, and a blocking send yields twice per request.
            try:
                self._inbox_send.send_nowait(item)
            except trio.WouldBlock:
                await self._inbox_send.send(item)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise NodeClosed(self.id) from None

    async def _wait_changed(self) -> None:
        if self._closed:
            raise NodeClosed(self.id)
        await self._changed.wait()
        if self._closed:
            raise NodeClosed(self.id)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _not_leader(self) -> NotLeader:
        leader = self._raft.leader_id
        if leader == self.id:
            leader = None
        return NotLeader(self.id, leader, leader_address=self.address_of(leader))

    async def _io(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run blocking storage work off the event loop. Memory storage never blocks,
        and running it inline keeps virtual-time tests (MockClock) from jumping the
        clock while a worker thread runs."""
        if self._inline_io:
            return fn(*args)
        return await trio.to_thread.run_sync(fn, *args)

    def _peer_lost(self, peer: int, lost_at: float | None = None) -> None:
        """The transport lost every connection to ``peer`` (the last one at
        ``lost_at``) and could not reconnect (early pre-vote,
        :mod:`raftpy.failover`). Like the disk task, this steps the core between
        awaits and wakes the driver to send what it produced."""
        if self._closed or self._failure is not None:
            return
        try:
            if self._raft.leader_connection_lost(peer, trio.current_time(),
                                               lost_at=lost_at):
                logger.info("node %d: lost every connection to leader %d: early pre-vote",
                            self.id, peer)
        except BaseException as exc:
            # The transport's task calling this would only log it: the node fails.
            self._fail(exc)
            return
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        """The core failed in a task other than the driver's: stop every other
        task from stepping it (a half-updated core could acknowledge entries it
        never handed to the disk) and let the driver raise ``exc``."""
        if self._failure is None:
            self._failure = exc
        self._wire.deliver = None
        self._wire.close()  # every reader stops at its next message
        self._wake()

    def _wake(self) -> None:
        """Tell the driver to run a round: wire messages wait, or the disk task changed
        the core's state (one token per round; if the inbox is full the driver is busy
        and runs rounds anyway)."""
        if not self._wake_pending:
            try:
                self._inbox_send.send_nowait(_WAKE)
                self._wake_pending = True
            except (trio.WouldBlock, trio.ClosedResourceError):
                pass

    async def _pump(self, incoming: trio.MemoryReceiveChannel[Message]) -> None:
        """Move messages from a transport without a ``sink`` to the wire queue."""
        async for msg in incoming:
            try:
                try:
                    self._wire.send_nowait(msg)
                except trio.WouldBlock:
                    await self._wire.send(msg)
            except trio.ClosedResourceError:
                return  # the node failed (the driver raises why) or is closing

    async def _drive(self) -> None:
        """The driver task: feeds the core its inputs and timers (the disk task only
        finishes persisted batches; both call the core between awaits, never across)."""
        raft = self._raft
        inbox = self._inbox
        # A restarted node may hold committed-looking state to hand out at once.
        self._drain_ready()
        # Run to completion from here on: the task that receives a message steps
        # the core with it (``_deliver``) instead of handing it to this task.
        self._wire.deliver = self._deliver
        try:
            await self._drive_rounds(raft, inbox)
        finally:
            self._wire.deliver = None

    async def _drive_rounds(self, raft: RaftNode,
                            inbox: trio.MemoryReceiveChannel[_Input]) -> None:
        while True:
            batch: list[_Input] = []
            if self._disk_pending > _MAX_DISK_BACKLOG:
                # Back-pressure: local requests wait in the inbox until the disk
                # catches up; wire messages and timers go on (see below).
                self._sleep_until = min(raft.next_deadline(), trio.current_time() + 0.005)
                with trio.move_on_at(self._sleep_until):
                    await self._disk_progress.wait()
            else:
                if not self._wire.messages:
                    self._sleep_until = raft.next_deadline()
                    with trio.move_on_at(self._sleep_until):
                        batch.append(await inbox.receive())
                taken = sum(len(i.commands) if isinstance(i, _ProposeMany) else 1
                            for i in batch)
                while len(batch) < _MAX_BATCH and taken < _MAX_ROUND_COMMANDS:
                    try:
                        item = inbox.receive_nowait()
                    except trio.WouldBlock:
                        break
                    batch.append(item)
                    taken += len(item.commands) if isinstance(item, _ProposeMany) else 1
            # Whatever woke us is looked at in this round; a later wake sends a new
            # token (one left deep in a full inbox is harmless: tokens are skipped).
            self._wake_pending = False
            if self._failure is not None:
                raise self._failure
            now = trio.current_time()
            if self._wire.messages:
                last_contact = self._last_contact
                for msg in self._wire.take_all():
                    last_contact[msg.src] = now
                    raft.step(msg, now)
            commands: list[bytes] = []
            replies: list[_Waiter] = []
            barrier_replies: list[_Reply] = []
            index_readers: list[_Reply] = []
            for item in batch:
                if isinstance(item, _Propose):
                    commands.append(item.command)
                    replies.append(item.reply)
                elif isinstance(item, _ProposeMany):
                    batch_reply = item.reply
                    commands.extend(item.commands)
                    replies.extend(_Slot(batch_reply, k) for k in range(len(item.commands)))
                elif isinstance(item, _Barrier):
                    (index_readers if item.mode == "index" else barrier_replies).append(
                        item.reply)
                elif isinstance(item, _Transfer):
                    self._start_transfer(item, now)
                elif isinstance(item, _Change):
                    self._start_change(item, now)
            if barrier_replies:
                # One barrier serves every reader of this round: each asked before it
                # was proposed, which is what makes the read linearizable.
                commands.append(_BARRIER)
                replies.append(_Reply(followers=barrier_replies))
            if commands:
                self._propose(commands, replies, now)
            if index_readers:
                self._read_index(index_readers, now)
            if now >= raft.next_deadline():
                raft.tick(now)
            self._drain_ready()

    def _deliver(self, msg: Message) -> None:
        """Run to completion: step the core with a message in the task that received
        it and hand out what it produced (no hand-over to the driver task). The
        disk task still persists and finishes batches in their order."""
        if self._failure is not None:
            raise trio.ClosedResourceError("the node failed")
        raft = self._raft
        now = trio.current_time()
        self._last_contact[msg.src] = now
        try:
            raft.step(msg, now)
            self._drain_ready()
        except BaseException as exc:
            # A failure here (a broken invariant, the state machine's restore failing)
            # is the node's, not the connection's: the driver re-raises it, which
            # takes the node down as it did when the driver stepped every message.
            self._fail(exc)
            raise trio.ClosedResourceError("the node failed") from exc
        if raft.next_deadline() < self._sleep_until:
            self._wake()  # e.g. a candidate that won: its heartbeats are due sooner

    def _read_index(self, readers: list[_Reply], now: float) -> None:
        """One ReadIndex request for every reader of this round."""
        request_id = next(self._read_ids)
        try:
            self._raft.read_index(request_id, now)
        except NotLeader:
            error = self._not_leader()
            for reply in readers:
                reply.fail(error)
            return
        self._reads[request_id] = readers

    def _end_read(self, event: ReadIndexReady | ReadIndexFailed) -> None:
        for reply in self._reads.pop(event.request_id, ()):
            if isinstance(event, ReadIndexReady):
                reply.resolve(event.read_index)
            else:
                leader = event.leader_id if event.leader_id != self.id else None
                reply.fail(NotLeader(self.id, leader, leader_address=self.address_of(leader)))

    def _propose(self, commands: list[bytes], replies: list[_Waiter], now: float) -> None:
        raft = self._raft
        try:
            positions = raft.propose_many(commands, now)
        except NotLeader:
            error: BaseException = self._not_leader()
        except LeadershipTransferInProgress as exc:
            error = exc
        else:
            for pos, reply in zip(positions, replies, strict=True):
                self._waiting.setdefault(pos.index, []).append((pos.term, reply))
            self._observer.proposed(positions[-1].index, len(positions), now)
            return
        for reply in replies:
            # A batch none of whose commands was proposed fails as a whole.
            (reply.batch if isinstance(reply, _Slot) else reply).fail(error)

    def _start_transfer(self, item: _Transfer, now: float) -> None:
        try:
            target = self._raft.transfer_leadership(item.target, now)
        except NotLeader:
            item.reply.fail(self._not_leader())
        except (LeadershipTransferInProgress, InvalidTransferTarget) as exc:
            item.reply.fail(exc)
        else:
            self._transfer_reply = (target, item.reply)

    def _drain_ready(self) -> None:
        """Hand out everything the core has: send at once what may go before the
        persist; finish the rest now, or queue it behind the batches the disk task
        has not finished (batches are finished in the order they were produced)."""
        raft = self._raft
        send = self._transport.send
        while raft.has_ready():
            ready = raft.ready()
            self._observer.drained(raft, ready)
            if ready.entries and self._waiting:
                self._fail_replaced(ready.entries)
            if ready.events:
                self._membership_events(ready.events)
                if any(isinstance(event, LeaderChanged) for event in ready.events):
                    # Wake whoever waits for a leader now, not after this batch's
                    # save: a new leader's batch (its no-op) goes to the disk thread,
                    # and the requests its candidacy held would wait for that save
                    # instead of going out right behind the no-op.
                    self._notify()
            for msg in ready.messages:
                send(msg)
            if ready.committed and self._raft.role is Role.LEADER:
                self._apply_early(ready)
            if self._disk_pending or (ready.must_persist() and not self._save_here(ready)):
                self._disk_pending += 1
                if ready.committed:
                    self._queued_commit_top = ready.committed[-1].index
                self._queued_snapshots += ready.snapshot is not None
                self._disk_send.send_nowait(ready)
                continue
            self._finish(ready)
        self._maybe_snapshot()

    def _apply_early(self, ready: Ready) -> None:
        """A leader applies committed entries (and answers their callers) at once,
        not after its own save of the batch: they are durable on a majority already,
        since the core counts the leader's log only up to what its disk holds
        (``Ready`` step 3 allows it). In the disk thread that save takes longer than
        a follower's round trip on a loaded machine, and it would be added to every
        write, a new leader's first ones included. Never ahead of a queued batch
        that still has entries to apply or a snapshot to restore: order matters."""
        if self._queued_snapshots or self._applied < self._queued_commit_top:
            return
        if self._apply_committed(ready):
            self._notify()

    def _apply_committed(self, ready: Ready) -> bool:
        """Apply ``ready``'s committed entries that are not applied yet, in order;
        whether there were any."""
        committed = ready.committed
        if not committed or committed[-1].index <= self._applied:
            return False
        started = trio.current_time()
        for entry in committed[max(0, self._applied + 1 - committed[0].index):]:
            self._apply(entry)
        self._observer.applied(ready, started)
        return True

    def _save_here(self, ready: Ready) -> bool:
        """Persist ``ready`` on the event loop if it may be (nothing is queued for the
        disk task); whether it was. Otherwise it goes to the disk task's thread."""
        if self._inline_io:  # in-memory storage: nothing blocks
            self._storage.save(ready.hard_state, ready.entries, ready.snapshot)
            return True
        if self._raft.role is Role.LEADER or not self._inline_saves.allows(ready):
            # A leader always saves in the thread, so that a disk that hangs cannot
            # stop its heartbeats.
            return False
        # A follower's or candidate's small save on a fast disk: cheaper here than a
        # thread's round trip.
        try:
            took = _timed(self._storage.save, ready.hard_state, ready.entries, ready.snapshot)
        except BaseException as exc:
            # (Also when the disk task drains after a write: stop every reader from
            # stepping a core whose batch never reached the disk.)
            self._fail(exc)
            raise
        self._inline_saves.record(took)
        self._observer.persisted(took)
        return True

    async def _write_to_disk(self) -> None:
        """The disk task: persists queued batches in order, then finishes them.

        Group commit: the batches that queued up while the previous write ran go
        out together, in one ``save`` (one write, one fsync), and are then finished
        one by one in their order, so nothing a batch holds back (votes,
        acknowledgements) leaves before its own state is durable."""
        jobs = self._disk_jobs
        carried: Ready | _Compaction | None = None
        while True:
            if carried is not None:
                job, carried = carried, None
            else:
                try:
                    job = await jobs.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    return
            group: list[Ready] = []
            if isinstance(job, _Compaction):
                if self._snapshot is None or self._snapshot[0].index < job.meta.index:
                    # (a snapshot installed by an earlier batch may have overtaken it)
                    await self._io(self._storage.compact, job.meta, job.data)
            else:
                group.append(job)
                while job.snapshot is None and len(group) < _MAX_GROUP:
                    try:
                        more = jobs.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                        break
                    if isinstance(more, _Compaction) or more.snapshot is not None:
                        carried = more  # written on its own, after this group
                        break
                    group.append(more)
                hard_state, entries = _merge_batches(group)
                if hard_state is not None or entries or job.snapshot is not None:
                    started = trio.current_time()
                    took = await self._io(_timed, self._storage.save, hard_state, entries,
                                          job.snapshot)
                    self._inline_saves.record(took)
                    self._observer.persisted(trio.current_time() - started)
            if isinstance(job, _Compaction):
                self._disk_pending -= 1
                self._compacted(job)
            if self._failure is not None:
                return  # the driver raises it; nothing more leaves this node
            for ready in group:
                self._disk_pending -= 1
                self._queued_snapshots -= ready.snapshot is not None
                self._finish(ready)
            self._disk_progress.set()
            self._disk_progress = trio.Event()
            # Finishing may have given the core more to say (a leader commits once its
            # own entries are durable): hand it out now rather than at the next input,
            # and let the driver look at its timers again (they may have moved).
            self._drain_ready()
            self._wake()

    def _finish(self, ready: Ready) -> None:
        """The part of a batch that waits for its persist, then ``advance``."""
        send = self._transport.send
        for msg in ready.messages_after_persist:
            send(msg)
        if ready.snapshot is not None:
            meta, data = ready.snapshot
            self._sm.restore(data)
            self._snapshot = ready.snapshot
            self._applied = meta.index
            self._fail_waiting_through(meta.index)
            self._observer.snapshot_installed(meta)
        changed = self._apply_committed(ready)  # (unless applied early)
        changed |= ready.snapshot is not None
        for event in ready.events:
            changed = True
            if isinstance(event, TransferEnded):
                self._end_transfer(event)
            elif isinstance(event, ReadIndexReady | ReadIndexFailed):
                self._end_read(event)
            elif isinstance(event, LeaderChanged):
                logger.info("node %d: leader is %s (term %d)", self.id, event.leader_id,
                            event.term)
        self._raft.advance(ready, trio.current_time())
        if changed:
            self._notify()

    def _apply(self, entry: Entry) -> None:
        if entry.index != self._applied + 1:
            # Entries applied early (a leader's) and at a batch's finish must meet
            # exactly: a gap or a repeat would corrupt the state machine.
            raise AssertionError(f"node {self.id} applies entry {entry.index} after "
                                 f"{self._applied}")
        result: Any = None
        error: BaseException | None = None
        if entry.kind is EntryKind.COMMAND and entry.data != _BARRIER:
            try:
                result = self._sm.apply(entry.data)
            except Exception as exc:  # a deterministic rejection: every replica agrees
                logger.debug("node %d: entry %d raised %r", self.id, entry.index, exc)
                error = exc
        elif entry.kind is EntryKind.CONFIGURATION:
            result = entry.index  # what a membership call returns
        self._applied = entry.index
        for term, reply in self._waiting.pop(entry.index, ()):
            if term != entry.term:
                reply.fail(self._not_leader())
            elif error is not None:
                reply.fail(error)
            else:
                reply.resolve(result)

    def _fail_replaced(self, entries: list[Entry]) -> None:
        """Entries from ``entries[0].index`` on replace whatever the log held there:
        a caller waiting at such an index for another term's entry has lost its
        proposal (a newer leader overwrote it) and would otherwise wait forever."""
        first, last = entries[0].index, entries[-1].index
        for index in [i for i in self._waiting if i >= first]:
            term = entries[index - first].term if index <= last else None
            kept = [(t, reply) for t, reply in self._waiting[index] if t == term]
            for t, reply in self._waiting[index]:
                if t != term:
                    reply.fail(self._not_leader())
            if kept:
                self._waiting[index] = kept
            else:
                del self._waiting[index]

    def _fail_waiting_through(self, index: int) -> None:
        """A snapshot replaced the entries up to ``index``: their outcome is unknown
        here, so their callers hear "not leader" (this node lost leadership anyway)."""
        for waiting_index in [i for i in self._waiting if i <= index]:
            for _, reply in self._waiting.pop(waiting_index):
                reply.fail(self._not_leader())

    def _end_transfer(self, event: TransferEnded) -> None:
        pending = self._transfer_reply
        if pending is None or pending[0] != event.target:
            return
        self._transfer_reply = None
        logger.info("node %d: transfer to %d ended after %.1f ms: %s", self.id, event.target,
                    (event.ended_at - event.started_at) * 1000, event.reason)
        if event.succeeded and event.new_leader is not None:
            pending[1].resolve(event.new_leader)
        else:
            pending[1].fail(TransferFailed(event.target, event.reason, event.new_leader))

    def _maybe_snapshot(self) -> None:
        """Compact the log every ``snapshot_threshold`` applied entries (the write
        goes through the disk task, in order with the batches)."""
        raft = self._raft
        every = raft.config.snapshot_threshold
        if every is None or self._compacting:
            return
        last = self._snapshot[0].index if self._snapshot is not None else 0
        applied = self._applied
        if applied - last < every or applied > raft.log.persisted_index:
            return
        term = raft.log.term_at(applied)
        if term is None:
            return
        # The snapshot records the configuration in force at ``applied`` too.
        job = _Compaction(raft.snapshot_meta(applied), self._sm.snapshot())
        if self._inline_io and not self._disk_pending:
            self._storage.compact(job.meta, job.data)
            self._compacted(job)
            return
        self._compacting = True
        self._disk_pending += 1
        self._disk_send.send_nowait(job)

    def _compacted(self, job: _Compaction) -> None:
        self._compacting = False
        raft = self._raft
        if self._snapshot is not None and self._snapshot[0].index >= job.meta.index:
            return  # a newer snapshot was installed meanwhile
        self._snapshot = (job.meta, job.data)
        keep_from = max(job.meta.index - raft.config.snapshot_trailing, raft.log.snapshot_index)
        if keep_from > raft.log.snapshot_index:
            raft.compact(keep_from)
        self._observer.snapshot_taken(job.meta)
        logger.info("node %d: snapshot at index %d", self.id, job.meta.index)

    def _close(self) -> None:
        """Fail every pending request: the driver is gone."""
        self._closed = True
        error = NodeClosed(self.id)
        for waiting in self._waiting.values():
            for _, reply in waiting:
                reply.fail(error)
        self._waiting.clear()
        for readers in self._reads.values():
            for reply in readers:
                reply.fail(error)
        self._reads.clear()
        if self._transfer_reply is not None:
            self._transfer_reply[1].fail(error)
            self._transfer_reply = None
        self._fail_promotion(error)
        self._observer.close()
        # Wakes callers blocked on a full inbox (they get NodeClosed), then fails
        # the requests already queued.
        self._inbox_send.close()
        while True:
            try:
                item = self._inbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            if not isinstance(item, (_Propose, _ProposeMany, _Barrier, _Transfer, _Change)):
                continue
            item.reply.fail(error)
        self._changed.set()


ClientHandler = Callable[[Node, FramedStream], Awaitable[None]]
"""``open_node(client_handler=...)``: ``async def handler(node, stream)`` serves one
client connection (``stream`` a :class:`~raftpy.trio.framing.FramedStream`, ``node``
this member's :class:`Node`). The transport's own handler takes the stream only
(:data:`raftpy.trio.transport.ClientHandler`); ``open_node`` binds the node."""


async def _open_listeners(listen: str | Sequence[trio.abc.Listener[Any]] | None
                          ) -> list[trio.abc.Listener[Any]] | None:
    if listen is None:
        return None
    if isinstance(listen, str):
        host, port = parse_address(listen)
        return list(await trio.open_tcp_listeners(port, host=host))
    return list(listen)


def _listener_addresses(listeners: Sequence[trio.abc.Listener[Any]] | None
                        ) -> list[tuple[str, int]]:
    out = []
    for listener in listeners or ():
        sock = getattr(listener, "socket", None)
        if sock is None:
            sock = getattr(getattr(listener, "transport_listener", None), "socket", None)
        if sock is not None:
            name = sock.getsockname()
            out.append((str(name[0]), int(name[1])))
    return out


@asynccontextmanager
async def open_node(
    node_id: int,
    peers: Mapping[int, Any] | None = None,
    *,
    bootstrap: Configuration | None = None,
    join: bool = False,
    advertise: str | None = None,
    state_machine: StateMachine,
    storage: Storage | None = None,
    config: Config | None = None,
    listen: str | Sequence[trio.abc.Listener[Any]] | None = None,
    cluster_id: str = "raftpy",
    ssl_context: Any = None,
    client_ssl_context: Any = None,
    client_handler: ClientHandler | None = None,
    transport: MessageTransport | None = None,
    learners: Sequence[int] = (),
    rng: random.Random | None = None,
    inbox_size: int = 1024,
    voters: int | None = None,
    standbys: int = 0,
    auto_roles: AutoRoles | None = None,
    client_listen: str | Sequence[trio.abc.Listener[Any]] | None = None,
    join_handler: ClientHandler | None = None,
    inline_save_budget: float = DEFAULT_INLINE_BUDGET,
) -> AsyncIterator[Node]:
    """Run node ``node_id`` for the duration of the ``async with`` block.

    How the node learns its cluster (``docs/runtime.md``): with ``bootstrap``, a new
    cluster's first configuration is written once to empty storage; with
    ``join=True`` it starts empty and waits for a leader to add it; with neither,
    the storage must hold a configuration already (a restart). Whatever the
    arguments, a configuration in the storage's log or snapshot wins.

    On exit every task is cancelled and joined, the listeners are closed, pending
    callers get :class:`~raftpy.errors.NodeClosed` and ``storage.close()`` runs if
    it exists.

    :param node_id: this member's id, a positive integer unique in the cluster.
    :param peers: fixed mode (the mode of earlier versions): every *other* member's
        id mapped to its address (``"host:port"``, a ``(host, port)`` pair or a
        :class:`~raftpy.trio.transport.PeerAddress`); every member votes unless
        listed in ``learners``. Used only while the storage holds no configuration.
    :param bootstrap: a new cluster's first :class:`~raftpy.membership.Configuration`
        (every initial member with its address, this node included), written once
        to empty storage; the same configuration again is a no-op, another one or
        storage holding other state raises :class:`~raftpy.errors.StorageError`.
    :param join: start with empty storage, listen, and wait for a leader to add
        this node (``Node.add_member`` on the leader, or ``raftpy serve --join``).
    :param advertise: this node's ``"host:port"`` for its peers, sent in every
        hello (default: the first listener's address).
    :param state_machine: the replicated :class:`~raftpy.statemachine.StateMachine`
        (``apply``, ``snapshot``, ``restore``), called in log order.
    :param storage: any :class:`~raftpy.storage.base.Storage`; default
        :class:`~raftpy.storage.memory.MemoryStorage` (nothing survives a restart).
    :param config: timing, batching and snapshot settings
        (:class:`~raftpy.config.Config`; default ``Config()``). With
        ``Config(early_pre_vote=True)`` the TCP transport reports a peer whose every
        connection is gone and that refused one reconnect, and a follower that lost
        its leader so starts a pre-vote at once (:mod:`raftpy.failover`).
    :param listen: ``"host:port"`` or ready-made Trio listeners (pass listeners on
        port 0 to learn the ports first); ``None``: no listener.
    :param cluster_id: a name every member and client shares; connections from
        another cluster are refused at the handshake.
    :param ssl_context: TLS for accepted connections (members and clients).
    :param client_ssl_context: TLS for the connections this node dials.
    :param client_handler: ``async def handler(node, stream)`` serving one client
        connection on the member port (:data:`ClientHandler`).
    :param transport: replaces the TCP transport (tests inject an in-memory one).
    :param learners: fixed mode only: ids from ``peers`` that replicate without
        voting.
    :param rng: draws the election timeouts (default: a ``random.Random()`` seeded
        from the OS, so that nodes and restarts draw independent timeouts).
    :param inbox_size: bound of the local request queue and of the wire queue
        (callers and peers wait when it is full).
    :param voters: turns on automatic roles: while this node leads it keeps this
        many online voters (Dqlite's roles; :mod:`raftpy.trio.autoroles`). Give
        every member the same targets.
    :param standbys: with ``voters``: how many online standbys to keep.
    :param auto_roles: tunes automatic roles (:class:`~raftpy.trio.autoroles.AutoRoles`).
    :param client_listen: ``"host:port"`` or listeners giving clients listeners of
        their own: ``listen`` then admits peers only and ``client_listen`` clients
        only, so the two can be firewalled apart (``docs/security.md``).
    :param join_handler: serves nodes that join with a token
        (:mod:`raftpy.kv.joining`).
    :param inline_save_budget: seconds: while a follower's or candidate's recent
        saves took no longer, its small saves run on the event loop instead of a
        worker thread (faster elections and transfers on a loaded machine;
        :mod:`raftpy.trio.inlinesaves`). ``0``: every save in a worker thread.
        In-memory storage always saves inline.
    :raises ValueError: ``learners`` without ``peers``, or ``auto_roles`` without
        ``voters``.
    :raises raftpy.errors.ConfigError: neither ``bootstrap`` nor ``join`` on empty
        storage, or both.
    :return: the running :class:`Node`, as the ``async with`` target.
    """
    targets = None if voters is None else RoleTargets(voters=voters, standbys=standbys)
    if targets is None and auto_roles is not None:
        raise ValueError("auto_roles= tunes automatic roles: give voters= too")
    storage = storage if storage is not None else MemoryStorage()
    fixed = peers is not None
    peers = dict(peers) if peers is not None else {}
    if not fixed and learners:
        raise ValueError("learners= goes with a fixed peers= list; give roles in the "
                         "bootstrap configuration instead")
    addresses = {peer: format_address(addr) for peer, addr in peers.items()}
    if type(storage) is MemoryStorage:
        state, snapshot_data = prepare_storage(storage, node_id, bootstrap=bootstrap,
                                               join=join, fixed=fixed)
    else:
        state, snapshot_data = await trio.to_thread.run_sync(lambda: prepare_storage(
            storage, node_id, bootstrap=bootstrap, join=join, fixed=fixed))
    listeners = await _open_listeners(listen)
    client_listeners = await _open_listeners(client_listen)
    own_addresses = _listener_addresses(listeners)
    if advertise is None and own_addresses:
        advertise = format_address(own_addresses[0])
    if advertise is not None and fixed:
        addresses.setdefault(node_id, advertise)
    wire = _WireQueue(inbox_size)
    injected = transport is not None
    if transport is None:
        transport = _tcp_transport(node_id, cluster_id, peers, ssl_context, client_ssl_context,
                                   client_handler, lambda: node, wire, advertise, join_handler)
    # The core's default rng is seeded with the node id (reproducible simulations);
    # real processes need independent timers, or every restart of a node draws the
    # same election timeouts and elections lose their spread.
    if rng is None:
        rng = random.Random()
    if fixed:
        members = set(peers) | {node_id}
        raft = RaftNode(node_id, members - set(learners), learners=learners, config=config,
                        state=state, rng=rng, now=trio.current_time(), trace=core_trace())
    else:
        raft = RaftNode(node_id, configuration=Configuration(), config=config, state=state,
                        rng=rng, now=trio.current_time(), trace=core_trace())
    snapshot = None
    if state.snapshot is not None and snapshot_data is not None:
        state_machine.restore(snapshot_data)
        snapshot = (state.snapshot, snapshot_data)
    node = Node(raft, transport=transport, storage=storage, state_machine=state_machine,
                addresses=addresses, snapshot=snapshot, inbox_size=inbox_size, wire=wire,
                inline_saves=InlineSaves(inline_save_budget))
    node.listen_addresses = own_addresses
    node.client_listen_addresses = _listener_addresses(client_listeners)
    if raft.config.early_pre_vote and hasattr(transport, "peer_loss"):
        transport.peer_loss = PeerLossDetector(node._peer_lost, clock=trio.current_time)
    node._sync_transport()
    try:
        async with trio.open_nursery() as nursery:
            # The node's tasks log with node= and term= fields (raftpy.logfmt).
            with log_context(node_id, lambda: raft.current_term):
                if client_listeners is None:
                    await nursery.start(transport.run, listeners)
                else:
                    await nursery.start(partial(transport.run, listeners,  # type: ignore[call-arg]
                                                client_listeners=client_listeners))
                if injected:
                    nursery.start_soon(node._pump, transport.incoming)
                nursery.start_soon(node._write_to_disk)
                nursery.start_soon(node._drive)
                if targets is not None:
                    nursery.start_soon(run_auto_roles, node, targets,
                                       auto_roles or AutoRoles(), raft.config)
            try:
                yield node
            finally:
                nursery.cancel_scope.cancel()
    finally:
        node._close()
        with trio.CancelScope(shield=True):
            for listener in [*(listeners or ()), *(client_listeners or ())]:
                await listener.aclose()
            close = getattr(storage, "close", None)
            if callable(close):
                await trio.to_thread.run_sync(close)
        logger.info("node %d: stopped", node_id)


def _tcp_transport(node_id: int, cluster_id: str, peers: Mapping[int, Any], ssl_context: Any,
                   client_ssl_context: Any, client_handler: ClientHandler | None,
                   get_node: Callable[[], Node], sink: _WireQueue,
                   advertise: str | None,
                   join_handler: ClientHandler | None = None) -> MessageTransport:
    from raftpy.trio.transport import PeerAddress as peer_address
    from raftpy.trio.transport import Transport as transport_class

    def to_peer(addr: Any) -> Any:
        if isinstance(addr, peer_address):
            return addr
        host, port = parse_address(format_address(addr))
        return peer_address(host, port)

    handler = None
    if client_handler is not None:
        async def handler(framed: FramedStream) -> None:
            await client_handler(get_node(), framed)

    joins = None
    if join_handler is not None:
        async def joins(framed: Any) -> None:
            assert join_handler is not None
            await join_handler(get_node(), framed)

    transport: MessageTransport = transport_class(
        node_id, cluster_id, {peer: to_peer(addr) for peer, addr in peers.items()},
        ssl_context=ssl_context, client_ssl_context=client_ssl_context,
        client_handler=handler, sink=sink, advertise=advertise, join_handler=joins)
    return transport
