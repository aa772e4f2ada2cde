"""Linearizable reads without log writes: ReadIndex (Raft §6.4), on the leader and
through it on followers.

A read asked at time ``t`` must see every write committed before ``t``. The
leader answers with a *read index* once two things hold:

* it has committed an entry of its own term, so its commit index is at least
  every index committed before it was elected (leader completeness); reads asked
  earlier wait for that, and get the commit index of that moment;
* a majority of the voters answered an AppendEntries sent *after* the read was
  asked: no other leader can have been elected in a later term before those
  answers, so nothing can have committed beyond the leader's commit index.

Every AppendEntries carries the leader's current *read round* and every answer
echoes it. A read waits for round ``r + 1`` where ``r`` is the round in flight when
it arrives; a new round starts at once if none is in flight, else as soon as the
current one is confirmed, so reads that arrive together share one round of
heartbeats (and ordinary replication traffic confirms rounds too).

A follower asks the leader with a :class:`~raftpy.messages.ReadIndex` message
and serves the read once it has applied the index in the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from raftpy.errors import NotLeader
from raftpy.messages import AppendEntriesResponse, ReadIndex, ReadIndexResponse
from raftpy.nodestate import NodeState
from raftpy.ready import ReadIndexFailed, ReadIndexReady, Role


@dataclass(slots=True)
class PendingRead:
    """A read the leader is confirming: its own (``peer`` is None) or a follower's."""

    request_id: int
    round: int
    peer: int | None = None


