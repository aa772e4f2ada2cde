"""The real-network demo: three ``raftpy serve`` processes on loopback.

    python -m raftpy.demo_net [--nodes 3] [--keys 10]

It starts the members with temporary data directories, writes keys, shows the
leader, transfers leadership (printing how long it took), SIGKILLs the leader
(printing how long the re-election took), writes more, restarts the killed
member from its data directory, joins a fourth member as a standby, stops the
leader with SIGTERM (it hands over: the standby becomes a voter) and removes it,
reads every key back and shuts everything down.
Every server runs in its own process group and is killed in a ``finally``
block, so no process outlives the demo, even on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import trio

from raftpy.kv.client import KVClient


def _free_ports(n: int) -> list[int]:
    sockets = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


class Servers:
    """The server processes of the demo (or of a test), one process group each."""

    def __init__(self, root: Path, n: int = 3, *, election_timeout_ms: float = 150,
                 cluster_id: str = "demo", log_level: str = "info",
                 handover_timeout: float = 3.0, tls: bool = False) -> None:
        self.root = root
        self.pki: Path | None = None
        """With ``tls``: the CA and certificates (``raftpy tls``), every member and client
        on mutual TLS; node certificates are issued as members start."""
        if tls:
            from raftpy.trio import certs

            self.pki = root / "pki"
            certs.init_ca(self.pki, cluster_id)
            certs.issue_client(self.pki, "demo", admin=True)
        self.ids = list(range(1, n + 1))
        self.initial = list(self.ids)
        """The members the cluster is bootstrapped with."""
        self.ports = dict(zip(self.ids, _free_ports(n), strict=True))
        self.handover_timeout = handover_timeout
        self.election_timeout_ms = election_timeout_ms
        self.cluster_id = cluster_id
        self.log_level = log_level
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._logs: dict[int, TextIO] = {}

    def address(self, node_id: int) -> str:
        """``host:port`` of a member."""
        return f"127.0.0.1:{self.ports[node_id]}"

    def peer_address(self, node_id: int, peer: int) -> str:
        """The address the cluster's configuration gives ``peer`` (the same for every
        member ``node_id``: the configuration is replicated). A subclass may put a
        proxy in front of the member: :mod:`raftpy.chaos`."""
        return self.address(peer)

    @property
    def addresses(self) -> list[str]:
        """Every member's address, by id."""
        return [self.address(i) for i in self.ids]

    def log_path(self, node_id: int) -> Path:
        """Where a member's stderr goes."""
        return self.root / f"node{node_id}.log"

    def add(self) -> int:
        """A new member id with a free port (not started: see :meth:`start`)."""
        node_id = max(self.ports) + 1
        self.ids.append(node_id)
        self.ports[node_id] = _free_ports(1)[0]
        return node_id

    def start(self, node_id: int, *, join: Sequence[int] | None = None,
              role: str | None = None, flags: bool = True, extra: Sequence[str] = ()) -> None:
        """Start (or restart) member ``node_id`` from its data directory: an initial
        member with ``--bootstrap`` (ignored by a data directory that holds state
        already), with ``join`` by asking those members to add it, with
        ``flags=False`` with neither (a restart that follows its log)."""
        argv = [sys.executable, "-m", "raftpy.cli", "--log-level", self.log_level, "serve",
                "--id", str(node_id), "--listen", self.address(node_id),
                "--data-dir", str(self.root / f"node{node_id}"),
                "--cluster-id", self.cluster_id,
                "--election-timeout-ms", str(self.election_timeout_ms),
                "--handover-timeout", str(self.handover_timeout), *self._tls_flags(node_id),
                *extra]
        if join is not None:
            argv += ["--join", ",".join(self.address(i) for i in join)]
            if role is not None:
                argv += ["--role", role]
        elif flags and node_id in self.initial:
            argv += ["--bootstrap", "--advertise", self.peer_address(node_id, node_id)]
            for peer in self.initial:
                if peer != node_id:
                    argv += ["--peer", f"{peer}={self.peer_address(node_id, peer)}"]
        log = self._logs.get(node_id)
        if log is None:
            log = self._logs[node_id] = open(self.log_path(node_id), "a")  # noqa: SIM115
        self.procs[node_id] = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            preexec_fn=_die_with_parent)

    def _tls_flags(self, node_id: int) -> list[str]:
        if self.pki is None:
            return []
        from raftpy.trio import certs

        cert, key = self.pki / f"node-{node_id}.pem", self.pki / f"node-{node_id}-key.pem"
        if not cert.exists():
            certs.issue_node(self.pki, node_id)
        return ["--tls-ca", str(self.pki / "ca.pem"), "--tls-cert", str(cert),
                "--tls-key", str(key)]

    def client_context(self) -> ssl.SSLContext | None:
        """The TLS context of an admin client (``None`` without TLS)."""
        if self.pki is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                             cafile=str(self.pki / "ca.pem"))
        context.load_cert_chain(self.pki / "admin-demo.pem", self.pki / "admin-demo-key.pem")
        return context

    def pause(self, node_id: int) -> None:
        """SIGSTOP member ``node_id`` (its kernel still accepts connections)."""
        _signal_group(self.procs[node_id], signal.SIGSTOP)

    def resume(self, node_id: int) -> None:
        """SIGCONT member ``node_id``."""
        _signal_group(self.procs[node_id], signal.SIGCONT)

    def kill(self, node_id: int) -> None:
        """SIGKILL member ``node_id`` (its whole process group) and reap it."""
        proc = self.procs.pop(node_id)
        _signal_group(proc, signal.SIGKILL)
        proc.wait()

    def stop(self, node_id: int, timeout: float = 5.0, *, signalled: bool = False
             ) -> int | None:
        """SIGTERM member ``node_id`` (unless ``signalled`` already: a second signal
        would cut its handover short) and wait; it hands over first, within its
        handover timeout. SIGKILL it if it lingers. Returns its exit code."""
        proc = self.procs.pop(node_id)
        _signal_group(proc, signal.SIGCONT)  # a paused member cannot handle SIGTERM
        if not signalled:
            _signal_group(proc, signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
            return None

    def stop_all(self) -> dict[int, int | None]:
        """Stop every running member; never leaves one behind."""
        codes = {}
        for running in self.procs.values():  # at once: nobody waits for a handover in vain
            _signal_group(running, signal.SIGTERM)
        for node_id in list(self.procs):
            try:
                codes[node_id] = self.stop(node_id, self.handover_timeout + 5,
                                           signalled=True)
            finally:
                proc = self.procs.pop(node_id, None)
                if proc is not None:  # stop() was interrupted: make sure
                    _signal_group(proc, signal.SIGKILL)
                    proc.wait()
        for log in self._logs.values():
            log.close()
        self._logs.clear()
        return codes


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """On Linux, have the kernel SIGKILL the server if the demo itself is killed."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signum)


async def wait_for_leader(client: KVClient, *, exclude: int | None = None,
                          min_term: int = 0, timeout: float = 15.0) -> dict[str, Any]:
    """Poll every member until one says it leads (a term >= ``min_term``, not
    ``exclude``); returns that member's status."""
    with trio.fail_after(timeout):
        while True:
            for status in (await client.statuses()).values():
                if isinstance(status, dict) and status["role"] == "leader" \
                        and status["node_id"] != exclude and status["term"] >= min_term:
                    return status
            await trio.sleep(0.005)


def _say(text: str) -> None:
    print(text, flush=True)


async def story(servers: Servers, keys: int) -> int:
    """The demo itself; returns the exit code."""
    start = time.monotonic()
    for node_id in servers.ids:
        servers.start(node_id)
    _say(f"started {len(servers.ids)} servers: "
         + ", ".join(f"{i}={servers.address(i)}" for i in servers.ids))
    if servers.pki is not None:
        _say(f"mutual TLS: CA and certificates from raftpy tls in {servers.pki}")
    async with KVClient(servers.addresses, cluster_id=servers.cluster_id,
                        ssl_context=servers.client_context(), timeout=10) as client:
        leader = await wait_for_leader(client, timeout=30)
        _say(f"leader: node {leader['node_id']} (term {leader['term']}), elected "
             f"{(time.monotonic() - start) * 1000:.0f} ms after launch")

        written: dict[str, str] = {}
        for k in range(keys):
            key, value = f"key{k}", f"value{k}"
            await client.put(key, value)
            written[key] = value
        _say(f"wrote {keys} keys through node {leader['node_id']}")

        target = next(i for i in servers.ids if i != leader["node_id"])
        # The target must be up and caught up (a loaded machine may start it late).
        commit = (await client.status(servers.address(leader["node_id"])))["commit_index"]
        await _caught_up(client, servers.address(target), commit)
        began = time.monotonic()
        reply = await client.transfer(target)
        round_trip = (time.monotonic() - began) * 1000
        _say(f"leadership transfer {leader['node_id']} -> {reply['leader_id']}: "
             f"{reply['elapsed_ms']:.2f} ms on the leader ({round_trip:.2f} ms round trip)")

        leader = await wait_for_leader(client)
        victim = leader["node_id"]
        servers.kill(victim)
        killed_at = time.monotonic()
        _say(f"SIGKILLed the leader, node {victim}")
        survivors = KVClient([servers.address(i) for i in servers.ids if i != victim],
                             cluster_id=servers.cluster_id,
                             ssl_context=servers.client_context(), timeout=10)
        async with survivors:
            leader = await wait_for_leader(survivors, exclude=victim,
                                           min_term=leader["term"] + 1)
            _say(f"re-election: node {leader['node_id']} leads term {leader['term']} "
                 f"{(time.monotonic() - killed_at) * 1000:.0f} ms after the kill")
            for k in range(keys, keys + 3):
                key, value = f"key{k}", f"value{k}"
                await survivors.put(key, value)
                written[key] = value
            _say(f"wrote 3 more keys through node {leader['node_id']} with node {victim} down")

        servers.start(victim)
        restarted_at = time.monotonic()
        commit = (await client.status(servers.address(leader["node_id"])))["commit_index"]
        await _caught_up(client, servers.address(victim), commit)
        _say(f"restarted node {victim} from its data directory: caught up to index {commit} "
             f"in {(time.monotonic() - restarted_at) * 1000:.0f} ms")

        await _membership_story(servers, written)

        wrong = {}
        for key, value in written.items():
            got = await client.get(key)
            if got != value:
                wrong[key] = got
        if wrong:
            _say(f"MISMATCH: {wrong}")
            return 1
        _say(f"read all {len(written)} keys back through node "
             f"{(await wait_for_leader(client))['node_id']}: every value matches")
        _print_table(await client.statuses())
    return 0


async def _caught_up(client: KVClient, address: str, index: int) -> None:
    """Wait until the member at ``address`` has applied ``index``."""
    with trio.fail_after(30):
        while True:
            try:
                status = await client.status(address)
            except Exception:
                status = {"applied_index": -1}
            if status["applied_index"] >= index:
                return
            await trio.sleep(0.01)


async def _membership_story(servers: Servers, written: dict[str, str]) -> None:
    """Join a standby, then stop the leader with SIGTERM: it hands over (the standby
    becomes a voter, leadership moves, the old leader becomes a spare), then remove it."""
    new = servers.add()
    servers.start(new, join=list(servers.procs), role="standby")
    everyone = [servers.address(i) for i in servers.ids]
    async with KVClient(everyone, cluster_id=servers.cluster_id,
                        ssl_context=servers.client_context(), timeout=10) as client:
        began = time.monotonic()
        with trio.fail_after(30):
            while True:
                members = {m["id"]: m for m in (await client.membership())["members"]}
                if new in members and members[new]["last_contact"] is not None:
                    break
                await trio.sleep(0.05)
        _say(f"node {new} joined as a standby in {(time.monotonic() - began) * 1000:.0f} ms "
             f"(raftpy serve --join ... --role standby)")
        leader = (await wait_for_leader(client))["node_id"]
        began = time.monotonic()
        code = await trio.to_thread.run_sync(lambda: servers.stop(leader, 15))
        _say(f"SIGTERM to the leader, node {leader}: it handed over and exited ({code}) in "
             f"{(time.monotonic() - began) * 1000:.0f} ms")
        membership = await client.membership()
        _say("members now: " + ", ".join(f"{m['id']}={m['role']}"
                                         for m in membership["members"]))
        await client.remove_member(leader)
        _say(f"removed node {leader}; the cluster has "
             f"{sum(1 for m in (await client.membership())['members'] if m['role'] == 'voter')}"
             " voters again")
        for k in range(3):
            key, value = f"member{k}", f"value{k}"
            await client.put(key, value)
            written[key] = value


def _print_table(statuses: dict[str, Any]) -> None:
    for address, status in statuses.items():
        if isinstance(status, dict):
            _say(f"  {address}  node {status['node_id']}  {status['role']:<9} term "
                 f"{status['term']}  commit {status['commit_index']}  applied "
                 f"{status['applied_index']}")
        else:
            _say(f"  {address}  unreachable ({status})")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m raftpy.demo_net",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=3, choices=[3, 5])
    parser.add_argument("--keys", type=int, default=10)
    parser.add_argument("--election-timeout-ms", type=float, default=150)
    parser.add_argument("--keep", action="store_true", help="keep the data and log directory")
    parser.add_argument("--no-tls", action="store_true",
                        help="plain TCP (default: mutual TLS, if cryptography is installed)")
    args = parser.parse_args(argv)
    tls = not args.no_tls
    if tls:
        try:
            import cryptography  # noqa: F401
        except ImportError:
            _say("cryptography is not installed (pip install 'raftpy[tls]'): plain TCP")
            tls = False
    root = Path(tempfile.mkdtemp(prefix="raftpy-demo-"))
    servers = Servers(root, args.nodes, election_timeout_ms=args.election_timeout_ms, tls=tls)
    code = 1
    try:
        code = trio.run(story, servers, args.keys)
    except KeyboardInterrupt:
        _say("interrupted")
        code = 130
    except Exception as exc:
        _say(f"demo failed: {exc!r}; server logs in {root}")
        args.keep = True
    finally:
        codes = servers.stop_all()
        if code != 130:
            clean = all(c == 0 for c in codes.values())
            _say(f"shut down {len(codes)} servers "
                 + ("cleanly" if clean else f"(exit codes {codes})"))
        if not args.keep:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
        else:
            _say(f"data and logs kept in {root}")
    return code


if __name__ == "__main__":
    sys.exit(main())
