"""Sequential specifications for the linearizability checker: what a single copy of the
state would have answered.

A model is a deterministic state machine over hashable states. The checker asks it one
question, again and again: "from this state, applying this operation's request, which
state do you reach, and is the response the client saw the one you would give?"
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol, TypeVar, runtime_checkable

from raftpy.testing.history import Operation, Outcome

__all__ = ["KVModel", "Model", "Partitioned", "ReadOnlyAware", "RegisterModel"]

StateT = TypeVar("StateT")

_READS = frozenset({"read", "get"})
_WRITES = frozenset({"write", "put"})


class Model(Protocol[StateT]):
    """The sequential specification of an object.

    States must be hashable and compare by value (ints, strings, tuples, frozensets,
    frozen dataclasses): the checker memoises the (operations placed, state) pairs it
    has explored, which is what keeps the search from going exponential on ordinary
    histories.
    """

    def init(self) -> StateT:
        """The state before any operation."""
        ...

    def step(self, state: StateT, op: Operation) -> tuple[bool, StateT]:
        """Apply ``op``'s request (``kind``, ``key``, ``value``) to ``state``.

        Returns ``(ok, new_state)``: ``ok`` says whether ``op.result`` is what this
        state would have answered, ``new_state`` is the state afterwards. For an
        ``UNKNOWN`` operation the checker ignores ``ok`` (nobody saw the answer), so
        ``new_state`` must follow from the request and ``state`` alone.
        """
        ...


@runtime_checkable
class Partitioned(Protocol):
    """A model whose operations split into independent parts (one per key, say).

    A history is linearizable if and only if every part is, and checking parts
    apart is exponentially cheaper than checking them together. The same model's
    ``init``/``step`` are used for every part.
    """

    def partition(self, operations: Sequence[Operation]) -> Mapping[Hashable, Sequence[Operation]]:
        """Group ``operations`` (failed ones already removed) by part.

        A part may also leave out operations, or rewrite their requests (keeping their
        ids), where that changes no verdict: an unknown write whose value nobody read,
        say. Explanations show the operations as recorded."""
        ...


@runtime_checkable
class ReadOnlyAware(Protocol):
    """A model that can tell operations which never change the state (reads).

    Optional, and only a speed-up: the checker places an accepted read-only operation
    at once without trying alternatives (they cannot do better), and leaves out
    read-only operations of unknown outcome. Answer ``True`` only if the operation
    leaves *every* state unchanged.
    """

    def is_read_only(self, op: Operation) -> bool:
        """Whether ``op`` leaves every state as it found it."""
        ...


class RegisterModel:
    """A single register, initially ``initial``; ``None`` stands for empty.

    Operations (``key`` is ignored):

    - ``write``/``put`` ``value``: sets the register; its result is not checked.
    - ``read``/``get``: the result is the register's value.
    - ``cas`` with ``value=(expected, new)``: sets ``new`` if the register holds
      ``expected``; the result is ``True`` if it did, ``False`` if not.
    - ``delete``: empties the register; the result is whether it held a value.
    """

    _KINDS = _READS | _WRITES | {"cas", "delete"}

    def __init__(self, initial: Hashable = None) -> None:
        self.initial = initial

    def init(self) -> Any:
        """The initial value."""
        return self.initial

    def step(self, state: Any, op: Operation) -> tuple[bool, Any]:
        """See :meth:`Model.step`."""
        # Called once per search step: one flat function, no helper calls.
        kind = op.kind
        if kind in _READS:
            return op.result == state, state
        if kind in _WRITES:
            return True, op.value
        if kind == "cas":
            expected, new = op.value
            if state == expected:
                return op.result is True, new
            return op.result is False, state
        if kind == "delete":
            return op.result == (state is not None), None
        raise ValueError(f"{type(self).__name__} cannot apply {kind!r} (operation #{op.id})")

    def is_read_only(self, op: Operation) -> bool:
        """``read``/``get``; see :class:`ReadOnlyAware`."""
        return op.kind in _READS

    def partition(self, operations: Sequence[Operation]) -> Mapping[Hashable, Sequence[Operation]]:
        """One part (key ``None``), simplified (see ``_simplify``)."""
        _check_kinds(operations, self._KINDS, self)
        return {None: _simplify(operations, self.initial)}


class KVModel(RegisterModel):
    """A map of independent keys, each a :class:`RegisterModel` that starts absent.

    ``get`` of an absent key returns ``None``, so ``None`` stands for absent;
    ``delete``'s result is whether the key existed, and ``cas`` with ``expected=None``
    creates a key only if it is absent. The history is checked one key at a time.
    """

    def __init__(self) -> None:
        super().__init__(None)

    def partition(self, operations: Sequence[Operation]) -> Mapping[Hashable, Sequence[Operation]]:
        """One part per key, each simplified (see ``_simplify``)."""
        _check_kinds(operations, self._KINDS, self)
        by_key: dict[Hashable, list[Operation]] = {}
        for op in operations:
            by_key.setdefault(op.key, []).append(op)
        return {key: _simplify(ops, None) for key, ops in by_key.items()}


def _check_kinds(operations: Sequence[Operation], kinds: frozenset[str], model: object) -> None:
    for op in operations:
        if op.kind not in kinds:
            raise ValueError(f"{type(model).__name__} cannot apply {op.kind!r} "
                             f"(operation #{op.id}); it knows {sorted(kinds)}")
        if op.kind == "cas" and not (isinstance(op.value, tuple) and len(op.value) == 2):
            raise ValueError(f"operation #{op.id}: a cas value is (expected, new), "
                             f"not {op.value!r}")


class _Unread:
    """Stands for every value that no operation ever observes (see :func:`_simplify`)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<a value no operation observes>"


