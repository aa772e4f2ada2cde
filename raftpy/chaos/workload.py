"""The clients of a chaos run: each worker has its own :class:`KVClient` and runs
one operation at a time on a few keys, recording every one in the history."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import trio

from raftpy.chaos.history import FAIL, OK, UNKNOWN, History
from raftpy.kv.client import (
    ClusterUnavailable,
    KeyNotFound,
    KVClient,
    KVError,
    OutcomeUnknown,
    RequestFailed,
)

Clock = Callable[[], float]


def make_client(addresses: Sequence[str], aliases: dict[str, str], *,
                timeout: float = 2.0) -> KVClient:
    """A client of the cluster under test (the default failover bounds)."""
    return KVClient(addresses, cluster_id="chaos", timeout=timeout, aliases=aliases)


async def run_op(client: KVClient, history: History, clock: Clock, process: int, kind: str,
                 key: str, value: str | None = None) -> None:
    """Run one operation and record it with its outcome."""
    op = history.invoke(process, kind, key, value, clock())
    try:
        if kind == "put":
            assert value is not None
            await client.put(key, value)
            result: object = None
        elif kind == "get":
            try:
                result = await client.get(key)
            except KeyNotFound:
                result = None
        else:
            try:
                await client.delete(key)
                result = True
            except KeyNotFound:
                result = False
    except ClusterUnavailable as exc:
        # A read without an answer has no effect; a write in doubt may have one.
        outcome = UNKNOWN if (op.is_write and exc.in_doubt) else FAIL
        history.complete(op, clock(), outcome, error=str(exc))
    except OutcomeUnknown as exc:
        history.complete(op, clock(), UNKNOWN, error=str(exc))
    except RequestFailed as exc:
        # A refusal of a retried write may follow an attempt that was applied.
        history.complete(op, clock(), UNKNOWN if op.is_write else FAIL, error=str(exc))
    except (KVError, OSError, trio.BrokenResourceError, trio.TooSlowError, ValueError) as exc:
        history.complete(op, clock(), UNKNOWN if op.is_write else FAIL, error=repr(exc))
    else:
        history.complete(op, clock(), OK, result)


async def worker(process: int, client: KVClient, history: History, clock: Clock,
                 rng: random.Random, keys: Sequence[str], until: float) -> None:
    """Puts (unique values), gets and deletes on ``keys`` until ``clock() >= until``."""
    n = 0
    async with client:
        while clock() < until:
            key = rng.choice(keys)
            roll = rng.random()
            if roll < 0.5:
                n += 1
                await run_op(client, history, clock, process, "put", key, f"{process}-{n}")
            elif roll < 0.9:
                await run_op(client, history, clock, process, "get", key)
            else:
                await run_op(client, history, clock, process, "delete", key)
