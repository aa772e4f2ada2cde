"""Hypothesis drives the cluster through the public fuzzing API
(:mod:`raftpy.testing.fuzzing`): random interleavings of proposals, transfers,
membership changes (add, promote, demote, remove, the leader included), crashes,
pauses, restarts, partitions and one-way cuts, drops and held messages. The
simulator checks Raft's invariants after every event; our own invariant here is
the application's view: every node's state machine saw a prefix of one command
history. When faults stop, the cluster must recover; a failure shrinks to a
minimal schedule and prints the command that replays it."""

from __future__ import annotations

from hypothesis import settings

from raftpy.testing.fuzzing import DEFAULT_SETTINGS, ClusterStateMachine


class CommandLog:
    """The simplest state machine: the commands it applied, in order."""

    def __init__(self) -> None:
        self.commands: list[bytes] = []

    def apply(self, command: bytes) -> None:
        self.commands.append(command)


class ProjectMachine(ClusterStateMachine):
    def new_state_machine(self) -> CommandLog:
        return CommandLog()

    def check(self) -> None:
        logs = [m.commands for m in self.machines.values() if isinstance(m, CommandLog)]
        longest = max(logs, key=len, default=[])
        for log in logs:
            assert log == longest[:len(log)], "two nodes applied different commands"


ProjectMachine.TestCase.settings = settings(DEFAULT_SETTINGS, max_examples=80, derandomize=True,
                                            stateful_step_count=40)
TestProjectMachine = ProjectMachine.TestCase
