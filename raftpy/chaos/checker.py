"""The linearizability verdict on a chaos history.

:func:`linearizability_verdict` is the one place the verdict plugs in. It asks the
shared checker, :func:`raftpy.testing.check` with :class:`raftpy.testing.KVModel`
(branch ``lin``), and, as a second opinion, :func:`check_key`: a small per-key
Wing-Gong search with Lowe's memoisation of (linearized set, register value)
configurations, on a register model of put, get and delete (found / not found),
written for the chaos test before the shared checker existed. Both must say
linearizable; a disagreement fails the run (a bug in one of the checkers).

Unknown outcomes (both checkers): a write whose outcome is unknown may take effect
at any time after its invocation, or never. :func:`check_key` pools unknown puts
whose value no get returned: their effects are indistinguishable ("some value
nobody read"), so one transition stands for all of them (this may let one such put
explain two absences of a key; it never reports a violation that is not there).
Failed operations and reads without an answer are left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from raftpy import testing
from raftpy.chaos.history import FAIL, OK, UNKNOWN, History, Op

UNREAD = object()
"""The register holds a value written by an unknown put that nobody read."""

DEFAULT_BUDGET = 2_000_000
"""Configurations explored per key before giving up (verdict ``None``)."""


@dataclass(frozen=True, slots=True)
class _Step:
    call: float
    ret: float
    kind: str
    value: str | None
    result: object
    required: bool


@dataclass(slots=True)
class Verdict:
    """``linearizable`` is ``None`` when the search ran out of budget."""

    linearizable: bool | None
    checker: str
    keys: dict[str, bool | None] = field(default_factory=dict)
    explored: int = 0
    shared: str = ""
    """What the shared checker (:func:`raftpy.testing.check`) said."""

    def describe(self) -> str:
        if self.linearizable:
            return f"linearizable ({self.checker}, {len(self.keys)} keys)"
        bad = [k for k, v in self.keys.items() if v is False]
        if self.linearizable is False:
            return (f"NOT linearizable ({self.checker}): keys {', '.join(bad) or '?'}\n"
                    f"{self.shared}")
        undecided = [k for k, v in self.keys.items() if v is None]
        return f"undetermined ({self.checker}): search budget spent on {', '.join(undecided)}"


def linearizability_verdict(history: History, *, budget: int = DEFAULT_BUDGET) -> Verdict:
    """The verdict on ``history``: the shared checker's, confirmed by :func:`check_key`."""
    own = own_verdict(history, budget=budget)
    try:
        shared = testing.check(to_operations(history), testing.KVModel(), max_steps=budget)
    except testing.SearchLimitExceeded as exc:
        own.shared = f"undecided: {exc}"
        own.linearizable = None
        return own
    own.shared = shared.explanation
    own.checker = "raftpy.testing.check (KVModel), confirmed by raftpy.chaos.checker"
    if shared.ok != (own.linearizable is True):
        if own.linearizable is None:
            own.checker = "raftpy.testing.check (KVModel); the second opinion gave up"
            own.linearizable = shared.ok
        else:
            own.checker = (f"the checkers DISAGREE: raftpy.testing.check says "
                           f"{'linearizable' if shared.ok else 'not'}, "
                           f"raftpy.chaos.checker {own.linearizable}")
            own.linearizable = False
    return own


def to_operations(history: History) -> list[testing.Operation]:
    """The chaos history as the shared checker's operations (``put``/``get``/
    ``delete`` on a key, as :class:`raftpy.testing.KVModel` reads them)."""
    outcomes = {OK: testing.Outcome.OK, FAIL: testing.Outcome.FAIL,
                UNKNOWN: testing.Outcome.UNKNOWN}
    ops = []
    for i, op in enumerate(history.ops):
        outcome = outcomes[op.outcome or UNKNOWN]
        complete = op.complete if op.complete is not None else (
            None if outcome is testing.Outcome.UNKNOWN else op.invoke)
        ops.append(testing.Operation(
            id=i, client=op.process, kind=op.kind, key=op.key, value=op.value,
            result=op.result if outcome is testing.Outcome.OK else None, outcome=outcome,
            invoke=op.invoke, complete=complete))
    return ops


