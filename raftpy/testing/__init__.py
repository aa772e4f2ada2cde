"""Tools for testing systems built on raftpy.

- A linearizability checker: record what clients saw in a :class:`History`, then
  :func:`check` it against a :class:`Model` (:class:`RegisterModel`, :class:`KVModel`
  or your own state machine's). See ``docs/testing.md``.
- :mod:`raftpy.testing.schedule`: fault schedules as plain data, played on the
  simulator and replayed exactly (``python -m raftpy.testing.replay``);
  :mod:`raftpy.testing.fuzzing`: Hypothesis strategies and a stateful base class
  over :class:`raftpy.sim.Cluster` (needs ``hypothesis``).

Pure Python, no I/O and no clock: times are whatever numbers the caller records.
"""

from raftpy.testing.history import History, Operation, Outcome
from raftpy.testing.linearizability import (
    CheckResult,
    SearchLimitExceeded,
    assert_linearizable,
    check,
)
from raftpy.testing.models import KVModel, Model, Partitioned, ReadOnlyAware, RegisterModel

__all__ = [
    "CheckResult",
    "History",
    "KVModel",
    "Model",
    "Operation",
    "Outcome",
    "Partitioned",
    "ReadOnlyAware",
    "RegisterModel",
    "SearchLimitExceeded",
    "assert_linearizable",
    "check",
]
