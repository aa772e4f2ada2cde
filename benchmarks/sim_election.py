"""Election and leadership-transfer latency in the deterministic simulator.

Run from the repository root::

    python -m benchmarks.sim_election            # 1000 trials per setup (about a minute)
    python -m benchmarks.sim_election --quick    # 50 trials per setup

Everything runs in virtual time (:class:`raftpy.sim.Cluster`), so a seed gives
the same numbers on any machine; only the simulator-speed section measures wall
time. Three sections:

* **Election**: crash the leader at a random point of its heartbeat interval
  (as the Raft paper's Figure 16 does) and measure the time until (a) a new
  leader exists and (b) that leader has committed its first entry of its own
  term (the no-op it appends on election, seen committed by the leader, i.e.
  the earliest moment it could acknowledge a client write). Reports the
  distribution, the split-vote rate and the protocol's lower bound.
* **Transfer**: ``transfer_leadership`` to a random follower, timed until the
  new leader has committed its no-op, in milliseconds and in mean round trips.
* **Speed**: simulated events per second of wall time, 3 nodes, steady writes.

Split vote, as counted here: after the crash, every term in which some node
became a real candidate (pre-vote rounds do not create terms) is one election
round. A round is *split* if more than one node became a candidate for that
term (contested: with 5 or more nodes one of them may still win), or if the
term ended without a leader (failed: the votes split and everyone waits for
another timeout). A trial is split if any of its rounds was; the split-vote
rate is the fraction of split trials. The failed-round rate (trials that
needed a second term) is reported too: it is what costs latency.

Lower bound of a trial: the time until the first live follower's election
timer fires (read from the nodes at the crash) plus the minimum the protocol
needs afterwards with the fastest message (``delay_min``) and fsync
(``disk_min``) of the simulated network: pre-vote round trip (pre-vote only),
persist term, vote round trip, voter persists its vote. The commit bound adds
one more round trip and the follower's fsync of the no-op.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._common import (
    RESULTS_DIR,
    cdf_points,
    print_table,
    progress,
    pyplot,
    save_figure,
    summarize,
    write_json,
)
from raftpy.config import Config
from raftpy.errors import LeadershipTransferInProgress, NotLeader
from raftpy.ready import Role
from raftpy.sim import Cluster, NetworkConfig

NAME = "sim_election"

# Raft paper (extended version) Figure 16, 150-300 ms, 5 servers, read off the
# published curve (see /work/shared/references/peers.md); not published text.
PAPER_150_300 = {"min": 93.0, "median": 171.0, "mean": 181.0, "p90": 244.0, "p99": 415.0,
                 "max": 603.0}
_PAPER_CDF = [(93.0, 0.0), (171.0, 0.5), (244.0, 0.9), (415.0, 0.99), (603.0, 1.0)]


@dataclass(frozen=True, slots=True)
class Setup:
    """One simulated configuration (times in seconds)."""

    label: str
    n: int
    pre_vote: bool
    delay_min: float
    delay_max: float
    timeout_min: float = 0.150
    timeout_max: float = 0.300
    heartbeat: float | None = None
    disk_min: float = NetworkConfig().disk_min
    disk_max: float = NetworkConfig().disk_max

    def cluster(self, seed: int, check_invariants: bool) -> Cluster:
        config = Config(pre_vote=self.pre_vote, election_timeout_min=self.timeout_min,
                        election_timeout_max=self.timeout_max,
                        heartbeat_interval=self.heartbeat)
        network = NetworkConfig(delay_min=self.delay_min, delay_max=self.delay_max,
                                disk_min=self.disk_min, disk_max=self.disk_max)
        return Cluster(n=self.n, seed=seed, config=config, network=network,
                       check_invariants=check_invariants)

    @property
    def heartbeat_interval(self) -> float:
        return self.heartbeat if self.heartbeat is not None else self.timeout_min / 3


@dataclass(slots=True)
class ElectionTrial:
    """One crash-and-recover measurement (seconds)."""

    leader: float | None
    commit: float | None
    first_timeout: float
    rounds: int = 0
    """Terms in which some node became a real candidate."""
    contested_rounds: int = 0
    """Rounds with more than one candidate (one of them may still have won)."""
    failed_rounds: int = 0
    """Rounds that ended without a leader: votes split (or were refused)."""

    @property
    def split(self) -> bool:
        """Whether any round was contested or failed (the definition in the docstring)."""
        return self.contested_rounds > 0 or self.failed_rounds > 0


@dataclass(slots=True)
class ElectionResult:
    setup: Setup
    trials: list[ElectionTrial] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        s = self.setup
        ok = [t for t in self.trials if t.commit is not None]
        vote_rtts = 2 if s.pre_vote else 1
        protocol = vote_rtts * 2 * s.delay_min + 2 * s.disk_min
        commit_extra = 2 * s.delay_min + s.disk_min
        lb_leader = [t.first_timeout + protocol for t in ok]
        lb_commit = [x + commit_extra for x in lb_leader]
        rounds = sum(t.rounds for t in self.trials)
        return {
            "setup": asdict(s),
            "trials": len(self.trials),
            "failed": len(self.trials) - len(ok),
            "leader_ms": summarize((t.leader for t in ok if t.leader is not None), 1000),
            "commit_ms": summarize((t.commit for t in ok if t.commit is not None), 1000),
            "lower_bound_leader_ms": summarize(lb_leader, 1000),
            "lower_bound_commit_ms": summarize(lb_commit, 1000),
            "excess_over_bound_leader_ms": summarize(
                (t.leader - lb for t, lb in zip(ok, lb_leader, strict=True)
                 if t.leader is not None), 1000),
            "protocol_after_timeout_ms": protocol * 1000,
            "round_trips_needed": vote_rtts,
            "split_vote_rate": sum(t.split for t in self.trials) / max(1, len(self.trials)),
            "failed_round_rate": sum(t.failed_rounds > 0 for t in self.trials)
            / max(1, len(self.trials)),
            "contested_rounds": sum(t.contested_rounds for t in self.trials),
            "failed_rounds": sum(t.failed_rounds for t in self.trials),
            "rounds": rounds,
            "mean_rounds_per_election": rounds / max(1, len(self.trials)),
        }


def _own_term_committed(cluster: Cluster) -> bool:
    leader = cluster.leader()
    if leader is None:
        return False
    node = cluster.node(leader)
    return node.log.term_at(node.commit_index) == node.current_term


def election_trial(setup: Setup, seed: int, check_invariants: bool = True) -> ElectionTrial:
    """Crash the leader of a settled cluster and time the recovery."""
    cluster = setup.cluster(seed, check_invariants)
    phase = random.Random(seed * 7919 + 1)
    cluster.wait_for_leader()
    cluster.run_for(0.5 + phase.uniform(0, setup.heartbeat_interval))
    old = cluster.leader()
    if old is None:  # pragma: no cover - a settled cluster without faults keeps its leader
        old = cluster.wait_for_leader()
    cluster.crash(old)
    start = cluster.now
    first_timeout = min(n.next_deadline() for n in cluster.live_nodes()) - start

    candidates: dict[int, set[int]] = {}
    leader_terms: set[int] = set()

    def watch() -> None:
        # Called before every event: each role change is a separate event, so
        # no candidacy goes unseen.
        for node in cluster.live_nodes():
            if node.role is Role.CANDIDATE and not node.in_pre_vote:
                candidates.setdefault(node.current_term, set()).add(node.id)
            elif node.role is Role.LEADER:
                leader_terms.add(node.current_term)

    def has_leader() -> bool:
        watch()
        return cluster.leader() is not None

    def committed() -> bool:
        watch()
        return _own_term_committed(cluster)

    trial = ElectionTrial(None, None, first_timeout)
    if cluster.run_until(has_leader, 10.0):
        trial.leader = cluster.now - start
        if cluster.run_until(committed, 10.0):
            trial.commit = cluster.now - start
    trial.rounds = len(candidates)
    trial.contested_rounds = sum(1 for who in candidates.values() if len(who) > 1)
    trial.failed_rounds = sum(1 for term in candidates if term not in leader_terms)
    return trial


# ---------------------------------------------------------------------- transfer

@dataclass(slots=True)
class TransferResult:
    setup: Setup
    load: bool
    durations: list[float] = field(default_factory=list)
    failed: int = 0

    def summary(self) -> dict[str, Any]:
        rtt = self.setup.delay_min + self.setup.delay_max  # mean round trip
        return {
            "setup": asdict(self.setup),
            "write_load": self.load,
            "trials": len(self.durations) + self.failed,
            "failed": self.failed,
            "to_commit_ms": summarize(self.durations, 1000),
            "mean_round_trip_ms": rtt * 1000,
            "to_commit_round_trips": summarize(self.durations, 1 / rtt),
        }


def transfer_trial(setup: Setup, seed: int, load: bool,
                   check_invariants: bool = True) -> float | None:
    """Seconds from ``transfer_leadership`` to the new leader's first commit, or None."""
    cluster = setup.cluster(seed, check_invariants)
    rng = random.Random(seed * 104729 + 3)
    if load:
        _steady_writes(cluster, 0.002, b"x" * 16)
    old = cluster.wait_for_leader()
    cluster.run_for(0.3 + rng.uniform(0, setup.heartbeat_interval))
    old = cluster.leader() or cluster.wait_for_leader()
    target = rng.choice([v for v in cluster.voters if v != old])
    start = cluster.now
    transfer = cluster.transfer_leadership(target)

    def done() -> bool:
        return transfer.done and (not transfer.succeeded or (
            cluster.leader() == target and _own_term_committed(cluster)))

    if not cluster.run_until(done, 5.0) or not transfer.succeeded:
        return None
    return cluster.now - start


