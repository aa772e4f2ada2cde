"""Client sessions: each client command applied at most once, for any state machine.

Raft dissertation §6.3: a client that retries a command after losing the answer
(the leader crashed, the connection closed, a timeout) may have its command
committed twice unless the replicated state remembers what it already did. Wrap the
application's :class:`~raftpy.statemachine.StateMachine` in a
:class:`SessionStateMachine` and send commands as session envelopes:

* a client registers a session through the log (:func:`register_command`); the
  answer is its session id, a counter in the replicated state, so every replica
  hands out the same id;
* each command then carries ``(session id, seq, lowest_pending, now, payload)``
  (:func:`session_command`). The wrapper applies each ``(session, seq)`` once and
  answers a duplicate with the first result (or raises the first exception again),
  until the client acknowledges it: ``lowest_pending`` is the lowest seq the client
  still waits on, and the results below it are dropped;
* sessions expire after ``session_timeout`` seconds without a command, measured on
  the *cluster time*: the largest ``now`` stamp seen in the log so far. The
  proposer stamps ``now`` from its own clock, but the stamp travels in the entry,
  so every replica expires the same sessions at the same entry (a replica's own
  clock never decides anything; a new leader whose clock is behind cannot move
  cluster time back).

Commands that are not session envelopes (they do not start with :data:`MAGIC`) go
to the inner machine unchanged, with no exactly-once guarantee: the runtime's own
callers, old clients and idempotent commands keep working. See ``docs/sessions.md``.

Like the core, this module is pure: no clock, no I/O; time comes in the commands.
"""

from __future__ import annotations

import math
import sys
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Generic, NoReturn, TypeVar

import msgpack

from raftpy.errors import (
    AlreadyAcknowledged,
    InvalidSessionCommand,
    InvalidSessionSnapshot,
    RepeatedFailure,
    SessionExpired,
    TooManyPendingResults,
)
from raftpy.statemachine import StateMachine

MAGIC = b"\xc1RS"
"""The first bytes of every session envelope. 0xC1 is the one byte msgpack never
uses and no UTF-8 text starts with, so msgpack or text commands cannot be mistaken
for envelopes; an application with other binary commands must not start them so."""

_SNAPSHOT_MAGIC = b"\xc1RSS"
SNAPSHOT_FORMAT = 1
"""Version of :meth:`SessionStateMachine.snapshot`'s layout (bumped on any change)."""

DEFAULT_SESSION_TIMEOUT = 3600.0
"""Seconds of cluster time without a command after which a session expires (as
LogCabin's default: far above any clock skew between servers or client pause)."""

DEFAULT_MAX_PENDING_RESULTS = 256
"""Unacknowledged results one session may hold before further commands are refused."""

_REGISTER, _COMMAND, _CLOSE = 0, 1, 2

_M = TypeVar("_M", bound=StateMachine)


# ---------------------------------------------------------------------- commands

def register_command(now: float) -> bytes:
    """The command that opens a session; ``apply`` returns its id (an int >= 1).

    ``now`` is the proposer's wall-clock time in seconds. Registration itself is
    not deduplicated: a retried registration opens a second session, which simply
    expires unused.
    """
    return MAGIC + msgpack.packb([_REGISTER, _check_now(now)], use_bin_type=True)


def session_command(session_id: int, seq: int, lowest_pending: int, now: float,
                    payload: bytes) -> bytes:
    """``payload`` (an inner-machine command) as request ``seq`` of ``session_id``.

    ``seq`` numbers the client's requests (1, 2, ...: a fresh one per request, the
    same one on every retry of it); ``lowest_pending`` is the lowest seq the client
    still waits on (at most ``seq``), which acknowledges every result below it;
    ``now`` is the proposer's wall-clock time in seconds.
    """
    _check_ids(session_id, seq, lowest_pending)
    if not isinstance(payload, bytes):
        raise TypeError("a session command's payload must be bytes")
    return MAGIC + msgpack.packb([_COMMAND, session_id, seq, lowest_pending, _check_now(now),
                                  payload], use_bin_type=True)


def close_session_command(session_id: int, now: float) -> bytes:
    """The command that ends a session (freeing its results at once rather than at
    expiry); ``apply`` returns whether the session was still open."""
    _check_ids(session_id, 1, 1)
    return MAGIC + msgpack.packb([_CLOSE, session_id, _check_now(now)], use_bin_type=True)


