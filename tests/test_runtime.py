"""The Trio runtime over an in-memory network under virtual time (MockClock)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from helpers import CONFIG, SNAPSHOT_CONFIG, Cluster, FakeNetwork, Recorder, cluster, gated_cluster

from raftpy import (
    AppendEntries,
    Config,
    InvalidTransferTarget,
    NotLeader,
    Role,
    TransferFailed,
)
from raftpy.errors import NodeClosed
from raftpy.storage.memory import MemoryStorage
from raftpy.trio.runtime import open_node


async def test_three_nodes_elect_replicate_and_read(autojump_clock: trio.testing.MockClock
                                                    ) -> None:
    async with cluster() as c:
        with trio.fail_after(5):
            leader = await c.leader()
            assert [await c.nodes[i].wait_leader() for i in c.ids] == [leader.id] * 3
            assert await leader.apply(b"a") == 1
            assert await leader.apply(b"b") == 2
            await leader.read_barrier()
            status = leader.status()
            for node in c.nodes.values():
                await node.wait_applied(status.commit_index)
            await trio.sleep(0.001)  # the last acknowledgement reaches the leader
            status = leader.status()
        assert all(m.commands == [b"a", b"b"] for m in c.machines.values())
        assert status.role is Role.LEADER and status.leader_id == leader.id
        # index 1: the leader's no-op; 2, 3: the commands. The read barrier (ReadIndex)
        # wrote nothing.
        assert (status.commit_index, status.applied_index, status.last_log_index) == (3, 3, 3)
        assert [p.match_index for p in status.peers] == [3, 3]
        assert all(p.last_contact is not None and p.last_contact < 0.1 for p in status.peers)
        follower = c.nodes[next(i for i in c.ids if i != leader.id)].status()
        assert follower.role is Role.FOLLOWER and follower.leader_id == leader.id
        assert all(p.match_index is None for p in follower.peers)


async def test_concurrent_applies_commit_in_order_and_share_barriers(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        leader = await c.leader()
        results: dict[int, int] = {}

        async def put(k: int) -> None:
            results[k] = await leader.apply(b"%d" % k)

        async with trio.open_nursery() as nursery:
            for k in range(20):
                nursery.start_soon(put, k)
            for _ in range(5):
                nursery.start_soon(leader.read_barrier)
        assert sorted(results.values()) == list(range(1, 21))
        order = [int(x) for x in c.machines[leader.id].commands]
        assert all(order[results[k] - 1] == k for k in range(20))


async def test_apply_on_follower_raises_not_leader_with_address(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        leader = await c.leader()
        follower = next(n for n in c.nodes.values() if n is not leader)
        await follower.wait_leader()
        for call in (follower.apply(b"x"), follower.read_barrier(mode="log"),
                     follower.transfer_leadership()):
            with pytest.raises(NotLeader) as info:
                await call
            assert info.value.leader_id == leader.id
            assert info.value.leader_address == f"10.0.0.{leader.id}:7000"


async def test_a_follower_reads_through_its_leader_without_a_log_write(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        leader = await c.leader()
        follower = next(n for n in c.nodes.values() if n is not leader)
        await follower.wait_leader()
        assert await leader.apply(b"a") == 1
        last = leader.status().last_log_index
        # The follower may not have applied "a" yet; its read barrier waits for it.
        await follower.read_barrier()
        assert c.machines[follower.id].commands == [b"a"]
        await leader.read_barrier()
        assert leader.status().last_log_index == last  # neither read wrote the log


async def test_state_machine_error_reaches_the_caller_only(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        leader = await c.leader()
        with pytest.raises(ValueError, match="boom refused"):
            await leader.apply(b"boom")
        assert await leader.apply(b"ok") == 1
        with pytest.raises(ValueError, match="non-empty"):
            await leader.apply(b"")


async def test_transfer_leadership_to_a_chosen_and_to_the_best_target(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        leader = await c.leader()
        await leader.apply(b"a")
        target = next(i for i in c.ids if i != leader.id)
        assert await leader.transfer_leadership(target) == target
        new = c.nodes[target]
        assert new.is_leader and not leader.is_leader
        assert new.status().term == leader.status().term
        assert await new.apply(b"b") == 2
        chosen = await new.transfer_leadership()
        assert chosen != target and c.nodes[chosen].is_leader


async def test_transfer_rejections_and_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        leader = await c.leader()
        with pytest.raises(InvalidTransferTarget):
            await leader.transfer_leadership(leader.id)
        with pytest.raises(InvalidTransferTarget):
            await leader.transfer_leadership(9)
        target = next(i for i in c.ids if i != leader.id)
        c.network.cut.add(target)
        start = trio.current_time()
        with pytest.raises(TransferFailed) as info:
            await leader.transfer_leadership(target)
        assert info.value.target == target and info.value.reason == "timed out"
        assert trio.current_time() - start == pytest.approx(CONFIG.transfer_deadline)
        assert leader.is_leader
        assert await leader.apply(b"still works") == 1


async def test_heartbeats_go_out_exactly_on_schedule(autojump_clock: trio.testing.MockClock
                                                     ) -> None:
    """No fixed tick: the driver sleeps exactly until the core's next deadline."""
    async with cluster() as c:
        leader = await c.leader()
        await trio.sleep(1.0)
        peer = next(i for i in c.ids if i != leader.id)
        times = [t for t, m in c.network.sent if isinstance(m, AppendEntries)
                 and m.src == leader.id and m.dst == peer and not m.entries]
        gaps = [b - a for a, b in zip(times[-15:], times[-14:], strict=False)]
        assert gaps == pytest.approx([CONFIG.heartbeat] * 14, abs=1e-9)


