"""Client sessions (raftpy.sessions): at-most-once application of retried commands,
deterministic expiry from leader-stamped time, snapshots, memory bounds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftpy import (
    AlreadyAcknowledged,
    InvalidSessionCommand,
    InvalidSessionSnapshot,
    RepeatedFailure,
    SessionExpired,
    SessionStateMachine,
    TooManyPendingResults,
    close_session_command,
    register_command,
    session_command,
)
from raftpy.kv.statemachine import KVStore, delete_command, put_command
from raftpy.sessions import MAGIC, is_session_command


class CountingStore(KVStore):
    """A KVStore that records every command its ``apply`` sees."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bytes] = []

    def apply(self, command: bytes) -> Any:
        self.seen.append(command)
        return super().apply(command)


def machine(**kwargs: Any) -> SessionStateMachine[CountingStore]:
    return SessionStateMachine(CountingStore(), **kwargs)


def cmd(session: int, seq: int, payload: bytes, *, ack: int = 1, now: float = 0.0) -> bytes:
    return session_command(session, seq, ack, now, payload)


# ---------------------------------------------------------------------- duplicates

def test_sessions_get_consecutive_ids_from_the_replicated_counter() -> None:
    a, b = machine(), machine()
    assert [a.apply(register_command(1.0)) for _ in range(3)] == [1, 2, 3]
    assert [b.apply(register_command(1.0)) for _ in range(3)] == [1, 2, 3]
    assert [s.session_id for s in a.sessions()] == [1, 2, 3]


def test_a_duplicate_put_returns_the_first_result_and_does_not_roll_the_key_back() -> None:
    sm = machine()
    alice, bob = sm.apply(register_command(0)), sm.apply(register_command(0))
    assert sm.apply(cmd(alice, 1, put_command("k", "v1"))) is None
    assert sm.apply(cmd(bob, 1, put_command("k", "v2"))) == "v1"
    # Alice's retry of her first put (its answer was lost) arrives after Bob's write.
    assert sm.apply(cmd(alice, 1, put_command("k", "v1"))) is None
    assert sm.inner.data == {"k": "v2"}
    assert sm.inner.seen == [put_command("k", "v1"), put_command("k", "v2")]


def test_a_duplicate_delete_returns_true_not_not_found() -> None:
    sm = machine()
    s = sm.apply(register_command(0))
    sm.apply(cmd(s, 1, put_command("k", "v")))
    assert sm.apply(cmd(s, 2, delete_command("k"))) is True
    assert sm.apply(cmd(s, 2, delete_command("k"))) is True
    assert sm.apply(cmd(s, 2, delete_command("k"))) is True
    assert sm.inner.data == {}
    assert sm.inner.seen.count(delete_command("k")) == 1


def test_a_duplicate_of_a_failed_command_raises_the_same_error_without_reapplying() -> None:
    sm = machine()
    s = sm.apply(register_command(0))
    with pytest.raises(ValueError, match=r"^not a key-value command: 1$"):
        sm.apply(cmd(s, 1, b"\x01"))
    with pytest.raises(ValueError, match=r"^not a key-value command: 1$") as info:
        sm.apply(cmd(s, 1, b"\x01"))
    assert type(info.value) is ValueError
    assert sm.inner.seen == [b"\x01"]


class Refusal(Exception):
    """A module-level exception taking one message argument (re-creatable)."""


class CodedRefusal(Exception):
    """An exception whose constructor takes other arguments than its args."""

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(f"refused with code {code}")


class Refuser:
    """An inner machine that raises whatever exception the command names."""

    def __init__(self) -> None:
        self.calls = 0

    def apply(self, command: bytes) -> Any:
        self.calls += 1
        if command == b"refuse":
            raise Refusal("no, thanks")
        if command == b"coded":
            raise CodedRefusal(7)
        if command == b"set":
            return {1, 2}  # not msgpack-encodable
        return command.decode()

    def snapshot(self) -> bytes:
        return b""

    def restore(self, data: bytes) -> None:
        pass


