"""Leadership transfer (Raft §3.10, Dqlite's raft_transfer): pick and catch up the
target, send TimeoutNow, and report how the transfer ended.

A transfer goes through up to three stages (:class:`~raftpy.nodestate.TransferStage`):

* **catch-up**: the target is more than one batch behind. Writes go on; the
  transfer lives as long as the target keeps gaining (each gain extends the
  deadline by one transfer timeout), up to ``_CATCH_UP_TIMEOUTS`` timeouts in all.
* **final**: the target is within one batch. Writes are refused so that the log
  stops moving; once the target holds all of it, it is sent TimeoutNow, and again
  at every heartbeat until it starts its election (a lost TimeoutNow must not fail
  the transfer) or the stage times out. When the last entries are already on
  their way (the target is streaming), TimeoutNow goes right behind them instead
  of one round trip later: a target keeps a TimeoutNow that names entries it does
  not hold yet for a short while (``election_timeout_min``, at most half the
  transfer timeout) and campaigns when they arrive, and only then (election.py).
  If that one goes unused, the target's acknowledgement of the last entry brings
  a second one.
* **fenced**: the final stage timed out after TimeoutNow went out. The target may
  still get a (late) TimeoutNow and act on it, so the leader cannot call the
  transfer failed yet. It appends a *fence* entry, which moves its log past the
  position every TimeoutNow named (a target holding the fence ignores them), and
  takes writes again. Once the fence commits, a majority holds an entry the
  target lacks, so the target can no longer win: the transfer failed. If the
  target wins first, the old leader hears of it and reports success.

The outcome reported is what happened: a late success is a success. A leader cut
off from everyone cannot know; ``_OUTCOME_TIMEOUTS`` transfer timeouts after the
final stretch began (at most ``MAX_TRANSFER_TIMEOUTS`` after the start) it
reports "outcome unknown" (``succeeded=False``) rather than leave a caller waiting.
"""

from __future__ import annotations

from raftpy.errors import InvalidTransferTarget
from raftpy.messages import Entry, EntryKind, TimeoutNow
from raftpy.nodestate import NodeState, PendingTransfer, TransferStage
from raftpy.progress import ProgressState
from raftpy.ready import Role, TransferEnded

_CATCH_UP_TIMEOUTS = 10
"""A catch-up may take this many transfer timeouts in all, if the target keeps gaining."""
_OUTCOME_TIMEOUTS = 4
"""From the start of the final stretch, a transfer whose outcome this node cannot
learn ends after this many transfer timeouts."""
MAX_TRANSFER_TIMEOUTS = _CATCH_UP_TIMEOUTS + _OUTCOME_TIMEOUTS
"""No transfer stays pending longer than this many transfer timeouts."""


