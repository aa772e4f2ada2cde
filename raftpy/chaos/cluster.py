"""The cluster under test: ``raftpy serve`` processes, each behind a
:class:`~raftpy.chaos.proxy.MemberProxy` that can cut the links from any peer."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

import trio

from raftpy.chaos.proxy import MemberProxy
from raftpy.demo_net import Servers, _free_ports, _signal_group


class ChaosServers(Servers):
    """:class:`raftpy.demo_net.Servers` with proxied peer links. Clients connect to
    the members directly (:attr:`addresses`); :attr:`aliases` maps the proxy
    addresses the members name in redirects to those."""

    def __init__(self, root: Path, n: int, *, election_timeout_ms: float = 150,
                 log_level: str = "warning", serve_flags: Sequence[str] = ()) -> None:
        super().__init__(root, n, election_timeout_ms=election_timeout_ms,
                         cluster_id="chaos", log_level=log_level)
        self.serve_flags = tuple(serve_flags)
        """Given to every ``raftpy serve`` (e.g. ``--early-pre-vote``)."""
        # All ports from one call: two calls may hand out the same port twice (the
        # first call's sockets are closed), and a proxy would then take a member's.
        ports = _free_ports(2 * n)
        self.ports = dict(zip(self.ids, ports[:n], strict=True))
        self.proxies = {
            member: MemberProxy(port, ("127.0.0.1", self.ports[member]), member)
            for member, port in zip(self.ids, ports[n:], strict=True)}
        self.down: set[int] = set()
        self.paused: set[int] = set()
        self._dying: dict[int, subprocess.Popen[bytes]] = {}
        """Killed members not reaped yet (see :meth:`kill`)."""

    def peer_address(self, node_id: int, peer: int) -> str:
        # The member's proxy, for every peer alike: it is the member's address in
        # the (replicated) configuration.
        return f"127.0.0.1:{self.proxies[peer].port}"

    @property
    def aliases(self) -> dict[str, str]:
        """Proxy address -> the real address of the member behind it."""
        return {f"127.0.0.1:{p.port}": self.address(member)
                for member, p in self.proxies.items()}

    async def run_proxies(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                          ) -> None:
        """Serve every member's proxy until cancelled."""
        async with trio.open_nursery() as nursery:
            for proxy in self.proxies.values():
                await nursery.start(proxy.run)
            task_status.started()

    def partition(self, side: set[int]) -> list[tuple[int, int]]:
        """Cut every link between ``side`` and the other members (both directions);
        returns the links cut."""
        cut = [(a, b) for a in self.ids for b in self.ids
               if a != b and (a in side) != (b in side)]
        for src, dst in cut:
            self.proxies[dst].cut(src)
        return cut

    def heal(self) -> None:
        """Reconnect every link."""
        for proxy in self.proxies.values():
            proxy.heal()

    def kill(self, node_id: int) -> None:
        """SIGKILL member ``node_id`` without waiting for it to exit: this process
        runs the proxies and the clients, and a blocking wait for the exit (tens of
        milliseconds on a loaded machine) froze them all, adding the reaping to
        every figure measured after a kill. It is reaped when restarted."""
        proc = self.procs.pop(node_id)
        _signal_group(proc, signal.SIGKILL)
        self._dying[node_id] = proc
        self.down.add(node_id)
        self.paused.discard(node_id)

    def _reap(self, node_id: int) -> None:
        proc = self._dying.pop(node_id, None)
        if proc is not None:
            proc.wait()

    def stop_all(self) -> dict[int, int | None]:
        for node_id in list(self._dying):
            self._reap(node_id)
        return super().stop_all()

    def start(self, node_id: int, *, join: Sequence[int] | None = None,
              role: str | None = None, flags: bool = True, extra: Sequence[str] = ()) -> None:
        self._reap(node_id)  # (long dead by now: its data directory lock is free)
        super().start(node_id, join=join, role=role, flags=flags,
                      extra=[*self.serve_flags, *extra])
        self.down.discard(node_id)

    def pause(self, node_id: int) -> None:
        super().pause(node_id)
        self.paused.add(node_id)

    def resume(self, node_id: int) -> None:
        super().resume(node_id)
        self.paused.discard(node_id)
