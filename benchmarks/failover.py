"""Failover after SIGKILL of the leader, with and without early pre-vote, on real
``raftpy serve`` processes on loopback; and needless elections on a flapping link.

``python -m benchmarks.failover`` (``--kills N``, ``--flap-seconds S``):

* **kill**: a 3-member cluster; a writer puts continuously through
  :class:`~raftpy.kv.client.KVClient`; the leader's process group is SIGKILLed,
  and the time from the kill to the first member saying it leads in a higher
  term (polled every 2 ms) and to the completion of the writer's first put invoked
  after the kill that succeeds are recorded; the killed member restarts and
  catches up, and after a random pause (so that the kill falls at any point of
  the heartbeat cycle) the next kill follows. Once with ``serve --early-pre-vote``, once without.
* **flap**: the links between the leader and one follower go through proxies that
  close both directions' connections every 50-200 ms and refuse reconnects for
  10 ms (so the transport's one immediate reconnect fails), while the leader's
  heartbeats go on between flaps and to the other follower. Counted: elections
  (term changes), leader changes, and the early pre-votes the members logged.

Writes ``benchmarks/results/failover.json``. Nothing here is part of the library.
"""

from __future__ import annotations

import argparse
import random
import signal
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from benchmarks._common import RESULTS_DIR, machine_info, print_table, summarize, write_json
from raftpy.chaos.cluster import ChaosServers
from raftpy.chaos.proxy import MemberProxy
from raftpy.demo_net import Servers, _signal_group
from raftpy.kv.client import KVClient, KVError

EARLY = ["--early-pre-vote"]


async def _leader(client: KVClient, members: Sequence[str], min_term: int
                  ) -> tuple[int, int] | None:
    """(node id, term) of a member among ``members`` that leads in a term >= min_term."""
    found: list[tuple[int, int]] = []

    async def one(address: str) -> None:
        try:
            status = await client.status(address)
        except (OSError, KVError, trio.TooSlowError, trio.BrokenResourceError, ValueError):
            return
        if status.get("role") == "leader" and int(status["term"]) >= min_term:
            found.append((int(status["node_id"]), int(status["term"])))

    async with trio.open_nursery() as nursery:
        for address in members:
            nursery.start_soon(one, address)
    return max(found, key=lambda f: f[1]) if found else None


async def _settled(servers: Servers, poll: KVClient, timeout: float = 20.0) -> tuple[int, int]:
    """Wait until every member runs and follows one leader; (leader, term)."""
    with trio.fail_after(timeout):
        while True:
            statuses = [await _status(poll, servers.address(i)) for i in servers.ids]
            if all(statuses):
                leaders = {(s["leader_id"], s["term"]) for s in statuses if s}
                applied = {s["applied_index"] for s in statuses if s}
                if len(leaders) == 1 and None not in next(iter(leaders)) \
                        and max(applied) - min(applied) <= 2:
                    leader, term = next(iter(leaders))
                    return int(leader), int(term)
            await trio.sleep(0.02)


async def _status(client: KVClient, address: str) -> dict[str, Any] | None:
    try:
        return await client.status(address)
    except (OSError, KVError, trio.TooSlowError, trio.BrokenResourceError, ValueError):
        return None


async def measure_kills(kills: int, *, early: bool, seed: int) -> dict[str, Any]:
    """``kills`` leader SIGKILLs on one 3-member cluster; times in seconds."""
    rng = random.Random(seed)
    to_leader: list[float] = []
    to_write: list[float] = []
    with tempfile.TemporaryDirectory(prefix="raftpy-failover-") as tmp:
        servers = Servers(Path(tmp), 3, cluster_id="failover", log_level="warning")
        extra = EARLY if early else []
        for node_id in servers.ids:
            servers.start(node_id, extra=extra)
        try:
            poll = KVClient(servers.addresses, cluster_id="failover", attempt_timeout=0.2,
                            connect_timeout=0.2)
            writer = KVClient(servers.addresses, cluster_id="failover", timeout=5.0)
            state: dict[str, float] = {"last_ok": 0.0, "last_ok_invoked": 0.0}

            async def write_forever() -> None:
                n = 0
                while True:
                    n += 1
                    invoked = trio.current_time()
                    try:
                        await writer.put("k", f"v{n}")
                    except KVError:
                        continue
                    state["last_ok"] = trio.current_time()
                    state["last_ok_invoked"] = invoked

            async with trio.open_nursery() as nursery:
                leader, term = await _settled(servers, poll)
                nursery.start_soon(write_forever)
                for _ in range(kills):
                    leader, term = await _settled(servers, poll)
                    await trio.sleep(rng.uniform(0.3, 0.8))
                    survivors = [servers.address(i) for i in servers.ids if i != leader]
                    killed_at = trio.current_time()
                    # Not servers.kill(): its wait for the exit would block this loop
                    # (the poller and the writer) while the process is torn down.
                    proc = servers.procs.pop(leader)
                    _signal_group(proc, signal.SIGKILL)
                    with trio.fail_after(10):
                        while (found := await _leader(poll, survivors, term + 1)) is None:
                            await trio.sleep(0.002)
                        to_leader.append(trio.current_time() - killed_at)
                        # The first put invoked after the kill that succeeds (as the
                        # chaos test counts it).
                        while state["last_ok_invoked"] < killed_at:
                            await trio.sleep(0.001)
                        to_write.append(state["last_ok"] - killed_at)
                    del found
                    proc.wait()
                    servers.start(leader, flags=False, extra=extra)
                nursery.cancel_scope.cancel()
            await poll.aclose()
            await writer.aclose()
        finally:
            servers.stop_all()
    return {"early_pre_vote": early, "kills": kills,
            "to_leader_ms": summarize(to_leader, 1000), "to_write_ms": summarize(to_write, 1000),
            "raw_to_leader": to_leader, "raw_to_write": to_write}


