"""Who is at the other end of a TLS connection, read from its certificate.

Every certificate the cluster CA issues names one identity in a URI subject
alternative name (``docs/security.md``)::

    raftpy://CLUSTER/node/ID       a member: node ID of cluster CLUSTER
    raftpy://CLUSTER/client/NAME   a client: reads and writes
    raftpy://CLUSTER/admin/NAME    an administrator: also transfers and membership changes

CLUSTER and NAME are percent-encoded (:func:`urllib.parse.quote`), ID is a
positive decimal integer. With TLS on, a connection whose certificate names no
such identity, or names more than one, is refused.

What each may do (:func:`check_hello`, :func:`check_server`, :func:`may_administer`):

* only a ``node`` certificate speaks the peer protocol, and only as the node id
  it names, in the cluster it names;
* every identity of the cluster may open a client connection; a ``node`` or an
  ``admin`` may also ask for transfers and membership changes (a member hands
  over and joins through the client protocol);
* a client accepts a server only when its certificate is a ``node`` of the
  cluster (and, when dialling a known member, that very node).

The functions are plain and take the ``getpeercert()`` dictionary, so they are
tested without sockets; :func:`of_stream` reads it from a ``trio.SSLStream``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

SCHEME = "raftpy"
KIND_NODE = "node"
KIND_CLIENT = "client"
KIND_ADMIN = "admin"
KINDS = (KIND_NODE, KIND_CLIENT, KIND_ADMIN)


@dataclass(frozen=True, slots=True)
class Identity:
    """The identity one certificate names."""

    cluster_id: str
    kind: str
    """``node``, ``client`` or ``admin``."""
    name: str
    """The node id in decimal for a node, the client's name otherwise."""

    @property
    def node_id(self) -> int | None:
        """The member id of a node identity, ``None`` for a client or admin."""
        return int(self.name) if self.kind == KIND_NODE else None

    @property
    def uri(self) -> str:
        """The URI subject alternative name that carries this identity."""
        return f"{SCHEME}://{quote(self.cluster_id, safe='')}/{self.kind}/" \
               f"{quote(self.name, safe='')}"

    def __str__(self) -> str:
        return self.uri


def node(cluster_id: str, node_id: int) -> Identity:
    """The identity of member ``node_id``."""
    if node_id < 1:
        raise ValueError(f"a node id is a positive integer, not {node_id}")
    return Identity(cluster_id, KIND_NODE, str(node_id))


def client(cluster_id: str, name: str, *, admin: bool = False) -> Identity:
    """The identity of a client (an administrator with ``admin``)."""
    if not name:
        raise ValueError("a client needs a name")
    return Identity(cluster_id, KIND_ADMIN if admin else KIND_CLIENT, name)


def parse_uri(uri: str) -> Identity:
    """The identity in a ``raftpy://CLUSTER/KIND/NAME`` URI; ``ValueError`` if it is not one."""
    prefix = f"{SCHEME}://"
    if not uri.startswith(prefix):
        raise ValueError(f"not a {SCHEME} URI: {uri!r:.80}")
    parts = uri[len(prefix):].split("/")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"expected {SCHEME}://CLUSTER/KIND/NAME, got {uri!r:.80}")
    cluster_id, kind, name = unquote(parts[0]), parts[1], unquote(parts[2])
    if kind not in KINDS:
        raise ValueError(f"unknown identity kind {kind!r:.20} (expected {', '.join(KINDS)})")
    if kind == KIND_NODE and not (name.isdigit() and name.isascii() and int(name) >= 1
                                  and str(int(name)) == name):
        raise ValueError(f"a node identity names a positive integer, not {name!r:.20}")
    return Identity(cluster_id, kind, name)


def of_certificate(cert: dict[str, Any] | None) -> Identity:
    """The one raftpy identity in a ``getpeercert()`` dictionary.

    Raises ``ValueError`` (with a reason fit for a refusal) when the certificate
    names none, more than one, or a malformed one."""
    if not cert:
        raise ValueError("no peer certificate")
    uris = [value for kind, value in cert.get("subjectAltName", ())
            if kind == "URI" and isinstance(value, str) and value.startswith(f"{SCHEME}:")]
    if not uris:
        raise ValueError(f"the certificate names no {SCHEME}:// identity")
    if len(uris) > 1:
        raise ValueError(f"the certificate names {len(uris)} {SCHEME}:// identities, not one")
    return parse_uri(uris[0])


def of_stream(stream: Any) -> Identity:
    """The identity of the other side of a TLS stream whose handshake is done.

    ``stream`` is a ``trio.SSLStream`` (anything with ``getpeercert()``, which the
    SSLStream forwards to its ``ssl.SSLObject``). ``ValueError`` as in
    :func:`of_certificate`."""
    getpeercert = getattr(stream, "getpeercert", None)
    if getpeercert is None:
        raise ValueError("not a TLS connection")
    cert: dict[str, Any] | None = getpeercert()
    return of_certificate(cert)


def check_hello(identity: Identity, *, cluster_id: str, role: str,
                node_id: int | None) -> str | None:
    """Why the accepting side must refuse a hello claiming ``role`` (``peer`` or
    ``client``) and ``node_id`` over a connection authenticated as ``identity``;
    ``None`` to go on."""
    if identity.cluster_id != cluster_id:
        return f"the certificate is for cluster {identity.cluster_id!r:.80}, not {cluster_id!r}"
    if role == "peer":
        if identity.kind != KIND_NODE:
            return f"a {identity.kind} certificate ({identity.name!r:.40}) cannot speak " \
                   "the peer protocol"
        if identity.node_id != node_id:
            return f"the certificate is node {identity.node_id}'s, the hello claims " \
                   f"node {node_id}"
    return None


def check_server(identity: Identity, *, cluster_id: str,
                 expected_node: int | None) -> str | None:
    """Why the dialling side must refuse the server authenticated as ``identity``
    (``expected_node``: the member it meant to reach, if it knows); ``None`` to go on."""
    if identity.cluster_id != cluster_id:
        return f"the server's certificate is for cluster {identity.cluster_id!r:.80}, " \
               f"not {cluster_id!r}"
    if identity.kind != KIND_NODE:
        return f"the server presents a {identity.kind} certificate, not a node's"
    if expected_node is not None and identity.node_id != expected_node:
        return f"the server's certificate is node {identity.node_id}'s, " \
               f"not node {expected_node}'s"
    return None


def may_administer(identity: Identity | None) -> bool:
    """Whether ``identity`` may ask for transfers and membership changes.

    ``None`` (no TLS: every connection is trusted, see ``docs/security.md``) may."""
    return identity is None or identity.kind in (KIND_NODE, KIND_ADMIN)