def _steady_writes(cluster: Cluster, interval: float, command: bytes) -> None:
    """Propose ``command`` every ``interval`` virtual seconds, forever."""

    def write() -> None:
        # No leader, or a transfer running: a client would retry later.
        with contextlib.suppress(NotLeader, LeadershipTransferInProgress):
            cluster.propose(command)
        cluster.at(interval, write)

    cluster.at(interval, write)


# ---------------------------------------------------------------------- speed

def sim_speed(virtual_seconds: float, interval: float, check_invariants: bool) -> dict[str, Any]:
    """Events per wall-clock second of a 3-node cluster under steady writes."""
    cluster = Cluster(n=3, seed=1, check_invariants=check_invariants)
    cluster.wait_for_leader()
    _steady_writes(cluster, interval, b"x" * 16)
    events0 = cluster.events
    begin = time.perf_counter()
    cluster.run_for(virtual_seconds)
    wall = time.perf_counter() - begin
    events = cluster.events - events0
    committed = sum(p.committed for p in cluster.proposals)
    return {
        "check_invariants": check_invariants,
        "virtual_seconds": virtual_seconds,
        "write_interval_ms": interval * 1000,
        "events": events,
        "wall_seconds": wall,
        "events_per_second": events / wall,
        "commits": committed,
        "commits_per_wall_second": committed / wall,
        "virtual_to_wall": virtual_seconds / wall,
    }


