"""Small helpers shared by the scenario tests."""

from __future__ import annotations

import random

from raftpy import Config, Entry, Message, PersistentState, RaftNode, Ready
from raftpy.ready import HardState
from raftpy.sim import Cluster


def make_node(node_id: int = 1, voters: tuple[int, ...] = (1, 2, 3), *, term: int = 0,
              voted_for: int | None = None, entries: tuple[Entry, ...] = (),
              config: Config | None = None, learners: tuple[int, ...] = (),
              now: float = 0.0) -> RaftNode:
    """A node restarted from the given persisted state, with a fixed RNG."""
    return RaftNode(node_id, voters, learners=learners, config=config or Config(),
                    state=PersistentState(HardState(term, voted_for), entries),
                    rng=random.Random(node_id), now=now)


def drain(node: RaftNode, now: float = 0.0) -> tuple[list[Message], list[Ready]]:
    """Persist-and-advance everything the node has; return all messages it sent."""
    sent: list[Message] = []
    readies: list[Ready] = []
    while node.has_ready():
        ready = node.ready()
        readies.append(ready)
        sent.extend(ready.messages)
        sent.extend(ready.messages_after_persist)
        node.advance(ready, now)
    return sent, readies


def entries(*terms: int, start: int = 1) -> tuple[Entry, ...]:
    """Entries with the given terms at consecutive indexes from ``start``."""
    return tuple(Entry(start + n, t, b"e%d" % (start + n)) for n, t in enumerate(terms))


def settled_cluster(n: int = 3, seed: int = 7, **kwargs: object) -> tuple[Cluster, int]:
    """A simulated cluster with a leader that has committed a write, given 100 ms to
    settle; returns it and the leader's id."""
    cluster = Cluster(n=n, seed=seed, record_trace=True, **kwargs)  # type: ignore[arg-type]
    leader = cluster.wait_for_leader()
    proposal = cluster.propose(b"warm-up")
    assert cluster.run_until(lambda: proposal.committed, 1.0)
    cluster.run_for(0.1)
    return cluster, leader