class TransferMixin(NodeState):
    """How a leader hands its leadership over."""

    def _pick_transfer_target(self) -> int:
        """The most up-to-date voter; ties go to the lowest id."""
        others = sorted(v for v in self.voters if v != self.id)
        if not others:
            raise InvalidTransferTarget(None, "there is no other voter")
        return max(others, key=lambda v: (self.progress[v].match_index, -v))

    def _start_transfer(self, target: int) -> None:
        self._end_lease()
        timeout = self.config.transfer_deadline
        self._transfer = PendingTransfer(
            target, self._now, self._now + timeout,
            give_up_at=self._now + _CATCH_UP_TIMEOUTS * timeout,
            outcome_by=self._now + MAX_TRANSFER_TIMEOUTS * timeout,
            catch_up_match=self.progress[target].match_index)
        self._log_trace(f"transfer leadership to {target}")
        self._transfer_progress()

    def _transfer_progress(self) -> None:
        """The target acknowledged entries (or the transfer just began): move the
        transfer on a stage, or extend the catch-up while the target gains."""
        transfer = self._transfer
        if transfer is None or self.role is not Role.LEADER:
            return
        match = self.progress[transfer.target].match_index
        last = self.log.last_index
        if transfer.stage is TransferStage.CATCH_UP:
            if last - match <= self.config.max_entries_per_message:
                transfer.stage = TransferStage.FINAL
                transfer.deadline = self._now + self.config.transfer_deadline
                transfer.outcome_by = self._now + _OUTCOME_TIMEOUTS * self.config.transfer_deadline
                self._log_trace(f"transfer to {transfer.target}: final stretch "
                                f"({last - match} entries behind), writes paused")
            elif match > transfer.catch_up_match:
                transfer.catch_up_match = match
                transfer.deadline = min(self._now + self.config.transfer_deadline,
                                        transfer.give_up_at)
        if transfer.stage is not TransferStage.FINAL:
            return
        if match == last and (not transfer.timeout_now_sent or transfer.sent_ahead):
            # Caught up: TimeoutNow (again, if the one sent ahead of the entries went
            # unused: lost, or kept by the target for less time than they took).
            transfer.timeout_now_sent = True
            transfer.sent_ahead = False
            self._send_timeout_now(transfer.target)
        elif not transfer.timeout_now_sent and self._sent_all_to(transfer.target):
            transfer.timeout_now_sent = transfer.sent_ahead = True
            self._send_timeout_now(transfer.target)

    def _sent_all_to(self, target: int) -> bool:
        """Whether every entry is on its way to ``target`` (streaming, nothing left to
        send). TimeoutNow may then follow at once instead of one round trip later,
        after the acknowledgement: the target keeps a TimeoutNow that overtakes the
        entries it names and campaigns once they arrive (election.py)."""
        progress = self.progress[target]
        return (progress.state is ProgressState.REPLICATE
                and progress.next_index > self.log.last_index)

    def _send_timeout_now(self, target: int) -> None:
        self._log_trace(f"send TimeoutNow to {target}")
        self._send(TimeoutNow(
            term=self.current_term, src=self.id, dst=target,
            last_log_index=self.log.last_index, last_log_term=self.log.last_term))

    def _tick_transfer(self, now: float) -> None:
        """Fire the transfer's timers: the stage deadline, the TimeoutNow resend (at
        heartbeats, from ``_tick_leader``) and the bound on an unknown outcome."""
        transfer = self._transfer
        if transfer is None:
            return
        if self.role is not Role.LEADER or transfer.stage is TransferStage.FENCED:
            # Deposed, or fenced and not yet committed: the outcome comes with the
            # next leader heard of (_transfer_learned_leader) or the fence's commit,
            # unless neither happens for too long (this node is cut off).
            if now >= transfer.outcome_by:
                self._end_transfer(False, "outcome unknown: this node heard of no leader "
                                   "and could not commit since the transfer timed out")
            return
        if now < transfer.deadline:
            return
        if transfer.stage is TransferStage.CATCH_UP:
            self._end_transfer(False, "timed out catching up the target")
        elif transfer.stage is TransferStage.FINAL and not transfer.timeout_now_sent:
            self._end_transfer(False, "timed out")
        elif transfer.stage is TransferStage.FINAL:
            # The target may still act on a TimeoutNow in flight: fence it off.
            transfer.stage = TransferStage.FENCED
            transfer.deadline = float("inf")
            entry = Entry(self.log.last_index + 1, self.current_term, b"", EntryKind.NOOP)
            self.log.append(entry)
            transfer.fence_index = entry.index
            self._log_trace(f"transfer to {transfer.target} timed out: fence at "
                            f"{entry.index}, writes resume")
            self._replicate_to_all()
            self._transfer_fence_committed()  # a single voter commits it at once

    def _transfer_next_deadline(self) -> float:
        """When :meth:`_tick_transfer` has work to do."""
        transfer = self._transfer
        if transfer is None:
            return float("inf")
        if self.role is not Role.LEADER or transfer.stage is TransferStage.FENCED:
            return transfer.outcome_by
        return transfer.deadline

    def _resend_timeout_now(self) -> None:
        """At a heartbeat: the target has not started its election yet (it would have
        deposed this leader with its higher term), so TimeoutNow may have been lost."""
        transfer = self._transfer
        if (transfer is not None and transfer.stage is TransferStage.FINAL
                and transfer.timeout_now_sent
                and self.progress[transfer.target].match_index == self.log.last_index):
            self._send_timeout_now(transfer.target)

    def _transfer_fence_committed(self) -> None:
        transfer = self._transfer
        if (transfer is not None and transfer.stage is TransferStage.FENCED
                and self.commit_index >= transfer.fence_index):
            # A majority holds the fence and the target's TimeoutNow named an earlier
            # position: the target cannot win an election from it any more.
            self._end_transfer(False, "timed out")

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
        self._end_lease()
        if new_leader is None:
            new_leader = self.leader_id
        self._log_trace(f"transfer to {transfer.target} ended: {reason}")
        self._events.append(TransferEnded(
            target=transfer.target, succeeded=succeeded, new_leader=new_leader, reason=reason,
            started_at=transfer.started_at, ended_at=self._now))
