"""Availability figures of a chaos run: a timeline and the write gaps after faults."""

from __future__ import annotations

import bisect
import importlib
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from raftpy.chaos.history import OK, History
from raftpy.chaos.nemesis import Event

BUCKET = 0.5


@dataclass(frozen=True, slots=True)
class Gap:
    """How long writes stopped after one fault."""

    kind: str
    start: float
    first_write: float
    """From the fault to the first acknowledged write invoked after it."""
    longest: float
    """The longest interval without an acknowledged write, from the fault until
    a second after it ended."""
    elected: float | None = None
    """For a fault of the leader: from the fault until a member first logged
    another leader (``None``: not found in the logs)."""


_LEADER_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO "
                          r"raftpy\.(?:trio\.)?runtime(?: [a-z]+=\S+)*: "
                          r"node (\d+): leader is (\d+) \(term (\d+)\)")


def leader_changes(logs: list[Path], wall_t0: float) -> list[tuple[float, int, int]]:
    """``(time, member, leader)`` for every "leader is N" line of the members'
    info logs, in run time (seconds since ``wall_t0``, the wall clock at the
    run's start), sorted."""
    out = []
    for path in logs:
        if not path.exists():
            continue
        with open(path, errors="replace") as f:
            for line in f:
                match = _LEADER_LINE.match(line)
                if match:
                    stamp = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                    out.append((stamp - wall_t0, int(match[2]), int(match[3])))
    return sorted(out)


def write_gaps(history: History, events: list[Event],
               changes: Sequence[tuple[float, int, int]] = ()) -> list[Gap]:
    """One :class:`Gap` per fault (``inf`` when no write succeeded afterwards);
    ``changes`` (see :func:`leader_changes`) gives the election times."""
    writes = sorted((op.invoke, op.complete) for op in history.ops
                    if op.is_write and op.outcome == OK and op.complete is not None)
    completions = sorted(c for _, c in writes)
    gaps = []
    for event in events:
        if event.detail.endswith("skipped"):
            continue
        t = event.start
        first = min((c for i, c in writes if i >= t), default=math.inf)
        end = (event.end if event.end is not None else t) + 1.0
        at = bisect.bisect_right(completions, t)
        points = [t, *[c for c in completions[at:] if c <= end], end]
        longest = max(b - a for a, b in itertools.pairwise(points))
        elected = None
        if event.hit_leader and event.kind != "kill-majority":  # (no election without a majority)
            elected = next((when - t for when, _, leader in changes
                            if when >= t and leader not in event.nodes), None)
        gaps.append(Gap(event.kind, t, first - t, longest, elected))
    return gaps


def by_kind(gaps: list[Gap]) -> dict[str, list[Gap]]:
    out: dict[str, list[Gap]] = {}
    for gap in gaps:
        out.setdefault(gap.kind, []).append(gap)
    return out


def timeline(history: History, events: list[Event], seconds: float) -> list[str]:
    """Acknowledged operations per second in each 0.5 s bucket, faults marked."""
    n = max(1, math.ceil(seconds / BUCKET))
    counts = [0] * n
    for op in history.ops:
        if op.outcome == OK and op.complete is not None and op.complete < n * BUCKET:
            counts[int(op.complete / BUCKET)] += 1
    marks: dict[int, list[str]] = {}
    for event in events:
        bucket = min(n - 1, int(event.start / BUCKET))
        marks.setdefault(bucket, []).append(f"{event.kind} {event.nodes}")
        if event.end is not None and event.end > event.start:
            end = min(n - 1, int(event.end / BUCKET))
            marks.setdefault(end, []).append(f"end {event.kind}")
    peak = max(counts) or 1
    lines = []
    for i, count in enumerate(counts):
        rate = count / BUCKET
        bar = "#" * round(40 * count / peak)
        mark = ("  <- " + ", ".join(marks[i])) if i in marks else ""
        lines.append(f"{i * BUCKET:6.1f}s {rate:7.0f}/s {bar:<40}{mark}")
    return lines


def plot(history: History, events: list[Event], seconds: float, path: Path) -> bool:
    """Draw the timeline to ``path`` if matplotlib is installed; whether it was."""
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt: Any = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return False
    n = max(1, math.ceil(seconds / BUCKET))
    counts = [0] * n
    for op in history.ops:
        if op.outcome == OK and op.complete is not None and op.complete < n * BUCKET:
            counts[int(op.complete / BUCKET)] += 1
    fig, ax = plt.subplots(figsize=(12, 4))
    ax.bar([i * BUCKET for i in range(n)], [c / BUCKET for c in counts], width=BUCKET,
           align="edge", color="tab:blue")
    for event in events:
        end = event.end if event.end is not None else event.start
        ax.axvspan(event.start, max(end, event.start + 0.05), color="tab:red", alpha=0.2)
        ax.text(event.start, ax.get_ylim()[1] * 0.95, event.kind, rotation=90, fontsize=7,
                va="top")
    ax.set_xlabel("seconds")
    ax.set_ylabel("acknowledged ops/s")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
