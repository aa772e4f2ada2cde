"""A key-value client that talks to any member and follows the leader.

It tries the members it was given in turn, follows ``not_leader`` redirects,
waits briefly while an election runs, and gives up with
:class:`ClusterUnavailable` once its deadline passes.

Writes go through a client session (``docs/sessions.md``): the client opens one on
its first write, numbers every write and sends the same number on every retry, so
the cluster applies a retried write once.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import trio

from raftpy.errors import HandshakeRefused, ProtocolError, RaftError
from raftpy.kv import protocol
from raftpy.kv.server import FramedStream

logger = logging.getLogger(__name__)

Connect = Callable[[str], Awaitable[Any]]
"""Opens a framed client connection to ``host:port``."""


class KVError(RaftError):
    """Base class of the key-value client's errors."""


class KeyNotFound(KVError, KeyError):
    """The key does not exist (or did not, for a delete)."""

    def __init__(self, key: str):
        self.key = key
        super().__init__(f"no such key: {key!r}")

    def __str__(self) -> str:
        return f"no such key: {self.key!r}"


class ClusterUnavailable(KVError):
    """No member answered usefully before the deadline (unreachable, no leader...).

    ``in_doubt`` says whether some attempt sent the request and got no definite
    answer (it timed out, the connection died, or the leader could not tell): a
    write may then have been applied. When false, every member that got the
    request refused it (not the leader), so a write certainly was not applied.
    """

    def __init__(self, message: str, *, in_doubt: bool = True) -> None:
        self.in_doubt = in_doubt
        super().__init__(message)


class RequestFailed(KVError):
    """The cluster answered, with an error that retrying will not fix."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


class InvalidRequest(KVError, ValueError):
    """A key or value the cluster cannot take (not valid Unicode text, or above
    ``protocol.MAX_KEY_BYTES`` / ``MAX_VALUE_BYTES``): refused before sending."""


class ConnectionRejected(KVError):
    """A member refused the connection for a reason retrying cannot fix: another
    cluster id, no client service, a TLS handshake that failed (certificates, or
    TLS on one side only)."""


class OutcomeUnknown(KVError):
    """A write was retried and its session expired meanwhile: an earlier attempt may
    or may not have been applied, and the cluster no longer remembers. The write was
    NOT applied again. The client drops the session (the next write opens another).
    """

    def __init__(self, op: str, key: str, session_id: int):
        self.op = op
        self.key = key
        self.session_id = session_id
        super().__init__(f"outcome of {op} {key!r} unknown: it was retried and its session "
                         f"{session_id} expired meanwhile (an earlier attempt may have been "
                         "applied); read the key to find out")


class _Session:
    """The client's session: its id, the next request number, the numbers of the
    writes still waiting for an answer (several tasks may share one client)."""

    __slots__ = ("id", "last_used", "next_seq", "pending", "timeout")

    def __init__(self, session_id: int, timeout: float) -> None:
        self.id = session_id
        self.timeout = timeout
        """The cluster's session timeout (seconds of cluster time)."""
        self.next_seq = 1
        self.pending: set[int] = set()
        self.last_used = trio.current_time()
        """When this session's latest write was sent (this client's clock)."""


