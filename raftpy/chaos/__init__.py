"""A Jepsen-style chaos test on real ``raftpy serve`` processes (``docs/testing.md``).

    python -m raftpy.chaos --seconds 30 --seed 7 --nodes 3 [--no-partitions]

Modules: :mod:`~raftpy.chaos.proxy` (a TCP proxy in front of each member, which
partitions use to cut directed peer links), :mod:`~raftpy.chaos.cluster` (the
server processes and their proxies), :mod:`~raftpy.chaos.workload` (clients recording a history),
:mod:`~raftpy.chaos.nemesis` (the seeded fault schedule), :mod:`~raftpy.chaos.checker`
(the linearizability verdict), :mod:`~raftpy.chaos.replicas` (rebuild and compare
every member's state, count applications), :mod:`~raftpy.chaos.report`
(availability), :mod:`~raftpy.chaos.run` (one run).
"""

from raftpy.chaos.run import Options, Result, run

__all__ = ["Options", "Result", "run"]