def is_session_command(command: bytes) -> bool:
    """Whether ``command`` is a session envelope (else it passes through unchanged)."""
    return command.startswith(MAGIC)


def _check_ids(session_id: int, seq: int, lowest_pending: int) -> None:
    for name, value in (("session id", session_id), ("seq", seq),
                        ("lowest_pending", lowest_pending)):
        if type(value) is not int or not 1 <= value < 2**64:
            raise ValueError(f"{name} must be an int in [1, 2**64), not {value!r}")
    if lowest_pending > seq:
        raise ValueError(f"lowest_pending ({lowest_pending}) cannot exceed seq ({seq}): "
                         "the request itself is still pending")


def _check_now(now: float) -> float:
    if type(now) not in (int, float) or not math.isfinite(now):
        raise ValueError(f"now must be a finite number of seconds, not {now!r}")
    return float(now)


# ---------------------------------------------------------------------- state

@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What the replicated state holds for one session (for tests and monitoring)."""

    session_id: int
    last_active: float
    """Cluster time of the session's latest command."""
    acknowledged: int
    """The highest ``lowest_pending`` received: requests below it are done with."""
    pending: tuple[int, ...]
    """Seqs whose results are kept for duplicates, ascending."""


@dataclass(slots=True)
class _Session:
    last_active: float
    floor: int
    results: dict[int, tuple[bool, bytes]]
    """seq -> (succeeded, msgpack of the result | of the exception's description)."""