async def test_survives_a_killed_member_and_restart_catches_up(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        leader = await c.leader()
        assert await leader.apply(b"1") == 1
        killed = leader.id
        c.stop(killed)
        new = await c.leader()
        assert new.id != killed
        assert await new.apply(b"2") == 2
        assert await new.apply(b"3") == 3
        restarted = await c.start(killed)  # from its MemoryStorage: what it persisted
        await restarted.wait_applied(new.status().commit_index)
        assert c.machines[killed].commands == [b"1", b"2", b"3"]
        assert restarted.leader_id == new.id


async def test_lagging_member_catches_up_from_a_snapshot(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster(config=SNAPSHOT_CONFIG) as c:
        leader = await c.leader()
        lagging = next(i for i in c.ids if i != leader.id)
        c.stop(lagging)
        c.storages[lagging] = MemoryStorage()  # lost its disk
        for k in range(20):
            await leader.apply(b"%d" % k)
        assert leader.status().last_log_index == 21
        assert c.storages[leader.id].snapshot is not None
        node = await c.start(lagging)
        await node.wait_applied(leader.status().commit_index)
        assert c.machines[lagging].commands == [b"%d" % k for k in range(20)]
        assert c.storages[lagging].snapshot is not None


async def test_shutdown_cancels_everything_and_fails_pending_callers(
        autojump_clock: trio.testing.MockClock) -> None:
    def tasks() -> set[trio.lowlevel.Task]:
        out: set[trio.lowlevel.Task] = set()
        todo = [trio.lowlevel.current_root_task()]
        while todo:
            task = todo.pop()
            assert task is not None
            out.add(task)
            todo.extend(t for n in task.child_nurseries for t in n.child_tasks)
        return out

    before = tasks()
    errors: list[BaseException] = []
    async with trio.open_nursery() as outer:
        c = Cluster(outer)
        for node_id in c.ids:
            await c.start(node_id)
        leader = await c.leader()
        assert len(tasks()) > len(before) + 6
        c.network.cut.update(c.ids)  # nothing can commit any more

        async def stuck() -> None:
            try:
                await leader.apply(b"never")
            except NodeClosed as exc:
                errors.append(exc)

        outer.start_soon(stuck)
        await trio.sleep(0.01)
        for node_id in c.ids:
            c.stop(node_id)
    assert [type(e) for e in errors] == [NodeClosed]
    assert tasks() == before
    with pytest.raises(NodeClosed):
        await leader.apply(b"late")


class SlowStorage(MemoryStorage):
    """Not a MemoryStorage for the runtime's purposes: its calls run in a thread."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[str] = set()
        self.closed = False

    def save(self, *args: Any, **kwargs: Any) -> None:
        import threading

        self.threads.add(threading.current_thread().name)
        super().save(*args, **kwargs)

    def close(self) -> None:
        self.closed = True


async def test_blocking_storage_runs_in_a_worker_thread_and_is_closed() -> None:
    import threading

    storage = SlowStorage()
    config = Config(election_timeout_min=0.02, election_timeout_max=0.04)
    with trio.fail_after(10):
        async with open_node(1, {}, state_machine=Recorder(), storage=storage,
                             config=config, transport=FakeNetwork().transport(1),
                             inline_save_budget=0) as node:
            await node.wait_leader()
            assert await node.apply(b"x") == 1
    assert storage.threads and threading.current_thread().name not in storage.threads
    assert storage.closed
    assert [e.data for e in storage.entries] == [b"", b"x"]


async def test_a_candidates_small_save_runs_inline_and_a_leaders_in_a_thread() -> None:
    # raftpy.trio.inlinesaves: on a fast disk a candidate's term and vote are saved
    # on the event loop (no thread round trip on the election's critical path); a
    # leader's entries always go to the worker thread (a hung disk must not stop
    # its heartbeats).
    import threading

    class Recording(SlowStorage):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[tuple[str, bool]] = []

        def save(self, hard_state: Any = None, entries: Any = (), snapshot: Any = None) -> None:
            self.calls.append((threading.current_thread().name, bool(entries)))
            super().save(hard_state, entries, snapshot)

    storage = Recording()
    config = Config(election_timeout_min=0.02, election_timeout_max=0.04)
    main = threading.current_thread().name
    with trio.fail_after(10):
        async with open_node(1, {}, state_machine=Recorder(), storage=storage,
                             config=config, transport=FakeNetwork().transport(1)) as node:
            await node.wait_leader()
            assert await node.apply(b"x") == 1
    # The campaign's hard state (term 1, vote for itself) inline; the leader's no-op
    # and write in the thread.
    assert storage.calls[0] == (main, False)
    entry_saves = [thread for thread, has_entries in storage.calls if has_entries]
    assert entry_saves and main not in entry_saves
    assert [e.data for e in storage.entries] == [b"", b"x"]


async def test_proposals_overwritten_by_a_newer_leader_fail_instead_of_hanging(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        old = await c.leader()
        c.network.cut.add(old.id)  # the old leader keeps accepting, but cannot commit
        outcome: list[BaseException | int] = []

        async def doomed(k: int) -> None:
            try:
                outcome.append(await old.apply(b"lost%d" % k))
            except NotLeader as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            for k in range(5):
                nursery.start_soon(doomed, k)
            with trio.fail_after(5):
                while not any(n is not old and n.is_leader for n in c.nodes.values()):
                    await trio.sleep(0.01)
                # The new leader writes nothing but its no-op: indexes 3.. of the old
                # leader's entries will never see a commit on this idle cluster.
                c.network.cut.discard(old.id)
                while len(outcome) < 5:
                    await trio.sleep(0.01)
        assert all(isinstance(o, NotLeader) for o in outcome)
        assert not any(cmd.startswith(b"lost") for m in c.machines.values()
                       for cmd in m.commands)


async def test_a_cancelled_caller_stops_waiting_and_the_command_still_commits(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        with trio.fail_after(5):
            leader = await c.leader()
            # Cut the leader off so that the write cannot commit before the cancel.
            c.network.cut.add(leader.id)
            with trio.move_on_after(0.02) as scope:
                await leader.apply(b"cancelled")
            assert scope.cancelled_caught
            c.network.cut.discard(leader.id)
            # The node keeps serving: the next write commits after the cancelled one,
            # which was already in the log (Node.apply: "the command may still commit").
            assert await leader.apply(b"next") == 2
        assert c.machines[leader.id].commands == [b"cancelled", b"next"]


async def test_a_leader_whose_disk_hangs_keeps_its_followers(
        mock_clock: trio.testing.MockClock) -> None:
    # The driver must not wait for its own fsync: while the leader's disk hangs for
    # ten election timeouts, its heartbeats keep the followers from starting an
    # election (virtual time runs on while a save hangs: see gated_cluster), and a
    # write the followers hold is committed, applied and answered (Raft §10.2.1: a
    # majority need not include the leader).
    async with gated_cluster(mock_clock) as (c, disks, leader):
        with trio.fail_after(10):
            term = leader.status().term
            disks[leader.id].gate.clear()
            result: list[int] = []

            async def write() -> None:
                result.append(await leader.apply(b"during"))

            c.nursery.start_soon(write)
            try:
                await trio.sleep(10 * CONFIG.election_timeout_max)
                assert disks[leader.id].blocked_saves == 1
                assert result == [2]
                assert [e.data for e in disks[leader.id].entries][-1] == b"before"
                assert all(n.status().term == term for n in c.nodes.values())
                assert all(n.leader_id == leader.id for n in c.nodes.values())
            finally:
                disks[leader.id].gate.set()  # a hung worker thread would block shutdown
            while not result:
                await trio.sleep(0.01)
        assert result == [2]
        assert leader.is_leader and leader.status().term == term
