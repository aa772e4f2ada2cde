"""Real-network benchmark harness: N node processes on loopback, one coordinator.

The coordinator (this module) starts each node as a child process and talks to
it over its stdin/stdout, one JSON object per line. Each node process (see
``peer_pysyncobj.py`` and ``net_raftpy.py``) answers these requests:

``{"op": "status"}``
    ``{"id", "role": "leader"|"follower"|"candidate", "leader": id|None,
    "term", "commit"}``
``{"op": "events", "since": t}``
    ``{"leader_at": [[term, t], ...], "commit_at": [[term, t], ...]}``: when
    this node became leader of a term, and when, as leader, it first saw an
    entry of that term committed. Times are ``time.monotonic()``, which is one
    clock for every process on the machine (Linux ``CLOCK_MONOTONIC``).
``{"op": "seq", "n": n, "size": bytes, "max_seconds": s}``
    run ``n`` writes one after another on this node (the leader), stopping
    early after ``s`` seconds; return the latency of each (seconds) and whether a
    write stalled (did not complete within 10 s).
``{"op": "pipe", "n": n, "size": bytes, "inflight": k, "max_seconds": s}``
    run ``n`` writes with up to ``k`` outstanding, giving up after ``s`` seconds;
    return ``{"elapsed", "ok", "stalled"}``.
``{"op": "transfer", "target": id}``
    start a leadership transfer; return ``{"ok", "at": t}`` (when it started).
``{"op": "exit"}``

Every node also exits when its stdin closes, and is started with
``PR_SET_PDEATHSIG`` on Linux, so no node outlives the coordinator even if the
coordinator is killed; Ctrl-C and normal exit kill the children explicitly.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

_LIVE: set[subprocess.Popen[str]] = set()


def _kill_all() -> None:
    for proc in list(_LIVE):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)
        _LIVE.discard(proc)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


atexit.register(_kill_all)
if hasattr(signal, "SIGTERM"):
    signal.signal(signal.SIGTERM, _on_sigterm)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to SIGKILL this child when the coordinator dies."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


class NodeError(RuntimeError):
    """A node process died or did not answer."""


class NodeProcess:
    """One node child process and its JSON-lines control channel."""

    def __init__(self, node_id: int, argv: Sequence[str], env: dict[str, str] | None = None):
        self.id = node_id
        self.argv = list(argv)
        self.proc: subprocess.Popen[str] = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            env=env)
        _LIVE.add(self.proc)
        self._selector = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        self._selector.register(self.proc.stdout, selectors.EVENT_READ)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def read(self, timeout: float) -> dict[str, Any]:
        """The next JSON line from the node (raises :class:`NodeError`)."""
        assert self.proc.stdout is not None
        if not self._selector.select(timeout):
            raise NodeError(f"node {self.id} did not answer within {timeout}s")
        line = self.proc.stdout.readline()
        if not line:
            raise NodeError(f"node {self.id} exited (code {self.proc.poll()})")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise NodeError(f"node {self.id}: {reply['error']}")
        return reply

    def call(self, op: str, timeout: float = 30.0, **args: Any) -> dict[str, Any]:
        """Send one request and wait for its answer."""
        if not self.alive:
            raise NodeError(f"node {self.id} is not running")
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError as exc:
            raise NodeError(f"node {self.id} exited") from exc
        return self.read(timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.close()

    def stop(self) -> None:
        """Ask politely, then kill."""
        if self.alive:
            with contextlib.suppress(NodeError, OSError, ValueError):
                self.call("exit", timeout=2)
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.close()

    def close(self) -> None:
        _LIVE.discard(self.proc)
        self._selector.close()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


Spawn = Callable[[int, dict[int, int]], list[str]]
"""Builds the command line of node ``id`` given every node's port."""


@dataclass
class NetCluster:
    """``n`` node processes on loopback, started by ``spawn``."""

    spawn: Spawn
    n: int = 3
    env: dict[str, str] | None = None
    nodes: dict[int, NodeProcess] = field(default_factory=dict)
    ports: dict[int, int] = field(default_factory=dict)

    def start(self, timeout: float = 30.0) -> None:
        self.ports = dict(zip(range(1, self.n + 1), free_ports(self.n), strict=True))
        for node_id in self.ports:
            self.nodes[node_id] = NodeProcess(node_id, self.spawn(node_id, self.ports), self.env)
        for node in self.nodes.values():
            node.read(timeout)  # the "ready" line

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()
        self.nodes.clear()

    def __enter__(self) -> NetCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def live(self) -> list[NodeProcess]:
        return [n for n in self.nodes.values() if n.alive]

    def statuses(self) -> dict[int, dict[str, Any]]:
        return {n.id: n.call("status", timeout=10) for n in self.live()}

    def wait_stable(self, timeout: float = 20.0) -> int:
        """Wait until every live node follows one leader and all have committed the
        same index; return the leader's id."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            st = self.statuses()
            leaders = {s["id"] for s in st.values() if s["role"] == "leader"}
            if len(leaders) == 1:
                leader = leaders.pop()
                if all(s["leader"] == leader for s in st.values()) and \
                        len({s["commit"] for s in st.values()}) == 1:
                    return int(leader)
            time.sleep(0.02)
        raise NodeError(f"no stable leader within {timeout}s: {self.statuses()}")

    def wait_event(self, node_ids: Sequence[int], kind: str, since: float,
                   timeout: float = 10.0, poll: float = 0.01) -> tuple[int, float] | None:
        """The first ``kind`` event ("leader_at" or "commit_at") after ``since`` on any
        of ``node_ids``: (node id, time), or None on timeout."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found: list[tuple[float, int]] = []
            for node_id in node_ids:
                node = self.nodes[node_id]
                if not node.alive:
                    continue
                events = node.call("events", since=since, timeout=10)[kind]
                found.extend((t, node_id) for _, t in events if t > since)
            if found:
                when, who = min(found)
                return who, when
            time.sleep(poll)
        return None


