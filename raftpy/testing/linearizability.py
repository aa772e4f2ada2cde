"""A linearizability checker: could a history have come from one copy of the state?

A history is linearizable if every operation can be given a single instant between
its invocation and its completion (its linearization point) such that applying the
operations one by one in the order of their points, to the model, gives every
response the clients saw. Failed operations (definitely not applied) are left out;
unknown ones may take effect at any instant after their invocation, or never.

The search is Wing and Gong's with Lowe's memoisation, as in Knossos and Porcupine:
walk the operations in time order, place the first one the model accepts, and on
reaching the completion of one not yet placed, undo the last choice and try the next
candidate; a configuration (operations placed, state) known to fail is not explored
again. On top of that:

- a :class:`~raftpy.testing.Partitioned` model's parts (keys) are searched apart;
- a read-only operation (:class:`~raftpy.testing.ReadOnlyAware`) the model accepts is
  placed at once and never tried in another position;
- identical concurrent operations are placed in the order they are due;
- unknown operations are optional, so a configuration fails if a failed one had the
  same state and the same surely applied operations with fewer unknown ones; one that
  would change nothing is not placed;
- the built-in models give every value no operation observes one placeholder value,
  so that the orders of writes nobody read lead to one state, not many.

Checking linearizability is NP-complete. The search is quick when few operations
overlap on each part; its cost grows with the number of concurrent operations per
part, with unknown outcomes (they never expire), and, for a history that is not
linearizable, with the length of history before the violation (every way to reach it
is explored). ``max_steps`` bounds it.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from raftpy.testing.history import History, Operation, Outcome
from raftpy.testing.models import Model, Partitioned, ReadOnlyAware

__all__ = ["CheckResult", "SearchLimitExceeded", "assert_linearizable", "check"]

# What an explanation shows of the linearizable prefix: its last few operations and
# the last few that changed the state (how the state came to be), and the ones that
# overlap the operations that could not be placed (their order could have differed),
# at most _OVERLAPPING of those, the latest placed.
_CONTEXT = 3
_OVERLAPPING = 10

# Each part gets two searches at most. The first is quick when the part is
# linearizable: it places unknown operations as early as it can (most of them are
# then out of the way for good), and it names each set of placed operations by the
# XOR of a random 128-bit word per operation (Zobrist hashing), much cheaper to update
# and hash than an exact bitset. It gives up after _QUICK_STEPS_PER_OP model steps per
# operation (plus _QUICK_STEPS). A failure or a give-up goes to the second search,
# whose verdict stands: exact bitsets (two sets sharing a name would wrongly look
# explored already), and unknown operations tried only where no other operation fits,
# which lets it recognise far more configurations as failed already: what a
# violation costs, since every configuration before it must be explored.
_HASH_BITS = 128
_QUICK_STEPS_PER_OP = 100
_QUICK_STEPS = 100_000


class SearchLimitExceeded(Exception):
    """The search for one part gave up after ``max_steps`` model steps: the history
    may or may not be linearizable."""

    def __init__(self, key: Hashable, steps: int) -> None:
        super().__init__(f"gave up on key {key!r} after {steps} model steps: undecided")
        self.key = key
        self.steps = steps


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict on a history; ``str()`` (or ``print()``) gives :attr:`explanation`.

    For a violation, the fields describe the first part (in order of first invocation)
    found not linearizable:

    - ``operations``: how many operations it holds (when ``ok``: how many the
      history holds);
    - ``key``: its partition key (``None`` for an unpartitioned model);
    - ``linearized``: a longest linearizable prefix of its operations, in order;
    - ``state``: the model state that prefix leaves;
    - ``stuck``: an operation that had to come next and that the model rejects in
      ``state`` (as it rejects every other operation that could come next);
    - ``window``: the operations around the failure, by invocation time: the end of
      the prefix and everything that could have come next.
    """

    ok: bool
    explanation: str
    operations: int = 0
    key: Hashable = None
    linearized: tuple[Operation, ...] = ()
    state: Any = None
    stuck: Operation | None = None
    window: tuple[Operation, ...] = ()

    def __str__(self) -> str:
        return self.explanation


