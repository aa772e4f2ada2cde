"""Tuning knobs of a Raft node, validated when built."""

from __future__ import annotations

from dataclasses import dataclass

from raftpy.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Config:
    """Timing and batching settings of a node; all times are in seconds.

    The defaults follow the Raft dissertation: an election timeout drawn at
    random from 150-300 ms and heartbeats at a third of the minimum.
    """

    election_timeout_min: float = 0.150
    election_timeout_max: float = 0.300
    heartbeat_interval: float | None = None
    """Defaults to ``election_timeout_min / 3``."""
    pre_vote: bool = True
    """Run a pre-vote round before bumping the term (Raft §9.6)."""
    check_quorum: bool = True
    """A leader that has not heard from a majority for ``election_timeout_max`` steps down."""
    transfer_timeout: float | None = None
    """How long a leadership transfer may take; defaults to ``election_timeout_max``."""
    max_entries_per_message: int = 1024
    max_bytes_per_message: int = 1 << 20
    max_inflight_entries: int = 8192
    """How far replication may run ahead of a follower's acknowledged index."""
    snapshot_threshold: int | None = None
    """Take a snapshot every this many applied entries (``None``: never)."""
    snapshot_trailing: int = 1000
    """Entries kept behind a snapshot for slightly lagging followers."""
    snapshot_chunk_size: int = 256 * 1024
    max_catch_up_rounds: int = 10
    """A member promoted to voter gets this many catch-up rounds (Raft §4.2.1)."""
    catch_up_round_timeout: float = 5.0
    """One catch-up round longer than this fails the promotion."""
    lease_reads: bool = False
    """Answer reads from a leader lease (Raft §6.4.1) without a heartbeat round while
    a majority acknowledged a round sent less than ``lease_duration`` ago. Assumes
    clocks run at rates within ``clock_drift_bound`` of each other (no jumps):
    see docs/design.md. Needs ``check_quorum``."""
    clock_drift_bound: float = 0.1
    """The largest relative clock-rate difference a lease tolerates (0.1: 10%)."""
    early_pre_vote: bool = False
    """A follower told that every connection to its leader is gone
    (:meth:`RaftNode.leader_connection_lost`) starts a pre-vote at once instead of
    waiting out its election timeout (:mod:`raftpy.failover`). Needs ``pre_vote``;
    cannot be combined with ``lease_reads`` (a lease counts on voters refusing
    votes for ``election_timeout_min`` after they heard the leader)."""

    def __post_init__(self) -> None:
        if not 0 < self.election_timeout_min <= self.election_timeout_max:
            raise ConfigError(
                "need 0 < election_timeout_min <= election_timeout_max, got "
                f"{self.election_timeout_min} and {self.election_timeout_max}"
            )
        hb = self.heartbeat_interval
        if hb is not None and not 0 < hb < self.election_timeout_min:
            raise ConfigError(
                f"heartbeat_interval must be in (0, election_timeout_min), got {hb}"
            )
        if self.transfer_timeout is not None and self.transfer_timeout <= 0:
            raise ConfigError(f"transfer_timeout must be positive, got {self.transfer_timeout}")
        for name in ("max_entries_per_message", "max_bytes_per_message", "max_inflight_entries",
                     "snapshot_chunk_size", "max_catch_up_rounds"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.snapshot_threshold is not None and self.snapshot_threshold < 1:
            raise ConfigError(
                f"snapshot_threshold must be at least 1, got {self.snapshot_threshold}")
        if self.catch_up_round_timeout <= 0:
            raise ConfigError(
                f"catch_up_round_timeout must be positive, got {self.catch_up_round_timeout}")
        if not 0 <= self.clock_drift_bound < 1:
            raise ConfigError(
                f"clock_drift_bound must be in [0, 1), got {self.clock_drift_bound}")
        if self.lease_reads and not self.check_quorum:
            raise ConfigError("lease_reads needs check_quorum (a leader cut off from the "
                              "majority must step down)")
        if self.early_pre_vote and not self.pre_vote:
            raise ConfigError("early_pre_vote needs pre_vote (the early round only asks)")
        if self.early_pre_vote and self.lease_reads:
            raise ConfigError("early_pre_vote cannot be combined with lease_reads (a lease "
                              "counts on voters refusing votes after hearing the leader)")
        if self.snapshot_trailing < 0:
            raise ConfigError(f"snapshot_trailing must be >= 0, got {self.snapshot_trailing}")

    @property
    def heartbeat(self) -> float:
        """The effective heartbeat interval."""
        return self.heartbeat_interval if self.heartbeat_interval is not None else (
            self.election_timeout_min / 3
        )

    @property
    def lease_duration(self) -> float:
        """How long after a round was sent a majority's acknowledgement of it keeps
        the lease: voters that acknowledged refuse votes for ``election_timeout_min``
        after they received it, shortened here by the clock drift bound."""
        return self.election_timeout_min * (1 - self.clock_drift_bound)

    @property
    def transfer_deadline(self) -> float:
        """The effective leadership-transfer timeout."""
        return self.transfer_timeout if self.transfer_timeout is not None else (
            self.election_timeout_max
        )
