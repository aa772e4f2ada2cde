"""A short chaos run on real processes (``python -m raftpy.chaos``, docs/testing.md):
three ``raftpy serve`` members, clients, SIGKILL / SIGSTOP / transfer / partition
faults from a fixed seed; the history must be linearizable, the replicas equal,
no acknowledged write lost or applied twice."""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path

import pytest

from raftpy.chaos import Options, run
from raftpy.chaos.nemesis import KINDS, PARTITION_KINDS, schedule


def test_the_schedule_depends_only_on_the_seed() -> None:
    plan = schedule(7, 30, partitions=True)
    assert plan == schedule(7, 30, partitions=True)
    assert plan != schedule(8, 30, partitions=True)
    assert {p.kind for p in plan} == set(KINDS + PARTITION_KINDS)  # each kind once first
    assert all(b.at >= a.at + a.duration + 1.2 for a, b in itertools.pairwise(plan))
    assert plan[-1].at + plan[-1].duration <= 27
    assert not {p.kind for p in schedule(7, 30, partitions=False)} & set(PARTITION_KINDS)


def test_a_short_chaos_run_is_linearizable_and_loses_nothing(tmp_path: Path) -> None:
    # Never snapshot: puts are counted over the whole log however fast the machine
    # (a fast one wrote past serve's default of 10,000 entries in 24 s).
    result = run(Options(seed=29, seconds=24, nodes=3, partitions=True, root=tmp_path,
                         snapshot_every=0))
    report = f"problems: {result.problems}; data and history in {tmp_path}"
    counts = result.history.counts()
    assert counts["ok"] > 500, report
    assert result.verdict is not None and result.verdict.linearizable is True, report
    assert result.replicas is not None and result.replicas.equal, report
    assert result.replicas.counted_from == 0  # every put's applications were counted
    assert result.replicas.duplicates == [] and result.replicas.lost == [], report
    assert {e.kind for e in result.events} >= {"kill-leader", "pause-leader", "transfer",
                                               "kill-majority", "partition-leader"}
    # The members run with --early-pre-vote: after the leader's SIGKILL a follower
    # noticed the lost connections and asked for pre-votes at once.
    logs = "".join((tmp_path / f"node{i}.log").read_text() for i in (1, 2, 3))
    assert "early pre-vote" in logs, report
    assert result.passed, report


def test_a_batch_says_how_much_of_the_log_its_duplicate_count_covered() -> None:
    from raftpy.chaos.batch import _counted, main

    assert _counted({"counted_from": 0, "last_index": 900}) == "all"
    assert _counted({"counted_from": 10000, "last_index": 40000}) == "75%"
    assert _counted({"counted_from": None, "last_index": None}) == "-"  # a crashed run
    with pytest.raises(SystemExit):
        main(["--snapshot-every", "-1"])