def check(history: History | Iterable[Operation], model: Model[Any], *,
          max_steps: int | None = None) -> CheckResult:
    """Check ``history`` against ``model``; see the module docstring for the rules.

    Failed operations are left out. If ``model`` is :class:`Partitioned`, each part is
    checked alone and the first part that is not linearizable is reported. Raises
    :class:`SearchLimitExceeded` if a search of a part takes more than ``max_steps``
    model steps.
    """
    ops = list(history.operations if isinstance(history, History) else history)
    if len({op.id for op in ops}) != len(ops):
        raise ValueError("operation ids must be unique")
    read_only = model.is_read_only if isinstance(model, ReadOnlyAware) else None
    # A failed operation did not happen; an unknown read-only one changed nothing.
    live = [op for op in ops if op.outcome is Outcome.OK or (
        op.outcome is Outcome.UNKNOWN and (read_only is None or not read_only(op)))]
    parts = dict(model.partition(live)) if isinstance(model, Partitioned) else {None: live}
    # Report the earliest broken part, whatever order the model grouped them in.
    ordered = sorted(parts.items(), key=lambda kv: min((op.invoke for op in kv[1]),
                                                       default=math.inf))
    for key, part in ordered:
        stuck = _decide(key, part, model, read_only, max_steps)
        if stuck is not None:
            recorded = {op.id: op for op in ops}
            return _failure(key, part, [recorded[op.id] for op in part], model, stuck)
    failed = sum(op.outcome is Outcome.FAIL for op in ops)
    unknown = sum(op.outcome is Outcome.UNKNOWN for op in ops)
    return CheckResult(
        ok=True, operations=len(ops),
        explanation=(f"linearizable: {len(ops)} operations ({failed} failed, {unknown} "
                     f"of unknown outcome) in {len(parts)} part{'s' if len(parts) != 1 else ''}"))


def assert_linearizable(history: History | Iterable[Operation], model: Model[Any], *,
                        max_steps: int | None = None) -> CheckResult:
    """:func:`check`, raising ``AssertionError`` with the explanation on a violation."""
    result = check(history, model, max_steps=max_steps)
    if not result.ok:
        raise AssertionError(result.explanation)
    return result


def _decide(key: Hashable, ops: Sequence[Operation], model: Model[Any],
            read_only: Callable[[Operation], bool] | None,
            max_steps: int | None) -> _Stuck | None:
    """Search one part: first quickly, then, if that did not succeed, for certain."""
    quick = _QUICK_STEPS_PER_OP * len(ops) + _QUICK_STEPS
    if max_steps is not None:
        quick = min(quick, max_steps)
    # Seeded: the same history is always searched the same way.
    words = random.Random(len(ops))
    names = [words.getrandbits(_HASH_BITS) for _ in ops]
    try:
        if _search(key, ops, model, read_only, quick, names, lazy=False) is None:
            return None
    except SearchLimitExceeded:
        pass
    exact = [1 << i for i in range(len(ops))]
    return _search(key, ops, model, read_only, max_steps, exact, lazy=True)


@dataclass(frozen=True, slots=True)
class _Stuck:
    """Where a failed search got furthest: the operations placed (indexes into the
    part, in order), the operation it could not place, and each list node's position."""

    prefix: list[int]
    stuck: int
    position: dict[int, int]


