"""One chaos run: start the cluster, run clients and the nemesis, heal, check."""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import trio

from raftpy.chaos import nemesis
from raftpy.chaos.checker import Verdict, linearizability_verdict
from raftpy.chaos.cluster import ChaosServers
from raftpy.chaos.history import OK, History
from raftpy.chaos.replicas import ReplicaReport, compare
from raftpy.chaos.report import Gap, leader_changes, write_gaps
from raftpy.chaos.workload import make_client, run_op, worker

logger = logging.getLogger(__name__)

def add_snapshot_every(parser: argparse.ArgumentParser) -> None:
    """``--snapshot-every N`` of ``python -m raftpy.chaos`` and of its batch."""

    def entries(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be 0 (never) or more, not {value}")
        return value

    parser.add_argument("--snapshot-every", type=entries, default=None, metavar="N",
                        help="serve --snapshot-every of the members (default: serve's; 0: "
                        "never; duplicates are counted over the entries after the oldest "
                        "snapshot)")


@dataclass(frozen=True, slots=True)
class Options:
    """What to run."""

    seed: int = 1
    seconds: float = 30.0
    nodes: int = 3
    partitions: bool = True
    faults: tuple[str, ...] = ()
    """Only these fault kinds (``nemesis.KINDS``, ``nemesis.PARTITION_KINDS``);
    empty: all of them (the partition kinds only with ``partitions``)."""
    workers: int = 5
    keys: int = 4
    election_timeout_ms: float = 150.0
    root: Path | None = None
    """Where data and logs go (a temporary directory, removed unless ``keep``)."""
    keep: bool = False
    early_pre_vote: bool = True
    """Run the members with ``serve --early-pre-vote`` (``raftpy.failover``)."""
    snapshot_every: int | None = None
    """``serve --snapshot-every`` of the members (``None``: serve's default; 0:
    never snapshot). Duplicates and lost writes are counted only over the entries
    after the oldest snapshot: 0 counts the whole log."""
    server_log_level: str = "info"
    """``raftpy --log-level`` of the members (their logs go to ``nodeN.log``; at
    ``info`` they say when they learn of a new leader: the election times)."""


@dataclass(slots=True)
class Result:
    """Everything a run found out."""

    options: Options
    root: Path
    history: History
    events: list[nemesis.Event]
    plan: list[nemesis.Planned]
    verdict: Verdict | None = None
    replicas: ReplicaReport | None = None
    gaps: list[Gap] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Why the run failed (empty: it passed)."""
    final: dict[str, str | None] = field(default_factory=dict)
    """Every key's value read back after healing."""
    wall_t0: float = 0.0
    """The wall clock when the run's clock read 0 (to read the members' logs)."""

    @property
    def passed(self) -> bool:
        return not self.problems


def run(options: Options) -> Result:
    """Run once; never leaves a server process behind."""
    root = options.root or Path(tempfile.mkdtemp(prefix=f"raftpy-chaos-{options.seed}-"))
    root.mkdir(parents=True, exist_ok=True)
    flags = []
    if options.snapshot_every is not None:
        flags += ["--snapshot-every", str(options.snapshot_every)]
    if options.early_pre_vote:
        flags.append("--early-pre-vote")
    servers = ChaosServers(root, options.nodes, election_timeout_ms=options.election_timeout_ms,
                           log_level=options.server_log_level, serve_flags=flags)
    plan = nemesis.schedule(options.seed, options.seconds, partitions=options.partitions,
                            only=options.faults)
    result = Result(options, root, History(), [], plan)
    commit: int | None = None
    try:
        commit = trio.run(_run, options, servers, result)
    except Exception as exc:  # the run could not finish: say so, check what it recorded
        logger.exception("chaos run %d aborted", options.seed)
        result.problems.append(f"run aborted: {_leaf(exc)!r:.2000}")
    finally:
        servers.stop_all()
    _check(result, servers, commit)
    result.history.write_jsonl(root / "history.jsonl")
    if not options.keep and result.passed and options.root is None:
        shutil.rmtree(root, ignore_errors=True)
    return result


async def _run(options: Options, servers: ChaosServers, result: Result) -> int:
    """The trio part; returns the commit index every member applied at the end."""
    keys = [f"k{i}" for i in range(options.keys)]
    async with trio.open_nursery() as nursery:
        await nursery.start(servers.run_proxies)
        for node in servers.ids:
            servers.start(node)
        control = make_client(servers.addresses, servers.aliases, timeout=2.0)
        async with control:
            if await nemesis.find_leader(control, servers, timeout=30) is None:
                raise RuntimeError("no leader elected within 30 s of starting")
            t0 = trio.current_time()
            result.wall_t0 = time.time()

            def clock() -> float:
                return trio.current_time() - t0

            async with trio.open_nursery() as run:
                for w in range(options.workers):
                    rng = random.Random(f"{options.seed}-worker-{w}")
                    run.start_soon(worker, w, make_client(servers.addresses, servers.aliases),
                                   result.history, clock, rng, keys, options.seconds)
                run.start_soon(nemesis.run_nemesis, result.plan, servers, control, clock,
                               result.events, options.seconds - 2.0)
            nemesis._recover(servers)
            # Read every key back (recorded: the checker sees these reads too).
            async with make_client(servers.addresses, servers.aliases, timeout=10) as reader:
                for key in keys:
                    await run_op(reader, result.history, clock, -1, "get", key)
                    op = result.history.ops[-1]
                    if op.outcome == OK:
                        result.final[key] = op.result
                    else:
                        result.problems.append(f"could not read {key} back: {op.error}")
            exited = {i: p.returncode for i, p in servers.procs.items() if p.poll() is not None}
            for node, code in sorted(exited.items()):
                result.problems.append(f"member {node} exited by itself (code {code}): see "
                                       f"{servers.log_path(node)}")
            commit = await _converge(control, servers)
        nursery.cancel_scope.cancel()
    return commit


async def _converge(control: object, servers: ChaosServers, timeout: float = 20.0) -> int:
    """Wait until every member has applied the same commit index; returns it."""
    from raftpy.kv.client import KVClient

    assert isinstance(control, KVClient)
    last: dict[str, object] = {}
    with trio.move_on_after(timeout):
        while True:
            last = dict(await control.statuses())
            applied = {s["applied_index"] for s in last.values() if isinstance(s, dict)}
            commits = {s["commit_index"] for s in last.values() if isinstance(s, dict)}
            if len(last) == len(servers.ids) and all(isinstance(s, dict) for s in last.values()) \
                    and len(applied) == 1 and applied == commits:
                return int(applied.pop())
            await trio.sleep(0.05)
    raise RuntimeError(f"members did not converge within {timeout:g}s: {last}")


def _leaf(exc: BaseException) -> BaseException:
    """The one error inside (possibly nested) exception groups, else ``exc``."""
    while True:
        inner = getattr(exc, "exceptions", None)
        if not (isinstance(inner, tuple) and len(inner) == 1):
            return exc
        exc = inner[0]


def _check(result: Result, servers: ChaosServers, commit: int | None) -> None:
    history = result.history
    logs = [servers.log_path(i) for i in servers.ids]
    result.gaps = write_gaps(history, result.events, leader_changes(logs, result.wall_t0))
    result.verdict = linearizability_verdict(history)
    if result.verdict.linearizable is not True:
        result.problems.append(result.verdict.describe())
    if commit is None:
        return  # the members never agreed on what they applied: nothing to compare
    acknowledged = [(op.key, op.value) for op in history.ops
                    if op.kind == "put" and op.outcome == OK and op.value is not None]
    report = compare(servers.root, servers.ids, servers.cluster_id, commit, acknowledged)
    result.replicas = report
    if not report.equal:
        states = {r.node_id: r.data for r in report.replicas}
        result.problems.append(f"replicas differ at index {commit}: {states}")
    if report.duplicates:
        result.problems.append(f"duplicates: {report.duplicates[:10]}")
    if report.lost:
        result.problems.append(f"acknowledged writes lost: {report.lost[:10]}")
    if report.replicas and report.equal:
        state = report.replicas[0].data
        wrong = {k: (v, state.get(k)) for k, v in result.final.items() if state.get(k) != v}
        if wrong:
            result.problems.append(f"final reads differ from the replicas: {wrong}")
