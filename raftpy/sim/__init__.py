"""The deterministic simulator: a seeded cluster under a virtual clock.

>>> from raftpy.sim import Cluster
>>> cluster = Cluster(n=3, seed=7)
>>> leader = cluster.wait_for_leader()
>>> proposal = cluster.propose(b"x=1")
>>> cluster.run_until(lambda: proposal.committed, timeout=1.0)
True
"""

from raftpy.sim.cluster import Cluster, Proposal, Read, Transfer
from raftpy.sim.invariants import InvariantViolation
from raftpy.sim.network import NetworkConfig

__all__ = ["Cluster", "InvariantViolation", "NetworkConfig", "Proposal", "Read", "Transfer"]
