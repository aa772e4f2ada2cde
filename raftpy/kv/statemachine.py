"""The key-value state machine: a dict of str to str, changed only by committed commands."""

from __future__ import annotations

from typing import Any

import msgpack


def put_command(key: str, value: str) -> bytes:
    """The command that sets ``key`` to ``value``."""
    return msgpack.packb(["put", key, value], use_bin_type=True)


def delete_command(key: str) -> bytes:
    """The command that removes ``key``."""
    return msgpack.packb(["del", key], use_bin_type=True)


class KVStore:
    """A :class:`raftpy.trio.runtime.StateMachine` holding a ``dict[str, str]``.

    ``apply`` returns, for a put, the previous value (or ``None``); for a delete,
    whether the key existed. A malformed command raises ``ValueError`` on every
    replica alike and changes nothing.
    """

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def apply(self, command: bytes) -> Any:
        """Apply one committed command."""
        try:
            op = msgpack.unpackb(command, raw=False)
        except Exception as exc:
            raise ValueError(f"not a key-value command: {exc}") from None
        if isinstance(op, list) and len(op) == 3 and op[0] == "put" \
                and isinstance(op[1], str) and isinstance(op[2], str):
            previous = self.data.get(op[1])
            self.data[op[1]] = op[2]
            return previous
        if isinstance(op, list) and len(op) == 2 and op[0] == "del" and isinstance(op[1], str):
            return self.data.pop(op[1], None) is not None
        raise ValueError(f"not a key-value command: {op!r:.80}")

    def snapshot(self) -> bytes:
        """The whole dict, msgpack-encoded."""
        return msgpack.packb(self.data, use_bin_type=True)

    def restore(self, data: bytes) -> None:
        """Replace the dict with a snapshot's."""
        restored = msgpack.unpackb(data, raw=False)
        if not isinstance(restored, dict):
            raise ValueError("a key-value snapshot must be a map")
        self.data = restored