def own_verdict(history: History, *, budget: int = DEFAULT_BUDGET) -> Verdict:
    """The verdict of :func:`check_key` alone, key by key."""
    by_key: dict[str, list[Op]] = {}
    for op in history.ops:
        by_key.setdefault(op.key, []).append(op)
    verdict = Verdict(True, "raftpy.chaos.checker (per-key Wing-Gong/Lowe)")
    for key, ops in sorted(by_key.items()):
        result, explored = check_key(ops, budget=budget)
        verdict.keys[key] = result
        verdict.explored += explored
        if result is False:
            verdict.linearizable = False
        elif result is None and verdict.linearizable is not False:
            verdict.linearizable = None
    return verdict


def check_key(ops: Iterable[Op], *, budget: int = DEFAULT_BUDGET) -> tuple[bool | None, int]:
    """Whether one key's operations are linearizable as a register that starts
    absent; also how many configurations were explored."""
    ops = list(ops)
    read = {op.result for op in ops if op.kind == "get" and op.outcome == OK}
    required: list[_Step] = []
    optional: list[_Step] = []
    pool: list[float] = []  # invocation times of unknown puts nobody read
    for op in ops:
        if op.outcome == OK:
            required.append(_Step(op.invoke, op.complete if op.complete is not None
                                  else math.inf, op.kind, op.value, op.result, True))
        elif op.outcome == UNKNOWN and op.is_write:
            if op.kind == "put" and op.value not in read:
                pool.append(op.invoke)
            else:
                optional.append(_Step(op.invoke, math.inf, op.kind, op.value, None, False))
    required.sort(key=lambda s: s.call)
    optional.sort(key=lambda s: s.call)
    first_pool = min(pool, default=math.inf)
    # A configuration: every required operation before ``done`` is linearized, and
    # of the later ones those whose bit (counted from ``done``) is set in ``window``;
    # ``used`` has a bit per optional operation linearized; then the register value.
    # (The window keeps the numbers small: most of a long history lies behind it.)
    seen: set[_Config] = set()
    stack: list[_Config] = [(0, 0, 0, None)]
    explored = 0
    while stack:
        config = stack.pop()
        done, window, used, state = config
        if done == len(required):
            return True, explored
        if config in seen:
            continue
        seen.add(config)
        explored += 1
        if explored > budget:
            return None, explored
        # The operations that may take effect next: invoked before the earliest
        # answer still to be explained (Wing & Gong's minimal operations).
        min_ret = math.inf
        candidates = []
        i = done
        while i < len(required):
            if not window >> (i - done) & 1:
                s = required[i]
                if s.call > min_ret:
                    break
                candidates.append(i)
                min_ret = min(min_ret, s.ret)
            i += 1
        if first_pool <= min_ret and state is not UNREAD:
            stack.append((done, window, used, UNREAD))
        for j, s in enumerate(optional):
            if s.call > min_ret:
                break
            if not used >> j & 1:
                after = _apply(s, state)
                if after is not _INVALID:
                    stack.append((done, window, used | 1 << j, after))
        for i in reversed(candidates):
            after = _apply(required[i], state)
            if after is not _INVALID:
                d, w = done, window | 1 << (i - done)
                while w & 1:
                    d, w = d + 1, w >> 1
                stack.append((d, w, used, after))
    return False, explored


_INVALID = object()
_Config = tuple[int, int, int, object]


def _apply(step: _Step, state: object) -> object:
    """The register after ``step`` from ``state``, or ``_INVALID``."""
    if step.kind == "put":
        return step.value
    if step.kind == "get":
        return state if step.result == state and state is not UNREAD else _INVALID
    # delete: True when it removed the key, False when there was none
    if not step.required:
        return None
    present = state is not None
    return None if step.result == present else _INVALID