def _search(key: Hashable, ops: Sequence[Operation], model: Model[Any],
            read_only: Callable[[Operation], bool] | None, max_steps: int | None,
            names: Sequence[int], lazy: bool) -> _Stuck | None:
    """Lowe's search over one part: None if linearizable.

    A configuration is (operations placed, state). The surely applied (``OK``)
    operations placed are named by the XOR of their ``names`` (exact with ``1 << i``),
    the unknown ones by an exact bitmask of their own. ``lazy`` tries unknown
    operations only where no surely applied one fits.
    """
    n = len(ops)
    if n == 0:
        return None
    unknown = [op.outcome is Outcome.UNKNOWN for op in ops]
    unknown_bit = [0] * n
    for k, i in enumerate(i for i in range(n) if unknown[i]):
        unknown_bit[i] = 1 << k
    has_unknown = any(unknown)
    # The lazy search keeps unknown operations' calls on a list of their own, so that
    # looking for the next OK candidate does not walk past every unknown operation
    # still unplaced, however long ago it was invoked.
    aside = [lazy and u for u in unknown]
    # Node i is operation i's call and node n + i its return; nodes 2n and 2n + 1 head
    # the lists. Calls sort before returns at equal times: operations that touch are
    # concurrent, since a recorded instant cannot tell which came first. An unknown
    # operation never returns: it stays a candidate to the end (or is never placed).
    events = sorted([(op.invoke, 0, i) for i, op in enumerate(ops)]
                    + [(math.inf if unknown[i] else float(op.complete or 0.0), 1, n + i)
                       for i, op in enumerate(ops)])
    head, aside_head = 2 * n, 2 * n + 1
    order = [node for _, _, node in events]
    position = {node: p for p, node in enumerate(order)}
    nxt = [-1] * (2 * n + 2)
    prv = [-1] * (2 * n + 2)
    for nodes in ([head, *(v for v in order if not aside[v % n])],
                  [aside_head, *(v for v in order if v < n and aside[v])]):
        for a, b in itertools.pairwise(nodes):
            nxt[a] = b
            prv[b] = a
    twins = _twins(ops, order, position, unknown)

    step = model.step
    # Placing an accepted read-only operation at once loses nothing: any order that
    # places it later can place it now instead (it changes no state, and everything
    # that had to precede it is placed already). So if that fails, every alternative
    # here fails too, and the search backs up one more level. Without this, a bad
    # read among k concurrent good ones is searched through all 2^k subsets of them.
    eager = [read_only(op) for op in ops] if read_only is not None else [False] * n
    # Configurations known to fail, as (OK operations placed, state) -> the minimal
    # sets of unknown operations placed with them. Placing more unknown operations
    # never helps (the rest of them stay optional), so a configuration fails if a
    # failed one had the same OK operations, the same state and a subset of its
    # unknown ones. (The lazy search tries unknown operations only when stuck, so
    # that the small sets come first.)
    failed: dict[tuple[int, Any], list[int]] = {}
    placed = [False] * n
    # The undo stack is a linked list of (operation, state, OK placed, unknown placed,
    # frame below, bound), the values before placing the operation: recording the
    # deepest failure point is then one reference, not a copy of the stack.
    top: tuple[Any, ...] | None = None
    state = model.init()
    placed_ok = 0
    placed_unknown = 0
    depth = 0  # OK operations placed
    steps = 0
    best_depth = -1
    best: tuple[tuple[Any, ...] | None, int] = (None, 0)
    # Candidates are the calls before the first return. The quick search tries them in
    # call order. The lazy one tries the OK ones (phase A), and on reaching that
    # return (at position `bound`) the unknown ones called before it (phase B).
    phase_b = False
    bound = 0
    stacked = False  # the last operation placed is an unknown one

    node = nxt[head]
    while True:
        if phase_b and (node == -1 or position[node] > bound):
            pass  # no unknown candidate left: undo the last choice
        elif node == -1:
            return None  # every OK operation has its place
        elif node < n:
            # An identical operation that is due no later is a candidate too: placing
            # this one first can do nothing that placing that one first cannot.
            waiting = False
            for twin in twins[node]:
                if not placed[twin]:
                    waiting = True
                    break
            if waiting:
                node = nxt[node]
                continue
            steps += 1
            if max_steps is not None and steps > max_steps:
                raise SearchLimitExceeded(key, max_steps)
            ok, new_state = step(state, ops[node])
            if unknown[node]:
                # Nobody saw an unknown operation's response: only its effect counts.
                # One that changes nothing here is not worth placing here; nor is one
                # that, placed right after the unknown operation placed last, leaves
                # the state it would leave without it (a write after a write): that
                # order is covered by placing it instead of the other one.
                ok = new_state != state and not (
                    stacked and top is not None and step(top[1], ops[node])[1] == new_state)
            if ok:
                if unknown[node]:
                    new_ok, new_unknown = placed_ok, placed_unknown | unknown_bit[node]
                else:
                    new_ok, new_unknown = placed_ok ^ names[node], placed_unknown
                dominated = False
                for subset in failed.get((new_ok, new_state), ()):
                    if subset & new_unknown == subset:
                        dominated = True
                        break
                if not dominated:
                    top = (node, state, placed_ok, placed_unknown, top, bound)
                    state, placed_ok, placed_unknown = new_state, new_ok, new_unknown
                    placed[node] = True
                    depth += not unknown[node]
                    stacked = unknown[node]
                    # Lift the call, and the return, out of their list (dancing links).
                    p, q = prv[node], nxt[node]
                    nxt[p] = q
                    if q != -1:
                        prv[q] = p
                    if not aside[node]:
                        ret = node + n
                        p, q = prv[ret], nxt[ret]
                        nxt[p] = q
                        if q != -1:
                            prv[q] = p
                    phase_b = False
                    node = nxt[head]
                    continue
                if not eager[node]:
                    node = nxt[node]
                    continue
                # Its continuation fails: so does this configuration (see eager).
            else:
                node = nxt[node]
                continue
        elif unknown[node - n]:
            # The quick search's unknown returns sort last: only unknown operations
            # are left, and every OK one has its place.
            return None
        else:
            # The return of an OK operation not yet placed: no OK operation can come
            # next. The lazy search tries the unknown ones; then undo the last choice.
            if depth > best_depth:
                best_depth = depth
                best = (top, node - n)
            if lazy and has_unknown:
                phase_b = True
                bound = position[node]
                node = nxt[aside_head]
                continue
        while True:
            if top is None:
                frame, stuck = best
                prefix = []
                while frame is not None:
                    prefix.append(frame[0])
                    frame = frame[4]
                return _Stuck(prefix[::-1], stuck, position)
            memo = (placed_ok, state)
            known = failed.get(memo)
            if known is None:
                failed[memo] = [placed_unknown]
            else:
                known[:] = [u for u in known if u & placed_unknown != placed_unknown]
                known.append(placed_unknown)
            undone, state, placed_ok, placed_unknown, top, bound = top
            placed[undone] = False
            depth -= not unknown[undone]
            # Put the return back first, then the call: the reverse of lifting.
            if not aside[undone]:
                ret = undone + n
                p, q = prv[ret], nxt[ret]
                nxt[p] = ret
                if q != -1:
                    prv[q] = ret
            p, q = prv[undone], nxt[undone]
            nxt[p] = undone
            if q != -1:
                prv[q] = undone
            if not eager[undone]:
                break
        phase_b = aside[undone]
        stacked = top is not None and unknown[top[0]]
        node = nxt[undone]


