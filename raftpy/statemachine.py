"""The application's side of the contract: the :class:`StateMachine` protocol.

It lives in the core (not in :mod:`raftpy.trio.runtime`, which re-exports it) so that
pure wrappers such as :class:`raftpy.sessions.SessionStateMachine` can name it without
importing Trio.
"""

from __future__ import annotations

from typing import Any, Protocol


class StateMachine(Protocol):
    """The application's replicated state: fed committed commands in log order.

    ``apply`` must be deterministic; whatever it returns (or raises) is handed to
    the :meth:`raftpy.trio.runtime.Node.apply` caller that proposed the command on
    this node.
    """

    def apply(self, command: bytes) -> Any:
        """Apply one committed command and return its result."""
        ...

    def snapshot(self) -> bytes:
        """The whole state, serialized (for log compaction and slow followers)."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a :meth:`snapshot`'s bytes."""
        ...
