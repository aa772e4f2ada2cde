"""The leader's side of replication: per-follower progress, pipelined AppendEntries,
fast back-off, heartbeats, check-quorum, snapshots for lagging followers and the
commit rule (Raft §3.5, §3.6)."""

from __future__ import annotations

from raftpy.messages import (
    AppendEntries,
    AppendEntriesResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
)
from raftpy.nodestate import NodeState
from raftpy.progress import Progress, ProgressState


class LeaderMixin(NodeState):
    """How a leader replicates its log and decides what is committed."""

    def _step_leader(self, msg: Message) -> None:
        pr = self.progress.get(msg.src)
        if pr is None:
            return
        pr.recent_active = True
        if isinstance(msg, AppendEntriesResponse):
            self._note_read_ack(msg)
            if msg.success:
                self._on_append_success(msg.src, pr, msg.match_index)
            else:
                self._on_append_reject(msg.src, pr, msg)
        elif isinstance(msg, InstallSnapshotResponse):
            self._on_snapshot_response(msg.src, pr, msg)

    def _on_append_success(self, peer: int, pr: Progress, match_index: int) -> None:
        if match_index > pr.match_index:
            pr.match_index = match_index
            self._maybe_commit()
        if pr.next_index <= pr.match_index:
            pr.next_index = pr.match_index + 1
        if pr.state is ProgressState.PROBE or (
            pr.state is ProgressState.SNAPSHOT and pr.match_index >= pr.snapshot_index
        ):
            pr.state = ProgressState.REPLICATE
            pr.next_index = pr.match_index + 1
            pr.snapshot_data = b""
        pr.paused = False
        if self._transfer is not None and self._transfer.target == peer:
            self._transfer_progress()
        if self._promotion is not None and self._promotion.member_id == peer:
            self._promotion_progress()
        if peer in self.progress and pr.next_index <= self.log.last_index:
            self._send_append(peer)  # (a failed promotion stops replicating to a spare)

    def _on_append_reject(self, peer: int, pr: Progress, msg: AppendEntriesResponse) -> None:
        if pr.state is ProgressState.REPLICATE and (
                msg.reject_index <= pr.match_index or msg.reject_index < pr.rewind_until):
            return  # stale: sent before a later success, or before the last rewind
        if pr.state is ProgressState.PROBE and msg.reject_index != pr.next_index - 1:
            return  # stale: answers an older probe
        if pr.state is ProgressState.SNAPSHOT:
            return
        # Fast back-off (Raft §5.3 optimisation): skip the follower's whole
        # conflicting term, or jump to just past its last entry.
        next_index = msg.conflict_index
        if msg.conflict_term:
            last = self.log.last_index_of_term(msg.conflict_term)
            if last is not None:
                next_index = last + 1
        pr.rewind_until = pr.next_index
        pr.start_probe(max(pr.match_index + 1, min(next_index, msg.reject_index)))
        pr.paused = False
        self._send_append(peer)

    def _on_snapshot_response(self, peer: int, pr: Progress,
                              msg: InstallSnapshotResponse) -> None:
        if pr.state is not ProgressState.SNAPSHOT or msg.last_included_index != pr.snapshot_index:
            return
        pr.snapshot_offset = msg.next_offset
        pr.paused = False
        self._send_snapshot_chunk(peer, pr)

    def _maybe_commit(self) -> None:
        """Raft §3.6.2: an index replicated on a majority commits only if its entry is
        of the current term; earlier entries then commit with it (Figure 3.7)."""
        matches = [self.log.persisted_index if v == self.id else self.progress[v].match_index
                   for v in self.voters]
        matches.sort(reverse=True)
        candidate = matches[self.quorum - 1]
        if candidate > self.commit_index and self.log.term_at(candidate) == self.current_term:
            self.commit_index = candidate
            self._leader_commit_advanced()

    def _tick_leader(self, now: float) -> None:
        if now >= self._check_quorum_deadline:
            self._check_quorum_deadline = now + self.config.election_timeout_max
            active = (self.id in self.voters) + sum(
                1 for v in self.voters if v != self.id and self.progress[v].recent_active)
            for pr in self.progress.values():
                pr.recent_active = False
            if self.config.check_quorum and active < self.quorum:
                self._log_trace(f"step down: heard from {active} of {len(self.voters)} voters")
                self._become_follower(self.current_term, None)
                return
        if now >= self._heartbeat_deadline:
            self._heartbeat_deadline = now + self.config.heartbeat
            self._next_read_round()  # these heartbeats renew the lease, and confirm reads
            self._resend_timeout_now()
            for peer, pr in self.progress.items():
                if pr.state is ProgressState.REPLICATE and pr.match_index < self.log.last_index \
                        and pr.match_index == pr.match_at_last_heartbeat:
                    # No progress for a whole interval: a message was lost (or a new
                    # leader's guess went unanswered). Resend, from what is known.
                    pr.rewind_until = pr.next_index
                    pr.start_probe(max(pr.match_index, pr.assumed_index) + 1)
                pr.match_at_last_heartbeat = pr.match_index
                pr.paused = False
                if pr.state is ProgressState.REPLICATE:
                    self._send_heartbeat(peer, pr)
                elif pr.state is ProgressState.SNAPSHOT:
                    self._send_snapshot_chunk(peer, pr)  # resend a lost chunk
                else:
                    self._send_append(peer)

    def _send_heartbeat(self, peer: int, pr: Progress) -> None:
        prev = pr.match_index
        prev_term = self.log.term_at(prev)
        if prev_term is None:
            self._send_append(peer)
            return
        self._send(AppendEntries(
            term=self.current_term, src=self.id, dst=peer, prev_log_index=prev,
            prev_log_term=prev_term, entries=(), leader_commit=self.commit_index,
            read_round=self._read_round))

    def _send_read_heartbeat(self, peer: int) -> None:
        """Reach ``peer`` now with the new read round (ReadIndex): a heartbeat at its
        match index, which it holds, so it answers at once even while a probe is
        out (a new leader's first reads need not wait for the next heartbeat). A
        peer taking a snapshot answers a later round instead."""
        pr = self.progress[peer]
        if pr.state is not ProgressState.SNAPSHOT:
            self._send_heartbeat(peer, pr)

    def _replicate_to_all(self) -> None:
        for peer, pr in self.progress.items():
            if pr.state is not ProgressState.SNAPSHOT and not pr.paused:
                self._send_append(peer)

    def _send_append(self, peer: int) -> None:
        """Send the next batch of entries to ``peer`` (or a snapshot if they are gone)."""
        pr = self.progress[peer]
        if pr.paused or pr.state is ProgressState.SNAPSHOT:
            return
        last = self.log.last_index
        if pr.state is ProgressState.REPLICATE and (
            pr.next_index > last or pr.in_flight() >= self.config.max_inflight_entries
        ):
            return  # nothing new, or the window is full: wait for acknowledgements
        cfg = self.config
        while True:
            prev = pr.next_index - 1
            prev_term = self.log.term_at(prev)
            if prev_term is None:
                self._start_snapshot(peer, pr)
                return
            entries = self.log.slice(pr.next_index, last + 1, cfg.max_entries_per_message,
                                     cfg.max_bytes_per_message)
            self._send(AppendEntries(
                term=self.current_term, src=self.id, dst=peer, prev_log_index=prev,
                prev_log_term=prev_term, entries=tuple(entries),
                leader_commit=self.commit_index, read_round=self._read_round))
            if pr.state is not ProgressState.REPLICATE:
                pr.paused = True  # one probe at a time
                return
            # Pipelining: stream the backlog without waiting, up to the window.
            pr.next_index = prev + 1 + len(entries)
            if pr.next_index > last or pr.in_flight() >= cfg.max_inflight_entries:
                return

    def _start_snapshot(self, peer: int, pr: Progress) -> None:
        snap = self._snapshot_source() if self._snapshot_source is not None else None
        if snap is None:
            return
        meta, data = snap
        pr.snapshot_configuration = meta.configuration.encode()
        pr.snapshot_configuration_index = meta.configuration_index
        pr.state = ProgressState.SNAPSHOT
        pr.snapshot_index = meta.index
        pr.snapshot_offset = 0
        pr.snapshot_data = data
        pr.snapshot_term = meta.term
        self.counters.snapshots_sent += 1
        self._log_trace(f"send snapshot at {meta.index} to {peer}")
        self._send_snapshot_chunk(peer, pr)

    def _send_snapshot_chunk(self, peer: int, pr: Progress) -> None:
        data = pr.snapshot_data
        start = pr.snapshot_offset
        chunk = data[start:start + self.config.snapshot_chunk_size]
        self._send(InstallSnapshot(
            term=self.current_term, src=self.id, dst=peer,
            last_included_index=pr.snapshot_index, last_included_term=pr.snapshot_term,
            offset=start, data=chunk, done=start + len(chunk) >= len(data),
            configuration=pr.snapshot_configuration,
            configuration_index=pr.snapshot_configuration_index))
        pr.paused = True
