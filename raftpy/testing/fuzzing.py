"""Fuzz a raftpy cluster from your own tests, with Hypothesis.

Two pieces (needs ``hypothesis``, in the ``test`` extra):

* strategies: :func:`network_configs`, :func:`cluster_setups`, :func:`steps` and
  :func:`schedules` draw fault plans and schedules (message loss, duplication,
  reordering and delay; partitions, partial and one-way cuts; crashes, pauses,
  held messages; proposals, leadership transfers and membership changes);
* :class:`ClusterStateMachine`, a ``RuleBasedStateMachine`` over
  :class:`raftpy.sim.Cluster`: subclass it, give it your state machine
  (:meth:`~ClusterStateMachine.new_state_machine`) and your invariants
  (:meth:`~ClusterStateMachine.check`), and Hypothesis interleaves everything.
  Raft's own invariants are checked after every simulated event; when the
  faults stop the cluster must recover. A failing example prints the cluster's
  seed and one command that replays it: ``python -m raftpy.testing.replay '...'``.

A transfer fuzz test in a few lines (see docs/testing.md)::

    from raftpy.testing.fuzzing import ClusterStateMachine

    class Transfers(ClusterStateMachine):
        def check(self) -> None:
            for transfer in self.cluster.transfers:
                if transfer.succeeded:
                    assert transfer.new_leader == transfer.target

    TestTransfers = Transfers.TestCase
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from hypothesis import HealthCheck, event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from raftpy.membership import MemberRole
from raftpy.messages import Entry, EntryKind
from raftpy.sim.cluster import Cluster
from raftpy.sim.network import NetworkConfig
from raftpy.testing.schedule import (
    HOLDABLE,
    AddMember,
    AssignRole,
    ClusterSetup,
    Crash,
    Cut,
    Heal,
    Hold,
    Partition,
    Pause,
    Propose,
    Release,
    RemoveMember,
    Restart,
    Resume,
    Run,
    Step,
    Transfer,
    apply_step,
    recover,
    schedule_to_json,
)

# ---------------------------------------------------------------- strategies


def network_configs(*, max_drop: float = 0.3) -> st.SearchStrategy[NetworkConfig]:
    """Message loss, duplication, reordering and delay spreads, and fsync times."""
    drops = [d for d in (0.0, 0.0, 0.01, 0.05, 0.15, 0.3) if d <= max_drop]
    return st.builds(
        lambda delay_min, spread, drop, duplicate, reorder, disk: NetworkConfig(
            delay_min=delay_min, delay_max=delay_min + spread, drop=drop,
            duplicate=duplicate, reorder=reorder, disk_max=disk),
        st.sampled_from([0.0002, 0.0005, 0.002]),
        st.sampled_from([0.0005, 0.002, 0.010, 0.030]),
        st.sampled_from(drops),
        st.sampled_from([0.0, 0.01, 0.05]),
        st.sampled_from([0.0, 0.02, 0.1]),
        st.sampled_from([0.0005, 0.002, 0.01]),
    )


def cluster_setups(*, nodes: st.SearchStrategy[int] | None = None,
                   network: st.SearchStrategy[NetworkConfig] | None = None,
                   ) -> st.SearchStrategy[ClusterSetup]:
    """Cluster size, seed, pre-vote and check-quorum on or off, network faults and
    snapshot frequency."""
    return st.builds(
        ClusterSetup,
        nodes=nodes if nodes is not None else st.sampled_from([3, 5]),
        seed=st.integers(0, 2**32 - 1),
        pre_vote=st.booleans(),
        check_quorum=st.booleans(),
        network=network if network is not None else network_configs(),
        snapshot_every=st.sampled_from([None, 10, 50]),
    )


def steps(*, max_nodes: int = 8, membership: bool = True,
          commands: st.SearchStrategy[bytes] | None = None) -> st.SearchStrategy[Step]:
    """One schedule step; node ids range over ``1..max_nodes`` (steps naming a node
    that does not exist are skipped when played)."""
    node = st.integers(1, max_nodes)
    roles = st.sampled_from(list(MemberRole))
    run = st.builds(Run, st.floats(0.001, 0.4))
    options: list[st.SearchStrategy[Any]] = [
        run, run, run,  # time passing is what most steps need to mean anything
        st.builds(Propose, commands if commands is not None else st.just(b"p"),
                  st.integers(1, 5)),
        st.builds(Transfer, st.none() | node),
        st.builds(Crash, node),
        st.builds(Restart, node),
        st.builds(Pause, node),
        st.builds(Resume, node),
        st.builds(Partition, st.lists(node, min_size=1, max_size=max_nodes - 1,
                                      unique=True).map(lambda ids: tuple(sorted(ids)))),
        st.builds(Cut, node, node, st.booleans()),
        st.builds(Heal),
        st.builds(Hold, st.sampled_from(sorted(HOLDABLE)), node, st.booleans()),
        st.builds(Release),
    ]
    if membership:
        options += [st.builds(AddMember, roles), st.builds(AssignRole, node, roles),
                    st.builds(RemoveMember, node)]
    return st.one_of(options)


def schedules(*, min_size: int = 1, max_size: int = 40,
              **step_options: Any) -> st.SearchStrategy[list[Step]]:
    """A list of :func:`steps` (keyword arguments go to :func:`steps`)."""
    return st.lists(steps(**step_options), min_size=min_size, max_size=max_size)


# ---------------------------------------------------------------- the base class


class Applier(Protocol):
    """What :meth:`ClusterStateMachine.new_state_machine` returns: anything with
    ``apply`` (a :class:`raftpy.StateMachine` qualifies)."""

    def apply(self, command: bytes) -> Any:
        """Apply one committed command."""
        ...


class ClusterStateMachine(RuleBasedStateMachine):
    """A Hypothesis state machine over a simulated cluster; subclass it.

    Override :meth:`new_state_machine` to run your own state machine on every
    node (fed each node's committed commands, rebuilt when a snapshot replaces
    them), :meth:`commands` for the commands to propose, and :meth:`check` for
    your invariants (``self.cluster``, ``self.machines``). Class attributes:
    ``max_nodes`` (membership changes may add nodes up to it) and ``membership``
    (draw membership changes). The settings given to ``TestCase`` are yours.
    """

    max_nodes: int = 8
    membership: bool = True
    recovery_bound: float = 10.0
    """Virtual seconds the cluster may take to recover once the faults stop."""

    def __init__(self) -> None:
        super().__init__()
        self.cluster: Cluster | None = None
        self.setup: ClusterSetup | None = None
        self.played: list[Step] = []
        self.machines: dict[int, Applier] = {}
        """Each node's instance of your state machine, fed its committed commands."""
        self._fed: dict[int, tuple[int, int]] = {}
        """node -> (id of the applied list fed from, how many of its entries were fed)."""

    # -------------------------------------------------------------- hooks

    def new_state_machine(self) -> Applier | None:
        """A fresh instance of your state machine (``None``: none is run)."""
        return None

    def commands(self) -> st.SearchStrategy[bytes]:
        """The commands proposals carry."""
        return st.binary(min_size=1, max_size=16)

    def check(self) -> None:
        """Your invariants, after every step (raise ``AssertionError``)."""

    # -------------------------------------------------------------- rules

    @initialize(setup=cluster_setups())
    def start(self, setup: ClusterSetup) -> None:
        """Build the cluster."""
        self.setup = setup
        self.cluster = setup.build()
        note(f"cluster setup: {setup}")

    @rule(data=st.data())
    def act(self, data: st.DataObject) -> None:
        """Play one drawn step."""
        step = data.draw(steps(max_nodes=self.max_nodes, membership=self.membership,
                               commands=self.commands()))
        self._play(step)

    @invariant()
    def _user_invariants(self) -> None:
        if self.cluster is None:
            return
        try:
            self._feed()
            self.check()
        except AssertionError:
            self._note_replay()
            raise

    def teardown(self) -> None:
        """Stop the faults; the cluster must recover and your invariants hold."""
        cluster = self.cluster
        if cluster is None:
            return
        try:
            recover(cluster, bound=self.recovery_bound)
            self._feed()
            self.check()
        except AssertionError:
            self._note_replay()
            raise

    # -------------------------------------------------------------- plumbing

    def _play(self, step: Step) -> None:
        assert self.cluster is not None
        self.played.append(step)
        try:
            outcome = apply_step(self.cluster, step, max_nodes=self.max_nodes)
        except AssertionError:
            self._note_replay()
            raise
        event(f"{type(step).__name__}: {outcome}")

    def _note_replay(self) -> None:
        if self.setup is None:
            return
        note(f"seed {self.setup.seed}; replay (Raft's invariants and recovery only):\n"
             f"python -m raftpy.testing.replay '{schedule_to_json(self.setup, self.played)}'")

    def _feed(self) -> None:
        """Apply each node's newly committed commands to its state machine."""
        cluster = self.cluster
        if cluster is None:
            return
        for node_id, applied in cluster.applied.items():
            fed_from, fed = self._fed.get(node_id, (0, 0))
            machine = self.machines.get(node_id)
            if id(applied) != fed_from or len(applied) < fed or machine is None:
                # A snapshot (or a restart) replaced the list: start over from it.
                fresh = self.new_state_machine()
                if fresh is None:
                    return
                machine = self.machines[node_id] = fresh
                fed = 0
            _apply_commands(machine, applied[fed:])
            self._fed[node_id] = (id(applied), len(applied))


def _apply_commands(machine: Applier, entries: Sequence[Entry]) -> None:
    for entry in entries:
        if entry.kind is EntryKind.COMMAND and entry.data:
            machine.apply(entry.data)


DEFAULT_SETTINGS = settings(deadline=None, max_examples=100, stateful_step_count=40,
                            suppress_health_check=[HealthCheck.too_slow,
                                                   HealthCheck.filter_too_much])
"""Settings that suit :class:`ClusterStateMachine` (no per-example deadline: a
schedule's virtual seconds cost real milliseconds)."""
