"""The linearizability checker (raftpy.testing) on synthetic histories.

Histories known to be linearizable must pass and known anomalies (stale read, lost
write, a value never written, a write applied twice, a delete that found nothing)
must fail, naming the key, the prefix and the operation that could not be placed.
Hypothesis checks the search against brute force on small histories, and that
histories generated from a sequential dict pass while corrupted ones fail.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from benchmarks import linearizability_check
from raftpy.testing import (
    CheckResult,
    History,
    KVModel,
    Model,
    Operation,
    Outcome,
    RegisterModel,
    SearchLimitExceeded,
    assert_linearizable,
    check,
    linearizability,
)

OK, FAIL, UNKNOWN = Outcome.OK, Outcome.FAIL, Outcome.UNKNOWN


def history(*specs: tuple[Any, ...]) -> list[Operation]:
    """Operations numbered from 0: (client, kind, key, value, result, outcome, invoke, complete)."""
    return [Operation(id=i, client=c, kind=kind, key=key, value=value, result=result,
                      outcome=outcome, invoke=invoke, complete=complete)
            for i, (c, kind, key, value, result, outcome, invoke, complete) in enumerate(specs)]


def ids(ops: Iterable[Operation]) -> list[int]:
    return [op.id for op in ops]


def failure(ops: Sequence[Operation], model: Model[Any] | None = None) -> CheckResult:
    result = check(ops, model or KVModel())
    assert not result.ok
    assert result.stuck is not None
    return result


# ------------------------------------------------------------ linearizable histories

def test_sequential_history_passes() -> None:
    ops = history(
        (1, "write", None, "a", None, OK, 0, 1),
        (1, "read", None, None, "a", OK, 2, 3),
        (2, "cas", None, ("a", "b"), True, OK, 4, 5),
        (2, "cas", None, ("a", "c"), False, OK, 6, 7),
        (1, "read", None, None, "b", OK, 8, 9),
        (1, "delete", None, None, True, OK, 10, 11),
        (2, "read", None, None, None, OK, 12, 13),
    )
    result = check(ops, RegisterModel())
    assert (result.ok, result.operations, result.key) == (True, 7, None)
    assert result.explanation == \
        "linearizable: 7 operations (0 failed, 0 of unknown outcome) in 1 part"


def test_reads_overlapping_a_write_may_see_it_take_effect_between_them() -> None:
    ops = history(
        (1, "put", "x", "a", None, OK, 0, 10),
        (2, "get", "x", None, None, OK, 1, 2),
        (3, "get", "x", None, "a", OK, 3, 4),
        (2, "get", "x", None, "a", OK, 5, 6),
    )
    assert check(ops, KVModel()).ok


@pytest.mark.parametrize("seen", ["a", "b"])
def test_concurrent_writes_may_take_effect_in_either_order(seen: str) -> None:
    ops = history(
        (1, "put", "x", "a", None, OK, 0, 5),
        (2, "put", "x", "b", None, OK, 1, 4),
        (3, "get", "x", None, seen, OK, 6, 7),
        (3, "get", "x", None, seen, OK, 8, 9),
    )
    assert check(ops, KVModel()).ok


def test_operations_that_touch_count_as_concurrent() -> None:
    # The read is invoked at the instant the write completes: a recorded instant
    # cannot tell which came first, so the read may precede the write.
    ops = history(
        (1, "put", "x", "a", None, OK, 0, 2),
        (2, "get", "x", None, None, OK, 2, 3),
    )
    assert check(ops, KVModel()).ok


@pytest.mark.parametrize(("reads", "name"), [
    (("a", "a"), "took effect before the first read"),
    ((None, None), "never took effect"),
    ((None, "a"), "took effect after the client gave up, between the reads"),
])
def test_unknown_outcome_may_or_may_not_take_effect(reads: tuple[str | None, str | None],
                                                     name: str) -> None:
    ops = history(
        (1, "put", "x", "a", None, UNKNOWN, 0, 1),
        (2, "get", "x", None, reads[0], OK, 2, 3),
        (2, "get", "x", None, reads[1], OK, 4, 5),
    )
    assert check(ops, KVModel()).ok, name


def test_an_operation_never_completed_counts_as_unknown() -> None:
    recorded = History()
    recorded.invoke(1, "put", "x", "a", at=0.0)  # the client crashed: no completion
    read = recorded.invoke(2, "get", "x", at=5.0)
    recorded.ok(read, "a", at=6.0)
    assert recorded.operations[0].outcome is UNKNOWN
    assert recorded.operations[0].complete is None
    assert check(recorded, KVModel()).ok


def test_failed_operations_are_left_out() -> None:
    ops = history(
        (1, "put", "x", "a", None, FAIL, 0, 1),
        (2, "get", "x", None, None, OK, 2, 3),
    )
    result = check(ops, KVModel())
    assert (result.ok, result.operations) == (True, 2)
    assert result.explanation == \
        "linearizable: 2 operations (1 failed, 0 of unknown outcome) in 1 part"


def test_keys_are_checked_independently() -> None:
    # Per key this is fine; a single register could not explain it.
    ops = history(
        (1, "put", "x", "a", None, OK, 0, 1),
        (2, "put", "y", "b", None, OK, 2, 3),
        (1, "get", "x", None, "a", OK, 4, 5),
        (2, "get", "y", None, "b", OK, 4, 5),
    )
    assert check(ops, KVModel()).ok
    assert not check(ops, RegisterModel()).ok


# ------------------------------------------------------------ anomalies

def test_failed_operation_seen_taking_effect_is_caught() -> None:
    ops = history(
        (1, "put", "x", "a", None, FAIL, 0, 1),
        (2, "get", "x", None, "a", OK, 2, 3),
    )
    result = failure(ops)
    assert (result.key, ids(result.linearized), result.stuck.id if result.stuck else None) \
        == ("x", [], 1)


def test_unknown_write_cannot_take_effect_before_its_invocation() -> None:
    ops = history(
        (1, "get", "x", None, "a", OK, 0, 1),
        (2, "put", "x", "a", None, UNKNOWN, 2, 3),
    )
    assert failure(ops).stuck == ops[0]


def test_an_unknown_write_somebody_read_took_effect_before_that_read() -> None:
    ops = history(
        (1, "put", "x", "a", None, UNKNOWN, 0, 1),
        (2, "get", "x", None, "a", OK, 2, 3),
        (2, "get", "x", None, None, OK, 4, 5),
    )
    result = failure(ops)
    assert (ids(result.linearized), result.state, result.stuck) == ([0, 1], "a", ops[2])


def test_an_unknown_compare_and_set_somebody_read_had_to_swap() -> None:
    ops = history(
        (1, "put", "x", "a", None, OK, 0, 1),
        (2, "cas", "x", ("b", "c"), None, UNKNOWN, 2, 3),
        (3, "get", "x", None, "c", OK, 4, 5),
    )
    result = failure(ops)
    # It did swap (nothing else wrote c), by the time the read of c completed; it
    # could not have, from a.
    assert (ids(result.linearized), result.state, result.stuck) == ([0], "a", ops[1])
    assert result.explanation.splitlines()[2] == (
        "One of the operations invoked before #1 took effect (a read returned its value) "
        "must come next, and in that state the model rejects each of them:")
    assert check([*ops[:1], dataclasses.replace(ops[1], value=("a", "c")), ops[2]],
                 KVModel()).ok


def test_stale_read_is_caught() -> None:
    # A read returned b while b's write was still running; a later read returned a.
    ops = history(
        (1, "write", None, "a", None, OK, 0, 1),
        (2, "write", None, "b", None, OK, 2, 10),
        (3, "read", None, None, "b", OK, 3, 4),
        (4, "read", None, None, "a", OK, 5, 6),
    )
    result = failure(ops, RegisterModel())
    assert result.key is None
    assert ids(result.linearized) == [0, 1, 2]
    assert result.state == "b"
    assert result.stuck == ops[3]
    assert ids(result.window) == [0, 1, 2, 3]
    assert str(result) == result.explanation == "\n".join([
        "not linearizable (4 operations)",
        "A longest linearizable prefix orders 3 of them, leaving the state at 'b'.",
        "One of the operations invoked before #3 completed must come next, and in that "
        "state the model rejects each of them:",
        "    #3 client 4 [5, 6] read() -> ok 'a'",
        "Operations around the failure, by invocation time "
        "(<k>: k-th in the prefix, !: cannot come next):",
        "     <1>  #0 client 1 [0, 1] write('a') -> ok None",
        "     <2>  #1 client 2 [2, 10] write('b') -> ok None",
        "     <3>  #2 client 3 [3, 4] read() -> ok 'b'",
        "       !  #3 client 4 [5, 6] read() -> ok 'a'",
    ])


def test_lost_write_is_caught() -> None:
    # b's put was acknowledged, yet every later read sees the value before it.
    ops = history(
        (1, "put", "x", "a", None, OK, 0, 1),
        (2, "put", "x", "b", None, OK, 2, 3),
        (1, "get", "x", None, "a", OK, 4, 5),
        (3, "get", "x", None, "a", OK, 6, 7),
    )
    result = failure(ops)
    assert (result.key, ids(result.linearized), result.state) == ("x", [0, 1], "b")
    assert result.stuck == ops[2]


def test_read_of_a_value_never_written_is_caught() -> None:
    ops = history(
        (1, "put", "x", "a", None, OK, 0, 1),
        (2, "put", "x", "b", None, OK, 1, 2),
        (3, "get", "x", None, "z", OK, 0, 3),
    )
    result = failure(ops)
    # The read fits nowhere: the longest prefix places both writes, then it is stuck.
    assert (ids(result.linearized), result.state, result.stuck) == ([0, 1], "b", ops[2])
    assert ids(result.window) == [0, 2, 1]


def test_write_applied_twice_is_caught() -> None:
    # a then b, each put once; b was seen, then a came back: a was applied again.
    ops = history(
        (1, "put", "x", "a", None, OK, 0, 1),
        (2, "put", "x", "b", None, OK, 2, 3),
        (3, "get", "x", None, "b", OK, 4, 5),
        (3, "get", "x", None, "a", OK, 6, 7),
    )
    result = failure(ops)
    assert (ids(result.linearized), result.state, result.stuck) == ([0, 1, 2], "b", ops[3])


def test_delete_finding_nothing_is_caught_when_nothing_else_deleted_the_key() -> None:
    ops = history(
        (1, "put", "x", "a", None, OK, 0, 1),
        (2, "delete", "x", None, False, OK, 2, 3),
        (3, "put", "y", "a", None, OK, 0, 1),
        (3, "delete", "y", None, True, UNKNOWN, 1, 2),
        (4, "delete", "y", None, False, OK, 3, 4),
    )
    result = failure(ops)
    assert (result.key, ids(result.linearized), result.state, result.stuck) \
        == ("x", [0], "a", ops[1])
    # On y an unknown delete may have removed the key first: not an anomaly.
    assert check(ops[2:], KVModel()).ok


def test_compare_and_set_succeeding_on_the_wrong_value_is_caught() -> None:
    ops = history(
        (1, "put", "x", "a", None, OK, 0, 1),
        (2, "cas", "x", ("b", "c"), True, OK, 2, 3),
    )
    assert failure(ops).stuck == ops[1]


def test_the_earliest_broken_key_is_reported() -> None:
    ops = history(
        (1, "put", "x", "a", None, OK, 0, 1),
        (2, "get", "y", None, "never", OK, 5, 6),
        (3, "get", "z", None, "never", OK, 3, 4),
    )
    assert failure(ops).key == "z"


def test_explanation_shows_concurrent_candidates_and_the_prefix_end() -> None:
    ops = history(
        (1, "put", "x", "a", None, OK, 0, 1),
        (1, "put", "x", "b", None, OK, 2, 3),
        (1, "put", "x", "c", None, OK, 4, 5),
        (2, "get", "x", None, "a", OK, 6, 9),
        (3, "get", "x", None, "d", OK, 7, 8),
        (4, "put", "x", "e", None, OK, 10, 11),
    )
    result = failure(ops)
    assert result.key == "x"
    assert ids(result.linearized) == [0, 1, 2]
    assert result.stuck == ops[4]
    # The last three of the prefix for context, then both reads that could come next.
    assert ids(result.window) == [0, 1, 2, 3, 4]
    assert result.explanation.splitlines()[:5] == [
        "not linearizable: key 'x' (6 operations)",
        "A longest linearizable prefix orders 3 of them, leaving the state at 'c'.",
        "One of the operations invoked before #4 completed must come next, and in that "
        "state the model rejects each of them:",
        "    #3 client 2 [6, 9] get('x') -> ok 'a'",
        "    #4 client 3 [7, 8] get('x') -> ok 'd'",
    ]


def test_assert_linearizable_raises_with_the_explanation() -> None:
    ops = history((1, "get", "x", None, "a", OK, 0, 1))
    with pytest.raises(AssertionError, match=r"not linearizable: key 'x' \(1 operation\)"):
        assert_linearizable(ops, KVModel())
    assert assert_linearizable(ops[:0], KVModel()).ok


def test_search_limit() -> None:
    ops = linearizability_check.generate(200, 10, 1, seed=3)
    assert check(ops, KVModel()).ok
    with pytest.raises(SearchLimitExceeded, match="gave up on key 'k0' after 50 model steps"):
        check(ops, KVModel(), max_steps=50)


def test_unknown_writes_nobody_read_cost_nothing() -> None:
    # 40 writes of unknown outcome, each concurrent with everything after it: kept
    # as candidates they would multiply the search; no read saw them, so they go.
    ops = history(
        *[(c, "write", None, f"lost{c}", None, UNKNOWN, c, c + 1) for c in range(40)],
        *[(40 + r, "write", None, r, None, OK, 50 + 2 * r, 51 + 2 * r) for r in range(50)],
        *[(40 + r, "read", None, None, r, OK, 51 + 2 * r, 52 + 2 * r) for r in range(50)],
    )
    assert check(ops, RegisterModel(), max_steps=500).ok


@pytest.mark.parametrize(("last_read", "linearizable"), [("b", True), ("a", False)])
def test_many_unknown_writes_nobody_read_cost_little_with_a_delete_around(
        last_read: str, linearizable: bool) -> None:
    # A delete could have found one of them, so they stay: 30 candidates at every
    # later step. But they all write one placeholder value, only the first of them is
    # tried at a time, and what fails with fewer of them placed fails with more.
    ops = history(
        *[(c, "put", "x", f"lost{c}", None, UNKNOWN, c, c + 1) for c in range(30)],
        (30, "delete", "x", None, True, OK, 35, 36),  # one of them took effect
        (30, "get", "x", None, None, OK, 37, 38),
        (31, "put", "x", "a", None, OK, 40, 41),
        (31, "get", "x", None, "a", OK, 42, 43),
        (32, "put", "x", "b", None, OK, 44, 45),
        (32, "get", "x", None, "b", OK, 46, 47),
        (33, "get", "x", None, last_read, OK, 48, 49),
    )
    result = check(ops, KVModel(), max_steps=2000)
    assert result.ok is linearizable
    if not linearizable:
        assert result.stuck == ops[-1]
        assert (len(result.linearized), result.state) == (7, "b")


def test_a_bad_read_among_many_concurrent_reads_is_found_quickly() -> None:
    # Each good read is placed as soon as it fits, never tried in another position:
    # otherwise the search would go through all 2^40 subsets of the good reads.
    ops = history(
        (0, "put", "x", "a", None, OK, 0, 1),
        *[(c, "get", "x", None, "a", OK, 2, 3) for c in range(1, 41)],
        (41, "get", "x", None, "b", OK, 2, 3),
    )
    result = check(ops, KVModel(), max_steps=200)
    assert (result.ok, len(result.linearized), result.stuck) == (False, 41, ops[41])


def test_an_application_model() -> None:
    """A model written by an application: a queue of (enqueue x | dequeue -> x)."""

    class Queue:
        def init(self) -> tuple[Hashable, ...]:
            return ()

        def step(self, state: tuple[Hashable, ...],
                 op: Operation) -> tuple[bool, tuple[Hashable, ...]]:
            if op.kind == "enqueue":
                return True, (*state, op.value)
            head = state[0] if state else None
            return op.result == head, state[1:]

    fine = history(
        (1, "enqueue", None, 1, None, OK, 0, 3),
        (2, "enqueue", None, 2, None, OK, 1, 2),
        (3, "dequeue", None, None, 2, OK, 4, 5),
        (3, "dequeue", None, None, 1, OK, 6, 7),
    )
    assert check(fine, Queue()).ok
    reordered = history(
        (1, "enqueue", None, 1, None, OK, 0, 1),
        (2, "enqueue", None, 2, None, OK, 2, 3),
        (3, "dequeue", None, None, 2, OK, 4, 5),
    )
    result = failure(reordered, Queue())
    assert (result.key, result.state, result.stuck) == (None, (1, 2), reordered[2])


# ------------------------------------------------------------ recording and files

def test_history_records_concurrent_clients() -> None:
    recorded = History()
    a = recorded.invoke("c1", "put", "x", "1", at=0.0)
    b = recorded.invoke("c2", "put", "x", "2", at=0.5)
    c = recorded.invoke("c3", "cas", "x", ("1", "3"), at=0.7)
    recorded.fail(b, at=1.0)
    recorded.ok(a, at=1.5)
    recorded.unknown(c, at=2.0)
    assert [(op.id, op.outcome, op.complete) for op in recorded.operations] == [
        (0, OK, 1.5), (1, FAIL, 1.0), (2, UNKNOWN, 2.0)]
    assert len(recorded) == 3
    with pytest.raises(ValueError, match="already completed"):
        recorded.ok(a, at=3.0)
    with pytest.raises(ValueError, match="before its invocation"):
        recorded.ok(recorded.invoke("c1", "get", "x", at=4.0), "1", at=3.0)
    with pytest.raises(ValueError, match="was not invoked in this history"):
        History().ok(a, at=3.0)


def test_history_from_operations_continues_the_numbering() -> None:
    recorded = History(history((1, "put", "x", "a", None, OK, 0, 1)))
    assert recorded.invoke(2, "get", "x", at=2).id == 1
    with pytest.raises(ValueError, match="two operations with id 0"):
        History(history((1, "put", "x", "a", None, OK, 0, 1)) * 2)
    with pytest.raises(ValueError, match="ids must be unique"):
        check(history((1, "put", "x", "a", None, OK, 0, 1)) * 2, KVModel())


def test_history_saves_and_loads_json_lines(tmp_path: Path) -> None:
    recorded = History()
    a = recorded.invoke(1, "cas", "x", (None, "a"), at=0.0)
    recorded.ok(a, True, at=1.25)
    recorded.invoke("c2", "get", "x", at=2.0)
    path = tmp_path / "history.jsonl"
    recorded.save(path)
    assert path.read_text().splitlines()[0] == (
        '{"id":0,"client":1,"kind":"cas","key":"x","value":[null,"a"],"result":true,'
        '"outcome":"ok","invoke":0.0,"complete":1.25}')
    loaded = History.load(path)
    assert loaded.operations == recorded.operations
    assert loaded.operations[0].value == (None, "a")
    assert check(loaded, KVModel()).ok


def test_unknown_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="KVModel cannot apply 'append'"):
        check(history((1, "append", "x", "a", None, OK, 0, 1)), KVModel())


# ------------------------------------------------------------ properties

def brute_force(ops: Sequence[Operation], model: Model[Any]) -> bool:
    """Linearizable by enumeration: every order of the surely applied operations and
    any subset of the unknown ones that respects real time and the model."""
    live = [op for op in ops if op.outcome is not FAIL]

    def must_wait(op: Operation, remaining: list[Operation]) -> bool:
        return any(p.outcome is OK and p.complete is not None and p.complete < op.invoke
                   for p in remaining)

    def search(remaining: list[Operation], state: Any) -> bool:
        if all(op.outcome is UNKNOWN for op in remaining):
            return True
        for op in remaining:
            if must_wait(op, remaining):
                continue
            ok, new_state = model.step(state, op)
            rest = [p for p in remaining if p is not op]
            if (ok or op.outcome is UNKNOWN) and search(rest, new_state):
                return True
        return False

    return search(live, model.init())


VALUES = ("a", "b", None)


@st.composite
def small_histories(draw: st.DrawFn) -> list[Operation]:
    # Either a few values written many times, or every write its own value (which is
    # what lets the models rewrite unknown writes somebody read into certain ones).
    unique = draw(st.booleans())
    seen = st.sampled_from(("w0", "w1", "w2", "w3", "w4", None)) if unique \
        else st.sampled_from(VALUES)
    ops = []
    for i in range(draw(st.integers(1, 6))):
        invoke = draw(st.integers(0, 8))
        outcome = draw(st.sampled_from([OK, OK, OK, FAIL, UNKNOWN]))
        kind = draw(st.sampled_from(["get", "put", "cas", "delete"]))
        value: Any = None
        written = st.just(f"w{i}") if unique else st.sampled_from(VALUES[:2])
        if kind == "put":
            value = draw(written)
        elif kind == "cas":
            value = (draw(seen), draw(written))
        result = {"get": seen, "put": st.none()}.get(kind, st.booleans())
        ops.append(Operation(
            id=i, client=i, kind=kind, key=draw(st.sampled_from("xy")), value=value,
            result=draw(result) if outcome is OK else None, outcome=outcome, invoke=invoke,
            complete=None if outcome is UNKNOWN and draw(st.booleans())
            else invoke + draw(st.integers(0, 4))))
    return ops


@settings(max_examples=200, deadline=None)
@given(small_histories())
def test_search_agrees_with_brute_force(ops: list[Operation]) -> None:
    model = KVModel()
    expected = all(brute_force([op for op in ops if op.key == key], model) for key in "xy")
    assert check(ops, model).ok == expected


@pytest.mark.parametrize("lazy", [False, True])
@settings(max_examples=100, deadline=None)
@given(ops=small_histories())
def test_both_search_strategies_agree_with_brute_force(lazy: bool,
                                                       ops: list[Operation]) -> None:
    model = KVModel()
    live = [op for op in ops if op.outcome is OK or (op.outcome is UNKNOWN and op.kind != "get")]
    for key, part in model.partition(live).items():
        expected = brute_force([op for op in ops if op.key == key], model)
        names = [1 << i for i in range(len(part))]
        found = linearizability._search(key, part, model, model.is_read_only, None, names,
                                        lazy=lazy)
        assert (found is None) == expected


@st.composite
def dict_histories(draw: st.DrawFn) -> list[Operation]:
    """Clients run random operations on one dict; each takes effect at a random instant
    within its call (an unknown one maybe later, or never; a failed one never)."""
    clients = draw(st.integers(1, 6))
    clock = [0] * clients
    planned = []
    for i in range(draw(st.integers(1, 40))):
        client = draw(st.integers(0, clients - 1))
        # A client waits for each call before the next (so at most `clients`
        # operations overlap): with everything concurrent, a violation can take
        # exponential time to establish.
        invoke = clock[client] + 1 + draw(st.integers(0, 3))
        effect = invoke + draw(st.integers(0, 3))
        complete = effect + draw(st.integers(0, 3))
        clock[client] = complete
        kind = draw(st.sampled_from(["get", "get", "put", "put", "delete", "cas"]))
        value: Any = f"v{i}" if kind == "put" else None
        if kind == "cas":
            value = (draw(st.sampled_from([None, *(f"v{j}" for j in range(i))])), f"v{i}")
        outcome = draw(st.sampled_from([OK, OK, OK, OK, FAIL, UNKNOWN]))
        applied = outcome is OK or (outcome is UNKNOWN and draw(st.booleans()))
        if outcome is UNKNOWN:
            effect += draw(st.integers(0, 10))
        planned.append((effect, i, applied, Operation(
            id=i, client=client, kind=kind, key=draw(st.sampled_from("xyz")), value=value,
            outcome=outcome, invoke=invoke, complete=complete)))
    data: dict[Hashable, Any] = {}
    results = {}
    for _, i, applied, op in sorted(planned, key=lambda p: (p[0], p[1])):
        if applied:
            results[i] = linearizability_check.apply_to_dict(data, op)
    return [dataclasses.replace(op, result=results.get(i) if op.outcome is OK else None)
            for _, i, _, op in planned]


@settings(max_examples=60, deadline=None)
@given(dict_histories())
def test_histories_of_a_sequential_dict_pass(ops: list[Operation]) -> None:
    result = check(ops, KVModel())
    assert result.ok, result.explanation


@settings(max_examples=60, deadline=None)
@given(dict_histories(), st.data())
def test_a_read_of_a_value_never_written_fails(ops: list[Operation], data: st.DataObject) -> None:
    reads = [op for op in ops if op.kind == "get" and op.outcome is OK]
    assume(reads)
    target = data.draw(st.sampled_from(reads))
    broken = [dataclasses.replace(op, result="never written") if op is target else op
              for op in ops]
    result = check(broken, KVModel())
    assert (result.ok, result.key) == (False, target.key)


def test_larger_generated_histories_pass_and_a_corrupted_one_fails() -> None:
    ops = linearizability_check.generate(2000, 10, 3, seed=7)
    assert check(ops, KVModel()).ok
    result = check(linearizability_check.break_one_read(ops, seed=7), KVModel())
    assert not result.ok
    assert result.stuck is not None and result.stuck.result == "never written"


def test_benchmark_quick_run(tmp_path: Path) -> None:
    assert linearizability_check.main(["--operations", "500", "--repeat", "1",
                                       "--results-dir", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "linearizability_check.json").read_text())["workloads"]
    assert [(r["workload"], r["operations"], r["keys"], r["linearizable"]) for r in rows] == [
        ("put/get", 500, 5, True), ("mixed", 500, 5, True), ("one key", 500, 1, True),
        ("violation", 500, 5, False), ("violation, one key", 500, 1, False)]
