"""Join tokens: a new node obtains its node certificate from the cluster, LXD-style.

``raftpy add ID ADDRESS --token`` (an admin) adds member ID and prints a one-time
token; ``raftpy serve --id ID --join-token TOKEN --tls-ca CA --tls-cert CERT
--tls-key KEY`` on the new machine obtains its certificate with it, writes the three
files and serves (``docs/security.md``, "Join tokens")::

    raftpy-join-1.<base64url(msgpack {cluster, id, ca, secret, expires, addresses})>

* ``ca`` pins the cluster CA (SHA-256 of its DER form); ``secret`` is 32 random
  bytes; the cluster keeps only its SHA-256 (the *digest*), recorded through the
  log with the member id and the expiry (``raftpy.kv.statemachine.join_token_command``).
* The new node connects to one of ``addresses`` with TLS but no certificate (hello
  role ``join``), asks for the CA bundle, checks that it holds the pinned CA and
  that the member's own certificate is a node certificate signed by it, and only
  then sends the secret and a CSR (its key never leaves it).
* Members started with ``--tls-ca-key`` serve these requests
  (:class:`CertificateIssuer`): the token is spent through the log
  (``raftpy.kv.statemachine.join_use_command``, forwarded to the leader by a
  follower), so it works once whichever member is asked, and only before it
  expires and for the member id it names; then the member signs a certificate
  naming ``raftpy://CLUSTER/node/ID`` for the CSR's key. Members without the key
  refuse the hello ("issues no certificates") and the new node asks the next.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import logging
import secrets
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import trio

from raftpy.errors import HandshakeRefused, NotLeader, ProtocolError, RaftError
from raftpy.trio import handshake, identity
from raftpy.trio.framing import FramedStream
from raftpy.trio.runtime import Node
from raftpy.trio.transport import _why, close_quietly, open_tcp, peer_address

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "raftpy-join-1."
SECRET_BYTES = 32
MAX_HOSTS = 16
_MAX_REQUEST = 64 * 1024


_NO_LEADER = "no leader known: try again"


class JoinFailed(RaftError):
    """No member of the token's addresses gave this node a certificate."""


class JoinRefused(JoinFailed):
    """A member refused the token itself (unknown, used, expired, another node's):
    asking another member cannot help."""


