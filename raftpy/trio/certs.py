"""Issuing the cluster's certificates (``raftpy tls ...``; needs ``cryptography``:
``pip install 'raftpy[tls]'``).

A directory holds one cluster's CA and the certificates issued from it::

    ca.pem, ca-key.pem               the CA (its subject's O is the cluster id)
    node-ID.pem, node-ID-key.pem     member ID: raftpy://CLUSTER/node/ID + its hosts
    client-NAME.pem, ...-key.pem     a client: raftpy://CLUSTER/client/NAME
    admin-NAME.pem, ...-key.pem      an administrator: raftpy://CLUSTER/admin/NAME

These are the files ``--tls-ca``, ``--tls-cert`` and ``--tls-key`` take. Keys
are ECDSA P-256, written with mode 0600; nothing is overwritten. The identity
format is :mod:`raftpy.trio.identity`'s.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from raftpy.trio import identity as _identity
from raftpy.trio.identity import Identity

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
DEFAULT_HOSTS = ("127.0.0.1", "localhost")
"""The names a node certificate is valid for unless told otherwise (dialers check them)."""


@dataclass(frozen=True, slots=True)
class Issued:
    """Where a certificate and its key were written."""

    cert: Path
    key: Path


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: never overwrite a key or certificate someone relies on.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)  # whatever the umask


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(cluster_id: str, *, days: float = 3650) -> tuple[x509.Certificate,
                                                              ec.EllipticCurvePrivateKey]:
    """A self-signed CA certificate for ``cluster_id`` and its key (in memory)."""
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_id),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"raftpy CA of {cluster_id}")])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def make_leaf(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, who: Identity,
              *, hosts: Sequence[str] = (), not_before: datetime.datetime | None = None,
              not_after: datetime.datetime | None = None, days: float = 365,
              ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate naming ``who`` (and ``hosts``: IP addresses or DNS names, which a
    node needs because dialers check them), signed by the CA, and its key."""
    key = _new_key()
    cert = certify(ca_cert, ca_key, who, key.public_key(), hosts=hosts, not_before=not_before,
                   not_after=not_after, days=days)
    return cert, key


def certify(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, who: Identity,
            public_key: Any, *, hosts: Sequence[str] = (),
            not_before: datetime.datetime | None = None,
            not_after: datetime.datetime | None = None, days: float = 365,
            ) -> x509.Certificate:
    """A certificate for ``public_key`` (someone else's: a joining node sends it in a
    CSR) naming ``who`` and ``hosts``, signed by the CA."""
    now = _now()
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(who.uri)]
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if who.kind == _identity.KIND_NODE:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, who.cluster_id),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{who.kind} {who.name}"[:64])]))
            .issuer_name(ca_cert.subject).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - datetime.timedelta(minutes=5))
            .not_valid_after(not_after or now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))


def init_ca(directory: str | os.PathLike[str], cluster_id: str, *,
            days: float = 3650) -> Issued:
    """Create ``directory`` (if needed) and a new CA for ``cluster_id`` in it."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    cert, key = make_ca(cluster_id, days=days)
    issued = Issued(path / CA_CERT, path / CA_KEY)
    if issued.cert.exists() or issued.key.exists():
        raise FileExistsError(f"{path} holds a CA already ({CA_CERT}, {CA_KEY})")
    _write(issued.key, _key_pem(key), 0o600)
    _write(issued.cert, _cert_pem(cert), 0o644)
    return issued


def load_ca(directory: str | os.PathLike[str]) -> tuple[x509.Certificate,
                                                      ec.EllipticCurvePrivateKey, str]:
    """The CA certificate, its key and the cluster id it was made for."""
    path = Path(directory)
    cert = x509.load_pem_x509_certificate((path / CA_CERT).read_bytes())
    key = serialization.load_pem_private_key((path / CA_KEY).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path / CA_KEY} is not an EC key made by raftpy tls init-ca")
    (org,) = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME) or (None,)
    if org is None:
        raise ValueError(f"{path / CA_CERT} names no cluster (subject O)")
    return cert, key, str(org.value)


def issue(directory: str | os.PathLike[str], who: Identity, *, hosts: Sequence[str] = (),
          days: float = 365) -> Issued:
    """Issue a certificate for ``who`` from the CA in ``directory``, written next to it."""
    path = Path(directory)
    ca_cert, ca_key, cluster_id = load_ca(path)
    if who.cluster_id != cluster_id:
        raise ValueError(f"the CA in {path} is cluster {cluster_id!r}'s, not "
                         f"{who.cluster_id!r}'s")
    cert, key = make_leaf(ca_cert, ca_key, who, hosts=hosts, days=days)
    stem = f"{who.kind}-{who.name}"
    if not stem.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ValueError(f"{who.name!r} does not make a file name (letters, digits, -_.)")
    issued = Issued(path / f"{stem}.pem", path / f"{stem}-key.pem")
    if issued.cert.exists() or issued.key.exists():
        raise FileExistsError(f"{issued.cert} or {issued.key} exists already")
    _write(issued.key, _key_pem(key), 0o600)
    _write(issued.cert, _cert_pem(cert), 0o644)
    return issued


def issue_node(directory: str | os.PathLike[str], node_id: int, *,
               hosts: Sequence[str] = DEFAULT_HOSTS, days: float = 365) -> Issued:
    """``raftpy tls node ID``: member ``node_id``'s certificate, valid for ``hosts``."""
    _, _, cluster_id = load_ca(directory)
    return issue(directory, _identity.node(cluster_id, node_id), hosts=hosts, days=days)


def issue_client(directory: str | os.PathLike[str], name: str, *, admin: bool = False,
                 days: float = 365) -> Issued:
    """``raftpy tls client NAME [--admin]``: a client's (administrator's) certificate."""
    _, _, cluster_id = load_ca(directory)
    return issue(directory, _identity.client(cluster_id, name, admin=admin), days=days)


def fingerprint(cert: x509.Certificate) -> str:
    """The SHA-256 of ``cert``'s DER form, in hex: what a join token pins."""
    return cert.fingerprint(hashes.SHA256()).hex()


def load_issuer(ca_file: str | os.PathLike[str], key_file: str | os.PathLike[str]
                ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, bytes]:
    """The CA certificate in ``ca_file`` (a bundle during a rotation) that ``key_file``
    belongs to, the key, and the whole bundle (PEM): ``raftpy serve --tls-ca-key``."""
    bundle = Path(ca_file).read_bytes()
    key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_file} is not an EC key made by raftpy tls init-ca")
    mine = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    for cert in x509.load_pem_x509_certificates(bundle):
        if cert.public_key().public_bytes(
                serialization.Encoding.DER,
                serialization.PublicFormat.SubjectPublicKeyInfo) == mine:
            return cert, key, bundle
    raise ValueError(f"no certificate in {ca_file} belongs to the key in {key_file}")
