"""Identities bound to certificates (docs/security.md): the identity rules as plain
functions, then every refusal on real loopback sockets with certificates issued by
``raftpy tls`` (and a few bad ones made with ``cryptography`` directly)."""

from __future__ import annotations

import datetime
import logging
import os
import random
import ssl
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from cryptography.hazmat.primitives import serialization
from test_trio_transport import BOUND, CLUSTER, cluster, receive, vote, wait_for

from raftpy import Config
from raftpy.cli import main, tls_contexts
from raftpy.errors import HandshakeRefused, ProtocolError
from raftpy.kv import protocol
from raftpy.kv.client import KVClient, RequestFailed
from raftpy.kv.server import KVServer
from raftpy.kv.statemachine import KVStore
from raftpy.sessions import SessionStateMachine
from raftpy.storage.memory import MemoryStorage
from raftpy.trio import certs, handshake, identity
from raftpy.trio.client import connect_client
from raftpy.trio.framing import FramedStream
from raftpy.trio.identity import Identity
from raftpy.trio.runtime import Node, open_node

# ---------------------------------------------------------------------- the rules, without I/O


def test_identity_uris_round_trip_and_quote_what_needs_it() -> None:
    assert identity.node("c1", 7).uri == "raftpy://c1/node/7"
    assert identity.client("c1", "bob", admin=True).uri == "raftpy://c1/admin/bob"
    odd = identity.client("prod/eu 1", "ops team")
    assert odd.uri == "raftpy://prod%2Feu%201/client/ops%20team"
    assert identity.parse_uri(odd.uri) == odd
    assert identity.parse_uri("raftpy://c1/node/7").node_id == 7
    assert identity.parse_uri("raftpy://c1/client/7").node_id is None


@pytest.mark.parametrize("uri", [
    "https://c1/node/1", "raftpy://c1/node", "raftpy://c1/node/1/x", "raftpy:///node/1",
    "raftpy://c1/peer/1", "raftpy://c1/node/0", "raftpy://c1/node/01", "raftpy://c1/node/x",
    "raftpy://c1/node/-1", "raftpy://c1/node/\u0663", "raftpy://c1/client/",
])
def test_malformed_identity_uris_are_refused(uri: str) -> None:
    with pytest.raises(ValueError):
        identity.parse_uri(uri)


def test_a_certificate_must_name_exactly_one_raftpy_identity() -> None:
    one = {"subjectAltName": (("DNS", "localhost"), ("URI", "raftpy://c/node/1"),
                              ("URI", "https://example.invalid/"))}
    assert identity.of_certificate(one) == identity.node("c", 1)
    with pytest.raises(ValueError, match="names no raftpy"):
        identity.of_certificate({"subjectAltName": (("DNS", "localhost"),)})
    with pytest.raises(ValueError, match="2 raftpy"):
        identity.of_certificate({"subjectAltName": (("URI", "raftpy://c/node/1"),
                                                    ("URI", "raftpy://c/node/2"))})
    with pytest.raises(ValueError, match="no peer certificate"):
        identity.of_certificate(None)


NODE2 = identity.node("c", 2)
ALICE = identity.client("c", "alice")
ROOT = identity.client("c", "root", admin=True)


@pytest.mark.parametrize(("who", "role", "claims", "refusal"), [
    (NODE2, "peer", 2, None),
    (NODE2, "client", None, None),
    (ALICE, "client", None, None),
    (ROOT, "client", None, None),
    (NODE2, "peer", 3, "the certificate is node 2's, the hello claims node 3"),
    (ALICE, "peer", 2, "a client certificate ('alice') cannot speak the peer protocol"),
    (ROOT, "peer", 2, "a admin certificate ('root') cannot speak the peer protocol"),
    (identity.node("other", 2), "peer", 2, "the certificate is for cluster 'other', not 'c'"),
    (identity.client("other", "x"), "client", None, "for cluster 'other'"),
])
def test_what_an_acceptor_lets_each_certificate_do(
        who: Identity, role: str, claims: int | None, refusal: str | None) -> None:
    reason = identity.check_hello(who, cluster_id="c", role=role, node_id=claims)
    if refusal is None:
        assert reason is None
    else:
        assert reason is not None and refusal in reason


