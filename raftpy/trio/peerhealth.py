"""Whether the transport can reach each peer, logged without startup noise.

The transport reports every outcome of dialling a peer on the control lane (the
lane carrying votes and heartbeats; the bulk lane is only logged at DEBUG):

* the first failure of an outage is one INFO line ("not reachable yet ...,
  retrying") and a :class:`~raftpy.trio.observe.PeerUnreachable` observation;
* further failures are DEBUG, except one WARNING once the peer has stayed
  unreachable for ``warn_after`` seconds;
* a connection is one INFO line (and ``PeerReachable``), saying how long the
  outage lasted.

So a cluster whose members start a second apart logs one INFO line per peer, not
one WARNING per dial attempt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

logger = logging.getLogger("raftpy.transport")

DEFAULT_WARN_AFTER = 10.0
"""Seconds a peer may stay unreachable before a WARNING is logged."""

Listener = Callable[[int, bool, str], None]
"""Called with ``(peer, reachable, reason)`` when a peer's reachability changes."""


class PeerHealth:
    """Reachability of each peer as seen by this node's outbound connections."""

    def __init__(self, node_id: int, *, warn_after: float = DEFAULT_WARN_AFTER) -> None:
        self.node_id = node_id
        self.warn_after = warn_after
        self.listeners: list[Listener] = []
        """Told of every change (the runtime publishes them to its observers)."""
        self._reachable: dict[int, bool] = {}
        self._down_since: dict[int, float] = {}
        self._warned: set[int] = set()

    def reachable(self, peer: int) -> bool | None:
        """``True``/``False`` once known; ``None`` before the first dial ended."""
        return self._reachable.get(peer)

    def failed(self, peer: int, address: object, reason: str) -> None:
        """A dial to ``peer`` failed."""
        now = trio.current_time()
        if self._reachable.get(peer) is not False:
            self._down(peer, now, reason)
            logger.info("node %d: peer %d not reachable at %s yet: %s (retrying)", self.node_id,
                        peer, address, reason, extra={"peer": peer})
        elif peer not in self._warned and now - self._down_since[peer] >= self.warn_after:
            self._warned.add(peer)
            logger.warning("node %d: peer %d unreachable at %s for %.0f s: %s", self.node_id,
                           peer, address, now - self._down_since[peer], reason,
                           extra={"peer": peer})
        else:
            logger.debug("node %d: peer %d still not reachable at %s: %s", self.node_id, peer,
                         address, reason, extra={"peer": peer})

    def connected(self, peer: int, address: object) -> None:
        """A connection to ``peer`` was made."""
        was = self._reachable.get(peer)
        self._reachable[peer] = True
        self._warned.discard(peer)
        since = self._down_since.pop(peer, None)
        if was is True:
            return
        if since is None:
            logger.info("node %d: connected to peer %d at %s", self.node_id, peer, address,
                        extra={"peer": peer})
        else:
            logger.info("node %d: peer %d reachable at %s after %.1f s", self.node_id, peer,
                        address, trio.current_time() - since, extra={"peer": peer})
        self._tell(peer, True, "connected")

    def lost(self, peer: int, reason: str) -> None:
        """An established connection to ``peer`` ended (the dialler retries)."""
        if self._reachable.get(peer) is not False:
            self._down(peer, trio.current_time(), reason)

    def forget(self, peer: int) -> None:
        """``peer`` left the configuration."""
        self._reachable.pop(peer, None)
        self._down_since.pop(peer, None)
        self._warned.discard(peer)

    def _down(self, peer: int, now: float, reason: str) -> None:
        self._reachable[peer] = False
        self._down_since[peer] = now
        self._tell(peer, False, reason)

    def _tell(self, peer: int, reachable: bool, reason: str) -> None:
        for listener in self.listeners:
            listener(peer, reachable, reason)