# ---------------------------------------------------------------------- driver

def build_setups(args: argparse.Namespace) -> list[Setup]:
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.pre_vote]
    delay_min, delay_max = args.delay_min / 1000, args.delay_max / 1000
    heartbeat = args.heartbeat / 1000 if args.heartbeat else None
    setups = [
        Setup(f"n={n} pre-vote {'on' if pv else 'off'}", n, pv, delay_min, delay_max,
              args.timeout_min / 1000, args.timeout_max / 1000, heartbeat)
        for n in args.sizes for pv in modes
    ]
    if args.paper:
        # The paper's setup as far as it is stated: 5 servers, 150-300 ms, heartbeat
        # half the minimum timeout, broadcast time ~15 ms (one way 5-10 ms), no pre-vote.
        setups.append(Setup("paper-like n=5 pre-vote off, hb 75 ms, delay 5-10 ms", 5, False,
                            0.005, 0.010, 0.150, 0.300, 0.075))
    return setups


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sim_election",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000, help="trials per setup")
    parser.add_argument("--quick", action="store_true", help="50 trials per setup")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                        default=[3, 5, 7, 9], help="cluster sizes, e.g. 3,5")
    parser.add_argument("--pre-vote", choices=["on", "off", "both"], default="both")
    parser.add_argument("--delay-min", type=float, default=NetworkConfig().delay_min * 1000,
                        help="one-way network delay minimum, ms (uniform distribution)")
    parser.add_argument("--delay-max", type=float, default=NetworkConfig().delay_max * 1000,
                        help="one-way network delay maximum, ms")
    parser.add_argument("--timeout-min", type=float, default=150.0, help="election timeout, ms")
    parser.add_argument("--timeout-max", type=float, default=300.0, help="election timeout, ms")
    parser.add_argument("--heartbeat", type=float, default=None,
                        help="heartbeat interval, ms (default: timeout-min / 3)")
    parser.add_argument("--no-paper", dest="paper", action="store_false",
                        help="skip the paper-like setup")
    parser.add_argument("--transfer-sizes", type=lambda s: [int(x) for x in s.split(",") if x],
                        default=[3, 5], help="cluster sizes for the transfer section")
    parser.add_argument("--speed-seconds", type=float, default=20.0,
                        help="virtual seconds of the simulator-speed run")
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--no-invariants", dest="invariants", action="store_false",
                        help="skip invariant checks in the election/transfer trials")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default=NAME, help="base name of the JSON and PNG")
    parser.add_argument("--no-plot", dest="plot", action="store_false")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)
    if args.quick:
        args.trials = 50
        args.speed_seconds = min(args.speed_seconds, 5.0)
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    setups = build_setups(args)
    seeds = range(args.seed, args.seed + args.trials)
    elections: list[ElectionResult] = []
    transfers: list[TransferResult] = []
    transfer_setups = [s for s in setups if s.n in args.transfer_sizes and s.pre_vote]
    total = args.trials * (len(setups) + 2 * len(transfer_setups))
    began = time.perf_counter()
    with progress(total, "simulated trials", args.progress) as bar:
        for setup in setups:
            result = ElectionResult(setup)
            for seed in seeds:
                result.trials.append(election_trial(setup, seed, args.invariants))
                bar.update()
            elections.append(result)
        for setup in transfer_setups:
            for load in (False, True):
                tr = TransferResult(setup, load)
                for seed in seeds:
                    took = transfer_trial(setup, seed, load, args.invariants)
                    if took is None:
                        tr.failed += 1
                    else:
                        tr.durations.append(took)
                    bar.update()
                transfers.append(tr)
    trial_wall = time.perf_counter() - began
    speed = [sim_speed(args.speed_seconds, 0.001, inv) for inv in (True, False)]

    election_summaries = [r.summary() for r in elections]
    transfer_summaries = [t.summary() for t in transfers]
    _print(election_summaries, transfer_summaries, speed)
    payload = {
        "trials_per_setup": args.trials,
        "first_seed": args.seed,
        "check_invariants": args.invariants,
        "trials_wall_seconds": trial_wall,
        "paper_figure16_150_300ms_5_servers_ms": PAPER_150_300,
        "election": election_summaries,
        "transfer": transfer_summaries,
        "speed": speed,
    }
    write_json(args.results_dir, args.name, payload)
    if args.plot:
        _plot(elections, transfers, args.results_dir, args.name)
    return payload


