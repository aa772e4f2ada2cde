"""What the scripted fuzz scenarios (:mod:`raftpy.sim.figure8`,
:mod:`raftpy.sim.stale_suffix`) share: giving up on a stage quietly, and leaving
the cluster whole for the random faults that follow."""

from __future__ import annotations

from collections.abc import Callable

from raftpy.sim.cluster import Cluster

STAGE_TIMEOUT = 3.0
"""Virtual seconds a stage may take before the scenario is abandoned."""


class Abandoned(Exception):
    """A stage did not happen in time (drops, unlucky timers, reordering)."""


def wait(cluster: Cluster, predicate: Callable[[], bool], what: str,
         timeout: float = STAGE_TIMEOUT) -> None:
    """Run until ``predicate()`` holds; raise :class:`Abandoned` naming ``what``."""
    if not cluster.run_until(predicate, timeout):
        raise Abandoned(what)


def play(cluster: Cluster, name: str, script: Callable[[], None]) -> bool:
    """Run ``script``; count ``<name>_done`` or ``<name>_abandoned``; then drop every
    held message, heal every cut and restart every crashed node. True if done."""
    try:
        script()
        done = True
    except Abandoned:
        done = False
    cluster.fault_counts[f"{name}_done" if done else f"{name}_abandoned"] += 1
    cluster.release(lambda m: False)
    cluster.drop_held()
    cluster.heal()
    for node_id in cluster.ids:
        if not cluster.is_up(node_id):
            cluster.restart(node_id)
    return done