# ---------------------------------------------------------------------- measurements

def measure_failover(make: Callable[[], NetCluster], trials: int, heartbeat: float,
                     bar: Any, seed: int = 0) -> list[dict[str, Any]]:
    """Fresh cluster per trial: settle, SIGKILL the leader at a random point of its
    heartbeat interval, time until a new leader exists and until it commits."""
    rng = random.Random(seed)
    out = []
    for _ in range(trials):
        with make() as cluster:
            leader = cluster.wait_stable()
            time.sleep(0.3 + rng.uniform(0, heartbeat))
            leader = cluster.wait_stable()
            survivors = [i for i in cluster.nodes if i != leader]
            killed_at = time.monotonic()
            cluster.nodes[leader].kill()
            elected = cluster.wait_event(survivors, "leader_at", killed_at)
            committed = cluster.wait_event(survivors, "commit_at", killed_at)
            out.append({
                "leader_s": None if elected is None else elected[1] - killed_at,
                "commit_s": None if committed is None else committed[1] - killed_at,
            })
        bar.update()
    return out


def measure_transfers(cluster: NetCluster, trials: int, bar: Any,
                      settle: float = 0.05) -> list[dict[str, Any]]:
    """Transfer leadership round the cluster ``trials`` times; time from the start of
    each transfer to the target's first commit as leader."""
    out = []
    leader = cluster.wait_stable()
    for _ in range(trials):
        target = leader % cluster.n + 1
        time.sleep(settle)
        reply = cluster.nodes[leader].call("transfer", target=target)
        if not reply["ok"]:
            # Not caught up yet (PySyncObj denies then): let the cluster settle, retry.
            leader = cluster.wait_stable()
            continue
        started = float(reply["at"])
        committed = cluster.wait_event([target], "commit_at", started, timeout=5, poll=0.002)
        out.append({"target": target,
                    "commit_s": None if committed is None else committed[1] - started})
        leader = cluster.wait_stable()
        bar.update()
    return out


def measure_writes(cluster: NetCluster, sizes: Sequence[int], seq_n: int, pipe_n: int,
                   inflight: int, seq_seconds: float = 15.0,
                   pipe_seconds: float = 60.0, pipe_batch: int = 0) -> list[dict[str, Any]]:
    """Sequential latency (at most ``seq_n`` writes or ``seq_seconds``) and pipelined
    throughput (given up after ``pipe_seconds``), both driven inside the leader. A
    write that never completes marks the figure as stalled instead of hanging.
    ``pipe_batch`` > 1 also measures pipelined throughput with callers submitting
    that many commands per call (raftpy's ``Node.apply_many``)."""
    out = []
    for size in sizes:
        for attempt in range(3):
            leader = cluster.nodes[cluster.wait_stable()]
            try:
                leader.call("seq", n=min(50, seq_n), size=size, max_seconds=2,
                            timeout=120)  # warm-up
                break
            except NodeError as exc:
                # Leadership moved between wait_stable and the first write (seen once
                # right after the transfer trials): find the leader again.
                if "NotLeader" not in str(exc) or attempt == 2:
                    raise
                print(f"warm-up: {exc}; looking for the leader again", file=sys.stderr)
        seq = leader.call("seq", n=seq_n, size=size, max_seconds=seq_seconds, timeout=300)
        warm = min(1000, pipe_n)
        leader.call("pipe", n=warm, size=size, inflight=min(inflight, warm),
                    max_seconds=pipe_seconds, timeout=pipe_seconds + 60)
        pipe = leader.call("pipe", n=pipe_n, size=size, inflight=inflight,
                           max_seconds=pipe_seconds, timeout=pipe_seconds + 60)
        many = None
        if pipe_batch > 1:
            leader = cluster.nodes[cluster.wait_stable()]  # (if it moved meanwhile)
            many = leader.call("pipe", n=pipe_n, size=size, inflight=inflight,
                               max_seconds=pipe_seconds, timeout=pipe_seconds + 60,
                               batch=pipe_batch)
        out.append({"size": size, "seq_latencies_s": seq["latencies"],
                    "seq_stalled": bool(seq.get("stalled")),
                    "pipe_n": pipe_n, "pipe_inflight": inflight,
                    "pipe_elapsed_s": pipe["elapsed"], "pipe_ok": pipe["ok"],
                    "pipe_errors": pipe.get("errors", {}),
                    "pipe_stalled": bool(pipe.get("stalled")),
                    "pipe_ops_per_s": pipe["ok"] / pipe["elapsed"] if pipe["elapsed"] else 0.0})
        if many is not None:
            out[-1].update({
                "pipe_many_batch": pipe_batch, "pipe_many_ok": many["ok"],
                "pipe_many_errors": many.get("errors", {}),
                "pipe_many_stalled": bool(many.get("stalled")),
                "pipe_many_ops_per_s": many["ok"] / many["elapsed"] if many["elapsed"] else 0.0})
        if seq.get("stalled") or pipe.get("stalled"):
            # Later writes on a stalled leader would only time out as well.
            break
    return out


def python_argv(module: str, *args: str) -> list[str]:
    """``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def child_env() -> dict[str, str]:
    """The environment for node processes: this one, with the repo importable."""
    env = dict(os.environ)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    return env
