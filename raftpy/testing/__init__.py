"""Testing tools for applications built on raftpy.

* :mod:`raftpy.testing.schedule`: fault schedules as plain data, played on the
  simulator and replayed exactly (``python -m raftpy.testing.replay``);
* :mod:`raftpy.testing.fuzzing`: Hypothesis strategies and a stateful base class
  over :class:`raftpy.sim.Cluster` (needs ``hypothesis``).
"""