def test_first_errors_come_back_as_the_same_class_or_a_named_repeated_failure() -> None:
    sm = SessionStateMachine(Refuser())
    s = sm.apply(register_command(0))
    for _ in range(2):
        with pytest.raises(Refusal, match=r"^no, thanks$"):
            sm.apply(cmd(s, 1, b"refuse"))
    with pytest.raises(CodedRefusal):
        sm.apply(cmd(s, 2, b"coded"))
    # CodedRefusal("refused with code 7") would not be the same error: named instead.
    with pytest.raises(RepeatedFailure) as info:
        sm.apply(cmd(s, 2, b"coded"))
    assert info.value.error_type == "test_sessions.CodedRefusal"
    assert info.value.message == "refused with code 7"
    assert str(info.value) == "test_sessions.CodedRefusal: refused with code 7"
    assert sm.inner.calls == 2


def test_a_result_that_cannot_be_kept_fails_alike_for_the_first_call_and_duplicates() -> None:
    sm = SessionStateMachine(Refuser())
    s = sm.apply(register_command(0))
    for _ in range(2):
        with pytest.raises(TypeError, match="session 1 request 1: the result set cannot be kept"):
            sm.apply(cmd(s, 1, b"set"))
    assert sm.inner.calls == 1


def test_results_are_kept_until_acknowledged_then_an_old_seq_is_refused() -> None:
    sm = machine()
    s = sm.apply(register_command(0))
    for seq in (1, 2, 3):
        sm.apply(cmd(s, seq, put_command(f"k{seq}", "v"), ack=1))
    assert sm.session(s).pending == (1, 2, 3)  # type: ignore[union-attr]
    # The client has the answers to 1 and 2; 3 is still out (its answer was lost).
    assert sm.apply(cmd(s, 4, put_command("k4", "v"), ack=3)) is None
    info = sm.session(s)
    assert info is not None
    assert (info.acknowledged, info.pending) == (3, (3, 4))
    with pytest.raises(AlreadyAcknowledged, match="request 1 was already acknowledged") as exc:
        sm.apply(cmd(s, 1, put_command("k1", "again"), ack=1))
    assert (exc.value.session_id, exc.value.seq, exc.value.floor) == (1, 1, 3)
    assert sm.inner.data["k1"] == "v"
    assert sm.apply(cmd(s, 3, put_command("k3", "v"), ack=1)) is None  # still kept
    # A stale (lower) acknowledgement never lowers the floor.
    assert sm.session(s).acknowledged == 3  # type: ignore[union-attr]
    assert len(sm.inner.seen) == 4


def test_too_many_pending_results_refuses_without_applying() -> None:
    sm = machine(max_pending_results=2)
    s = sm.apply(register_command(0))
    sm.apply(cmd(s, 1, put_command("a", "1")))
    sm.apply(cmd(s, 2, put_command("b", "2")))
    with pytest.raises(TooManyPendingResults, match="holds 2 unacknowledged results") as info:
        sm.apply(cmd(s, 3, put_command("c", "3")))
    assert info.value.limit == 2
    assert "c" not in sm.inner.data
    # A duplicate is still answered: it needs no new room.
    assert sm.apply(cmd(s, 2, put_command("b", "2"))) is None
    # Acknowledging 1 makes room for 3.
    assert sm.apply(cmd(s, 3, put_command("c", "3"), ack=2)) is None
    assert sm.session(s).pending == (2, 3)  # type: ignore[union-attr]
    assert sm.inner.data == {"a": "1", "b": "2", "c": "3"}


# ---------------------------------------------------------------------- expiry

def test_sessions_expire_from_stamped_time_and_their_commands_are_not_applied() -> None:
    sm = machine(session_timeout=10)
    old = sm.apply(register_command(100))
    sm.apply(cmd(old, 1, put_command("k", "v1"), now=105))
    young = sm.apply(register_command(115))  # exactly the timeout: still alive
    assert [s.session_id for s in sm.sessions()] == [old, young]
    sm.apply(cmd(young, 1, put_command("x", "1"), now=115.5))
    assert sm.cluster_time == 115.5
    assert [s.session_id for s in sm.sessions()] == [young]
    with pytest.raises(SessionExpired, match="session 1 is unknown or expired") as info:
        sm.apply(cmd(old, 2, put_command("k", "v2"), now=115.5))
    assert info.value.session_id == old
    assert sm.inner.data == {"k": "v1", "x": "1"}


