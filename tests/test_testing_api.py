"""The public fuzzing pieces (raftpy.testing): schedules replay exactly, round-trip
through JSON, and the replay command reports what it finds; the transfer fuzz test
of docs/testing.md runs as written."""

from __future__ import annotations

import pytest
from hypothesis import Phase, given, settings
from hypothesis.stateful import run_state_machine_as_test

from raftpy.membership import MemberRole
from raftpy.sim import NetworkConfig
from raftpy.testing import replay
from raftpy.testing.fuzzing import DEFAULT_SETTINGS, ClusterStateMachine, schedules
from raftpy.testing.schedule import (
    AddMember,
    ClusterSetup,
    Crash,
    Propose,
    Run,
    Transfer,
    apply_step,
    run_schedule,
    schedule_from_json,
    schedule_to_json,
    step_from_json,
)

SCHEDULE = [Run(0.5), Propose(b"x", 3), Transfer(None), Run(0.2), AddMember(MemberRole.VOTER),
            Crash(1), Run(1.0), Propose(b"y", 2), Run(0.5)]


def test_a_schedule_replays_exactly() -> None:
    setup = ClusterSetup(nodes=3, seed=7, network=NetworkConfig(drop=0.05, reorder=0.1))
    first = run_schedule(setup, SCHEDULE)
    second = run_schedule(setup, SCHEDULE)
    assert first.trace_hash == second.trace_hash and first.events == second.events
    assert [e.data for e in first.applied[2] if e.data] == \
        [e.data for e in second.applied[2] if e.data]
    assert sum(e.data == b"x" for e in first.applied[2]) == 3


def test_steps_report_refusals_and_skips() -> None:
    cluster = ClusterSetup(nodes=3, seed=1).build()
    assert apply_step(cluster, Propose(b"x")) == "refused: NotLeader"  # nobody leads yet
    assert apply_step(cluster, Crash(9)) == "skipped"  # no such node
    assert apply_step(cluster, Run(1.0)) == "done"
    assert apply_step(cluster, Propose(b"x")) == "done"


@settings(max_examples=30, deadline=None)
@given(schedules(max_size=20))
def test_schedules_round_trip_through_json(steps: list) -> None:
    setup = ClusterSetup(nodes=5, seed=3, snapshot_every=10)
    assert schedule_from_json(schedule_to_json(setup, steps)) == (setup, steps)


@pytest.mark.parametrize("bad", [{"step": "Explode"}, {"step": "Crash", "nod": 1},
                                 {"step": "AssignRole", "node": 1, "role": "KING"}, {}])
def test_malformed_steps_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError, match="not a schedule step"):
        step_from_json(bad)


def test_replay_command_passes_fails_and_refuses(capsys: pytest.CaptureFixture[str]) -> None:
    good = schedule_to_json(ClusterSetup(nodes=3, seed=2), SCHEDULE)
    assert replay.main([good]) == 0
    assert "invariants held, recovered" in capsys.readouterr().out
    assert replay.main(["{not json"]) == 2
    assert "cannot read the schedule" in capsys.readouterr().err


def test_replay_reports_a_cluster_that_cannot_recover(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # A planted liveness bug: nobody ever campaigns.
    from raftpy import RaftNode
    monkeypatch.setattr(RaftNode, "_may_campaign", lambda self: False)
    assert replay.main([schedule_to_json(ClusterSetup(nodes=3, seed=2), [Run(0.5)])]) == 1
    assert "FAILED: no recovery after faults stopped" in capsys.readouterr().out


# The example of docs/testing.md, as written there.
class Transfers(ClusterStateMachine):
    """Every successful transfer hands leadership to the node it named."""

    def check(self) -> None:
        for transfer in self.cluster.transfers:
            if transfer.succeeded and transfer.target is not None:
                assert transfer.new_leader == transfer.target


def test_the_documented_transfer_fuzz_test_runs() -> None:
    run_state_machine_as_test(Transfers, settings=settings(DEFAULT_SETTINGS, max_examples=15,
                                                           derandomize=True))


def test_a_failing_example_prints_the_replay_command() -> None:
    class Broken(ClusterStateMachine):
        def check(self) -> None:
            assert not any(t.succeeded for t in self.cluster.transfers), "a transfer worked"

    with pytest.raises(AssertionError) as failure:
        run_state_machine_as_test(Broken, settings=settings(
            DEFAULT_SETTINGS, max_examples=200, phases=[Phase.generate], derandomize=True))
    notes = "\n".join(getattr(failure.value, "__notes__", []))
    assert "python -m raftpy.testing.replay '" in notes
    replayed = notes.split("python -m raftpy.testing.replay '", 1)[1].split("'", 1)[0]
    setup, steps = schedule_from_json(replayed)
    # The replay shows the same thing: a transfer that succeeded (the recovery's
    # own transfer counts too, so the schedule may hold none).
    cluster = run_schedule(setup, steps)
    assert any(t.succeeded for t in cluster.transfers)
