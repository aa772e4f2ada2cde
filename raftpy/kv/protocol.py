"""The client wire format of the key-value server: one msgpack map per frame.

A request is ``{"op": OP, ...}`` with OP one of ``put`` (``key``, ``value``),
``get`` (``key``), ``delete`` (``key``), ``session``, ``status`` and ``transfer``
(``to``: an id or nil). A response is ``{"ok": true, ...}`` or ``{"ok": false,
"error": CODE, "message": TEXT, ...}``; a ``not_leader`` error also carries
``leader_id`` and ``leader_address`` (nil when unknown) so that the client can
follow it, and the member's ``term``.

A ``status`` may carry ``wait`` (seconds, at most :data:`MAX_STATUS_WAIT`) and
``exclude`` (``[[leader id, term], ...]``): a long poll for a leader. The member
answers once it knows a leader other than an excluded id in a term up to the
paired one (or leads itself), or when ``wait`` has passed; a client that lost its
leader learns the next one without polling (``docs/runtime.md``).

Membership (answered by the leader only; docs/operations.md): ``members`` answers
``{"ok": true, "members": {...}}`` (``Membership.to_dict()``: ``index``,
``committed``, ``leader_id``, ``members``: ``id``, ``role``, ``address``,
``last_contact``, ``match_index``); ``add_member`` (``id``, ``address``, ``role``:
``voter``/``standby``/``spare``), ``assign`` (``id``, ``role``) and ``remove``
(``id``) answer ``{"ok": true, "index": N}`` once the configuration entry at N has
committed. Their errors: ``busy`` (another change is unfinished: retry),
``invalid_change``, ``promotion_failed``.

Sizes: a key is at most :data:`MAX_KEY_BYTES` (4 KiB) and a value at most
:data:`MAX_VALUE_BYTES` (1 MiB) once encoded as UTF-8, well below the 16 MiB
frame limit (an entry travels inside an AppendEntries frame between members); a
larger put or a key or value that is not valid Unicode text (a lone surrogate)
is answered ``too_large`` or ``bad_request`` and never reaches the log.
:func:`check_key` and :func:`check_value` are the checks; the client runs them
before sending.

Client sessions (:mod:`raftpy.sessions`, ``docs/sessions.md``): ``session`` opens
one through the log and answers ``{"ok": true, "session": ID, "timeout": SECONDS}``
(after that long without a command the cluster forgets the session). A ``put`` or
``delete`` may then carry ``session`` (the id), ``seq`` (the request's number: a
fresh one per request, the same on every retry) and ``ack`` (the lowest seq the
client still waits on, at most ``seq``): all three or none. With them the write is
applied at most once however often it is retried; a session that expired is
answered ``session_expired`` (the write was not applied by that delivery). Without
them the write is applied once per delivery, as before.

Authorization (``docs/security.md``): with TLS, a connection whose certificate is a
plain ``client`` one is answered ``forbidden`` for the ops in :data:`ADMIN_OPS`
(transfer and membership changes); node and admin certificates may ask for them.
Without TLS every connection may.

Join tokens (admin ops, ``docs/security.md``): ``join_token`` (``id``, ``digest``:
the hex SHA-256 of the token's secret, ``expires``: Unix time) records a token
through the log; ``join_use`` (``id``, ``digest``) spends it through the log,
answering ``{"ok": true, "result": "ok"}`` the first time only, else the reason in
``result``. A member issuing a certificate sends ``join_use`` to the leader.
Keys starting with ``"\x00"`` are reserved (``bad_request``).
"""

from __future__ import annotations

from typing import Any

import msgpack

OPS = ("put", "get", "delete", "session", "status", "transfer", "members", "add_member",
       "assign", "remove", "join_token", "join_use")
ROLES = ("voter", "standby", "spare")

SESSION_FIELDS = ("session", "seq", "ack")

MAX_STATUS_WAIT = 5.0
"""The longest a ``status`` request's ``wait`` (long poll for a leader) may hold."""
"""The fields that make a put or delete a session write (all three or none)."""

# Error codes (stable: clients branch on them).
NOT_LEADER = "not_leader"
NOT_FOUND = "not_found"
UNAVAILABLE = "unavailable"
BAD_REQUEST = "bad_request"
TRANSFER_FAILED = "transfer_failed"
INVALID_TARGET = "invalid_target"
REJECTED = "rejected"
SESSION_EXPIRED = "session_expired"
BUSY = "busy"
INVALID_CHANGE = "invalid_change"
PROMOTION_FAILED = "promotion_failed"
TOO_LARGE = "too_large"

MAX_KEY_BYTES = 4 * 1024
"""The largest key, in bytes of UTF-8."""
MAX_VALUE_BYTES = 1024 * 1024
"""The largest value, in bytes of UTF-8."""
FORBIDDEN = "forbidden"

ADMIN_OPS = ("transfer", "add_member", "assign", "remove", "join_token", "join_use")
"""With TLS, only a node or admin certificate may ask for these (``docs/security.md``)."""


class BadRequest(ValueError):
    """A request frame that is not a valid request."""


class TooLarge(BadRequest):
    """A key or value above :data:`MAX_KEY_BYTES` / :data:`MAX_VALUE_BYTES`."""