def _print(elections: list[dict[str, Any]], transfers: list[dict[str, Any]],
           speed: list[dict[str, Any]]) -> None:
    def row(s: dict[str, Any], key: str) -> list[object]:
        d = s[key]
        return [d.get("min", float("nan")), d.get("median", float("nan")),
                d.get("p95", float("nan")), d.get("p99", float("nan")),
                d.get("max", float("nan"))]

    headers = ["setup", "what", "min", "median", "p95", "p99", "max", "split %", "2+ terms %",
               "no leader"]
    rows: list[list[object]] = []
    for s in elections:
        label = s["setup"]["label"]
        rows.append([label, "leader ms", *row(s, "leader_ms"),
                     f"{100 * s['split_vote_rate']:.1f}", f"{100 * s['failed_round_rate']:.1f}",
                     s["failed"]])
        rows.append(["", "commit ms", *row(s, "commit_ms"), "", "", ""])
        rows.append(["", "bound ms", *row(s, "lower_bound_leader_ms"), "", "", ""])
    print_table(headers, rows, "Election after leader crash (virtual time)")
    p = PAPER_150_300
    print(f"Raft paper Fig. 16, 150-300 ms, 5 servers (read off the curve): "
          f"min {p['min']:.0f}  median {p['median']:.0f}  p99 {p['p99']:.0f}  "
          f"max {p['max']:.0f} ms")

    rows = []
    for t in transfers:
        label = f"{t['setup']['label']}{', writes every 2 ms' if t['write_load'] else ''}"
        rows.append([label, "ms", *row(t, "to_commit_ms"), t["failed"]])
        rows.append(["", "round trips", *row(t, "to_commit_round_trips"), ""])
    print_table(["setup", "unit", "min", "median", "p95", "p99", "max", "failed"], rows,
                "Leadership transfer: request -> new leader's first commit")

    rows = [[("on" if s["check_invariants"] else "off"), s["events"], s["wall_seconds"],
             s["events_per_second"], s["commits_per_wall_second"], s["virtual_to_wall"]]
            for s in speed]
    print_table(["invariants", "events", "wall s", "events/s", "commits/s", "virtual/wall"],
                rows, "Simulator speed: 3 nodes, one 16-byte write per virtual ms")


