"""Real ``raftpy serve`` processes with mutual TLS, every certificate made by the
``raftpy tls`` commands: clients read and write, only admins transfer, a member joins
with its own node certificate, a client without the CA's certificate gets nowhere."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from raftpy import cli
from raftpy.demo_net import Servers

CLUSTER = "tls-proc"


def tls_flags(pki: Path, stem: str) -> list[str]:
    return ["--tls-ca", str(pki / "ca.pem"), "--tls-cert", str(pki / f"{stem}.pem"),
            "--tls-key", str(pki / f"{stem}-key.pem")]


def raftpy(servers: Servers, pki: Path, stem: str | None, *argv: str
           ) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RAFTPY_CLUSTER=",".join(servers.addresses),
               RAFTPY_CLUSTER_ID=CLUSTER)
    flags = tls_flags(pki, stem) if stem is not None else []
    return subprocess.run([sys.executable, "-m", "raftpy.cli", *argv, *flags,
                           "--timeout", "5"], env=env, capture_output=True, text=True,
                          timeout=60)


def test_a_tls_cluster_from_raftpy_tls_serves_clients_and_admins_apart(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    assert cli.main(["tls", "init-ca", str(pki), "--cluster-id", CLUSTER]) == cli.EXIT_OK
    for node_id in (1, 2, 3, 4):
        assert cli.main(["tls", "node", str(node_id), "--dir", str(pki)]) == cli.EXIT_OK
    assert cli.main(["tls", "client", "app", "--dir", str(pki)]) == cli.EXIT_OK
    assert cli.main(["tls", "client", "ops", "--admin", "--dir", str(pki)]) == cli.EXIT_OK
    servers = Servers(tmp_path, 3, cluster_id=CLUSTER)
    try:
        for node_id in servers.ids:
            servers.start(node_id, extra=tls_flags(pki, f"node-{node_id}"))
        deadline = time.monotonic() + 30
        while (put := raftpy(servers, pki, "client-app", "put", "k", "v")).returncode \
                != cli.EXIT_OK and time.monotonic() < deadline:
            time.sleep(0.2)
        assert put.returncode == cli.EXIT_OK, put.stderr
        got = raftpy(servers, pki, "client-app", "get", "k")
        assert (got.returncode, got.stdout) == (cli.EXIT_OK, "v\n")

        refused = raftpy(servers, pki, "client-app", "transfer")
        assert refused.returncode == cli.EXIT_FAILED
        assert "forbidden" in refused.stderr or "needs an admin" in refused.stderr, \
            refused.stderr
        assert raftpy(servers, pki, "client-app", "remove", "3").returncode == cli.EXIT_FAILED

        moved = raftpy(servers, pki, "admin-ops", "transfer")
        assert moved.returncode == cli.EXIT_OK, moved.stderr

        plain = raftpy(servers, pki, None, "get", "k")  # no certificate, no TLS at all
        assert plain.returncode == cli.EXIT_FAILED  # refused at once (retrying cannot help)
        assert "this member requires TLS" in plain.stderr, plain.stderr

        # A new member joins with its own node certificate (an admin's rights).
        new = servers.add()
        servers.start(new, join=[1, 2, 3], extra=tls_flags(pki, f"node-{new}"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            members = raftpy(servers, pki, "client-app", "members")
            if any(line.split()[:1] == [str(new)] for line in members.stdout.splitlines()):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"node {new} did not join: {members.stdout}{members.stderr}")
    finally:
        servers.stop_all()
