"""Join tokens on real ``raftpy serve`` processes (docs/security.md, "Join tokens"): a new
node obtains its node certificate with a one-time token and becomes a voter; the token
used twice, an expired token, a wrong secret and a token for another node id are refused."""

from __future__ import annotations

import dataclasses
import json
import os
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
from cryptography import x509

from raftpy import cli
from raftpy.demo_net import Servers, _free_ports
from raftpy.errors import HandshakeRefused
from raftpy.kv import statemachine
from raftpy.kv.joining import JoinRefused, JoinToken, obtain_certificate
from raftpy.trio import identity
from raftpy.trio.client import connect_client

CLUSTER = "tokens"


def tls_flags(pki: Path, stem: str) -> list[str]:
    return ["--tls-ca", str(pki / "ca.pem"), "--tls-cert", str(pki / f"{stem}.pem"),
            "--tls-key", str(pki / f"{stem}-key.pem")]


def raftpy(addresses: list[str], pki: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RAFTPY_CLUSTER=",".join(addresses), RAFTPY_CLUSTER_ID=CLUSTER)
    return subprocess.run([sys.executable, "-m", "raftpy.cli", *argv,
                           *tls_flags(pki, "admin-ops"), "--timeout", "10"],
                          env=env, capture_output=True, text=True, timeout=60)


def join(tmp: Path, node_id: int, token: str, name: str) -> subprocess.CompletedProcess[str]:
    """``raftpy serve --join-token`` that is expected to fail (it exits)."""
    (port,) = _free_ports(1)
    out = tmp / name
    return subprocess.run(
        [sys.executable, "-m", "raftpy.cli", "serve", "--id", str(node_id), "--listen",
         f"127.0.0.1:{port}", "--data-dir", str(out / "data"), "--cluster-id", CLUSTER,
         "--join-token", token, "--tls-ca", str(out / "ca.pem"), "--tls-cert",
         str(out / "cert.pem"), "--tls-key", str(out / "key.pem")],
        capture_output=True, text=True, timeout=60)


def token_of(added: subprocess.CompletedProcess[str]) -> str:
    assert added.returncode == cli.EXIT_OK, added.stderr
    lines = added.stdout.splitlines()
    assert lines[0].startswith("configuration at index") and len(lines) == 2, added.stdout
    return lines[1]


