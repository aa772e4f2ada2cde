"""The cluster under test: ``raftpy serve`` processes whose peer links go through
one :class:`~raftpy.chaos.proxy.LinkProxy` per directed pair."""

from __future__ import annotations

import itertools
from pathlib import Path

import trio

from raftpy.chaos.proxy import LinkProxy
from raftpy.demo_net import Servers, _free_ports


class ChaosServers(Servers):
    """:class:`raftpy.demo_net.Servers` with proxied peer links. Clients connect to
    the members directly (:attr:`addresses`); :attr:`aliases` maps the proxy
    addresses the members name in redirects to those."""

    def __init__(self, root: Path, n: int, *, election_timeout_ms: float = 150,
                 log_level: str = "warning") -> None:
        super().__init__(root, n, election_timeout_ms=election_timeout_ms,
                         cluster_id="chaos", log_level=log_level)
        pairs = list(itertools.permutations(self.ids, 2))
        # All ports from one call: two calls may hand out the same port twice (the
        # first call's sockets are closed), and a proxy would then take a member's.
        ports = _free_ports(n + len(pairs))
        self.ports = dict(zip(self.ids, ports[:n], strict=True))
        ports = ports[n:]
        self.proxies = {
            (src, dst): LinkProxy(port, ("127.0.0.1", self.ports[dst]), f"{src}->{dst}")
            for (src, dst), port in zip(pairs, ports, strict=True)}
        self.down: set[int] = set()
        self.paused: set[int] = set()

    def peer_address(self, node_id: int, peer: int) -> str:
        return f"127.0.0.1:{self.proxies[node_id, peer].port}"

    @property
    def aliases(self) -> dict[str, str]:
        """Proxy address -> the real address of the member behind it."""
        return {f"127.0.0.1:{p.port}": self.address(dst)
                for (_, dst), p in self.proxies.items()}

    async def run_proxies(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                          ) -> None:
        """Serve every link proxy until cancelled."""
        async with trio.open_nursery() as nursery:
            for proxy in self.proxies.values():
                await nursery.start(proxy.run)
            task_status.started()

    def partition(self, side: set[int]) -> list[tuple[int, int]]:
        """Cut every link between ``side`` and the other members (both directions);
        returns the links cut."""
        cut = [(a, b) for (a, b) in self.proxies if (a in side) != (b in side)]
        for link in cut:
            self.proxies[link].cut()
        return cut

    def heal(self) -> None:
        """Reconnect every link."""
        for proxy in self.proxies.values():
            proxy.heal()

    def kill(self, node_id: int) -> None:
        super().kill(node_id)
        self.down.add(node_id)
        self.paused.discard(node_id)

    def start(self, node_id: int) -> None:
        super().start(node_id)
        self.down.discard(node_id)

    def pause(self, node_id: int) -> None:
        super().pause(node_id)
        self.paused.add(node_id)

    def resume(self, node_id: int) -> None:
        super().resume(node_id)
        self.paused.discard(node_id)