def test_a_command_whose_own_stamp_outlives_its_session_is_refused() -> None:
    sm = machine(session_timeout=10)
    s = sm.apply(register_command(0))
    sm.apply(cmd(s, 1, put_command("k", "v"), now=5))
    with pytest.raises(SessionExpired):
        sm.apply(cmd(s, 1, put_command("k", "v"), now=15.01))  # the retry, too late
    assert sm.sessions() == ()
    assert sm.inner.seen == [put_command("k", "v")]


def test_a_stamp_behind_cluster_time_does_not_move_it_back() -> None:
    sm = machine(session_timeout=10)
    s = sm.apply(register_command(1000))  # a leader whose clock is ahead
    # A new leader with a clock 50 s behind: its stamps do not rewind cluster time,
    # so they neither expire anything nor keep sessions alive past their timeout.
    for seq in (1, 2, 3):
        sm.apply(cmd(s, seq, put_command("k", str(seq)), now=950 + seq, ack=seq))
        assert sm.cluster_time == 1000
    assert sm.session(s).last_active == 1000  # type: ignore[union-attr]
    other = sm.apply(register_command(1010.5))
    assert [i.session_id for i in sm.sessions()] == [other]


def test_a_closed_session_is_gone() -> None:
    sm = machine()
    s = sm.apply(register_command(0))
    assert sm.apply(close_session_command(s, 1)) is True
    assert sm.apply(close_session_command(s, 1)) is False
    with pytest.raises(SessionExpired):
        sm.apply(cmd(s, 1, put_command("k", "v")))
    assert sm.inner.seen == []


# ---------------------------------------------------------------------- envelopes

def test_plain_commands_pass_through_without_exactly_once() -> None:
    sm = machine()
    assert not is_session_command(put_command("k", "v"))
    assert sm.apply(put_command("k", "v")) is None
    assert sm.apply(put_command("k", "v")) == "v"  # applied twice: no session, no dedup
    assert sm.inner.seen == [put_command("k", "v")] * 2
    assert sm.sessions() == ()


@pytest.mark.parametrize("command", [
    MAGIC + b"\xc1",
    MAGIC + msgpack.packb("register"),
    MAGIC + msgpack.packb([9, 1.0]),
    MAGIC + msgpack.packb([0]),
    MAGIC + msgpack.packb([0, float("nan")]),
    MAGIC + msgpack.packb([1, 1, 2, 3, 0.0, b"x"]),       # ack above its own seq
    MAGIC + msgpack.packb([1, 1, 0, 0, 0.0, b"x"]),       # seq 0
    MAGIC + msgpack.packb([1, True, 1, 1, 0.0, b"x"]),    # a bool is not an id
    MAGIC + msgpack.packb([1, 1, 1, 1, 0.0, "x"]),        # payload must be bytes
    MAGIC + msgpack.packb([2, 1]),
])
def test_malformed_envelopes_are_refused_without_change(command: bytes) -> None:
    sm = machine()
    s = sm.apply(register_command(3))
    before = sm.snapshot()
    with pytest.raises(InvalidSessionCommand, match="malformed session command"):
        sm.apply(command)
    assert sm.snapshot() == before
    assert sm.session(s) is not None
    assert isinstance(InvalidSessionCommand("x"), ValueError)


@pytest.mark.parametrize(("call", "problem"), [
    (lambda: session_command(0, 1, 1, 0.0, b"x"), "session id must be an int"),
    (lambda: session_command(1, 2, 3, 0.0, b"x"), "cannot exceed seq"),
    (lambda: session_command(1, 1, 1, float("inf"), b"x"), "finite number"),
    (lambda: session_command(1, 1, 1, 0.0, "x"), "must be bytes"),
    (lambda: register_command(float("nan")), "finite number"),
    (lambda: SessionStateMachine(KVStore(), session_timeout=0), "session_timeout"),
    (lambda: SessionStateMachine(KVStore(), max_pending_results=0), "max_pending_results"),
])
def test_helpers_refuse_bad_arguments(call: Any, problem: str) -> None:
    with pytest.raises((ValueError, TypeError), match=problem):
        call()