def test_join_tokens_on_real_processes(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    assert cli.main(["tls", "init-ca", str(pki), "--cluster-id", CLUSTER]) == cli.EXIT_OK
    for node_id in (1, 2, 3):
        assert cli.main(["tls", "node", str(node_id), "--dir", str(pki)]) == cli.EXIT_OK
    assert cli.main(["tls", "client", "ops", "--admin", "--dir", str(pki)]) == cli.EXIT_OK
    servers = Servers(tmp_path, 3, cluster_id=CLUSTER)
    try:
        # Only node 1 holds the CA key: it alone issues certificates.
        for node_id in servers.ids:
            extra = tls_flags(pki, f"node-{node_id}")
            if node_id == 1:
                extra += ["--tls-ca-key", str(pki / "ca-key.pem")]
            servers.start(node_id, extra=extra)
        deadline = time.monotonic() + 30
        while raftpy(servers.addresses, pki, "put", "k", "v").returncode != cli.EXIT_OK:
            assert time.monotonic() < deadline, "no leader"
            time.sleep(0.2)
        # Node 1 follows: the token it checks is spent through the leader's log.
        moved = raftpy(servers.addresses, pki, "transfer", "--to", "2")
        assert moved.returncode == cli.EXIT_OK or "it is the leader itself" in moved.stderr, \
            moved.stderr

        # Node 1 asks for certificates without requiring them, for joining nodes only:
        # a client hello without a certificate is still refused there.
        async def certless_client() -> None:
            context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
            await connect_client(servers.address(1), cluster_id=CLUSTER, ssl_context=context)

        with pytest.raises(HandshakeRefused, match="no peer certificate"):
            trio.run(certless_client)

        # The happy path. The token lists node 3 first: it has no CA key and says so,
        # the new node asks the next.
        new = servers.add()
        order = [servers.address(i) for i in (3, 1)]
        token = token_of(raftpy(order, pki, "add", str(new), servers.address(new), "--token"))
        decoded = JoinToken.decode(token)
        assert (decoded.cluster_id, decoded.node_id, decoded.addresses) == \
            (CLUSTER, new, tuple(order))
        mine = tmp_path / "new-pki"
        mine.mkdir()
        servers.start(new, extra=["--join-token", token, "--tls-ca", str(mine / "ca.pem"),
                                  "--tls-cert", str(mine / "cert.pem"),
                                  "--tls-key", str(mine / "key.pem")])
        # It becomes a voter: a promotion catches it up first, over its new certificate.
        deadline = time.monotonic() + 60
        while (promoted := raftpy(servers.addresses, pki, "assign", str(new), "voter")
               ).returncode != cli.EXIT_OK and "a voter already" not in promoted.stderr:
            assert time.monotonic() < deadline, promoted.stderr
            time.sleep(0.3)
        members = json.loads(raftpy(servers.addresses, pki, "members", "--json").stdout)
        (entry,) = [m for m in members["members"] if m["id"] == new]
        assert entry["role"] == "voter" and entry["match_index"] > 0, entry
        cert = x509.load_pem_x509_certificate((mine / "cert.pem").read_bytes())
        assert identity.of_certificate({"subjectAltName": tuple(
            ("URI", u) for u in cert.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value.get_values_for_type(
                    x509.UniformResourceIdentifier))}) == identity.node(CLUSTER, new)
        assert stat.S_IMODE((mine / "key.pem").stat().st_mode) == 0o600
        assert (mine / "ca.pem").read_bytes() == (pki / "ca.pem").read_bytes()
        log = servers.log_path(new).read_text()
        assert f"{order[0]} gave no certificate" in log  # node 3 has no CA key
        assert "obtained certificate" in log

        # The same token again: spent (for every member: it was spent through the log).
        again = join(tmp_path, new, token, "again")
        assert again.returncode == cli.EXIT_FAILED
        assert "join token already used" in again.stderr, again.stderr

        # An expired token.
        expired = token_of(raftpy(servers.addresses, pki, "add", "7", "127.0.0.1:9",
                                  "--token", "--token-ttl", "0.001"))
        late = join(tmp_path, 7, expired, "late")
        assert late.returncode == cli.EXIT_FAILED
        assert "join token expired" in late.stderr, late.stderr

        # A wrong secret.
        fresh = token_of(raftpy(servers.addresses, pki, "add", "8", "127.0.0.1:9",
                                "--token"))
        forged = dataclasses.replace(JoinToken.decode(fresh), secret=b"x" * 32).encode()
        wrong = join(tmp_path, 8, forged, "wrong")
        assert wrong.returncode == cli.EXIT_FAILED
        assert "unknown join token (wrong secret?)" in wrong.stderr, wrong.stderr

        # Node 8's token cannot get node 9 a certificate (the CLI refuses at once; a
        # hand-made request naming node 9 is refused by the cluster).
        other = join(tmp_path, 9, fresh, "other")
        assert other.returncode == cli.EXIT_USAGE
        assert "--join-token is for node 8, not --id 9" in other.stderr
        stolen = dataclasses.replace(JoinToken.decode(fresh), node_id=9)
        with pytest.raises(JoinRefused, match="join token is for node 8, not node 9"):
            trio.run(obtain_certificate, stolen)
        # ...and the refusal did not spend it: node 8 still gets its certificate.
        obtained = trio.run(obtain_certificate, JoinToken.decode(fresh))
        assert b"BEGIN CERTIFICATE" in obtained.cert
    finally:
        servers.stop_all()


def test_token_records_are_spent_once_and_checked_alike_on_every_replica() -> None:
    """The state machine side, deterministic: every replica applies the same commands."""
    store = statemachine.KVStore()
    digest = "ab" * 32
    store.apply(statemachine.join_token_command(digest, 4, 100.0))
    use = statemachine.join_use_command
    assert store.apply(use(digest, 5, 50.0)) == "join token is for node 4, not node 5"
    assert store.apply(use("cd" * 32, 4, 50.0)) == "unknown join token (wrong secret?)"
    assert store.apply(use(digest, 4, 100.0)) == "join token expired"
    assert store.apply(use(digest, 4, 99.0)) == "ok"
    assert store.apply(use(digest, 4, 99.5)) == "join token already used"
    with pytest.raises(ValueError, match="reserved"):  # nobody forges a record with a put
        store.apply(statemachine.put_command(statemachine.JOIN_TOKEN_PREFIX + "x", "4 1e18 unused"))
    replica = statemachine.KVStore()
    replica.restore(store.snapshot())
    assert replica.apply(use(digest, 4, 1.0)) == "join token already used"


def test_a_damaged_token_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve", "--id", "4", "--listen", "127.0.0.1:0", "--data-dir", "d",
                  "--join-token", "raftpy-join-1.garbage", "--tls-ca", "a", "--tls-cert",
                  "b", "--tls-key", "c"])
    assert exited.value.code == cli.EXIT_USAGE
    assert "--join-token: not a join token" in capsys.readouterr().err
