"""Recording a history of client operations for the linearizability checker.

A history is what the clients saw: each operation's invocation time, its completion
time and what came back. Times are plain numbers given by the caller (a simulator's
virtual clock, ``trio.current_time()``, ``time.monotonic()``); nothing here reads a
clock.
"""

from __future__ import annotations

import enum
import itertools
import json
import os
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["History", "Operation", "Outcome"]


class Outcome(enum.Enum):
    """How an operation ended, as far as its client knows."""

    OK = "ok"
    """It took effect, once, somewhere between invocation and completion; ``result``
    is what it returned."""
    FAIL = "fail"
    """It definitely did not take effect (refused before it could be applied)."""
    UNKNOWN = "unknown"
    """It may or may not have taken effect, at any time after its invocation (a
    timeout, a lost connection, a crash). Operations never completed count as this."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation: who did what, when, and what came of it.

    ``kind``, ``key`` and ``value`` are the request (what they mean is up to the
    model: see :class:`raftpy.testing.KVModel`); ``result`` is the response of an
    ``OK`` operation (``None`` otherwise). ``complete`` is when the client saw the
    outcome; for ``UNKNOWN`` it is only informative (``None`` if the client never
    came back), as the operation may take effect at any later time.
    """

    id: int
    client: Hashable
    kind: str
    key: Hashable = None
    value: Any = None
    result: Any = None
    outcome: Outcome = Outcome.OK
    invoke: float = 0.0
    complete: float | None = 0.0

    def __post_init__(self) -> None:
        if self.complete is None:
            if self.outcome is not Outcome.UNKNOWN:
                raise ValueError(f"operation {self.id}: only an unknown outcome may lack "
                                 "a completion time")
        elif self.complete < self.invoke:
            raise ValueError(f"operation {self.id} completes at {self.complete} before "
                             f"its invocation at {self.invoke}")

    def __str__(self) -> str:
        args = ", ".join(repr(a) for a in (self.key, self.value) if a is not None)
        shown = f"ok {self.result!r}" if self.outcome is Outcome.OK else self.outcome.value
        end = "..." if self.complete is None else f"{self.complete:.6g}"
        return f"#{self.id} client {self.client} [{self.invoke:.6g}, {end}] " \
               f"{self.kind}({args}) -> {shown}"

    def to_json(self) -> dict[str, Any]:
        """A JSON-compatible dict (tuples become lists; :meth:`from_json` turns them back)."""
        return {"id": self.id, "client": self.client, "kind": self.kind, "key": self.key,
                "value": self.value, "result": self.result, "outcome": self.outcome.value,
                "invoke": self.invoke, "complete": self.complete}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Operation:
        """The operation :meth:`to_json` wrote. JSON arrays come back as tuples, so that
        values stay hashable (model states are memoised)."""
        return cls(id=int(data["id"]), client=_frozen(data["client"]), kind=str(data["kind"]),
                   key=_frozen(data.get("key")), value=_frozen(data.get("value")),
                   result=_frozen(data.get("result")), outcome=Outcome(data["outcome"]),
                   invoke=float(data["invoke"]),
                   complete=None if data.get("complete") is None else float(data["complete"]))


def _frozen(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


class History:
    """A recorder of operations, in the order they were invoked.

    Concurrent clients share one history: each call is a single dict store, so tasks
    of one event loop (and threads, under CPython's GIL) may record at will::

        op = history.invoke(client, "put", "x", "1", at=now())
        try:
            await kv.put("x", "1")
        except NotLeader:
            history.fail(op, at=now())       # refused: definitely not applied
        except TimeoutError:
            history.unknown(op, at=now())    # may still be applied later
        else:
            history.ok(op, at=now())

    An operation invoked but never completed is checked as ``UNKNOWN``.
    """

    def __init__(self, operations: Iterable[Operation] = ()) -> None:
        self._ops: dict[int, Operation] = {}
        for op in operations:
            if op.id in self._ops:
                raise ValueError(f"two operations with id {op.id}")
            self._ops[op.id] = op
        self._ids = itertools.count(max(self._ops, default=-1) + 1)

    def invoke(self, client: Hashable, kind: str, key: Hashable = None, value: Any = None,
               *, at: float) -> Operation:
        """Record that ``client`` starts an operation at time ``at``; returns its handle,
        to pass to :meth:`ok`, :meth:`fail` or :meth:`unknown`."""
        op = Operation(id=next(self._ids), client=client, kind=kind, key=key, value=value,
                       outcome=Outcome.UNKNOWN, invoke=at, complete=None)
        self._ops[op.id] = op
        return op

    def ok(self, op: Operation, result: Any = None, *, at: float) -> Operation:
        """Record that ``op`` took effect and returned ``result`` (seen at ``at``)."""
        return self._complete(op, Outcome.OK, result, at)

    def fail(self, op: Operation, *, at: float) -> Operation:
        """Record that ``op`` definitely did not take effect."""
        return self._complete(op, Outcome.FAIL, None, at)

    def unknown(self, op: Operation, *, at: float) -> Operation:
        """Record that the client gave up on ``op`` at ``at`` without knowing whether it
        took effect."""
        return self._complete(op, Outcome.UNKNOWN, None, at)

    def _complete(self, op: Operation, outcome: Outcome, result: Any, at: float) -> Operation:
        current = self._ops.get(op.id)
        if current is None or current.invoke != op.invoke or current.client != op.client:
            raise ValueError(f"operation {op.id} was not invoked in this history")
        if current.complete is not None:
            raise ValueError(f"operation {op.id} already completed ({current.outcome.value})")
        done = replace(current, outcome=outcome, result=result, complete=at)
        self._ops[op.id] = done
        return done

    @property
    def operations(self) -> tuple[Operation, ...]:
        """Every operation recorded so far, in invocation order."""
        return tuple(sorted(self._ops.values(), key=lambda op: (op.invoke, op.id)))

    def __len__(self) -> int:
        return len(self._ops)

    def __iter__(self) -> Iterator[Operation]:
        return iter(self.operations)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the history to ``path`` as JSON lines, one operation per line.

        Keys, values and results must be JSON-compatible (str, numbers, bool, None,
        lists or tuples of those)."""
        with open(path, "w", encoding="utf-8") as f:
            for op in self.operations:
                f.write(json.dumps(op.to_json(), separators=(",", ":")) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> History:
        """Read a history :meth:`save` wrote (blank lines are skipped)."""
        with open(path, encoding="utf-8") as f:
            return cls(Operation.from_json(json.loads(line)) for line in f if line.strip())
