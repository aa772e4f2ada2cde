"""Tells the runtime when every connection to a peer is gone (early pre-vote).

The transport reports each peer connection coming up or going down, in either
direction, and each reconnect attempt made right after a loss that failed.
Once a peer has no connection left *and* such a reconnect failed, the callback
runs with the peer's id: the runtime hands that to
:meth:`raftpy.node.RaftNode.leader_connection_lost`, which acts only if the
peer is this node's leader (see :mod:`raftpy.failover`). A process that died
has its connections reset by the kernel and its port refuses at once, so the
callback runs about a millisecond after a SIGKILL; a paused process still
accepts connections (the kernel does), so a pause is left to the election
timeout.
"""

from __future__ import annotations

from collections.abc import Callable


class PeerLossDetector:
    """Counts live connections per peer; calls ``on_lost(peer, lost_at)`` once per
    loss, ``lost_at`` being when the last connection went down (read from ``clock``;
    ``None`` without one). The core ignores the report if the leader was heard
    after ``lost_at`` (a reconnect backoff may separate the two)."""

    def __init__(self, on_lost: Callable[[int, float | None], None],
                 clock: Callable[[], float] | None = None) -> None:
        self._on_lost = on_lost
        self._clock = clock
        self._lost_at: dict[int, float] = {}
        self._live: dict[int, int] = {}
        self._reconnect_failed: set[int] = set()
        self.reported = 0
        """How many losses were reported (for tests and stats)."""

    def up(self, peer: int) -> None:
        """A connection to or from ``peer`` completed its handshake."""
        self._live[peer] = self._live.get(peer, 0) + 1
        self._reconnect_failed.discard(peer)

    def down(self, peer: int) -> None:
        """A connection that :meth:`up` counted ended."""
        left = self._live.get(peer, 0) - 1
        if left > 0:
            self._live[peer] = left
            return
        self._live.pop(peer, None)
        if self._clock is not None:
            self._lost_at[peer] = self._clock()
        self._check(peer)

    def reconnect_failed(self, peer: int) -> None:
        """Dialling ``peer`` again right after a lost connection failed."""
        self._reconnect_failed.add(peer)
        self._check(peer)

    def live(self, peer: int) -> int:
        """How many connections to or from ``peer`` are up."""
        return self._live.get(peer, 0)

    def _check(self, peer: int) -> None:
        if peer in self._reconnect_failed and not self._live.get(peer):
            self._reconnect_failed.discard(peer)
            self.reported += 1
            self._on_lost(peer, self._lost_at.pop(peer, None))
