"""The follower's side of replication: AppendEntries and InstallSnapshot (Raft §3.5,
§5.3 of the dissertation on snapshots)."""

from __future__ import annotations

from raftpy.membership import EMPTY, Configuration
from raftpy.messages import (
    AppendEntries,
    AppendEntriesResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
)
from raftpy.nodestate import NodeState
from raftpy.ready import LeaderChanged, Role, SnapshotMeta
from raftpy.snapshots import SnapshotReceiver


class FollowerMixin(NodeState):
    """How a node follows a leader: accepts, checks and acknowledges its log."""

    def _accept_leader(self, leader: int) -> None:
        """A leader of the current term spoke: follow it and reset the timer."""
        if self.role is not Role.FOLLOWER:
            # Raft §3.4: an AppendEntries of the candidate's own term means someone won.
            self._log_trace(f"step down: {leader} is leader of term {self.current_term}")
            self._become_follower(self.current_term, leader)
        elif self.leader_id != leader:
            self.leader_id = leader
            self._fail_reads(f"node {leader} leads now")
            self._events.append(LeaderChanged(self.current_term, leader))
            self._transfer_learned_leader(leader)
        self._last_leader_contact = self._now
        self._reset_election_timer()

    def _handle_append_entries(self, msg: AppendEntries) -> None:
        if self.role is Role.LEADER:
            # Two leaders in one term would break election safety; never happens.
            raise AssertionError(f"leader {self.id} got AppendEntries of its own term")
        self._echo_round = msg.read_round  # every answer to it confirms that read round
        self._accept_leader(msg.src)
        prev = msg.prev_log_index
        if prev < self.log.snapshot_index:
            # Already covered by our snapshot: skip what we have.
            skip = self.log.snapshot_index - prev
            if skip >= len(msg.entries):
                self._ack(msg.src, self.log.snapshot_index, msg.leader_commit,
                          self.log.snapshot_index)
                return
            entries = msg.entries[skip:]
            prev = self.log.snapshot_index
        else:
            entries = msg.entries
            term_at_prev = self.log.term_at(prev)
            if term_at_prev != msg.prev_log_term:
                self._reject_append(msg, term_at_prev)
                return
        if entries:
            if entries[0].index <= self.commit_index:
                # Never cut committed entries: they match by the log matching property.
                done = self.commit_index - entries[0].index + 1
                entries = entries[done:]
            if entries:
                first_new = self.log.merge(entries)
                if first_new is not None:
                    self._log_appended(entries, first_new)
        last_new = msg.prev_log_index + len(msg.entries)
        self._ack(msg.src, last_new, msg.leader_commit, last_new)
        if msg.entries and self._early_timeout_now is not None:
            self._early_timeout_now_due()

    def _ack(self, leader: int, match_index: int, leader_commit: int, last_new: int) -> None:
        # Figure 3.1: commitIndex = min(leaderCommit, index of last new entry); the
        # cap matters for heartbeats, whose "last new entry" is prev_log_index.
        commit = min(leader_commit, last_new)
        if commit > self.commit_index:
            self.commit_index = commit
        self._send(AppendEntriesResponse(
            term=self.current_term, src=self.id, dst=leader, success=True,
            match_index=match_index, read_round=self._echo_round))

    def _reject_append(self, msg: AppendEntries, term_at_prev: int | None) -> None:
        if term_at_prev is None:
            conflict_index, conflict_term = self.log.last_index + 1, 0
        else:
            conflict_term = term_at_prev
            conflict_index = self.log.first_index_of_term(msg.prev_log_index)
        self._log_trace(f"reject append from {msg.src} at {msg.prev_log_index}")
        self._send(AppendEntriesResponse(
            term=self.current_term, src=self.id, dst=msg.src, success=False,
            reject_index=msg.prev_log_index, conflict_index=conflict_index,
            conflict_term=conflict_term, read_round=msg.read_round))

    def _handle_install_snapshot(self, msg: InstallSnapshot) -> None:
        if self.role is Role.LEADER:
            raise AssertionError(f"leader {self.id} got InstallSnapshot of its own term")
        self._echo_round = 0  # snapshot chunks belong to no read round
        self._accept_leader(msg.src)
        if msg.last_included_index <= self.commit_index:
            # Nothing new for us: say where we are so the leader moves on.
            self._send(AppendEntriesResponse(
                term=self.current_term, src=self.id, dst=msg.src, success=True,
                match_index=self.commit_index))
            return
        meta = SnapshotMeta(msg.last_included_index, msg.last_included_term,
                            Configuration.decode(msg.configuration) if msg.configuration
                            else EMPTY, msg.configuration_index)
        source = (msg.src, msg.term)
        receiver = self._snapshot_receiver
        if receiver is None or receiver.meta != meta or receiver.source != source:
            # Never mix chunks of two leaders' snapshots, even of the same index.
            receiver = self._snapshot_receiver = SnapshotReceiver(meta, source)
        ok = receiver.add(msg.offset, msg.data)
        if ok and msg.done and receiver.size == msg.offset + len(msg.data):
            self._snapshot_receiver = None
            self._log_trace(f"install snapshot at {meta.index} (term {meta.term})")
            # Entries after the snapshot survive only if the log agrees at its index.
            tail_dropped = (meta.index >= self.log.last_index
                            or self.log.term_at(meta.index) != meta.term)
            self.log.compact(meta.index, meta.term)
            self._log_replaced_by_snapshot(meta, tail_dropped)
            self.commit_index = max(self.commit_index, meta.index)
            self.applied_index = max(self.applied_index, meta.index)
            self._pending_snapshot = (meta, receiver.data())
            self._send(AppendEntriesResponse(
                term=self.current_term, src=self.id, dst=msg.src, success=True,
                match_index=meta.index))
            return
        self._send(InstallSnapshotResponse(
            term=self.current_term, src=self.id, dst=msg.src,
            last_included_index=msg.last_included_index, next_offset=receiver.size,
            success=ok))