class SessionStateMachine(Generic[_M]):
    """A :class:`~raftpy.statemachine.StateMachine` that gives ``inner`` client
    sessions: each session command is applied at most once.

    Every replica must be built with the same ``session_timeout`` and
    ``max_pending_results`` (they decide what ``apply`` does, like any state).
    Memory: at most (live sessions) x ``max_pending_results`` cached results, each
    the msgpack encoding of what ``inner.apply`` returned (so inner results must be
    msgpack-encodable: None, bools, numbers, str, bytes, lists, maps); sessions idle
    for ``session_timeout`` are dropped, which bounds the live ones by the rate of
    registrations.
    """

    def __init__(self, inner: _M, *, session_timeout: float = DEFAULT_SESSION_TIMEOUT,
                 max_pending_results: int = DEFAULT_MAX_PENDING_RESULTS) -> None:
        if not (isinstance(session_timeout, (int, float)) and math.isfinite(session_timeout)
                and session_timeout > 0):
            raise ValueError(f"session_timeout must be positive seconds, not {session_timeout!r}")
        if type(max_pending_results) is not int or max_pending_results < 1:
            raise ValueError(f"max_pending_results must be at least 1, not "
                             f"{max_pending_results!r}")
        self.inner = inner
        self.session_timeout = float(session_timeout)
        self.max_pending_results = max_pending_results
        self._cluster_time = 0.0
        self._next_session_id = 1
        # In order of last activity, oldest first: last_active is set from the
        # monotone cluster time, so expiry only ever pops from the front.
        self._sessions: OrderedDict[int, _Session] = OrderedDict()

    @property
    def cluster_time(self) -> float:
        """The largest ``now`` stamp applied so far (never decreases)."""
        return self._cluster_time

    def sessions(self) -> tuple[SessionInfo, ...]:
        """The live sessions, least recently active first."""
        return tuple(SessionInfo(sid, s.last_active, s.floor, tuple(sorted(s.results)))
                     for sid, s in self._sessions.items())

    def session(self, session_id: int) -> SessionInfo | None:
        """One live session, or ``None`` if it is unknown or expired."""
        s = self._sessions.get(session_id)
        if s is None:
            return None
        return SessionInfo(session_id, s.last_active, s.floor, tuple(sorted(s.results)))

    # ------------------------------------------------------------------ apply

    def apply(self, command: bytes) -> Any:
        """Apply one committed command (an envelope, or a plain inner command).

        A register returns the new session id; a close whether the session was open;
        a session command the inner result (the first one, for a duplicate). Raises
        :class:`SessionExpired`, :class:`AlreadyAcknowledged`,
        :class:`TooManyPendingResults` or :class:`InvalidSessionCommand` without
        applying the payload; re-raises what the inner machine raised (the first
        time, or for a duplicate of such a command).
        """
        if not command.startswith(MAGIC):
            return self.inner.apply(command)  # not a session envelope: no exactly-once
        fields = _decode_command(command)
        kind = fields[0]
        if kind == _REGISTER:
            self._advance(fields[1])
            session_id = self._next_session_id
            self._next_session_id += 1
            self._sessions[session_id] = _Session(self._cluster_time, 1, {})
            return session_id
        if kind == _CLOSE:
            self._advance(fields[2])
            return self._sessions.pop(fields[1], None) is not None
        _, session_id, seq, lowest_pending, now, payload = fields
        self._advance(now)
        session = self._sessions.get(session_id)
        if session is None:
            raise SessionExpired(session_id)
        session.last_active = self._cluster_time
        self._sessions.move_to_end(session_id)
        if lowest_pending > session.floor:
            # The client has every answer below lowest_pending: forget them.
            for done in [s for s in session.results if s < lowest_pending]:
                del session.results[done]
            session.floor = lowest_pending
        if seq < session.floor:
            raise AlreadyAcknowledged(session_id, seq, session.floor)
        recorded = session.results.get(seq)
        if recorded is not None:
            return _replay(recorded)
        if len(session.results) >= self.max_pending_results:
            raise TooManyPendingResults(session_id, self.max_pending_results)
        try:
            result = self.inner.apply(payload)
        except Exception as exc:  # deterministic: every replica records the same failure
            session.results[seq] = (False, _describe_error(exc))
            raise
        try:
            packed = msgpack.packb(result, use_bin_type=True)
        except Exception as exc:
            error = TypeError(f"session {session_id} request {seq}: the result "
                              f"{type(result).__name__} cannot be kept for duplicates "
                              f"(results must be msgpack-encodable): {exc}")
            session.results[seq] = (False, _describe_error(error))
            raise error from None
        session.results[seq] = (True, packed)
        return result

    def _advance(self, now: float) -> None:
        """Move cluster time to ``now`` if later, then expire idle sessions."""
        if now > self._cluster_time:
            self._cluster_time = now
        sessions = self._sessions
        while sessions:
            session_id, oldest = next(iter(sessions.items()))
            if self._cluster_time - oldest.last_active <= self.session_timeout:
                break
            del sessions[session_id]

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> bytes:
        """Sessions, cached results, cluster time and the inner snapshot, versioned."""
        sessions = [[sid, s.last_active, s.floor,
                     [[seq, ok, data] for seq, (ok, data) in sorted(s.results.items())]]
                    for sid, s in self._sessions.items()]
        state = [SNAPSHOT_FORMAT, self._next_session_id, self._cluster_time, sessions,
                 self.inner.snapshot()]
        return _SNAPSHOT_MAGIC + msgpack.packb(state, use_bin_type=True)

    def restore(self, data: bytes) -> None:
        """Replace everything with a :meth:`snapshot`'s bytes; raises
        :class:`InvalidSessionSnapshot` (changing nothing) if they are not one."""
        next_session_id, cluster_time, sessions, inner = _decode_snapshot(data)
        self.inner.restore(inner)
        self._next_session_id = next_session_id
        self._cluster_time = cluster_time
        self._sessions = sessions


# ---------------------------------------------------------------------- encoding

def _decode_command(command: bytes) -> list[Any]:
    try:
        fields = msgpack.unpackb(command[len(MAGIC):], raw=False)
    except Exception as exc:
        raise InvalidSessionCommand(f"malformed session command: {exc}") from None
    if not isinstance(fields, list) or not fields:
        raise InvalidSessionCommand("malformed session command: not a non-empty array")
    shape = {_REGISTER: (int, _Number), _COMMAND: (int, int, int, int, _Number, bytes),
             _CLOSE: (int, int, _Number)}.get(fields[0]) if type(fields[0]) is int else None
    if shape is None or len(fields) != len(shape) or not all(
            _is(value, kind) for value, kind in zip(fields, shape, strict=True)):
        raise InvalidSessionCommand(f"malformed session command: {fields!r:.100}")
    try:
        if fields[0] == _COMMAND:
            _check_ids(fields[1], fields[2], fields[3])
        elif fields[0] == _CLOSE:
            _check_ids(fields[1], 1, 1)
        _check_now(fields[-1] if fields[0] != _COMMAND else fields[4])
    except ValueError as exc:
        raise InvalidSessionCommand(f"malformed session command: {exc}") from None
    return fields


