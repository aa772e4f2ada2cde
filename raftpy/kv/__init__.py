"""The example application: a replicated key-value store with a CLI (``raftpy``).

:mod:`raftpy.kv.statemachine` is the replicated state (pure, no I/O), which the
node runs inside a :class:`raftpy.sessions.SessionStateMachine` so that retried
writes apply once;
:mod:`raftpy.kv.protocol` the client wire format; :mod:`raftpy.kv.server` serves
clients on a running :class:`raftpy.trio.runtime.Node`; :mod:`raftpy.kv.client`
talks to any member and follows redirects to the leader.
"""

from raftpy.kv.statemachine import KVStore

__all__ = ["KVStore"]
