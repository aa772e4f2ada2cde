"""Early pre-vote: a follower that lost every connection to its leader asks at once.

Raft waits out an election timeout (150-300 ms by default) before a follower
suspects its leader. When a process dies, though, the kernel closes its TCP
connections at once, and the follower's transport sees that within a
millisecond. :meth:`FailoverMixin.leader_connection_lost` lets the driver pass
that hint on (opt-in: ``Config.early_pre_vote``):

* the follower forgets its recent leader contact, so that it grants the
  pre-votes of other voters that lost the leader too (leader stickiness,
  Raft §9.6, no longer holds it back), and
* it starts a pre-vote round at once instead of at its election timeout.

Safety does not depend on the hint being right: a pre-vote only asks, and a
voter that still hears the leader refuses it (stickiness), as does the leader
itself. The cost of a wrong hint (a flapping link) is a needless pre-vote round,
and it is bounded: at most one early pre-vote per ``election_timeout_max``, and
none when the leader was heard from after the connections were lost.
"""

from __future__ import annotations

from raftpy.nodestate import NodeState
from raftpy.ready import Role

_INF = float("inf")


class FailoverMixin(NodeState):
    """The early pre-vote hook (see the module docstring)."""

    _early_pre_vote_at: float
    early_pre_votes: int
    """How many early pre-vote rounds this node has started (a counter for tests
    and metrics; a needless one on a flapping link shows up here)."""

    def leader_connection_lost(self, peer: int, now: float, *,
                               lost_at: float | None = None) -> bool:
        """The driver lost every connection to ``peer`` and could not reconnect.

        ``lost_at`` is when the last connection went down (default ``now``): a
        message from the leader that arrived at or after it means the leader is
        still heard on some path, and the hint is ignored. Returns whether an
        early pre-vote round started. Does nothing unless ``Config.early_pre_vote``
        is on and ``peer`` is the leader this follower follows.
        """
        self._now = now
        if not self.config.early_pre_vote or self.role is not Role.FOLLOWER:
            return False
        if peer != self.leader_id or peer == self.id:
            return False
        since = now if lost_at is None else lost_at
        if self._last_leader_contact >= since:
            self._log_trace(f"leader {peer} still heard: connection loss ignored")
            return False
        # Treat the leader contact as expired: from now on this node grants the
        # pre-votes of voters that lost the leader too.
        self._last_leader_contact = -_INF
        if not self._may_campaign() or not self.config.pre_vote:
            return False
        if now - self._early_pre_vote_at < self.config.election_timeout_max:
            self._log_trace(f"lost leader {peer}: early pre-vote already tried recently")
            return False
        self._early_pre_vote_at = now
        self.early_pre_votes += 1
        self._log_trace(f"lost every connection to leader {peer}: early pre-vote")
        self._campaign(disrupt_leader=False)
        return self.in_pre_vote  # (False if it may not campaign after all)