@dataclass(frozen=True, slots=True)
class JoinToken:
    """What a join token carries (:meth:`encode` / :meth:`decode`)."""

    cluster_id: str
    node_id: int
    ca_fingerprint: str
    """SHA-256 of the cluster CA certificate's DER form, hex."""
    secret: bytes
    expires: float
    """Unix time."""
    addresses: tuple[str, ...]
    """Members to ask (``host:port``)."""

    @property
    def digest(self) -> str:
        """The secret's SHA-256 (hex): all the cluster keeps of it."""
        return hashlib.sha256(self.secret).hexdigest()

    def encode(self) -> str:
        """The token as one printable word."""
        packed = msgpack.packb({"cluster": self.cluster_id, "id": self.node_id,
                                "ca": self.ca_fingerprint, "secret": self.secret,
                                "expires": self.expires, "addresses": list(self.addresses)},
                               use_bin_type=True)
        return TOKEN_PREFIX + base64.urlsafe_b64encode(packed).decode("ascii").rstrip("=")

    @classmethod
    def decode(cls, text: str) -> JoinToken:
        """Parse a token; ``ValueError`` saying what is wrong with it."""
        text = text.strip()
        if not text.startswith(TOKEN_PREFIX):
            raise ValueError(f"a join token starts with {TOKEN_PREFIX!r}")
        body = text[len(TOKEN_PREFIX):]
        try:
            fields = msgpack.unpackb(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)),
                                     raw=False)
        except Exception as exc:
            raise ValueError(f"not a join token (damaged or cut short?): {exc}") from None
        if not isinstance(fields, dict):
            raise ValueError("not a join token")
        try:
            token = cls(cluster_id=fields["cluster"], node_id=fields["id"],
                        ca_fingerprint=fields["ca"], secret=fields["secret"],
                        expires=fields["expires"], addresses=tuple(fields["addresses"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a join token: {exc}") from None
        if not (isinstance(token.cluster_id, str) and type(token.node_id) is int
                and token.node_id >= 1 and isinstance(token.ca_fingerprint, str)
                and isinstance(token.secret, bytes) and len(token.secret) == SECRET_BYTES
                and isinstance(token.expires, float) and token.addresses
                and all(isinstance(a, str) for a in token.addresses)):
            raise ValueError("not a join token: a field has the wrong type")
        return token


def new_token(cluster_id: str, node_id: int, ca_fingerprint: str, addresses: Sequence[str],
              *, expires: float) -> JoinToken:
    """A token with a fresh random secret (record its :attr:`~JoinToken.digest` in the
    cluster before handing it out: :meth:`raftpy.kv.client.KVClient.register_join_token`)."""
    return JoinToken(cluster_id, node_id, ca_fingerprint, secrets.token_bytes(SECRET_BYTES),
                     float(expires), tuple(addresses))


# ---------------------------------------------------------------------- the member's side

UseToken = Callable[[Node, str, int], Awaitable[str]]
"""Spends a token (digest) for a member id: ``"ok"`` or why not; raises
:class:`~raftpy.errors.NotLeader` where only the leader can
(``raftpy.kv.server.KVServer.use_join_token``)."""


class CertificateIssuer:
    """The ``join_handler`` of a member holding the CA key (``--tls-ca-key``)."""

    def __init__(self, ca_cert: Any, ca_key: Any, ca_bundle: bytes, *, cluster_id: str,
                 use_token: UseToken, client_ssl_context: ssl.SSLContext | None,
                 days: float = 365) -> None:
        self.ca_cert = ca_cert
        self.ca_key = ca_key
        self.ca_bundle = ca_bundle
        self.cluster_id = cluster_id
        self.use_token = use_token
        self.client_ssl_context = client_ssl_context
        """This member's own client context, to ask the leader to spend a token."""
        self.days = days

    async def serve(self, node: Node, stream: FramedStream) -> None:
        """Answer one joining node: the CA bundle, then its certificate or a refusal."""
        stream.decoder.max_frame = _MAX_REQUEST
        if await _receive(stream) != {"op": "ca"}:
            raise ProtocolError("a joining node first asks for the CA")
        await stream.send(msgpack.packb({"ok": True, "ca": self.ca_bundle.decode()}))
        request = await _receive(stream)
        node_id, secret, csr_pem, hosts = _join_request(request)
        from cryptography import x509

        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode())
        except ValueError as exc:
            raise ProtocolError(f"join request: not a CSR: {exc}") from None
        if not csr.is_signature_valid:
            raise ProtocolError("join request: the CSR's signature does not verify")
        result = await self._spend(node, hashlib.sha256(secret).hexdigest(), node_id)
        if result != "ok":
            logger.warning("node %d: refused a certificate to %s for node %d: %s", node.id,
                           stream.peer, node_id, result)
            await stream.send(msgpack.packb({"ok": False, "error": result,
                                             "retry": result == _NO_LEADER}))
            return
        from raftpy.trio import certs

        cert = certs.certify(self.ca_cert, self.ca_key, identity.node(self.cluster_id, node_id),
                             csr.public_key(), hosts=hosts, days=self.days)
        logger.warning("node %d: issued a certificate to node %d (%s) with a join token",
                       node.id, node_id, stream.peer)
        await stream.send(msgpack.packb({"ok": True, "cert": certs._cert_pem(cert).decode()}))

    async def _spend(self, node: Node, digest: str, node_id: int) -> str:
        try:
            return await self.use_token(node, digest, node_id)
        except NotLeader as exc:
            if exc.leader_address is None:
                return _NO_LEADER
            from raftpy.kv.client import KVClient

            async with KVClient([exc.leader_address], cluster_id=self.cluster_id,
                                ssl_context=self.client_ssl_context, timeout=10.0) as client:
                return await client.use_join_token(node_id, digest)


async def _receive(stream: FramedStream) -> Any:
    payload = await stream.receive()
    if payload is None:
        raise trio.BrokenResourceError("the joining node hung up")
    try:
        return msgpack.unpackb(payload, raw=False)
    except Exception as exc:
        raise ProtocolError(f"join request: not msgpack: {exc}") from None


def _join_request(request: Any) -> tuple[int, bytes, str, list[str]]:
    if not isinstance(request, dict) or request.get("op") != "join":
        raise ProtocolError("expected a join request")
    node_id, secret = request.get("id"), request.get("secret")
    csr, hosts = request.get("csr"), request.get("hosts")
    if type(node_id) is not int or not 1 <= node_id < 2**63:
        raise ProtocolError("join request: 'id' must be a positive integer")
    if not isinstance(secret, bytes) or len(secret) != SECRET_BYTES:
        raise ProtocolError(f"join request: 'secret' must be {SECRET_BYTES} bytes")
    if not isinstance(csr, str):
        raise ProtocolError("join request: 'csr' must be a PEM string")
    if not (isinstance(hosts, list) and len(hosts) <= MAX_HOSTS
            and all(isinstance(h, str) and _valid_host(h) for h in hosts)):
        raise ProtocolError(f"join request: 'hosts' must be at most {MAX_HOSTS} host names "
                            "or addresses")
    return node_id, secret, csr, hosts


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return 0 < len(host) <= 253 and all(c.isalnum() or c in "-._" for c in host) \
            and host.isascii()


# ---------------------------------------------------------------------- the new node's side

@dataclass(frozen=True, slots=True)
class Obtained:
    """What a joining node received: PEM bytes ready to write."""

    ca: bytes
    cert: bytes
    key: bytes


async def obtain_certificate(token: JoinToken, *, hosts: Sequence[str] = (),
                             timeout: float = 30.0) -> Obtained:
    """Ask the token's members, in turn, for this node's certificate.

    Raises :class:`JoinRefused` as soon as a member refuses the token itself,
    :class:`JoinFailed` when no member could be asked (unreachable, no CA key, not
    the pinned CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from raftpy.trio import certs

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME,
                                                       f"node {token.node_id}")]))
           .sign(key, hashes.SHA256()))
    csr_pem = csr.public_bytes(serialization.Encoding.PEM).decode()
    problems = []
    for address in token.addresses:
        try:
            with trio.fail_after(timeout):
                ca, cert = await _ask(address, token, csr_pem, list(hosts))
        except JoinRefused:
            raise
        except (OSError, trio.BrokenResourceError, trio.TooSlowError, ProtocolError,
                JoinFailed) as exc:
            if isinstance(exc, HandshakeRefused):
                why = exc.reason
            elif isinstance(exc, trio.BrokenResourceError):
                # TLS refused: a member without the CA key requires a certificate.
                why = f"{_why(exc)} (is it a member without --tls-ca-key?)"
            else:
                why = str(exc) or type(exc).__name__
            logger.warning("join: %s gave no certificate: %s", address, why)
            problems.append(f"{address}: {why}")
            continue
        return Obtained(ca=ca, cert=cert, key=certs._key_pem(key))
    raise JoinFailed("no member gave a certificate (" + "; ".join(problems) + ")")


async def _ask(address: str, token: JoinToken, csr_pem: str,
               hosts: list[str]) -> tuple[bytes, bytes]:
    from cryptography import x509

    from raftpy.trio import certs

    addr = peer_address(address)
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    # Not verified by the TLS library: the CA is not known yet. The member's
    # certificate is checked against the pinned CA below, before the secret goes out.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    raw = await open_tcp(0, addr)
    try:
        stream = trio.SSLStream(raw, context, server_hostname=addr.host)
        await stream.do_handshake()
        leaf_der = stream.getpeercert(binary_form=True)
        framed = await handshake.say_hello(stream, handshake.Hello(
            cluster_id=token.cluster_id, node_id=token.node_id, role=handshake.ROLE_JOIN),
            expected_node=None, name=address)
        framed.decoder.max_frame = _MAX_REQUEST
        await framed.send(msgpack.packb({"op": "ca"}))
        reply = await _receive(framed)
        if not isinstance(reply, dict) or not isinstance(reply.get("ca"), str):
            raise ProtocolError("no CA in the answer")
        bundle = reply["ca"].encode()
        pinned = [c for c in x509.load_pem_x509_certificates(bundle)
                  if certs.fingerprint(c) == token.ca_fingerprint]
        if not pinned or leaf_der is None:
            raise JoinFailed("its CA is not the one the token pins")
        leaf = x509.load_der_x509_certificate(leaf_der)
        try:
            leaf.verify_directly_issued_by(pinned[0])
        except Exception:
            raise JoinFailed("its certificate is not signed by the CA the token pins") \
                from None
        reason = identity.check_server(_identity_of(leaf), cluster_id=token.cluster_id,
                                       expected_node=None)
        if reason is not None:
            raise JoinFailed(reason)
        await framed.send(msgpack.packb({"op": "join", "id": token.node_id,
                                         "secret": token.secret, "csr": csr_pem,
                                         "hosts": hosts}, use_bin_type=True))
        answer = await _receive(framed)
        if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
            raise ProtocolError("malformed answer to the join request")
        if not answer["ok"]:
            if answer.get("retry") is True:
                # (an election runs: the token is unspent, another member may do)
                raise JoinFailed(str(answer.get("error")))
            raise JoinRefused(str(answer.get("error")))
        cert_pem = str(answer.get("cert")).encode()
        cert = x509.load_pem_x509_certificate(cert_pem)
        cert.verify_directly_issued_by(pinned[0])
        got = _identity_of(cert)
        if got != identity.node(token.cluster_id, token.node_id):
            raise JoinFailed(f"it issued a certificate for {got}")
        return bundle, cert_pem
    finally:
        await close_quietly(raw)


def _identity_of(cert: Any) -> identity.Identity:
    from cryptography import x509

    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names = []
    uris = [("URI", u) for u in names.get_values_for_type(x509.UniformResourceIdentifier)] \
        if names else []
    try:
        return identity.of_certificate({"subjectAltName": tuple(uris)})
    except ValueError as exc:
        raise JoinFailed(str(exc)) from None