class _Number:
    """Marker for "int or float" in the shape tables."""


def _is(value: Any, kind: type) -> bool:
    if kind is _Number:
        return type(value) in (int, float)
    return type(value) is kind


def _decode_snapshot(data: bytes) -> tuple[int, float, OrderedDict[int, _Session], bytes]:
    def bad(why: str) -> NoReturn:
        raise InvalidSessionSnapshot(f"not a session snapshot: {why}")

    if not isinstance(data, bytes) or not data.startswith(_SNAPSHOT_MAGIC):
        bad("the marker is missing (a bare inner snapshot, or garbage?)")
    try:
        state = msgpack.unpackb(data[len(_SNAPSHOT_MAGIC):], raw=False)
    except Exception as exc:
        bad(f"undecodable: {exc}")
    if not isinstance(state, list) or not state or state[0] != SNAPSHOT_FORMAT:
        version = state[0] if isinstance(state, list) and state else "?"
        bad(f"format {version!r}, this code reads format {SNAPSHOT_FORMAT}")
    if len(state) != 5:
        bad("wrong number of fields")
    _, next_session_id, cluster_time, raw_sessions, inner = state
    if type(next_session_id) is not int or next_session_id < 1:
        bad("bad session counter")
    if type(cluster_time) not in (int, float) or not math.isfinite(cluster_time):
        bad("bad cluster time")
    if not isinstance(inner, bytes) or not isinstance(raw_sessions, list):
        bad("bad field types")
    sessions: OrderedDict[int, _Session] = OrderedDict()
    previous = -math.inf
    for item in raw_sessions:
        if not (isinstance(item, list) and len(item) == 4 and type(item[0]) is int
                and type(item[1]) in (int, float) and type(item[2]) is int
                and isinstance(item[3], list)):
            bad(f"bad session entry {item!r:.80}")
        sid, last_active, floor, raw_results = item
        if not (1 <= sid < next_session_id and sid not in sessions and floor >= 1
                and previous <= last_active <= cluster_time):
            bad(f"inconsistent session {sid}")
        previous = last_active
        results: dict[int, tuple[bool, bytes]] = {}
        for result in raw_results:
            if not (isinstance(result, list) and len(result) == 3 and type(result[0]) is int
                    and result[0] >= floor and result[0] not in results
                    and isinstance(result[1], bool) and isinstance(result[2], bytes)):
                bad(f"bad cached result in session {sid}")
            results[result[0]] = (result[1], result[2])
        sessions[sid] = _Session(float(last_active), floor, results)
    return next_session_id, float(cluster_time), sessions, inner


def _describe_error(exc: Exception) -> bytes:
    """What is kept of an inner exception: enough to raise the same kind again."""
    cls = type(exc)
    args: list[Any] = list(exc.args)
    try:
        msgpack.packb(args, use_bin_type=True)
    except Exception:
        args = [str(exc)]
    return msgpack.packb([cls.__module__, cls.__qualname__, args, str(exc)],
                         use_bin_type=True)


def _replay(recorded: tuple[bool, bytes]) -> Any:
    """The first result again: its value, or its exception raised anew."""
    ok, data = recorded
    if ok:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    module, qualname, args, message = msgpack.unpackb(data, raw=False, strict_map_key=False)
    cls = _loaded_exception_class(module, qualname)
    if cls is not None:
        try:
            exc = cls(*args)
        except Exception:
            exc = None
        # Only if it reads the same: a class whose constructor takes other arguments
        # than its args would give a different message.
        if exc is not None and str(exc) == message:
            raise exc
    raise RepeatedFailure(qualname if module == "builtins" else f"{module}.{qualname}", message)


def _loaded_exception_class(module: str, qualname: str) -> type[Exception] | None:
    """The exception class of that name if its module is already imported (never
    imports anything: snapshot bytes must not choose what code gets loaded)."""
    found: Any = sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if isinstance(found, type) and issubclass(found, Exception):
        return found
    return None
