"""``make demo`` (simulated): a readable timeline of a 3-node cluster.

Runs entirely in the deterministic simulator under virtual time: the first
election, some committed commands, a leadership transfer, a leader crash and
the re-election, each with the (virtual) time it took. Every event is checked
against Raft's safety invariants as it happens.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from raftpy.config import Config
from raftpy.messages import EntryKind
from raftpy.sim import Cluster, NetworkConfig


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def run(seed: int = 1, out: TextIO = sys.stdout) -> int:
    """Print the timeline; return 0 on success."""
    def say(what: str) -> None:
        print(f"[{cluster.now * 1000:9.3f} ms] {what}", file=out)

    config = Config()
    network = NetworkConfig(delay_min=0.0005, delay_max=0.002)
    cluster = Cluster(n=3, seed=seed, config=config, network=network)
    print(f"raftpy simulated demo: 3 nodes, seed {seed}, election timeout "
          f"{_ms(config.election_timeout_min)}-{_ms(config.election_timeout_max)}, heartbeat "
          f"{_ms(config.heartbeat)}, network delay {_ms(network.delay_min)}-"
          f"{_ms(network.delay_max)}, pre-vote on\n", file=out)
    say("cluster starts, every node a follower")

    leader = cluster.wait_for_leader()
    say(f"node {leader} elected leader of term {cluster.node(leader).current_term} "
        f"(first election took {_ms(cluster.now)})")

    def commit(command: bytes) -> None:
        proposal = cluster.propose(command)
        cluster.run_until(lambda: proposal.committed, 1.0)
        assert proposal.committed_at is not None
        say(f"committed {command.decode()!r} at index {proposal.index} in "
            f"{_ms(proposal.committed_at - proposal.proposed_at)}")

    for command in (b"set x=1", b"set y=2", b"set z=3"):
        commit(command)
    cluster.run_for(0.1)

    transfer = cluster.transfer_leadership()
    say(f"leadership transfer {transfer.leader} -> {transfer.target} requested "
        f"(target chosen: the most up-to-date voter)")
    cluster.run_until(lambda: transfer.done, 1.0)
    if not transfer.succeeded or transfer.duration is None:
        say(f"transfer failed: {transfer.reason}")
        return 1
    new = cluster.node(transfer.target)
    say(f"node {transfer.target} is leader of term {new.current_term}: transfer took "
        f"{_ms(transfer.duration)} (TimeoutNow, no pre-vote, disrupt_leader vote)")
    commit(b"set x=10")
    cluster.run_for(0.2)

    victim = cluster.leader()
    assert victim is not None
    cluster.crash(victim)
    crashed_at = cluster.now
    say(f"node {victim} (the leader) crashes")
    leader = cluster.wait_for_leader(5.0)
    say(f"node {leader} elected leader of term {cluster.node(leader).current_term}: "
        f"re-election took {_ms(cluster.now - crashed_at)} (pre-vote, then vote)")
    commit(b"set w=4")
    cluster.restart(victim)
    say(f"node {victim} restarts from what it persisted and catches up")
    cluster.run_for(0.5)

    logs = {i: [e.data for e in cluster.applied[i] if e.kind is EntryKind.COMMAND]
            for i in cluster.ids}
    agree = all(log == logs[leader] for log in logs.values())
    say(f"every node applied the same {len(logs[leader])} commands: {agree}")
    print(f"\n{cluster.events} events simulated; Raft's invariants checked after each one.",
          file=out)
    print("Real TCP processes: python -m raftpy.demo_net", file=out)
    return 0 if agree else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m raftpy.demo``."""
    parser = argparse.ArgumentParser(prog="python -m raftpy.demo", description=__doc__)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    return run(args.seed)


if __name__ == "__main__":
    sys.exit(main())