# ---------------------------------------------------------------------- snapshots

def test_snapshot_restore_keeps_sessions_results_and_time() -> None:
    sm = machine(session_timeout=10)
    s = sm.apply(register_command(50))
    sm.apply(cmd(s, 1, put_command("k", "v1"), now=51))
    sm.apply(cmd(s, 2, delete_command("k"), now=52))
    with pytest.raises(ValueError):
        sm.apply(cmd(s, 3, b"\x01", now=53))
    copy = machine(session_timeout=10)
    copy.restore(sm.snapshot())
    assert copy.snapshot() == sm.snapshot()
    assert copy.sessions() == sm.sessions()
    assert copy.cluster_time == 53
    assert copy.inner.data == {}
    # Duplicates after the restore get the first results; nothing is re-applied.
    assert copy.apply(cmd(s, 1, put_command("k", "v1"), now=54)) is None
    assert copy.apply(cmd(s, 2, delete_command("k"), now=54)) is True
    with pytest.raises(ValueError, match="not a key-value command: 1"):
        copy.apply(cmd(s, 3, b"\x01", now=54))
    assert copy.inner.seen == [] and copy.inner.data == {}
    assert copy.apply(register_command(60)) == 2  # the counter came along
    with pytest.raises(SessionExpired):  # and so did the activity times
        copy.apply(cmd(s, 4, put_command("k", "v4"), now=64.5))


@pytest.mark.parametrize(("data", "problem"), [
    (b"garbage", "marker is missing"),
    (KVStore().snapshot(), "marker is missing"),
    (b"\xc1RSS\xc1", "undecodable"),
    (b"\xc1RSS" + msgpack.packb([2, 1, 0.0, [], b""]), "format 2, this code reads format 1"),
    (b"\xc1RSS" + msgpack.packb([1, 1, 0.0, []]), "wrong number of fields"),
    (b"\xc1RSS" + msgpack.packb([1, 0, 0.0, [], b""]), "bad session counter"),
    (b"\xc1RSS" + msgpack.packb([1, 2, 0.0, [[5, 0.0, 1, []]], b""]), "inconsistent session 5"),
    (b"\xc1RSS" + msgpack.packb([1, 3, 9.0, [[1, 5.0, 1, []], [2, 4.0, 1, []]], b""]),
     "inconsistent session 2"),
    (b"\xc1RSS" + msgpack.packb([1, 2, 9.0, [[1, 5.0, 3, [[2, True, b"\xc0"]]]], b""]),
     "bad cached result in session 1"),
])
def test_restoring_garbage_is_a_clear_error_and_changes_nothing(data: bytes, problem: str
                                                                ) -> None:
    sm = machine()
    s = sm.apply(register_command(1))
    sm.apply(cmd(s, 1, put_command("k", "v")))
    before = sm.snapshot()
    with pytest.raises(InvalidSessionSnapshot, match=problem):
        sm.restore(data)
    assert sm.snapshot() == before


# ---------------------------------------------------------------------- properties

payloads = st.one_of(
    st.builds(put_command, st.sampled_from("ab"), st.sampled_from("xyz")),
    st.builds(delete_command, st.sampled_from("ab")),
    st.just(b"\x01"),  # refused by the store: its error is a result too
)


def outcome(apply: Callable[[bytes], Any], command: bytes) -> tuple[str, Any]:
    """What ``apply(command)`` answered: ("ok", value) or (error class, message)."""
    try:
        return ("ok", apply(command))
    except Exception as exc:
        return (type(exc).__name__, str(exc))


@settings(max_examples=300, deadline=None)
@given(clients=st.integers(1, 3), steps=st.lists(
    st.tuples(st.integers(0, 2), st.booleans(), st.integers(0, 100), st.booleans(), payloads),
    max_size=60))
