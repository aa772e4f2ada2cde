"""The runtime's fast paths: ``Node.apply_many``, run-to-completion message handling
and group commit in the disk task (docs/runtime.md)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from helpers import CONFIG, FakeNetwork, Recorder, cluster, gated_cluster

from raftpy import NotLeader
from raftpy.messages import AppendEntries, AppendEntriesResponse
from raftpy.storage.memory import MemoryStorage
from raftpy.trio.runtime import open_node


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``exc`` or the first ``kind`` inside its (nested) exception groups."""
    if isinstance(exc, kind):
        return exc
    for sub in getattr(exc, "exceptions", ()):
        found = _find(sub, kind)
        if found is not None:
            return found
    return None


async def test_apply_many_returns_every_result_in_order(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        leader = await c.leader()
        first = leader.status().last_log_index + 1
        results = await leader.apply_many([b"a", b"boom", b"c"])
        assert results[0] == 1 and results[2] == 2
        assert isinstance(results[1], ValueError)  # the state machine's own refusal
        assert await leader.apply_many([]) == []
        # Appended contiguously, in order, behind one another.
        assert leader.status().last_log_index == first + 2
        assert await leader.apply_many([b"x%d" % k for k in range(500)]) == list(range(3, 503))
        assert c.machines[leader.id].commands[-1] == b"x499"
        with pytest.raises(ValueError, match="non-empty"):
            await leader.apply_many([b"ok", b""])
        follower = next(n for n in c.nodes.values() if n is not leader)
        await follower.wait_leader()
        with pytest.raises(NotLeader) as info:
            await follower.apply_many([b"y"])
        assert info.value.leader_id == leader.id


async def test_overwritten_commands_of_a_batch_come_back_as_not_leader(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        old = await c.leader()
        c.network.cut.add(old.id)  # it keeps accepting, but cannot commit
        outcome: list[list[Any]] = []

        async def doomed() -> None:
            outcome.append(await old.apply_many([b"lost1", b"lost2"]))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(doomed)
            with trio.fail_after(5):
                while not any(n is not old and n.is_leader for n in c.nodes.values()):
                    await trio.sleep(0.01)
                new = next(n for n in c.nodes.values() if n is not old and n.is_leader)
                await new.apply(b"won")  # overwrites the old leader's index 2
                c.network.cut.discard(old.id)
        assert len(outcome) == 1 and all(isinstance(r, NotLeader) for r in outcome[0])


async def test_a_follower_steps_messages_in_the_receiving_task(
        autojump_clock: trio.testing.MockClock) -> None:
    # Run to completion: the task that receives a message steps the core, so a
    # follower's driver task is not woken for the leader's appends and heartbeats.
    async with cluster() as c:
        leader = await c.leader()
        follower = next(n for n in c.nodes.values() if n is not leader)
        await follower.wait_leader()
        wakes = [0]
        wake = follower._wake

        def counting() -> None:
            wakes[0] += 1
            wake()

        follower._wake = counting  # type: ignore[method-assign]
        follower._wire.wake = counting
        sent_before = len(c.network.sent)
        for k in range(20):
            await leader.apply(b"%d" % k)
        await trio.sleep(0.2)  # heartbeats too
        await follower.wait_applied(leader.status().commit_index)
        assert len(c.machines[follower.id].commands) == 20
        delivered = sum(m.dst == follower.id for _, m in c.network.sent[sent_before:])
        # Woken only when a message moved its deadline earlier (a redrawn election
        # timeout shorter than what was left of the last one): rarely. Handing each
        # message to the driver would wake it for (almost) every one of them.
        assert delivered >= 24 and wakes[0] <= 3


async def test_batches_queued_behind_a_slow_write_go_out_in_one_save(
        mock_clock: trio.testing.MockClock) -> None:
    async with gated_cluster(mock_clock) as (c, disks, leader):
        with trio.fail_after(10):
            disk = disks[leader.id]
            disk.gate.clear()
            results: dict[int, Any] = {}

            async def write(k: int) -> None:
                results[k] = await leader.apply(b"w%d" % k)

            c.nursery.start_soon(write, 0)
            await disk.wait_blocked()  # the first write's save hangs in its thread
            saves_before = len(disk.saves)
            try:
                for k in range(1, 5):  # four more driver rounds, one batch each
                    c.nursery.start_soon(write, k)
                    await trio.sleep(0.001)
                # Answered meanwhile: the followers hold them, which commits them,
                # and a leader applies what is committed without its own save.
                while len(results) < 5:
                    await trio.sleep(0.01)
                assert len(disk.saves) == saves_before
            finally:
                disk.gate.set()  # a hung worker thread would block shutdown
            while disk.entries[-1].data != b"w4":
                await trio.sleep(0.01)
            # The hung save, then one save for the four batches queued behind it.
            assert [n for n, _ in disk.saves[saves_before:saves_before + 2]] == [1, 4]
            assert sorted(results.values()) == [2, 3, 4, 5, 6]
            assert [e.data for e in disk.entries][-5:] == [b"w%d" % k for k in range(5)]


async def test_a_new_leader_wakes_its_waiters_before_its_first_save_ends(
        mock_clock: trio.testing.MockClock) -> None:
    # A transfer target holds the requests it gets while it campaigns; they must go
    # as soon as it wins, not after its no-op's save in the disk thread as well.
    async with gated_cluster(mock_clock) as (c, disks, leader):
        with trio.fail_after(10):
            target = next(i for i in c.ids if i != leader.id)
            node, disk = c.nodes[target], disks[target]
            # (The commit needed one follower: let the target hold every entry
            # first, or the transfer's catch-up save would hang at the gate.)
            while not disk.entries or disk.entries[-1].index < leader.status().last_log_index:
                await trio.sleep(0.001)
            disk.entries_only = True  # its term and vote save; its entries hang
            disk.gate.clear()
            won = trio.Event()

            async def watch() -> None:
                while not node.is_leader:
                    await node.wait_changed()
                won.set()

            try:
                c.nursery.start_soon(watch)
                await trio.sleep(0)
                assert await leader.transfer_leadership(target) == target
                await disk.wait_blocked()  # the new leader's no-op save hangs
                saved = len(disk.saves)
                with trio.move_on_after(1):
                    await won.wait()
                assert won.is_set() and len(disk.saves) == saved
            finally:
                disk.gate.set()  # a hung worker thread would block shutdown


async def test_a_follower_acknowledges_only_what_its_disk_holds(
        mock_clock: trio.testing.MockClock) -> None:
    # Group commit must not let an acknowledgement out before its entries' save.
    async with gated_cluster(mock_clock) as (c, disks, leader):
        with trio.fail_after(10):
            follower = next(i for i in c.ids if i != leader.id)
            disk = disks[follower]
            durable = max(e.index for e in disk.entries)
            disk.gate.clear()
            sent_before = len(c.network.sent)
            for k in range(5):
                assert await leader.apply(b"w%d" % k) == k + 2  # the other follower acks
            await disk.wait_blocked()
            acks = [m for _, m in c.network.sent[sent_before:]
                    if isinstance(m, AppendEntriesResponse) and m.src == follower]
            assert all(m.match_index <= durable for m in acks)
            disk.gate.set()
            await c.nodes[follower].wait_applied(leader.status().commit_index)
            await trio.sleep(CONFIG.heartbeat_interval * 2)
            acks = [m for _, m in c.network.sent[sent_before:]
                    if isinstance(m, AppendEntriesResponse) and m.src == follower]
            # Once its disk is back it acknowledges all it holds: the five writes, and
            # more if CI load let MockClock jump past an election timeout while the
            # save sat in its thread (the new leader's no-op comes on top).
            last_saved = max(e.index for e in disk.entries)
            assert last_saved >= durable + 5
            assert max(m.match_index for m in acks) == last_saved


async def test_a_failure_while_stepping_a_message_takes_the_node_down(
        autojump_clock: trio.testing.MockClock) -> None:
    # Run to completion moves stepping into the receiving task; a broken invariant
    # found there must still end the node (as it did in the driver), not just the
    # connection that carried the message.
    network = FakeNetwork()
    transport = network.transport(1)
    config = CONFIG
    with pytest.raises(BaseException) as info:
        async with open_node(1, {}, state_machine=Recorder(), storage=MemoryStorage(),
                             config=config, transport=transport) as node:
            await node.wait_leader()
            term = node.status().term
            # Another leader of this node's own term: Raft's Election Safety broken.
            transport._send.send_nowait(AppendEntries(
                term=term, src=2, dst=1, prev_log_index=0, prev_log_term=0, entries=(),
                leader_commit=0))
            with trio.fail_after(5):
                await trio.sleep_forever()
    found = _find(info.value, AssertionError)
    assert found is not None and "AppendEntries of its own term" in str(found)