def _plot(elections: list[ElectionResult], transfers: list[TransferResult], results_dir: Path,
          name: str) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    for ax, attr, title in ((axes[0], "leader", "(a) crash -> new leader"),
                            (axes[1], "commit", "(b) crash -> new leader's first commit")):
        for result in elections:
            values = [getattr(t, attr) * 1000 for t in result.trials
                      if getattr(t, attr) is not None]
            if not values:
                continue
            xs, ys = cdf_points(values)
            style = "--" if not result.setup.pre_vote else "-"
            ax.step(xs, ys, style, where="post", label=result.setup.label, linewidth=1.2)
        if attr == "leader":
            # Only the published points: the paper measured time without a leader.
            px, py = zip(*_PAPER_CDF, strict=True)
            ax.plot(px, py, "ko", label="Raft paper Fig. 16, 150-300 ms, 5 servers (read off)",
                    markersize=5)
        ax.set_xlabel("time without leader (ms)" if attr == "leader" else "ms")
        ax.set_ylabel("cumulative fraction of trials")
        ax.set_title(title)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    ax = axes[2]
    for tr in transfers:
        if tr.durations:
            xs, ys = cdf_points([d * 1000 for d in tr.durations])
            label = f"{tr.setup.label}{', writes' if tr.load else ', idle'}"
            ax.step(xs, ys, where="post", label=label)
    ax.set_title("(c) leadership transfer -> new leader's first commit")
    ax.set_xlabel("ms")
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("raftpy simulator, election timeout 150-300 ms (Raft paper Figure 16 redrawn)")
    save_figure(fig, results_dir, name)
    plt.close(fig)


if __name__ == "__main__":
    main(sys.argv[1:])