async def test_a_cut_link_proxy_blackholes_and_heal_closes_what_it_broke() -> None:
    """Real sockets on loopback, real time (generous bounds)."""
    import trio

    from raftpy.chaos.proxy import LinkProxy
    from raftpy.demo_net import _free_ports

    async def echo(stream: trio.SocketStream) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            async for data in stream:
                await stream.send_all(data)

    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, echo, listeners)
        proxy = LinkProxy(_free_ports(1)[0], ("127.0.0.1", port), "1->2")
        await nursery.start(proxy.run)

        before = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        await before.send_all(b"ping")
        with trio.fail_after(5):
            assert await before.receive_some() == b"ping"
        proxy.cut()
        await before.send_all(b"lost")
        during = await trio.open_tcp_stream("127.0.0.1", proxy.port)  # accepted...
        await during.send_all(b"lost too")
        with trio.move_on_after(0.3) as nothing:
            await before.receive_some()
            await during.receive_some()
        assert nothing.cancelled_caught  # ...but nothing comes back
        proxy.heal()
        with trio.fail_after(5):
            assert await before.receive_some() == b""  # closed: its bytes were lost
        after = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        await after.send_all(b"pong")
        with trio.fail_after(5):
            assert await after.receive_some() == b"pong"
        for stream in (before, during, after):
            await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_a_member_proxy_cuts_one_source_and_heal_closes_what_it_broke() -> None:
    """The proxy in front of a member tells the dialers apart by their hello, so one
    directed link can be cut (real sockets on loopback, generous bounds)."""
    import trio

    from raftpy.chaos.proxy import MemberProxy
    from raftpy.demo_net import _free_ports
    from raftpy.trio.handshake import MAGIC, Hello, encode_hello

    def hello_from(node_id: int) -> bytes:
        payload = encode_hello(Hello(cluster_id="chaos", node_id=node_id))
        return MAGIC + len(payload).to_bytes(4, "big") + payload

    async def echo(stream: trio.SocketStream) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            async for data in stream:
                await stream.send_all(data)

    async def dial(node_id: int, port: int) -> trio.SocketStream:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        hello = hello_from(node_id)
        await stream.send_all(hello)
        echoed = b""
        with trio.fail_after(5):  # the hello comes back (echo): the link works
            while len(echoed) < len(hello):
                echoed += await stream.receive_some()
        assert echoed == hello
        return stream

    async def roundtrip(stream: trio.SocketStream, data: bytes) -> bytes:
        await stream.send_all(data)
        got = b""
        with trio.move_on_after(0.5):
            while len(got) < len(data):
                chunk = await stream.receive_some()
                if not chunk:
                    break
                got += chunk
        return got

    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, echo, listeners)
        proxy = MemberProxy(_free_ports(1)[0], ("127.0.0.1", port), 3)
        await nursery.start(proxy.run)
        from_1, from_2 = await dial(1, proxy.port), await dial(2, proxy.port)
        proxy.cut(1)
        assert await roundtrip(from_2, b"ping") == b"ping"  # 2 -> 3 still flows
        assert await roundtrip(from_1, b"lost") == b""  # 1 -> 3 is cut
        proxy.heal()
        with trio.fail_after(5):
            while await from_1.receive_some():  # closed: its bytes were lost
                pass
        again = await dial(1, proxy.port)
        assert await roundtrip(again, b"pong") == b"pong"
        for stream in (from_1, from_2, again):
            await stream.aclose()
        nursery.cancel_scope.cancel()


def test_write_gaps_and_election_times_from_the_members_logs(tmp_path: Path) -> None:
    from datetime import datetime

    from raftpy.chaos.history import OK, UNKNOWN, History
    from raftpy.chaos.nemesis import Event
    from raftpy.chaos.report import leader_changes, write_gaps

    wall_t0 = datetime(2026, 1, 2, 3, 4, 5).timestamp()
    (tmp_path / "node2.log").write_text(
        "2026-01-02 03:04:06,000 INFO raftpy.trio.runtime: node 2: leader is 1 (term 2)\n"
        "2026-01-02 03:04:15,250 INFO raftpy.trio.runtime: node 2: leader is None (term 2)\n"
        "2026-01-02 03:04:15,300 INFO raftpy.runtime node=2 term=3: node 2: leader is 2 "
        "(term 3)\n"
        "2026-01-02 03:04:15,301 WARNING raftpy.cli: unrelated\n")
    changes = leader_changes([tmp_path / "node1.log", tmp_path / "node2.log"], wall_t0)
    assert changes == [(pytest.approx(1.0), 2, 1), (pytest.approx(10.3), 2, 2)]
    history = History()
    for invoke, complete, outcome in [(9.9, 9.95, OK), (9.95, 10.6, OK),  # cut by the fault
                                      (10.0, 10.2, UNKNOWN), (10.61, 10.65, OK),
                                      (10.65, 10.7, OK)]:
        op = history.invoke(0, "put", "k", f"v{invoke}", invoke)
        history.complete(op, complete, outcome)
    fault = Event("kill-leader", 10.0, 11.0, [1], hit_leader=True)
    (gap,) = write_gaps(history, [fault], changes)
    assert gap.first_write == pytest.approx(0.65)  # the first write *invoked* after it
    assert gap.longest == pytest.approx(1.3)  # 10.7 until 1 s after the fault's end
    assert gap.elected == pytest.approx(0.3)
