"""Bootstrap: write a new cluster's first configuration into a node's empty storage.

A node's membership is what its log and snapshot say (:mod:`raftpy.membership`),
never what it was started with; bootstrapping is the one moment a configuration
enters storage from outside. Like Dqlite's ``raft_bootstrap`` and hashicorp's
``BootstrapCluster`` it writes the configuration as entry 1 of term 1, so every
node bootstrapped with the same configuration holds the same first entry and the
first election is for term 2. A node that is not bootstrapped starts with empty
storage and waits for a leader to add it.
"""

from __future__ import annotations

from raftpy.errors import StorageError
from raftpy.membership import Configuration, configuration_entry
from raftpy.messages import EntryKind
from raftpy.ready import HardState
from raftpy.storage.base import Storage

BOOTSTRAP_TERM = 1
"""The term of the bootstrap entry (index 1) and of a bootstrapped node's hard state."""


def bootstrap(storage: Storage, configuration: Configuration) -> bool:
    """Write ``configuration`` as the first entry of empty ``storage``.

    Returns True if it was written, False if the storage already begins with this
    very configuration (bootstrapping again is a no-op, so a start-up script may
    always call it). Raises :class:`~raftpy.errors.ConfigError` for a configuration
    without voters and :class:`~raftpy.errors.StorageError` if the storage holds
    anything else: another configuration, or state of a node that was not
    bootstrapped (a node that joined, or whose first entries were compacted away,
    cannot be compared and is refused too).
    """
    configuration.validate()
    state, _ = storage.load()
    entry = configuration_entry(1, BOOTSTRAP_TERM, configuration)
    empty = (not state.entries and state.snapshot is None
             and state.hard_state == HardState(0, None))
    if empty:
        storage.save(HardState(BOOTSTRAP_TERM, None), [entry])
        return True
    first = state.entries[0] if state.entries else None
    if state.snapshot is None and first is not None and first.index == 1:
        if first == entry:
            return False
        if first.kind is EntryKind.CONFIGURATION and first.term == BOOTSTRAP_TERM:
            theirs = Configuration.decode(first.data)
            raise StorageError(f"storage was bootstrapped with another configuration "
                               f"({theirs.describe()}), not {configuration.describe()}")
    raise StorageError("storage is not empty: this node already holds cluster state, so "
                       "its membership comes from its log, not from a bootstrap")