def test_retries_and_lost_answers_apply_each_request_once(
        clients: int, steps: list[tuple[int, bool, int, bool, bytes]]) -> None:
    """Honest clients (ack = lowest seq still waited on) send new requests or retry a
    pending one, and some answers are lost. Every delivery must answer what applying
    each distinct (session, seq) once, at its first delivery, answered; the store
    must end as that reference store; the cache must hold exactly the applied seqs
    at or above the acknowledged floor."""
    sm = SessionStateMachine(KVStore())
    reference = KVStore()
    first: dict[tuple[int, int], tuple[str, Any]] = {}
    sessions = [sm.apply(register_command(0)) for _ in range(clients)]
    next_seq = [1] * clients
    pending: list[dict[int, bytes]] = [{} for _ in range(clients)]
    acked = [1] * clients
    for who, retry, pick, lost, payload in steps:
        c = who % clients
        if retry and pending[c]:
            seq = sorted(pending[c])[pick % len(pending[c])]
            payload = pending[c][seq]
        else:
            seq = next_seq[c]
            next_seq[c] += 1
            pending[c][seq] = payload
        ack = min(pending[c])
        acked[c] = max(acked[c], ack)
        got = outcome(sm.apply, session_command(sessions[c], seq, ack, 0.0, payload))
        key = (sessions[c], seq)
        if key not in first:
            first[key] = outcome(reference.apply, payload)
        assert got == first[key]
        if not lost:
            del pending[c][seq]
        info = sm.session(sessions[c])
        assert info is not None and info.acknowledged == acked[c]
        assert info.pending == tuple(sorted(s for (sid, s) in first
                                            if sid == sessions[c] and s >= acked[c]))
    assert sm.inner.data == reference.data


@st.composite
def replica_feeds(draw: st.DrawFn) -> list[bytes]:
    """Commands as a log might hold them: registrations, session commands (some for
    sessions that expired, some duplicates, some acknowledgements), closes and plain
    commands, stamped by leaders whose clocks disagree (stamps go back and forth)."""
    commands = []
    registered = 0
    for _ in range(draw(st.integers(0, 40))):
        now = draw(st.floats(0, 60, allow_nan=False))
        kind = draw(st.sampled_from(["register", "command", "command", "close", "plain"]))
        if kind == "register" or registered == 0:
            registered += 1
            commands.append(register_command(now))
        elif kind == "command":
            session = draw(st.integers(1, registered))
            seq = draw(st.integers(1, 6))
            ack = draw(st.integers(1, seq))
            commands.append(session_command(session, seq, ack, now, draw(payloads)))
        elif kind == "close":
            commands.append(close_session_command(draw(st.integers(1, registered)), now))
        else:
            commands.append(draw(payloads))
    return commands


@settings(max_examples=300, deadline=None)
@given(feed=replica_feeds(), cut=st.integers(0, 40))
def test_replicas_fed_the_same_log_agree_even_across_a_snapshot(feed: list[bytes],
                                                                cut: int) -> None:
    """Replica A applies the whole feed; replica B applies a prefix, is snapshotted,
    and replica C restores that snapshot and applies the rest. A and C must answer
    every later command alike and end byte-for-byte in the same state."""
    cut = min(cut, len(feed))
    a, b, c = (SessionStateMachine(KVStore(), session_timeout=10, max_pending_results=3)
               for _ in range(3))
    stamps = [0.0]
    for command in feed[:cut]:
        outcome(a.apply, command)
        outcome(b.apply, command)
        assert a.snapshot() == b.snapshot()
    c.restore(b.snapshot())
    for command in feed[cut:]:
        assert outcome(a.apply, command) == outcome(c.apply, command)
    assert a.snapshot() == c.snapshot()
    for command in feed:
        if is_session_command(command):
            fields = msgpack.unpackb(command[len(MAGIC):])
            stamps.append(fields[4] if fields[0] == 1 else fields[-1])
    assert a.cluster_time == max(stamps)
    assert all(a.cluster_time - s.last_active <= 10 for s in a.sessions())
    assert all(len(s.pending) <= 3 for s in a.sessions())
