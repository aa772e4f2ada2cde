"""When the runtime persists a batch on the event loop instead of a worker thread.

A save handed to a worker thread costs two thread switches and a wake-up of the
event loop on top of the write and the fsync. On an idle machine that is tens of
microseconds; on a loaded one every switch waits for a time slice, and a
leadership transfer or an election, which is a chain of saves on different
members (the candidate's term, each voter's vote, the new leader's first entry on
the followers), pays it at every link: measured on the chaos cluster
(``python -m raftpy.chaos --faults transfer``, 3 members and 5 clients on 2
cores), a transfer's first write took 23-64 ms with every save in a thread and
11-44 ms with saves inline.

A save inline blocks the event loop, so heartbeats and everything else wait for
it. That is cheap while the disk is fast (a small ``pwrite`` and ``fdatasync``
take about half a millisecond on an ordinary SSD) and harmful when it is not, so
:class:`InlineSaves` allows it only while the recent saves were fast: each save
is timed (inline or in its thread), and once one of the last ``window`` saves took
longer than the budget, saves go to the thread again until ``window`` fast ones
in a row show the disk has recovered. At most one slow save therefore runs on the
event loop before the runtime notices. Large batches (over ``max_bytes`` of
entry data) and snapshots always go to the thread.
"""

from __future__ import annotations

from collections import deque

from raftpy.ready import Ready

DEFAULT_BUDGET = 0.002
"""Seconds a save may take and still run inline (see :class:`InlineSaves`)."""


class InlineSaves:
    """Decides, from the last few saves' durations, whether the next runs inline.

    ``budget`` 0 turns inline saves off (every save goes to a worker thread).
    """

    def __init__(self, budget: float = DEFAULT_BUDGET, *, max_bytes: int = 256 * 1024,
                 window: int = 8) -> None:
        if not budget >= 0:  # (NaN too: every save would run inline forever)
            raise ValueError(f"inline save budget must be >= 0 seconds, got {budget!r}")
        if window < 1:
            raise ValueError(f"inline save window must be >= 1 save, got {window!r}")
        self.budget = budget
        self.max_bytes = max_bytes
        self._recent: deque[float] = deque(maxlen=window)
        self._slow = 0
        """How many of ``_recent`` took longer than the budget."""

    def allows(self, ready: Ready) -> bool:
        """Whether ``ready``'s save may run on the event loop now."""
        if self.budget <= 0 or self._slow or ready.snapshot is not None:
            return False
        size = 0
        for entry in ready.entries:
            size += len(entry.data)
            if size > self.max_bytes:
                return False
        return True

    def record(self, seconds: float) -> None:
        """A save (inline or in a thread) took ``seconds``."""
        recent = self._recent
        if len(recent) == recent.maxlen and recent[0] > self.budget:
            self._slow -= 1
        recent.append(seconds)
        if seconds > self.budget:
            self._slow += 1