class FlappingProxy(MemberProxy):
    """A member proxy that can also close every connection from one source and
    refuse that source's new connections for a while (after their hello)."""

    def __init__(self, port: int, target: tuple[str, int], member_id: int) -> None:
        super().__init__(port, target, member_id)
        self._refuse: dict[int, float] = {}

    def reset(self, src: int, refuse_for: float) -> None:
        """Close ``src``'s connections and refuse its reconnects for ``refuse_for``."""
        self._refuse[src] = trio.current_time() + refuse_for
        for scope in list(self._scopes.get(src, ())):
            scope.cancel()

    async def _hello(self, stream: trio.SocketStream) -> tuple[bytes, int | None]:
        data, src = await super()._hello(stream)
        if src is not None and trio.current_time() < self._refuse.get(src, float("-inf")):
            raise trio.BrokenResourceError("refused for now")
        return data, src


async def measure_flapping(seconds: float, *, early: bool, seed: int) -> dict[str, Any]:
    """Flap the link between the leader and one follower for ``seconds``."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="raftpy-flap-") as tmp:
        servers = ChaosServers(Path(tmp), 3, log_level="info")
        servers.proxies = {member: FlappingProxy(p.port, p.target, member)
                           for member, p in servers.proxies.items()}
        extra = EARLY if early else []
        flaps = 0
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(servers.run_proxies)
                for node_id in servers.ids:
                    servers.start(node_id, extra=extra)
                poll = KVClient(servers.addresses, cluster_id="chaos", attempt_timeout=0.2,
                                connect_timeout=0.2)
                leader, term = await _settled(servers, poll)
                follower = next(i for i in servers.ids if i != leader)
                proxies: dict[int, FlappingProxy] = servers.proxies  # type: ignore[assignment]
                terms = {term}
                leaders = {leader}
                end = trio.current_time() + seconds
                while trio.current_time() < end:
                    proxies[leader].reset(follower, 0.010)
                    proxies[follower].reset(leader, 0.010)
                    flaps += 1
                    deadline = trio.current_time() + rng.uniform(0.05, 0.2)
                    while trio.current_time() < deadline:
                        found = await _leader(poll, servers.addresses, 0)
                        if found is not None:
                            leaders.add(found[0])
                            terms.add(found[1])
                        await trio.sleep(0.01)
                await poll.aclose()
                nursery.cancel_scope.cancel()
        finally:
            servers.stop_all()
        pre_votes = sum(servers.log_path(i).read_text().count("early pre-vote")
                        for i in servers.ids)
    return {"early_pre_vote": early, "seconds": seconds, "flaps": flaps,
            "elections": max(terms) - min(terms), "leaders_seen": len(leaders),
            "early_pre_votes_logged": pre_votes}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    """Run both measurements with the option on and off."""
    kills = [await measure_kills(args.kills, early=early, seed=args.seed)
             for early in (True, False)]
    flaps = [await measure_flapping(args.flap_seconds, early=early, seed=args.seed)
             for early in (True, False)] if args.flap_seconds > 0 else []
    return {"machine": machine_info(), "kills": kills, "flapping": flaps}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="leader kills per mode")
    parser.add_argument("--flap-seconds", type=float, default=20.0,
                        help="how long to flap a link per mode (0: skip)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    result = trio.run(main_async, args)
    rows = []
    for run in result["kills"]:
        for what in ("to_leader_ms", "to_write_ms"):
            s = run[what]
            rows.append(["on" if run["early_pre_vote"] else "off", what, s["n"],
                         f"{s['median']:.1f}", f"{s['p99']:.1f}", f"{s['max']:.1f}"])
    print_table(["early pre-vote", "after SIGKILL", "n", "median ms", "p99 ms", "max ms"],
                rows, title="failover after SIGKILL of the leader (3 members, loopback)")
    if result["flapping"]:
        print_table(["early pre-vote", "seconds", "flaps", "elections", "leaders seen",
                     "early pre-votes"],
                    [["on" if r["early_pre_vote"] else "off", r["seconds"], r["flaps"],
                      r["elections"], r["leaders_seen"], r["early_pre_votes_logged"]]
                     for r in result["flapping"]],
                    title="a flapping leader-follower link (closed every 50-200 ms)")
    write_json(args.results, "failover", result)
    return result


if __name__ == "__main__":
    main()