def _twins(ops: Sequence[Operation], order: Sequence[int], position: dict[int, int],
           unknown: Sequence[bool]) -> list[list[int]]:
    """For each operation, the identical ones (same request, outcome and result)
    called before it, due no later, and still running when it is called.

    While one of those is unplaced, it is a candidate whenever this one is, and any
    order placing this one first works with the two swapped: it is the same
    operation, and the twin's earlier deadline is met at the earlier place.
    """
    n = len(ops)
    none: list[int] = []
    twins = [none] * n
    kinds: list[Any] = [None] * n
    running: dict[Any, list[int]] = {}
    for node in order:
        if node < n:
            op = ops[node]
            kind = (op.kind, op.key, op.value, op.result, unknown[node])
            try:
                group = running.setdefault(kind, [])
            except TypeError:
                continue  # an unhashable request has no twins
            kinds[node] = kind
            if group:
                due = position[node + n]
                twins[node] = [t for t in group if position[t + n] <= due]
            group.append(node)
        elif kinds[node - n] is not None:
            running[kinds[node - n]].remove(node - n)
    return twins


def _failure(key: Hashable, searched: Sequence[Operation], ops: Sequence[Operation],
             model: Model[Any], stuck_at: _Stuck) -> CheckResult:
    """Describe the configuration with the most ``OK`` operations placed where the
    search had to undo a choice (``searched``: the part as searched, ``ops``: the
    same operations as recorded).

    There the model rejects every ``OK`` operation that could come next (those called
    before the stuck one returned): had it accepted one, the search would have placed
    more of them somewhere.
    """
    prefix, stuck, position = stuck_at.prefix, stuck_at.stuck, stuck_at.position
    # The states as recorded (the part may have rewritten values nobody observed).
    state = model.init()
    changed = []
    for i in prefix:
        before = state
        state = model.step(state, ops[i])[1]
        if state != before:
            changed.append(i)
    n = len(ops)
    deadline = position[stuck + n]
    placed = set(prefix)
    candidates = [i for i in range(n) if i not in placed and position[i] < deadline]
    rejected = [i for i in candidates if searched[i].outcome is Outcome.OK]
    optional = [i for i in candidates if searched[i].outcome is not Outcome.OK]
    start = min(ops[i].invoke for i in rejected)
    place = {i: k for k, i in enumerate(prefix, 1)}
    overlapping = [i for i in prefix if ops[i].outcome is Outcome.UNKNOWN
                   or (ops[i].complete or 0.0) >= start]
    shown = {*overlapping[-_OVERLAPPING:], *prefix[-_CONTEXT:], *changed[-_CONTEXT:],
             *candidates}
    window = sorted(shown, key=lambda i: (ops[i].invoke, ops[i].id))
    hidden = len(overlapping) - len(set(overlapping) & shown)

    lines = [
        "not linearizable" + (f": key {key!r}" if key is not None else "")
        + f" ({n} operation{'s' if n != 1 else ''})",
        f"A longest linearizable prefix orders {len(prefix)} of them, leaving the state "
        f"at {_short(state)}.",
        f"One of the operations invoked before #{ops[stuck].id} "
        + ("completed" if ops[stuck].outcome is Outcome.OK
           else "took effect (a read returned its value)")
        + " must come next, and in that state the model rejects each of them:",
        *(f"    {ops[i]}" for i in rejected),
    ]
    if optional:
        lines.append(f"Placing first any of the {len(optional)} operations of unknown "
                     "outcome invoked by then (marked ?) does not help either.")
    lines.append("Operations around the failure, by invocation time "
                 "(<k>: k-th in the prefix, !: cannot come next):")
    for i in window:
        mark = f"<{place[i]}>" if i in place else "!" if i in rejected else "?"
        lines.append(f"  {mark:>6}  {ops[i]}")
    if hidden:
        lines.append(f"  ({hidden} earlier operations of the prefix overlap too: "
                     "see CheckResult.linearized)")
    return CheckResult(
        ok=False, explanation="\n".join(lines), operations=n, key=key,
        linearized=tuple(ops[i] for i in prefix), state=state, stuck=ops[stuck],
        window=tuple(ops[i] for i in window))


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