def test_what_a_dialler_accepts_as_a_server() -> None:
    assert identity.check_server(NODE2, cluster_id="c", expected_node=2) is None
    assert identity.check_server(NODE2, cluster_id="c", expected_node=None) is None
    assert identity.check_server(NODE2, cluster_id="c", expected_node=3) == \
        "the server's certificate is node 2's, not node 3's"
    assert identity.check_server(ROOT, cluster_id="c", expected_node=None) == \
        "the server presents a admin certificate, not a node's"
    assert "cluster 'c'" in str(identity.check_server(NODE2, cluster_id="d",
                                                      expected_node=None))


def test_only_nodes_admins_and_untrusted_networks_administer() -> None:
    assert identity.may_administer(NODE2)
    assert identity.may_administer(ROOT)
    assert not identity.may_administer(ALICE)
    assert identity.may_administer(None)  # no TLS: trusted network (docs/security.md)


# ---------------------------------------------------------------------- certificates


@dataclass
class Pki:
    dir: Path

    def files(self, stem: str) -> tuple[str, str, str]:
        return (str(self.dir / "ca.pem"), str(self.dir / f"{stem}.pem"),
                str(self.dir / f"{stem}-key.pem"))

    def contexts(self, stem: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        server, client = tls_contexts(*self.files(stem))
        assert server is not None and client is not None
        return server, client

    def server(self, stem: str) -> ssl.SSLContext:
        return self.contexts(stem)[0]

    def client(self, stem: str) -> ssl.SSLContext:
        return self.contexts(stem)[1]

    def leaf(self, stem: str, who: Identity, *, hosts: tuple[str, ...] = ("127.0.0.1",),
             **validity: datetime.datetime) -> None:
        """A certificate the tool would not issue, signed by the same CA."""
        ca_cert, ca_key, _ = certs.load_ca(self.dir)
        cert, key = certs.make_leaf(ca_cert, ca_key, who, hosts=hosts, **validity)
        (self.dir / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (self.dir / f"{stem}-key.pem").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The certificates of cluster CLUSTER, made by the ``raftpy tls`` commands."""
    directory = tmp_path_factory.mktemp("pki")
    assert main(["tls", "init-ca", str(directory), "--cluster-id", CLUSTER]) == 0
    for node_id in (1, 2, 3):
        assert main(["tls", "node", str(node_id), "--dir", str(directory)]) == 0
    assert main(["tls", "client", "alice", "--dir", str(directory)]) == 0
    assert main(["tls", "client", "root", "--admin", "--dir", str(directory)]) == 0
    p = Pki(directory)
    now = datetime.datetime.now(datetime.timezone.utc)
    p.leaf("expired-node-2", identity.node(CLUSTER, 2),
           not_before=now - datetime.timedelta(days=30),
           not_after=now - datetime.timedelta(days=1))
    p.leaf("other-node-2", identity.node("other-cluster", 2))
    return p


def test_the_tool_writes_keys_private_and_never_overwrites(pki: Pki,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    for stem in ("ca", "node-1", "client-alice", "admin-root"):
        assert stat.S_IMODE(os.stat(pki.dir / f"{stem}-key.pem").st_mode) == 0o600
    capsys.readouterr()
    assert main(["tls", "node", "1", "--dir", str(pki.dir)]) == 4
    assert "exists already" in capsys.readouterr().err
    assert main(["tls", "init-ca", str(pki.dir), "--cluster-id", "x"]) == 4
    assert "holds a CA already" in capsys.readouterr().err


def test_the_tool_names_the_identity_and_the_hosts(pki: Pki) -> None:
    from cryptography import x509

    def sans(stem: str) -> list[str]:
        cert = x509.load_pem_x509_certificate((pki.dir / f"{stem}.pem").read_bytes())
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return [str(getattr(name, "value", name)) for name in ext]

    assert sans("node-3") == [f"raftpy://{CLUSTER}/node/3", "127.0.0.1", "localhost"]
    assert sans("client-alice") == [f"raftpy://{CLUSTER}/client/alice"]
    assert sans("admin-root") == [f"raftpy://{CLUSTER}/admin/root"]


def test_the_tool_refuses_a_missing_ca_and_bad_names(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tls", "node", "1", "--dir", str(tmp_path)]) == 4
    assert "ca.pem" in capsys.readouterr().err
    assert main(["tls", "init-ca", str(tmp_path), "--cluster-id", "c"]) == 0
    assert main(["tls", "client", "../escape", "--dir", str(tmp_path)]) == 4
    assert "file name" in capsys.readouterr().err
    assert not list(tmp_path.parent.glob("escape*"))


# ---------------------------------------------------------------------- peers on real sockets


async def test_nodes_with_their_own_certificates_talk(pki: Pki) -> None:
    async with cluster(3, start=False) as c:
        ts = {i: await c.start(i, ssl_context=pki.server(f"node-{i}"),
                               client_ssl_context=pki.client(f"node-{i}")) for i in (1, 2, 3)}
        for src in (1, 2, 3):
            for dst in (1, 2, 3):
                if src != dst:
                    ts[src].send(vote(src, dst))
        for dst in (1, 2, 3):
            got = await receive(ts[dst], 2)
            assert sorted(m.src for m in got) == sorted({1, 2, 3} - {dst})
            assert ts[dst].stats()["refused"] == 0


def node_contexts(pki: Pki, stem: str) -> dict[str, ssl.SSLContext]:
    server, client = pki.contexts(stem)
    return {"ssl_context": server, "client_ssl_context": client}


async def test_node_2s_certificate_claiming_to_be_node_3_is_refused_by_both_sides(
        pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="raftpy.transport")
    async with cluster(3, start=False) as c:
        t1 = await c.start(1, **node_contexts(pki, "node-1"))
        impostor = await c.start(3, **node_contexts(pki, "node-2"))
        # The impostor dials node 1 as node 3: node 1 refuses, with a reason both log.
        impostor.send(vote(3, 1))
        # Node 1 dials node 3's address and finds node 2's certificate there.
        t1.send(vote(1, 3))
        await wait_for(lambda: t1.stats()["refused_identity"] >= 1
                       and impostor.stats()["handshake_failures"] >= 1
                       and t1.stats()["handshake_failures"] >= 1)
        assert t1.stats()["frames_received"] == impostor.stats()["frames_received"] == 0
        assert not impostor.connected(1) and not t1.connected(3)
    claim = "the certificate is node 2's, the hello claims node 3"
    assert "node 1: refused connection from 127.0.0.1" in caplog.text
    assert [r for r in caplog.records if claim in r.getMessage()
            and r.getMessage().startswith("node 1: refused")]
    assert [r for r in caplog.records if claim in r.getMessage()
            and r.getMessage().startswith("node 3: ")]  # the dialler's "refused us"
    assert "node 1: 127.0.0.1" in caplog.text
    assert "the server's certificate is node 2's, not node 3's" in caplog.text


@pytest.mark.parametrize("stem", ["client-alice", "admin-root"])
async def test_a_client_certificate_can_never_speak_the_peer_protocol(
        pki: Pki, stem: str) -> None:
    async with cluster(2, start=False) as c:
        t1 = await c.start(1, **node_contexts(pki, "node-1"))
        # By hand: a hello with role peer over a client certificate.
        stream = await trio.open_tcp_stream("127.0.0.1", c.ports[1])
        tls = trio.SSLStream(stream, pki.client(stem), server_hostname="127.0.0.1")
        with pytest.raises(HandshakeRefused, match="cannot speak the peer protocol"):
            await handshake.say_hello(tls, handshake.Hello(CLUSTER, 2), expected_node=1)
        await tls.aclose()
        # And a whole transport running as node 2 on a client certificate.
        t2 = await c.start(2, ssl_context=pki.server("node-2"),
                           client_ssl_context=pki.client(stem))
        t2.send(vote(2, 1))
        await wait_for(lambda: t1.stats()["refused_identity"] >= 2
                       and t2.stats()["handshake_failures"] >= 1)
        assert t1.stats()["frames_received"] == 0


async def test_a_certificate_of_another_cluster_is_refused(pki: Pki) -> None:
    async with cluster(2, start=False) as c:
        t1 = await c.start(1, **node_contexts(pki, "node-1"))
        t2 = await c.start(2, **node_contexts(pki, "other-node-2"))
        t2.send(vote(2, 1))  # node 2 of 'other-cluster' says it belongs to CLUSTER
        t1.send(vote(1, 2))
        await wait_for(lambda: t1.stats()["refused_identity"] >= 1
                       and t2.stats()["handshake_failures"] >= 1
                       and t1.stats()["handshake_failures"] >= 1)
        assert t1.stats()["frames_received"] == t2.stats()["frames_received"] == 0


async def test_an_expired_certificate_is_refused(pki: Pki) -> None:
    async with cluster(2, start=False) as c:
        t1 = await c.start(1, **node_contexts(pki, "node-1"))
        t2 = await c.start(2, **node_contexts(pki, "expired-node-2"))
        t2.send(vote(2, 1))
        await wait_for(lambda: t1.stats()["refused_tls"] >= 1
                       and t2.stats()["connect_failures"] >= 1)
        assert t1.stats()["frames_received"] == 0
        with pytest.raises(trio.BrokenResourceError):  # and the other way round
            await connect_client(f"127.0.0.1:{c.ports[2]}", cluster_id=CLUSTER,
                                 ssl_context=pki.client("client-alice"), timeout=BOUND)


@pytest.mark.parametrize("who", ["no client certificate", "certificate of another CA"])
async def test_a_peer_without_a_valid_client_certificate_is_refused(pki: Pki, who: str) -> None:
    bad_client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=pki.files("ca")[0])
    if who == "certificate of another CA":
        other = trustme.CA()
        other.issue_cert("127.0.0.1").configure_cert(bad_client)
    async with cluster(3, start=False) as c:
        t1 = await c.start(1, **node_contexts(pki, "node-1"))
        t2 = await c.start(2, ssl_context=pki.server("node-2"), client_ssl_context=bad_client)
        t2.send(vote(2, 1))
        await wait_for(lambda: t1.stats()["refused_tls"] >= 1
                       and t2.stats()["connect_failures"] >= 1)
        assert not t2.connected(1)
        assert t1.stats()["frames_received"] == 0
        t3 = await c.start(3, **node_contexts(pki, "node-3"))
        t3.send(vote(3, 1))
        assert await receive(t1) == [vote(3, 1)]


# ---------------------------------------------------------------------- clients on real sockets


async def echo_identity(stream: FramedStream) -> None:
    while await stream.receive() is not None:
        await stream.send(str(stream.identity).encode())


async def test_clients_connect_and_the_handler_learns_who_they_are(pki: Pki) -> None:
    async with cluster(1, start=False) as c:
        await c.start(1, client_handler=echo_identity, **node_contexts(pki, "node-1"))
        address = f"127.0.0.1:{c.ports[1]}"
        for stem, uri in (("client-alice", "client/alice"), ("admin-root", "admin/root"),
                          ("node-2", "node/2")):
            conn = await connect_client(address, cluster_id=CLUSTER, ssl_context=pki.client(stem))
            await conn.send(b"who am I?")
            assert await conn.receive() == f"raftpy://{CLUSTER}/{uri}".encode()
            await conn.aclose()


async def test_plain_tcp_client_on_a_tls_port_is_refused(pki: Pki) -> None:
    async with cluster(1, start=False) as c:
        t1 = await c.start(1, client_handler=echo_identity, **node_contexts(pki, "node-1"))
        address = f"127.0.0.1:{c.ports[1]}"
        with pytest.raises((trio.BrokenResourceError, ProtocolError)):
            await connect_client(address, cluster_id=CLUSTER, timeout=BOUND)
        await wait_for(lambda: t1.stats()["refused_tls"] == 1)
        conn = await connect_client(address, cluster_id=CLUSTER,
                                    ssl_context=pki.client("client-alice"))
        await conn.send(b"still serving")
        assert await conn.receive() == f"raftpy://{CLUSTER}/client/alice".encode()
        await conn.aclose()


async def test_a_client_refuses_a_server_without_a_node_certificate(pki: Pki) -> None:
    # Client and admin certificates carry only the clientAuth key usage, so TLS itself
    # refuses them as servers; the identity check (test_what_a_dialler_accepts_as_a_server)
    # is the second line, for a certificate made by other tools.
    pki.leaf("admin-with-ip", identity.client(CLUSTER, "mallory", admin=True))
    async with cluster(1, start=False) as c:
        await c.start(1, client_handler=echo_identity, **node_contexts(pki, "admin-with-ip"))
        with pytest.raises(trio.BrokenResourceError) as failed:
            await connect_client(f"127.0.0.1:{c.ports[1]}", cluster_id=CLUSTER,
                                 ssl_context=pki.client("client-alice"))
        assert "unsuitable certificate purpose" in str(failed.value.__cause__)


# ---------------------------------------------------------------------- KV authorization

CONFIG = Config(election_timeout_min=0.150, election_timeout_max=0.300)


@asynccontextmanager
async def kv_node(pki: Pki) -> AsyncIterator[tuple[Node, str]]:
    """One KV member (a cluster of one) with mutual TLS on a loopback port."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    machine = SessionStateMachine(KVStore())
    async with open_node(1, {}, state_machine=machine, storage=MemoryStorage(),
                         config=CONFIG, listen=listeners, cluster_id=CLUSTER,
                         client_handler=KVServer(machine).serve_connection,
                         rng=random.Random(1), **node_contexts(pki, "node-1")) as node:
        with trio.fail_after(BOUND):
            while not node.is_leader:
                await trio.sleep(0.01)
        yield node, f"127.0.0.1:{port}"


async def ask(address: str, ctx: ssl.SSLContext, request: dict[str, Any]) -> dict[str, Any]:
    conn = await connect_client(address, cluster_id=CLUSTER, ssl_context=ctx)
    try:
        await conn.send(protocol.encode(request))
        data = await conn.receive()
        assert data is not None
        return protocol.decode_response(data)
    finally:
        await conn.aclose()


ADMIN_REQUESTS = [
    {"op": "transfer", "to": None},
    {"op": "add_member", "id": 9, "address": "127.0.0.1:1", "role": "spare"},
    {"op": "assign", "id": 9, "role": "voter"},
    {"op": "remove", "id": 9},
]


async def test_a_plain_client_may_read_and_write_but_not_administer(pki: Pki) -> None:
    with trio.fail_after(30):
        async with kv_node(pki) as (node, address):
            alice = pki.client("client-alice")
            assert await ask(address, alice, {"op": "put", "key": "k", "value": "v"}) == \
                {"ok": True}
            assert (await ask(address, alice, {"op": "get", "key": "k"}))["value"] == "v"
            assert (await ask(address, alice, {"op": "members"}))["ok"]
            before = (await node.members()).configuration
            for request in ADMIN_REQUESTS:
                response = await ask(address, alice, request)
                assert response["error"] == protocol.FORBIDDEN, request
                assert "client certificate" in response["message"]
            assert (await node.members()).configuration == before
            # Through the client library (what the CLI uses): a clear error, no retry.
            async with KVClient([address], cluster_id=CLUSTER, ssl_context=alice,
                                timeout=BOUND) as client:
                with pytest.raises(RequestFailed) as failed:
                    await client.transfer(None)
                assert failed.value.code == protocol.FORBIDDEN


@pytest.mark.parametrize("stem", ["admin-root", "node-2"])
async def test_admin_and_node_certificates_may_administer(pki: Pki, stem: str) -> None:
    with trio.fail_after(30):
        async with kv_node(pki) as (_, address):
            ctx = pki.client(stem)
            # Each gets past authorization to the node's own verdict on the request.
            assert (await ask(address, ctx, {"op": "remove", "id": 9}))["error"] == \
                protocol.INVALID_CHANGE
            assert (await ask(address, ctx, {"op": "transfer", "to": 5}))["error"] == \
                protocol.INVALID_TARGET


async def test_one_client_identity_cannot_take_every_client_slot(pki: Pki) -> None:
    async with cluster(1, start=False) as c:
        t1 = await c.start(1, client_handler=echo_identity, max_clients_per_identity=2,
                           **node_contexts(pki, "node-1"))
        address = f"127.0.0.1:{c.ports[1]}"
        alice = [await connect_client(address, cluster_id=CLUSTER,
                                      ssl_context=pki.client("client-alice")) for _ in range(2)]
        with pytest.raises(HandshakeRefused, match="too many client connections for "
                           f"raftpy://{CLUSTER}/client/alice"):
            await connect_client(address, cluster_id=CLUSTER,
                                 ssl_context=pki.client("client-alice"))
        root = await connect_client(address, cluster_id=CLUSTER,
                                    ssl_context=pki.client("admin-root"))
        await root.send(b"?")
        assert await root.receive() == f"raftpy://{CLUSTER}/admin/root".encode()
        assert t1.stats()["refused_busy"] == 1
        for conn in [*alice, root]:
            await conn.aclose()
