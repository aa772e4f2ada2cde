"""Configuration validation and the sans-I/O import boundary."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from raftpy import Config, ConfigError, RaftNode

ROOT = Path(__file__).resolve().parent.parent / "raftpy"
FORBIDDEN = {"trio", "socket", "time", "threading", "asyncio", "select", "selectors"}
# Drivers at the edges may do I/O; everything else is the sans-I/O core.
DRIVERS = {"trio", "cli.py", "demo_net.py", "kv", "chaos", "__main__.py"}


def core_modules() -> list[Path]:
    return [p for p in ROOT.rglob("*.py")
            if not any(part in DRIVERS for part in p.relative_to(ROOT).parts)]


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_never_imports_io_or_clock_modules(path: Path) -> None:
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{path} imports {imported & FORBIDDEN}"


@pytest.mark.parametrize("kwargs", [
    {"election_timeout_min": 0.3, "election_timeout_max": 0.2},
    {"election_timeout_min": 0},
    {"heartbeat_interval": 0.2},
    {"heartbeat_interval": -1},
    {"transfer_timeout": 0},
    {"max_entries_per_message": 0},
    {"snapshot_threshold": 0},
    {"snapshot_trailing": -1},
])
def test_invalid_config_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        Config(**kwargs)


def test_defaults_follow_the_dissertation() -> None:
    config = Config()
    assert (config.election_timeout_min, config.election_timeout_max) == (0.150, 0.300)
    assert config.heartbeat == pytest.approx(0.050)
    assert config.pre_vote and config.check_quorum


def test_invalid_membership_is_refused() -> None:
    with pytest.raises(ValueError, match="not a member"):
        RaftNode(9, [1, 2, 3])
    with pytest.raises(ValueError, match="both voter and learner"):
        RaftNode(1, [1, 2], learners=[2])
