"""Leadership transfer (Raft §3.10, Dqlite's raft_transfer): pick and catch up the
target, send TimeoutNow, and report how the transfer ended."""

from __future__ import annotations

from raftpy.errors import InvalidTransferTarget
from raftpy.messages import RequestVote, TimeoutNow
from raftpy.nodestate import NodeState
from raftpy.ready import Role, TransferEnded


class TransferMixin(NodeState):
    """How a leader hands its leadership over."""

    def _pick_transfer_target(self) -> int:
        """The most up-to-date voter; ties go to the lowest id."""
        others = sorted(v for v in self.voters if v != self.id)
        if not others:
            raise InvalidTransferTarget(None, "there is no other voter")
        return max(others, key=lambda v: (self.progress[v].match_index, -v))

    def _maybe_send_timeout_now(self) -> None:
        transfer = self._transfer
        if transfer is None or transfer.timeout_now_sent or self.role is not Role.LEADER:
            return
        if self.progress[transfer.target].match_index == self.log.last_index:
            transfer.timeout_now_sent = True
            self._log_trace(f"send TimeoutNow to {transfer.target}")
            self._send(TimeoutNow(
                term=self.current_term, src=self.id, dst=transfer.target,
                last_log_index=self.log.last_index, last_log_term=self.log.last_term))

    def _extend_transfer_for_vote(self, msg: RequestVote) -> None:
        """The target is campaigning: the transfer is as good as done, but this node
        learns the winner only from the new leader's first AppendEntries. Allow a
        second transfer timeout for that rather than report a false "timed out"."""
        transfer = self._transfer
        if transfer is not None and msg.src == transfer.target and msg.disrupt_leader:
            transfer.deadline = transfer.started_at + 2 * self.config.transfer_deadline

    def _transfer_learned_leader(self, leader: int) -> None:
        transfer = self._transfer
        if transfer is None:
            return
        if leader == transfer.target:
            self._end_transfer(True, "target became leader", leader)
        else:
            self._end_transfer(False, f"node {leader} became leader instead", leader)

    def _end_transfer(self, succeeded: bool, reason: str, new_leader: int | None = None) -> None:
        transfer = self._transfer
        assert transfer is not None
        self._transfer = None
        if new_leader is None:
            new_leader = self.leader_id
        self._log_trace(f"transfer to {transfer.target} ended: {reason}")
        self._events.append(TransferEnded(
            target=transfer.target, succeeded=succeeded, new_leader=new_leader, reason=reason,
            started_at=transfer.started_at, ended_at=self._now))