def _utf8(what: str, text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequest(f"the {what} is not valid Unicode text ({exc.reason} at position "
                         f"{exc.start})") from None


def check_key(key: str) -> None:
    """Raise :class:`BadRequest` unless ``key`` is text of at most
    :data:`MAX_KEY_BYTES` bytes (:class:`TooLarge` when too long)."""
    if not isinstance(key, str):
        raise BadRequest(f"a key is a string, not {type(key).__name__}")
    size = len(_utf8("key", key))
    if size > MAX_KEY_BYTES:
        raise TooLarge(f"the key is {size} bytes, above the limit of {MAX_KEY_BYTES}")


def check_value(value: str) -> None:
    """Raise :class:`BadRequest` unless ``value`` is text of at most
    :data:`MAX_VALUE_BYTES` bytes (:class:`TooLarge` when too long)."""
    if not isinstance(value, str):
        raise BadRequest(f"a value is a string, not {type(value).__name__}")
    size = len(_utf8("value", value))
    if size > MAX_VALUE_BYTES:
        raise TooLarge(f"the value is {size} bytes, above the limit of {MAX_VALUE_BYTES}")


def encode(message: dict[str, Any]) -> bytes:
    """One request or response as bytes."""
    return msgpack.packb(message, use_bin_type=True)


def decode_response(data: bytes) -> dict[str, Any]:
    """Parse a response; raises ``ValueError`` if it is not a response map."""
    try:
        message = msgpack.unpackb(data, raw=False)
    except Exception as exc:
        raise ValueError(f"malformed response: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("ok"), bool):
        raise ValueError("malformed response: not a map with a boolean 'ok'")
    return message


def decode_request(data: bytes) -> dict[str, Any]:
    """Parse and validate a request; raises :class:`BadRequest`."""
    try:
        request = msgpack.unpackb(data, raw=False)
    except Exception as exc:
        raise BadRequest(f"not msgpack: {exc}") from None
    if not isinstance(request, dict) or request.get("op") not in OPS:
        raise BadRequest(f"expected a map with 'op' one of {', '.join(OPS)}")
    op = request["op"]
    if op in ("put", "get", "delete") and not isinstance(request.get("key"), str):
        raise BadRequest(f"{op} needs a string 'key'")
    if op == "put" and not isinstance(request.get("value"), str):
        raise BadRequest("put needs a string 'value'")
    if "stale" in request and (op != "get" or not isinstance(request["stale"], bool)):
        raise BadRequest("'stale' is a boolean of get requests")
    if op in ("put", "get", "delete"):
        check_key(request["key"])
        if request["key"].startswith("\x00"):
            raise BadRequest("keys starting with '\\x00' are reserved")
    if op in ("join_token", "join_use"):
        digest = request.get("digest")
        if not (isinstance(digest, str) and len(digest) == 64
                and all(c in "0123456789abcdef" for c in digest)):
            raise BadRequest(f"{op} needs 'digest', a hex SHA-256")
        if op == "join_token" and not isinstance(request.get("expires"), float):
            raise BadRequest("join_token needs 'expires' (Unix time, a float)")
    if op == "put":
        check_value(request["value"])
    present = [f for f in SESSION_FIELDS if f in request]
    if present:
        if op not in ("put", "delete"):
            raise BadRequest(f"only put and delete carry {', '.join(SESSION_FIELDS)}")
        if len(present) != len(SESSION_FIELDS):
            raise BadRequest(f"{op} needs all of {', '.join(SESSION_FIELDS)} or none")
        for field in SESSION_FIELDS:
            value = request[field]
            if type(value) is not int or not 1 <= value < 2**64:
                raise BadRequest(f"{op} '{field}' must be a positive integer")
        if request["ack"] > request["seq"]:
            raise BadRequest(f"{op} 'ack' cannot exceed 'seq' (the request itself is pending)")
    if op in ("add_member", "assign", "remove", "join_token", "join_use"):
        member = request.get("id")
        if type(member) is not int or not 1 <= member < 2**63:
            raise BadRequest(f"{op} needs a positive integer 'id'")
    if op in ("add_member", "assign") and request.get("role", "spare") not in ROLES:
        raise BadRequest(f"{op} 'role' must be one of {', '.join(ROLES)}")
    if op == "assign" and "role" not in request:
        raise BadRequest("assign needs a 'role'")
    if op == "add_member" and (not isinstance(request.get("address"), str)
                               or not request["address"]):
        raise BadRequest("add_member needs a string 'address' (host:port)")
    if "wait" in request or "exclude" in request:
        wait, exclude = request.get("wait", 0.0), request.get("exclude", [])
        if op != "status":
            raise BadRequest("only status requests carry 'wait' and 'exclude'")
        if type(wait) not in (int, float) or not 0 <= wait <= MAX_STATUS_WAIT:
            raise BadRequest(f"status 'wait' must be seconds from 0 to {MAX_STATUS_WAIT:g}")
        if not isinstance(exclude, list) or not all(
                isinstance(pair, list) and len(pair) == 2
                and all(type(x) is int and 0 <= x < 2**63 for x in pair) for pair in exclude):
            raise BadRequest("status 'exclude' must be a list of [leader id, term] pairs")
    if op == "transfer":
        to = request.get("to")
        if to is not None and (type(to) is not int or to < 0):
            raise BadRequest("transfer 'to' must be a node id or nil")
    return request


def error(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """An error response."""
    return {"ok": False, "error": code, "message": message, **extra}
