"""The nemesis: a schedule of faults drawn from the seed, and its execution.

The schedule (kinds, times, durations, which member "random" picks) depends only
on the seed and the run's parameters; which member is the leader at that moment
is of course found out at run time.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from raftpy.chaos.cluster import ChaosServers
from raftpy.kv.client import KVClient, KVError

logger = logging.getLogger(__name__)

KINDS = ("kill-leader", "kill-random", "kill-majority", "pause-leader", "pause-random",
         "transfer")
PARTITION_KINDS = ("partition-leader", "partition-random")

_DURATIONS = {"kill-leader": (0.8, 2.5), "kill-random": (0.8, 2.5),
              "kill-majority": (0.8, 2.0), "pause-leader": (0.5, 3.0),
              "pause-random": (0.5, 2.5), "transfer": (0.0, 0.0),
              "partition-leader": (1.0, 3.0), "partition-random": (1.0, 3.0)}


@dataclass(frozen=True, slots=True)
class Planned:
    """One fault of the schedule."""

    at: float
    kind: str
    duration: float
    pick: int
    """Chooses the member(s) for the "random" kinds (an index into a shuffle)."""


@dataclass(slots=True)
class Event:
    """One fault as it happened."""

    kind: str
    start: float
    end: float | None = None
    nodes: list[int] = field(default_factory=list)
    detail: str = ""
    transfer_ms: float | None = None
    """For a transfer: how long it took on the leader."""
    hit_leader: bool = False
    """Whether the fault struck the leader (always, for the "-leader" kinds)."""


def schedule(seed: int, seconds: float, *, partitions: bool, warmup: float = 2.0,
             settle: float = 3.0, only: Sequence[str] = ()) -> list[Planned]:
    """The faults of a run of ``seconds``: one at a time, each followed by a quiet
    interval; every kind comes once before any repeats. ``only`` keeps those kinds
    (to study one fault, e.g. ``("transfer",)``); a kind it names must be known."""
    rng = random.Random(f"nemesis-{seed}")
    kinds = list(KINDS + (PARTITION_KINDS if partitions else ()))
    if only:
        unknown = sorted(set(only) - set(KINDS + PARTITION_KINDS))
        if unknown:
            raise ValueError(f"unknown fault kind(s) {', '.join(unknown)}; known: "
                             f"{', '.join(KINDS + PARTITION_KINDS)}")
        if not partitions and set(only) & set(PARTITION_KINDS):
            raise ValueError("partition faults asked for with partitions off")
        kinds = [k for k in kinds if k in only]
    plan: list[Planned] = []
    t = warmup
    bag: list[str] = []
    while True:
        if not bag:
            bag = kinds[:]
            rng.shuffle(bag)
        kind = bag.pop()
        low, high = _DURATIONS[kind]
        duration = round(rng.uniform(low, high), 3)
        if t + duration > seconds - settle:
            return plan
        plan.append(Planned(round(t, 3), kind, duration, rng.randrange(1 << 30)))
        t += duration + rng.uniform(1.2, 2.2)


async def find_leader(control: KVClient, servers: ChaosServers, timeout: float = 3.0
                      ) -> int | None:
    """The id of the member that says it leads in the highest term (``None`` if
    none does within ``timeout``)."""
    with trio.move_on_after(timeout):
        while True:
            best: tuple[int, int] | None = None
            for status in (await control.statuses()).values():
                if isinstance(status, dict) and status["role"] == "leader" \
                        and status["node_id"] not in servers.down | servers.paused \
                        and (best is None or status["term"] > best[0]):
                    best = (status["term"], status["node_id"])
            if best is not None:
                return best[1]
            await trio.sleep(0.02)
    return None


async def wait_healthy(control: KVClient, servers: ChaosServers, timeout: float = 10.0
                       ) -> bool:
    """Wait until every member answers and all name the same leader; whether they
    did within ``timeout``."""
    with trio.move_on_after(timeout):
        while True:
            statuses = (await control.statuses()).values()
            leaders = {s["leader_id"] if isinstance(s, dict) else None for s in statuses}
            if len(leaders) == 1 and None not in leaders:
                return True
            await trio.sleep(0.05)
    return False


async def run_nemesis(plan: list[Planned], servers: ChaosServers, control: KVClient,
                      clock: Callable[[], float], events: list[Event], end: float) -> None:
    """Apply ``plan`` (times on ``clock``), recording each fault in ``events``;
    a fault that would not end before ``end`` is left out."""
    for planned in plan:
        await trio.sleep(max(0.0, planned.at - clock()))
        # Each fault strikes a healthy cluster (every member up, one leader known to
        # all): a restarted process may take a second to start on a loaded machine,
        # and the next fault's gap would then really be this one's.
        await wait_healthy(control, servers)
        if clock() + planned.duration > end:
            break  # no time left for it (and for the cluster to settle after it)
        event = Event(planned.kind, clock())
        events.append(event)
        try:
            await _apply(planned, servers, control, clock, event)
        finally:
            _recover(servers)
            event.end = clock()
        logger.info("nemesis %s %s %s", planned.kind, event.nodes, event.detail)


async def _apply(planned: Planned, servers: ChaosServers, control: KVClient,
                 clock: Callable[[], float], event: Event) -> None:
    kind = planned.kind
    ids = servers.ids
    rng = random.Random(planned.pick)
    if kind.endswith("-leader") or kind == "transfer":
        leader = await find_leader(control, servers)
        if leader is None:
            event.detail = "no leader found: skipped"
            return
        event.start = clock()  # the fault itself, not the search for the leader
        targets = [leader]
    else:
        if kind == "kill-majority":
            targets = rng.sample(ids, len(ids) // 2 + 1)
        elif kind == "partition-random":
            targets = rng.sample(ids, rng.randint(1, len(ids) // 2))  # the minority side
        else:
            targets = [rng.choice(ids)]
        leader = await find_leader(control, servers, timeout=0.5)
        event.start = clock()
    event.hit_leader = leader in targets
    if event.hit_leader and not kind.endswith("-leader") and kind != "transfer":
        event.detail = "(the leader)"
    event.nodes = targets
    if kind.startswith("kill"):
        for node in targets:
            servers.kill(node)
        await trio.sleep(planned.duration)
        for node in targets:
            servers.start(node)
    elif kind.startswith("pause"):
        for node in targets:
            servers.pause(node)
        await trio.sleep(planned.duration)
        for node in targets:
            servers.resume(node)
    elif kind.startswith("partition"):
        cut = servers.partition(set(targets))
        event.detail = f"{len(cut)} links cut {event.detail}".strip()
        await trio.sleep(planned.duration)
        servers.heal()
    else:
        try:
            reply: dict[str, Any] = await control.transfer(None)
            event.transfer_ms = float(reply["elapsed_ms"])
            event.detail = (f"to {reply['leader_id']} in {reply['elapsed_ms']:.1f} ms "
                            "(leader side)")
        except KVError as exc:
            event.detail = f"transfer failed: {exc}"
    event.end = clock()


def _recover(servers: ChaosServers) -> None:
    """Undo whatever a fault left behind (also when it was interrupted)."""
    servers.heal()
    for node in list(servers.paused):
        servers.resume(node)
    for node in list(servers.down):
        servers.start(node)