class ReadsMixin(NodeState):
    """ReadIndex on the leader, and follower reads through it."""

    _read_round: int
    _read_acks: dict[int, int]
    _reads: list[PendingRead]
    _read_round_wanted: bool
    _remote_reads: dict[int, float]
    """A follower's reads sent to the leader: request id -> when it gives up."""
    _round_sent_at: dict[int, float]
    """Read round -> when this leader began it (for the lease)."""
    _lease_floor: int
    """The first round that may count for the lease."""

    # ------------------------------------------------------------------ API

    @property
    def lease_valid_until(self) -> float:
        """Until when this leader's lease lets it answer reads at once (``-inf``: no
        lease: not leader, lease reads off, a transfer pending or just ended, or no
        round acknowledged by a majority since)."""
        if (self.role is not Role.LEADER or not self.config.lease_reads
                or self._transfer is not None):
            return -float("inf")
        confirmed = self._read_confirmed_round()
        if confirmed < self._lease_floor:
            return -float("inf")
        sent = self._round_sent_at.get(confirmed)
        return -float("inf") if sent is None else sent + self.config.lease_duration

    def read_index(self, request_id: int, now: float) -> None:
        """Ask for a read index for read ``request_id`` (any int the driver picks,
        unique among its pending reads).

        The answer comes as a :class:`~raftpy.ready.ReadIndexReady` event (serve the
        read once ``read_index`` is applied) or :class:`~raftpy.ready.ReadIndexFailed`.
        A follower asks its leader. Raises :class:`NotLeader` when this node knows
        no leader to ask.
        """
        self._now = now
        if self.role is Role.LEADER:
            if now < self.lease_valid_until and \
                    self.log.term_at(self.commit_index) == self.current_term:
                # Raft §6.4.1: within the lease no other leader can have been elected.
                self._events.append(ReadIndexReady(request_id, self.commit_index))
                return
            self._add_read(PendingRead(request_id, self._read_round + 1))
            return
        if self.role is not Role.FOLLOWER or self.leader_id is None:
            raise NotLeader(self.id, self.leader_id)
        self._remote_reads[request_id] = now + self.config.election_timeout_max
        self._send(ReadIndex(term=self.current_term, src=self.id, dst=self.leader_id,
                             request_id=request_id))

    # ------------------------------------------------------------------ leader

    def _add_read(self, read: PendingRead) -> None:
        self._reads.append(read)
        if self._read_confirmed_round() >= self._read_round:
            self._start_read_round()  # none in flight: go now
        else:
            self._read_round_wanted = True  # the next round, once this one is in
        self._confirm_reads()

    def _next_read_round(self) -> None:
        """Every AppendEntries from now on carries a new round; remember when it began
        (the lease runs from there)."""
        self._read_round += 1
        sent_at = self._round_sent_at
        sent_at[self._read_round] = self._now
        if len(sent_at) > 64:  # rounds a majority has passed are of no more use
            confirmed = self._read_confirmed_round()
            for old in [r for r in sent_at if r < confirmed]:
                del sent_at[old]

    def _end_lease(self) -> None:
        """A transfer started or ended: only rounds that begin after this count for
        the lease (the target's election bypasses the voters' stickiness)."""
        self._lease_floor = self._read_round + 1

    def _start_read_round(self) -> None:
        self._next_read_round()
        self._read_round_wanted = False
        for peer in sorted(self.progress):
            if peer in self.voters:
                self._send_read_heartbeat(peer)

    def _read_confirmed_round(self) -> int:
        """The highest round a majority of the voters answered (this leader counts
        for the round in flight if it is a voter)."""
        rounds = sorted((self._read_round if v == self.id else self._read_acks.get(v, 0)
                         for v in self.voters), reverse=True)
        quorum = self.quorum
        return rounds[quorum - 1] if len(rounds) >= quorum else 0

    def _note_read_ack(self, msg: AppendEntriesResponse) -> None:
        if msg.read_round > self._read_acks.get(msg.src, 0):
            self._read_acks[msg.src] = msg.read_round
            if self._reads:
                self._confirm_reads()

    def _confirm_reads(self) -> None:
        """Answer every read whose round a majority confirmed, once this leader has
        committed an entry of its own term (Raft §6.4 step 1)."""
        if not self._reads or self.log.term_at(self.commit_index) != self.current_term:
            return
        confirmed = self._read_confirmed_round()
        index = self.commit_index
        waiting = []
        for read in self._reads:
            if read.round > confirmed:
                waiting.append(read)
            elif read.peer is None:
                self._events.append(ReadIndexReady(read.request_id, index))
            else:
                self._send(ReadIndexResponse(term=self.current_term, src=self.id,
                                             dst=read.peer, request_id=read.request_id,
                                             read_index=index, success=True))
        self._reads = waiting
        if waiting and self._read_round_wanted and confirmed >= self._read_round:
            self._start_read_round()

    def _handle_read_index(self, msg: ReadIndex) -> None:
        """A follower asks for a read index (same term: checked by step)."""
        if self.role is Role.LEADER:
            self._add_read(PendingRead(msg.request_id, self._read_round + 1, msg.src))
        else:
            self._send(ReadIndexResponse(term=self.current_term, src=self.id, dst=msg.src,
                                         request_id=msg.request_id, read_index=0,
                                         success=False))

    def _fail_reads(self, reason: str) -> None:
        """Leadership or the leader changed: no pending read can be confirmed here."""
        for read in self._reads:
            if read.peer is None:
                self._events.append(ReadIndexFailed(read.request_id, reason, self.leader_id))
        self._reads = []
        self._read_acks = {}
        self._read_round_wanted = False
        for request_id in sorted(self._remote_reads):
            self._events.append(ReadIndexFailed(request_id, reason, self.leader_id))
        self._remote_reads = {}

    # ------------------------------------------------------------------ follower

    def _handle_read_index_response(self, msg: ReadIndexResponse) -> None:
        if self._remote_reads.pop(msg.request_id, None) is None:
            return  # timed out already, or a duplicate
        if msg.success:
            self._events.append(ReadIndexReady(msg.request_id, msg.read_index))
        else:
            self._events.append(ReadIndexFailed(msg.request_id,
                                                f"node {msg.src} does not lead",
                                                self.leader_id))

    def _tick_reads(self, now: float) -> None:
        if not self._remote_reads:
            return
        for request_id, give_up in sorted(self._remote_reads.items()):
            if now >= give_up:
                del self._remote_reads[request_id]
                self._events.append(ReadIndexFailed(
                    request_id, f"no answer from leader {self.leader_id}", self.leader_id))

    def _reads_next_deadline(self) -> float:
        if not self._remote_reads:
            return float("inf")
        return min(self._remote_reads.values())