class _LeaderMoved(Exception):
    """Internal: while waiting for one member's answer, another said it leads."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__(address)


class _Tried:
    """What each member tried said, in the order first tried (for error messages),
    and whether a request went out without a definite answer (``in_doubt``)."""

    def __init__(self) -> None:
        self.problems: dict[str, str] = {}
        self.in_doubt = False
        self.sent = False
        """Whether the current attempt got as far as sending the request."""

        self.no_leader = False
        """Whether a member answered that it knows no leader."""

    def note(self, address: str, problem: str) -> None:
        self.problems[address] = problem

    def describe(self) -> str:
        if not self.problems:
            return "no member tried"
        return "tried " + "; ".join(f"{a}: {p}" for a, p in self.problems.items())


class KVClient:
    """A client of the replicated key-value store.

    ``members`` lists ``host:port`` addresses of any members (not necessarily all).
    ``timeout`` bounds each whole operation, retries included (the first write also
    opens the session: one more request, with its own ``timeout``).

    Failing over (``docs/runtime.md``): ``connect_timeout`` bounds connecting and the
    handshake (a paused member's kernel accepts the connection, but nobody answers
    the handshake), ``attempt_timeout`` the wait for one answer (a write that timed
    out is retried elsewhere under the same session number, so it applies once; a
    transfer waits for its answer up to ``timeout``). A member that failed an
    attempt is suspected for ``suspect_time``: the client forgets it as leader, does
    not follow redirects to it, and asks the other members in parallel who leads.
    ``retry_delay`` is the pause while nobody leads. While an answer is late (after
    ``watch_after``, then every third of it; ``None``: never), the client asks the other
    members whether one of them leads now, and if so leaves the slow one for it.
    ``aliases`` maps addresses the members advertise to each other (redirects name
    those) to the addresses this client should use for them.

    While it knows no leader it can trust, the client asks the members who leads with
    a long poll (``leader_wait`` seconds; 0: plain polling every ``retry_delay``): each
    member answers as soon as it knows a leader other than the ones that failed this
    client (a member that failed is distrusted in the term the client last knew it
    in; the same member leading in a later term is followed at once), so the client
    learns of an election's winner the moment a member does.
    """

    def __init__(
        self,
        members: Sequence[str],
        *,
        cluster_id: str = "raftpy",
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        connect: Connect | None = None,
        connect_timeout: float = 0.3,
        attempt_timeout: float = 0.5,
        suspect_time: float = 0.5,
        retry_delay: float = 0.02,
        watch_after: float | None = 0.15,
        aliases: Mapping[str, str] | None = None,
        leader_wait: float = 0.5,
    ) -> None:
        if not members:
            raise ValueError("a client needs at least one member address")
        for name, value in (("timeout", timeout), ("connect_timeout", connect_timeout),
                            ("attempt_timeout", attempt_timeout)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        self.aliases = dict(aliases or {})
        self.members = list(dict.fromkeys(self.aliases.get(m, m) for m in members))
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.attempt_timeout = attempt_timeout
        self.suspect_time = suspect_time
        self.retry_delay = retry_delay
        self.watch_after = watch_after
        self.leader_wait = min(max(0.0, leader_wait), protocol.MAX_STATUS_WAIT)
        self.leader_address: str | None = None
        self._suspects: dict[str, float] = {}
        """Members that failed an attempt lately, and until when they are suspected."""
        self._suspect_terms: dict[str, int] = {}
        """The highest term this client knew when it suspected each member: a member
        named leader in a later term is trusted again at once."""
        self._term = 0
        """The highest term this client has seen in an answer."""
        self._ids: dict[str, int] = {}
        """The node id of each member address this client has learned."""
        self._connect = connect if connect is not None else _default_connect(
            cluster_id, ssl_context)
        self._streams: dict[str, Any] = {}
        self._locks: dict[str, trio.Lock] = {}
        self._session: _Session | None = None
        self._session_lock = trio.Lock()
        self._sends: dict[tuple[int, int], int] = {}
        """How often each (session, seq) write has been sent (see :meth:`_write`)."""

    async def __aenter__(self) -> KVClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every open connection."""
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            await _close(stream)

    async def put(self, key: str, value: str) -> None:
        """Set ``key`` to ``value`` (returns once committed; applied once, however
        often it had to be retried). Raises :class:`OutcomeUnknown` if the session
        expired while retrying, :class:`InvalidRequest` at once for a key or value
        the cluster cannot take."""
        _check(key, value)
        await self._write({"op": "put", "key": key, "value": value})

    async def get(self, key: str, *, stale: bool = False) -> str:
        """The value of ``key``, read linearizably (ReadIndex) unless ``stale``: then
        the member answers from its own state at once, which may be behind.
        Raises :class:`KeyNotFound`."""
        _check(key)
        request: dict[str, Any] = {"op": "get", "key": key}
        if stale:
            request["stale"] = True
        response = await self._leader_request(request)
        value: str = response["value"]
        return value

    async def delete(self, key: str) -> None:
        """Remove ``key``; raises :class:`KeyNotFound` if it did not exist (before
        this delete: a retry of a delete that was applied reports success), and
        :class:`OutcomeUnknown` and :class:`InvalidRequest` like :meth:`put`."""
        _check(key)
        await self._write({"op": "delete", "key": key})

    async def transfer(self, to: int | None = None) -> dict[str, Any]:
        """Ask the leader to hand over (to ``to``, or the best voter). Returns the
        response: ``leader_id``, ``leader_address``, ``elapsed_ms`` (leader-side)."""
        # Not retried on a slow answer: a second transfer would move leadership again.
        return await self._leader_request({"op": "transfer", "to": to},
                                          attempt_timeout=self.timeout, watch=False)

    async def membership(self) -> dict[str, Any]:
        """The leader's view of the membership (``Membership.to_dict()`` form)."""
        response = await self._leader_request({"op": "members"})
        members: dict[str, Any] = response["members"]
        return members

    async def add_member(self, member_id: int, address: str, role: str = "spare") -> int:
        """Have the leader add ``member_id`` at ``address`` as ``role``; returns the
        configuration entry's index once committed. Raises :class:`RequestFailed`
        (codes ``busy``, ``invalid_change``, ``promotion_failed``)."""
        response = await self._leader_request(
            {"op": "add_member", "id": member_id, "address": address, "role": role})
        return int(response["index"])

    async def assign_role(self, member_id: int, role: str) -> int:
        """Have the leader give ``member_id`` ``role``; like :meth:`add_member`."""
        response = await self._leader_request({"op": "assign", "id": member_id, "role": role})
        return int(response["index"])

    async def remove_member(self, member_id: int) -> int:
        """Have the leader remove ``member_id``; like :meth:`add_member`."""
        response = await self._leader_request({"op": "remove", "id": member_id})
        return int(response["index"])

    async def register_join_token(self, member_id: int, digest: str, expires: float) -> None:
        """Record a join token for ``member_id`` (its secret's hex SHA-256, ``digest``;
        valid until ``expires``, Unix time) through the leader's log."""
        await self._leader_request({"op": "join_token", "id": member_id, "digest": digest,
                                    "expires": float(expires)})

    async def use_join_token(self, member_id: int, digest: str) -> str:
        """Spend a join token through the leader's log: ``"ok"`` the first time, else why
        not (what a member holding the CA key asks before it signs)."""
        response = await self._leader_request({"op": "join_use", "id": member_id,
                                               "digest": digest})
        return str(response["result"])

    async def status(self, address: str) -> dict[str, Any]:
        """The status of the member at ``address`` (no redirect)."""
        response = await self._attempt(address, {"op": "status"}, self.attempt_timeout)
        if not response["ok"]:
            raise RequestFailed(response.get("error", "?"), response.get("message", ""))
        status: dict[str, Any] = response["status"]
        self._learn(address, status)
        return status

    async def statuses(self) -> dict[str, dict[str, Any] | str]:
        """Every listed member's status, or why it could not be had."""
        out: dict[str, dict[str, Any] | str] = {}

        async def one(address: str) -> None:
            try:
                out[address] = await self.status(address)
            except (OSError, trio.TooSlowError, RaftError, ValueError,
                    trio.BrokenResourceError) as exc:
                out[address] = _describe(exc)

        async with trio.open_nursery() as nursery:
            for address in self.members:
                nursery.start_soon(one, address)
        return {a: out[a] for a in self.members}

    # ------------------------------------------------------------------ internals

    async def _write(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send a put or delete as the next request of the session, the same
        ``(session, seq)`` on every retry, so that the cluster applies it once."""
        renewed = False
        while True:
            session = await self._open_session()
            seq = session.next_seq
            session.next_seq += 1
            session.pending.add(seq)
            session.last_used = trio.current_time()
            key = (session.id, seq)
            # ack: every answer below the lowest write still waited on has arrived
            # (by this or another task), so the cluster may forget those results.
            numbered = {**request, "session": session.id, "seq": seq,
                        "ack": min(session.pending)}
            try:
                response = await self._leader_request(numbered)
            except RequestFailed as exc:
                if exc.code != protocol.SESSION_EXPIRED:
                    raise
                if self._session is session:
                    self._session = None  # the next write opens a new one
                # Sent more than once: an earlier attempt may have been applied (even
                # a not_leader answer may come from a leader that lost its proposal's
                # fate to a snapshot). Sent once and refused: certainly not applied,
                # so it may go again, once, in a new session.
                if self._sends.get(key, 0) > 1:
                    raise OutcomeUnknown(request["op"], request["key"], session.id) from None
                if renewed:
                    raise
                renewed = True
            else:
                return response
            finally:
                session.pending.discard(seq)
                self._sends.pop(key, None)

    async def _open_session(self) -> _Session:
        """The client's session, registered through the log on first use."""
        async with self._session_lock:  # concurrent first writes share one session
            session = self._session
            if (session is not None and not session.pending
                    and trio.current_time() - session.last_used > session.timeout / 2):
                # Idle for long: the cluster may expire it under the next write, and a
                # retried write would then end in OutcomeUnknown. Cheaper to start over.
                session = None
            if session is None:
                response = await self._leader_request({"op": "session"})
                session_id, timeout = response.get("session"), response.get("timeout")
                if type(session_id) is not int or not isinstance(timeout, (int, float)):
                    raise RequestFailed("malformed_response",
                                        f"no session in the answer: {response!r:.100}")
                session = self._session = _Session(session_id, float(timeout))
            return session

    async def _leader_request(self, request: dict[str, Any], *,
                              attempt_timeout: float | None = None,
                              watch: bool = True) -> dict[str, Any]:
        """Send ``request`` to the leader, finding it and failing over as needed.

        Each attempt is bounded: ``connect_timeout`` for connect and handshake,
        ``attempt_timeout`` for the answer. A member that fails an attempt is
        suspected for ``suspect_time``: a redirect to it is not followed and it is
        not asked who leads. Without a leader known, the members are asked in
        parallel who leads (:meth:`_find_leader`).
        """
        attempt_timeout = self.attempt_timeout if attempt_timeout is None else attempt_timeout
        tried = _Tried()
        redirects = 0
        with trio.move_on_after(self.timeout):
            while True:
                address = self.leader_address
                if address is None or self._suspected(address):
                    self.leader_address = None
                    address = await self._find_leader(tried)
                    if address is None:
                        # Nobody leads yet (an election is running): ask again soon.
                        await trio.sleep(self.retry_delay)
                        continue
                tried.note(address, "no answer yet")  # should the deadline cut it short
                tried.sent = False
                try:
                    if watch and self.watch_after is not None:
                        response = await self._watched_attempt(address, request,
                                                               attempt_timeout, tried)
                    else:
                        response = await self._attempt(address, request, attempt_timeout,
                                                       tried)
                except ConnectionRejected:
                    raise  # a refused handshake: retrying cannot fix it
                except _LeaderMoved as moved:
                    tried.in_doubt |= tried.sent
                    tried.note(address, f"slow to answer, and {moved.address} leads now")
                    self._suspect(address)
                    self.leader_address = moved.address
                    continue
                except (OSError, trio.BrokenResourceError, trio.TooSlowError,
                        ValueError, RaftError) as exc:
                    tried.in_doubt |= tried.sent
                    problem = _describe(exc)
                    tried.note(address, problem)
                    logger.debug("request to %s failed: %s", address, problem)
                    self._suspect(address)
                    continue
                if response["ok"]:
                    self.leader_address = address
                    return response
                code = response.get("error")
                message = response.get("message", "")
                if code == protocol.NOT_FOUND:
                    raise KeyNotFound(request.get("key", ""))
                if code not in (protocol.NOT_LEADER, protocol.UNAVAILABLE):
                    raise RequestFailed(str(code), message)
                tried.note(address, message or str(code))
                tried.in_doubt |= code == protocol.UNAVAILABLE
                leader = response.get("leader_address") if code == protocol.NOT_LEADER else None
                leader = self._canonical(leader) if leader else None
                term = response.get("term")
                term = term if type(term) is int else None
                if leader is not None:
                    self._learn_leader(leader, response.get("leader_id"), term)
                if leader and leader != address and not self._distrusted(leader, term):
                    self._trust(leader)  # (it may have failed us in an earlier term)
                    self.leader_address = leader  # follow the redirect
                    redirects += 1
                    if redirects % (len(self.members) + 1) == 0:
                        await trio.sleep(self.retry_delay)  # members disagree: let them settle
                    continue
                # No leader named, or one that just failed us (a dead or paused
                # leader the followers still believe in): look for the new one.
                # (At once: _find_leader pauses if nobody leads; a member that could
                # not serve, e.g. handing over, is left out of its next question.)
                self.leader_address = None
                if code == protocol.UNAVAILABLE or leader == address:
                    self._suspect(address, self.retry_delay)
        tried.in_doubt |= tried.sent  # the deadline cut an attempt short after sending
        # A member that answered it knows no leader says more than a refused
        # connection: without quorum, "no leader" is the news (issue 10).
        what = "no leader" if tried.no_leader else "no answer from the cluster"
        raise ClusterUnavailable(
            f"{what} within {self.timeout:g}s ({tried.describe()})",
            in_doubt=tried.in_doubt)

    async def _attempt(self, address: str, request: dict[str, Any],
                       attempt_timeout: float, tried: _Tried | None = None) -> dict[str, Any]:
        """One request to one member: connect (bounded by ``connect_timeout``), then
        the answer (bounded by ``attempt_timeout``); ``trio.TooSlowError`` when late."""
        with trio.fail_after(self.connect_timeout + attempt_timeout):
            return await self._request_once(address, request, attempt_timeout, tried)

    async def _watched_attempt(self, address: str, request: dict[str, Any],
                               attempt_timeout: float, tried: _Tried) -> dict[str, Any]:
        """:meth:`_attempt`, but if no answer came within ``watch_after``, ask the
        other members who leads (then every third of that) and give up on ``address``
        (raising :class:`_LeaderMoved`) as soon as another says it leads: a paused
        or cut-off leader then holds the client for an election, not for
        ``attempt_timeout``."""
        outcome: list[dict[str, Any] | BaseException] = []
        moved: list[str] = []
        assert self.watch_after is not None
        watch_after = self.watch_after

        async def attempt(cancel: trio.CancelScope) -> None:
            try:
                outcome.append(await self._attempt(address, request, attempt_timeout, tried))
            except (OSError, trio.BrokenResourceError, trio.TooSlowError, ValueError,
                    RaftError) as exc:
                outcome.append(exc)
            cancel.cancel()

        async def watch(cancel: trio.CancelScope) -> None:
            await trio.sleep(watch_after)
            while True:
                other = await self._other_leader(address)
                if other is not None:
                    moved.append(other)
                    cancel.cancel()
                    return
                # An election is likely under way: look again soon.
                await trio.sleep(watch_after / 3)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(attempt, nursery.cancel_scope)
            nursery.start_soon(watch, nursery.cancel_scope)
        if outcome:
            result = outcome[0]
            if isinstance(result, BaseException):
                raise result
            return result
        raise _LeaderMoved(moved[0])

    async def _other_leader(self, address: str) -> str | None:
        """A member other than ``address`` that says it leads, or that names another
        leader than ``address`` (asked in parallel, with a long poll of ``leader_wait``
        that excludes ``address`` in the latest term known: a member answers the moment
        it learns of a new leader), or ``None``."""
        found: list[str] = []
        request: dict[str, Any] = {"op": "status"}
        wait = 0.0
        if self.leader_wait > 0 and address in self._ids:
            wait = self.leader_wait
            request.update(wait=wait, exclude=[[self._ids[address], self._term]])

        async def ask(other: str, done: trio.CancelScope) -> None:
            with contextlib.suppress(OSError, trio.BrokenResourceError, trio.TooSlowError,
                                     ValueError, RaftError):
                response = await self._attempt(other, request, self.connect_timeout + wait)
                status = response.get("status")
                if not response["ok"] or not isinstance(status, dict):
                    return
                self._learn(other, status)
                named = status.get("leader_address")
                named = self._canonical(named) if isinstance(named, str) else None
                if status.get("role") == "leader":
                    found.append(other)
                    done.cancel()
                elif wait and named is not None and named != address \
                        and not self._distrusted(named, status.get("term")):
                    found.append(named)  # it learnt of a new leader: go there
                    done.cancel()

        async with trio.open_nursery() as nursery:
            for other in self.members:
                if other != address:
                    nursery.start_soon(ask, other, nursery.cancel_scope)
        return found[0] if found else None

    async def _find_leader(self, tried: _Tried) -> str | None:
        """Ask every member not suspected (all of them if all are) who leads, in
        parallel, with a long poll (``leader_wait``): the address of the first member
        that says it leads (the highest term if several answer together), else of the
        leader the first members name (if not distrusted), else ``None``."""
        candidates = [a for a in self.members if not self._suspected(a)] or self.members
        leaders: dict[str, int] = {}
        named: dict[str, int] = {}
        request: dict[str, Any] = {"op": "status"}
        if self.leader_wait > 0:
            # Members still naming a leader that failed us wait (up to leader_wait)
            # for the next one, and answer the moment they learn it.
            request["wait"] = self.leader_wait
            request["exclude"] = [[self._ids[a], self._suspect_terms.get(a, self._term)]
                                  for a in self.members
                                  if a in self._ids and self._suspected(a)]

        rejected: list[ConnectionRejected] = []

        scopes: dict[str, trio.CancelScope] = {}

        def news(leader: str) -> None:
            """A long poll named a new leader: stop waiting on the other members, but
            let the leader's own answer (due at once: it leads) arrive rather than
            cancel it, which would close the connection the request is about to use."""
            for address, scope in scopes.items():
                if address != leader:
                    scope.cancel()
            if leader in scopes:
                scopes[leader].deadline = min(scopes[leader].deadline,
                                              trio.current_time() + self.connect_timeout)

        async def ask(address: str, done: trio.CancelScope) -> None:
            with trio.CancelScope() as scopes[address]:
                await ask_one(address, done)

        async def ask_one(address: str, done: trio.CancelScope) -> None:
            try:
                response = await self._attempt(address, request,
                                               self.connect_timeout + self.leader_wait)
            except ConnectionRejected as exc:
                rejected.append(exc)  # retrying cannot fix it
                tried.note(address, str(exc))
                return
            except (OSError, trio.BrokenResourceError, trio.TooSlowError,
                    ValueError, RaftError) as exc:
                tried.note(address, _describe(exc))
                self._suspect(address)
                return
            status = response.get("status")
            if not response["ok"] or not isinstance(status, dict):
                tried.note(address, str(response.get("message", "no status")))
                return
            self._learn(address, status)
            term = status.get("term")
            term = term if type(term) is int else None
            if status.get("role") == "leader":
                leaders[address] = term or 0
                done.cancel()  # (a stale leader would have a lower term; see below)
                return
            named_leader = status.get("leader_address")
            if named_leader is None:
                tried.no_leader = True
                tried.note(address, "knows no leader")
                return
            tried.note(address, f"not the leader (it names {named_leader})")
            if isinstance(named_leader, str):
                leader = self._canonical(named_leader)
                if not self._distrusted(leader, term):
                    named[leader] = named.get(leader, 0) + 1
                    if self.leader_wait > 0:
                        news(leader)  # no need to wait for more long polls

        async with trio.open_nursery() as nursery:
            for address in candidates:
                nursery.start_soon(ask, address, nursery.cancel_scope)
        if rejected and len(rejected) == len(candidates):
            raise rejected[0]  # every member refused our handshake: fail fast
        if leaders:
            best = max(leaders, key=lambda a: leaders[a])
            self._trust(best)
            return best
        for leader, _ in sorted(named.items(), key=lambda item: -item[1]):
            self._trust(leader)
            return leader
        return None

    def _learn(self, address: str, status: dict[str, Any]) -> None:
        """Remember what a status answer tells: the member's id, the term, the leader."""
        node_id, term = status.get("node_id"), status.get("term")
        if type(node_id) is int:
            self._ids[address] = node_id
        if type(term) is int:
            self._term = max(self._term, term)
        leader = status.get("leader_address")
        if isinstance(leader, str):
            self._learn_leader(self._canonical(leader), status.get("leader_id"), None)

    def _learn_leader(self, address: str, leader_id: object, term: int | None) -> None:
        if type(leader_id) is int:
            self._ids[address] = leader_id
        if term is not None:
            self._term = max(self._term, term)

    def _distrusted(self, address: str, term: int | None) -> bool:
        """Whether not to go to ``address`` when a member names it leader in ``term``
        (``None``: unknown): it failed us lately, in that term or a later one."""
        if not self._suspected(address):
            return False
        return term is None or term <= self._suspect_terms.get(address, self._term)

    def _trust(self, address: str) -> None:
        """``address`` leads in a term later than when it failed us: forget that."""
        self._suspects.pop(address, None)
        self._suspect_terms.pop(address, None)

    def _canonical(self, address: str) -> str:
        return self.aliases.get(address, address)

    def _suspect(self, address: str, duration: float | None = None) -> None:
        """Do not follow redirects to ``address`` for a while (it just failed)."""
        until = trio.current_time() + (self.suspect_time if duration is None else duration)
        self._suspects[address] = max(until, self._suspects.get(address, until))
        self._suspect_terms[address] = max(self._term, self._suspect_terms.get(address, 0))
        if self.leader_address == address:
            self.leader_address = None

    def _suspected(self, address: str) -> bool:
        until = self._suspects.get(address)
        if until is None:
            return False
        if trio.current_time() >= until:
            del self._suspects[address]
            self._suspect_terms.pop(address, None)
            return False
        return True

    async def _request_once(self, address: str, request: dict[str, Any],
                            attempt_timeout: float | None = None,
                            tried: _Tried | None = None) -> dict[str, Any]:
        # One request at a time per connection: tasks sharing this client would
        # otherwise receive concurrently on one stream (Trio refuses that with
        # BusyResourceError) or take each other's answers.
        async with self._locks.setdefault(address, trio.Lock()):
            return await self._exchange(address, request, attempt_timeout, tried)

    async def _exchange(self, address: str, request: dict[str, Any],
                        attempt_timeout: float | None = None,
                        tried: _Tried | None = None) -> dict[str, Any]:
        stream = self._streams.get(address)
        if stream is None:
            # Connect and handshake on their own bound: a paused member's kernel
            # still accepts, and the handshake would then never be answered.
            with trio.fail_after(self.connect_timeout):
                stream = await self._connect(address)
            self._streams[address] = stream
        if "seq" in request:
            key = (request["session"], request["seq"])
            self._sends[key] = self._sends.get(key, 0) + 1
        if tried is not None:
            tried.sent = True
        try:
            with trio.fail_after(self.timeout if attempt_timeout is None else attempt_timeout):
                await stream.send(protocol.encode(request))
                data = await stream.receive()
        except BaseException:
            await self._drop(address)
            raise
        if data is None:
            await self._drop(address)
            raise trio.BrokenResourceError(f"{address} closed the connection")
        return protocol.decode_response(data)

    async def _drop(self, address: str) -> None:
        stream = self._streams.pop(address, None)
        if stream is not None:
            await _close(stream)


async def _close(stream: Any) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await aclose()


def _check(key: str, value: str | None = None) -> None:
    try:
        protocol.check_key(key)
        if value is not None:
            protocol.check_value(value)
    except protocol.BadRequest as exc:
        raise InvalidRequest(str(exc)) from None


def _describe(exc: BaseException) -> str:
    if _refused(exc):
        return "connection refused"
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def _refused(exc: BaseException | None) -> bool:
    """Whether ``exc`` is (or wraps: trio's "all attempts failed") a refused connect."""
    if exc is None:
        return False
    if isinstance(exc, ConnectionRefusedError):
        return True
    inner = getattr(exc, "exceptions", None)
    if isinstance(inner, tuple) and inner and all(_refused(e) for e in inner):
        return True
    return _refused(exc.__cause__)


def _default_connect(cluster_id: str, ssl_context: ssl.SSLContext | None) -> Connect:
    from raftpy.trio.client import connect_client

    async def connect(address: str) -> FramedStream:
        try:
            stream: FramedStream = await connect_client(address, cluster_id=cluster_id,
                                                        ssl_context=ssl_context)
        except HandshakeRefused as exc:
            if exc.reason.startswith("not a raftpy node"):  # no refusal: another protocol
                raise ConnectionRejected(exc.reason) from exc
            raise ConnectionRejected(f"{address} refused us: {exc.reason}") from exc
        except trio.BrokenResourceError as exc:
            if isinstance(exc.__cause__, ssl.SSLError):
                raise ConnectionRejected(
                    f"TLS handshake with {address} failed: {_describe(exc.__cause__)}"
                ) from exc
            raise
        except ProtocolError as exc:
            # Bytes where a hello reply belongs: not a raftpy member's port.
            raise ConnectionRejected(
                f"{address} did not answer like a raftpy member: {exc}") from exc
        return stream

    return connect
