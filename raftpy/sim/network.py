"""Fault settings of the simulated network and disk."""

from __future__ import annotations

from dataclasses import dataclass

from raftpy.errors import ConfigError


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """How the simulated network treats each message (times in seconds).

    Every message takes a delay drawn uniformly from ``[delay_min, delay_max]``;
    with probability ``reorder`` it takes up to ``reorder_delay`` more (so later
    messages overtake it); it is lost with probability ``drop`` and delivered
    twice with probability ``duplicate``.
    """

    delay_min: float = 0.0005
    delay_max: float = 0.002
    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.020
    disk_min: float = 0.0001
    """Time to make one batch durable (fsync), drawn uniformly per batch."""
    disk_max: float = 0.0005

    def __post_init__(self) -> None:
        if not 0 <= self.delay_min <= self.delay_max:
            raise ConfigError(f"need 0 <= delay_min <= delay_max, got {self.delay_min}, "
                              f"{self.delay_max}")
        if not 0 <= self.disk_min <= self.disk_max:
            raise ConfigError(f"need 0 <= disk_min <= disk_max, got {self.disk_min}, "
                              f"{self.disk_max}")
        for name in ("drop", "duplicate", "reorder"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigError(f"{name} is a probability in [0, 1], got {value}")
        if self.reorder_delay < 0:
            raise ConfigError(f"reorder_delay must be >= 0, got {self.reorder_delay}")

    @property
    def faulty(self) -> bool:
        """Whether any message fault is switched on."""
        return bool(self.drop or self.duplicate or self.reorder)