_UNREAD = _Unread()


def _simplify(operations: Sequence[Operation], initial: Hashable) -> list[Operation]:
    """Rewrite ``operations`` into fewer, more alike ones with the same verdict.

    A value no read returns and no ``cas`` expects is *unobserved*: every operation
    treats all unobserved values alike (a read rejects them, a ``cas`` does not match
    them, a ``delete`` finds the key present), so writing any of them is writing one
    placeholder. With them all one value, two concurrent writes nobody read leave the
    same state in either order, and the search meets each such state once, not once
    per order. (``None`` is never rewritten: it means absent.)

    An unknown write of an unobserved value can moreover be left out when the part has
    only reads and writes: in any linearization holding it, it is followed by another
    write or by nothing (a read in between would have observed its value), so the same
    order without it is a linearization too. With a ``cas`` or ``delete`` around, such
    a write can matter (``delete`` reports that the key existed), so it stays.

    An unknown write that alone writes a value that a successful read returned (or a
    successful ``cas`` expected) did take effect, before that read completed: it
    becomes a successful write due then. An unknown operation never expires: every one
    left out or given a deadline is a candidate fewer at every later step of the search.
    """
    observed = {op.result for op in operations if op.outcome is Outcome.OK and op.kind in _READS}
    observed.update(op.value[0] for op in operations if op.kind == "cas")
    first_seen: dict[Hashable, float] = {}
    writers: dict[Hashable, int] = {}
    for op in operations:
        seen = op.result if op.kind in _READS else op.value[0] if op.kind == "cas" and \
            op.result is True else _UNREAD
        if op.outcome is Outcome.OK and seen is not _UNREAD and op.complete is not None:
            first_seen[seen] = min(first_seen.get(seen, op.complete), op.complete)
        written = op.value if op.kind in _WRITES else op.value[1] if op.kind == "cas" \
            else _UNREAD
        writers[written] = writers.get(written, 0) + 1
    only_reads_and_writes = all(op.kind in _READS or op.kind in _WRITES for op in operations)
    simplified = []
    for op in operations:
        written = op.value if op.kind in _WRITES else op.value[1] if op.kind == "cas" \
            else _UNREAD
        if written is _UNREAD or written is None:
            pass
        elif written not in observed:
            if only_reads_and_writes and op.outcome is Outcome.UNKNOWN:
                continue
            op = replace(op, value=_UNREAD if op.kind in _WRITES else (op.value[0], _UNREAD))
        elif (op.outcome is Outcome.UNKNOWN and writers[written] == 1 and written != initial
              and written in first_seen and op.invoke <= first_seen[written]):
            op = replace(op, outcome=Outcome.OK, complete=first_seen[written],
                         result=True if op.kind == "cas" else None)
        simplified.append(op)
    return simplified
