"""Small helpers shared by the scenario tests."""

from __future__ import annotations

import random

from raftpy import Config, Entry, Message, PersistentState, RaftNode, Ready
from raftpy.ready import HardState


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
