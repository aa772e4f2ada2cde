"""The key-value state machine: a dict of str to str, changed only by committed commands."""

from __future__ import annotations

from typing import Any

import msgpack

RESERVED_PREFIX = "\x00"
"""Keys starting so belong to raftpy itself (join tokens): puts and deletes of them are
refused, the join-token commands below write them."""

JOIN_TOKEN_PREFIX = "\x00join/"
"""Where a join token's record lives: ``JOIN_TOKEN_PREFIX + sha256(secret)`` (hex)."""


def join_token_command(digest: str, node_id: int, expires: float) -> bytes:
    """The command recording a join token (only its secret's SHA-256, ``digest``) for
    ``node_id``, valid until ``expires`` (Unix time) (``docs/security.md``)."""
    return msgpack.packb(["join_token", digest, node_id, float(expires)], use_bin_type=True)


def join_use_command(digest: str, node_id: int, now: float) -> bytes:
    """The command spending the token ``digest`` for ``node_id`` at ``now`` (Unix time,
    the proposer's clock, so that every replica decides alike). Applied, it answers
    ``"ok"`` the first time only, else why not (see :func:`join_token_problem`)."""
    return msgpack.packb(["join_use", digest, node_id, float(now)], use_bin_type=True)


def join_token_problem(data: dict[str, str], digest: str, node_id: int,
                       now: float) -> str | None:
    """Why the token ``digest`` cannot get ``node_id`` a certificate at ``now``, or None."""
    record = data.get(JOIN_TOKEN_PREFIX + digest)
    if record is None:
        return "unknown join token (wrong secret?)"
    owner, expires, state = record.split()
    if state != "unused":
        return "join token already used"
    if now >= float(expires):
        return "join token expired"
    if int(owner) != node_id:
        return f"join token is for node {owner}, not node {node_id}"
    return None


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
        if isinstance(op, list) and len(op) in (2, 3) and op[0] in ("put", "del") \
                and isinstance(op[1], str) and op[1].startswith(RESERVED_PREFIX):
            raise ValueError(f"keys starting with {RESERVED_PREFIX!r} are reserved")
        if isinstance(op, list) and len(op) == 4 and op[0] in ("join_token", "join_use") \
                and isinstance(op[1], str) and type(op[2]) is int \
                and isinstance(op[3], float):
            return self._join(op[0], op[1], op[2], op[3])
        if isinstance(op, list) and len(op) == 3 and op[0] == "put" \
                and isinstance(op[1], str) and isinstance(op[2], str):
            previous = self.data.get(op[1])
            self.data[op[1]] = op[2]
            return previous
        if isinstance(op, list) and len(op) == 2 and op[0] == "del" and isinstance(op[1], str):
            return self.data.pop(op[1], None) is not None
        raise ValueError(f"not a key-value command: {op!r:.80}")

    def _join(self, op: str, digest: str, node_id: int, time: float) -> str | None:
        key = JOIN_TOKEN_PREFIX + digest
        if op == "join_token":
            self.data[key] = f"{node_id} {time!r} unused"
            return None
        problem = join_token_problem(self.data, digest, node_id, time)
        if problem is not None:
            return problem
        owner, expires, _ = self.data[key].split()
        self.data[key] = f"{owner} {expires} used"
        return "ok"

    def snapshot(self) -> bytes:
        """The whole dict, msgpack-encoded."""
        return msgpack.packb(self.data, use_bin_type=True)

    def restore(self, data: bytes) -> None:
        """Replace the dict with a snapshot's."""
        restored = msgpack.unpackb(data, raw=False)
        if not isinstance(restored, dict):
            raise ValueError("a key-value snapshot must be a map")
        self.data = restored
