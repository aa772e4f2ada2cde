"""The chaos run's linearizability check on hand-written histories."""

from __future__ import annotations

from raftpy.chaos.checker import check_key, linearizability_verdict
from raftpy.chaos.history import FAIL, OK, UNKNOWN, History, Op


def op(kind: str, invoke: float, complete: float, outcome: str = OK, *,
       value: str | None = None, result: object = None, key: str = "k") -> Op:
    return Op(0, kind, key, value, invoke, complete, outcome, result)


def ok(*ops: Op) -> bool | None:
    return check_key(ops)[0]


def test_sequential_puts_gets_and_deletes() -> None:
    assert ok(op("get", 0, 1, result=None), op("put", 2, 3, value="a"),
              op("get", 4, 5, result="a"), op("delete", 6, 7, result=True),
              op("delete", 8, 9, result=False), op("get", 10, 11, result=None))


def test_a_stale_read_is_caught() -> None:
    assert ok(op("put", 0, 1, value="a"), op("put", 2, 3, value="b"),
              op("get", 4, 5, result="a")) is False


def test_a_lost_acknowledged_write_is_caught() -> None:
    assert ok(op("put", 0, 1, value="a"), op("get", 2, 3, result=None)) is False


def test_a_write_applied_twice_is_caught() -> None:
    """'a' reappears after 'b' overwrote it: a duplicate application."""
    assert ok(op("put", 0, 1, value="a"), op("put", 2, 3, value="b"),
              op("get", 4, 5, result="b"), op("get", 6, 7, result="a")) is False


def test_concurrent_operations_may_take_effect_in_either_order() -> None:
    assert ok(op("put", 0, 10, value="a"), op("put", 1, 9, value="b"),
              op("get", 11, 12, result="a"))
    assert ok(op("put", 0, 10, value="a"), op("get", 1, 2, result=None),
              op("get", 3, 4, result="a"), op("get", 5, 6, result="a"))
    # ...but not flicker back once seen
    assert ok(op("put", 0, 10, value="a"), op("get", 1, 2, result="a"),
              op("get", 3, 4, result=None)) is False


def test_unknown_writes_may_apply_late_or_never_failed_ones_never() -> None:
    assert ok(op("put", 0, 1, UNKNOWN, value="a"), op("get", 2, 3, result=None),
              op("get", 50, 51, result="a"))
    assert ok(op("put", 0, 1, UNKNOWN, value="a"), op("get", 2, 3, result=None))
    assert ok(op("put", 0, 1, FAIL, value="a"), op("get", 2, 3, result="a")) is False
    # an unknown put nobody read can still make a later delete find the key
    assert ok(op("put", 0, 1, UNKNOWN, value="a"), op("delete", 2, 3, result=True))
    assert ok(op("delete", 2, 3, result=True)) is False


def test_the_verdict_names_the_bad_key() -> None:
    history = History()
    history.ops = [op("put", 0, 1, value="a", key="x"), op("get", 2, 3, result="a", key="x"),
                   op("put", 0, 1, value="b", key="y"), op("get", 2, 3, result=None, key="y")]
    verdict = linearizability_verdict(history)
    assert verdict.linearizable is False
    assert verdict.keys == {"x": True, "y": False}
    assert "NOT linearizable" in verdict.describe() and "y" in verdict.describe()
    assert verdict.checker.startswith("raftpy.testing.check")  # both checkers agree
    assert "key 'y'" in verdict.shared


def test_the_shared_checker_confirms_a_good_history() -> None:
    history = History()
    history.ops = [op("put", 0, 1, value="a"), op("get", 2, 3, result="a"),
                   op("put", 4, 5, UNKNOWN, value="b"), op("delete", 6, 7, result=True),
                   op("get", 8, 9, FAIL), op("get", 10, 11, result=None)]
    verdict = linearizability_verdict(history)
    assert verdict.linearizable is True
    assert verdict.shared.startswith("linearizable: 6 operations (1 failed, 1 of unknown")


def test_a_search_over_budget_is_undetermined() -> None:
    ops = [op("put", 0, 100, value=str(i)) for i in range(12)] + [
        op("get", 101, 102, result="nope")]
    assert check_key(ops, budget=50)[0] is None
