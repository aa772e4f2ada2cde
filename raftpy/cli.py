"""The ``raftpy`` command: run a key-value server, or talk to a cluster of them.

    raftpy serve --id 1 --listen 127.0.0.1:7001 --data-dir /var/lib/raftpy/1 \\
                 --bootstrap --peer 2=127.0.0.1:7002 --peer 3=127.0.0.1:7003
    raftpy serve --id 4 --listen 127.0.0.1:7004 --data-dir /var/lib/raftpy/4 \\
                 --join 127.0.0.1:7001 [--role spare|standby|voter]
    raftpy put KEY VALUE | get KEY | delete KEY | status | transfer [--to ID]
    raftpy members [--json] | add ID HOST:PORT [--role R] | assign ID ROLE | remove ID
    raftpy tls init-ca DIR --cluster-id ID | node ID [--host H] | client NAME [--admin]

A new member's data directory starts empty: ``--bootstrap`` writes the initial
configuration (this member and every ``--peer``) into it, ``--join`` asks the
cluster to add it. Once the directory holds state, membership comes from its log:
``--bootstrap``, ``--peer`` and ``--join`` are then ignored (with a warning). On
SIGTERM/SIGINT a voter hands over first (a replacement is promoted, leadership
moves away) unless ``--no-handover``; a second signal stops at once.

Client commands find the cluster through ``--cluster HOST:PORT,...`` or the
``RAFTPY_CLUSTER`` environment variable, and may talk to any member.

Exit codes (stable, for scripts):
    0  success
    1  the key does not exist (get, delete)
    2  usage error (bad or missing flags)
    3  cluster unavailable: unreachable, no leader, or no answer in time
    4  the request failed for another reason (transfer failed, invalid target,
       a write whose outcome is unknown because its session expired, server could
       not start: address in use, unusable data directory...)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import ssl
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from raftpy.config import Config
from raftpy.errors import ConfigError, StorageError
from raftpy.storage.file import FileStorage

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_FAILED = 4

ENV_CLUSTER = "RAFTPY_CLUSTER"
ENV_CLUSTER_ID = "RAFTPY_CLUSTER_ID"

logger = logging.getLogger("raftpy.cli")


# ---------------------------------------------------------------------- argument types

def _address(text: str) -> str:
    from raftpy.trio.runtime import parse_address

    try:
        host, port = parse_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}") from None
    return f"{host}:{port}"


def _peer(text: str) -> tuple[int, str]:
    node_id, sep, address = text.partition("=")
    if not sep or not node_id.isdigit() or int(node_id) < 1:
        raise argparse.ArgumentTypeError(f"expected ID=HOST:PORT (ID a positive integer), "
                                         f"got {text!r}")
    return int(node_id), _address(address)


def _node_id(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a node id is a positive integer, got {text!r}")
    return int(text)


def _members(text: str) -> list[str]:
    members = [_address(part.strip()) for part in text.split(",") if part.strip()]
    if not members:
        raise argparse.ArgumentTypeError("expected HOST:PORT[,HOST:PORT...]")
    return members


def _role(text: str) -> str:
    if text.lower() not in ("voter", "standby", "spare"):
        raise argparse.ArgumentTypeError(f"a role is voter, standby or spare, not {text!r}")
    return text.lower()


def _number(text: str, ok: Callable[[float], bool], expected: str) -> float:
    """``text`` as a float if ``ok`` accepts it, else an argparse error naming
    ``expected`` (text that is no number counts as -1)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def _positive(text: str) -> float:
    # Finite: "nan" or "inf" seconds (or days, or ms) would pass a plain "> 0" and
    # break timers, certificates and elections later, far from the flag.
    return _number(text, lambda v: 0 < v < float("inf"), "a positive number")


def _non_negative(text: str) -> float:
    return _number(text, lambda v: 0 <= v < float("inf"), "a number >= 0")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``raftpy`` command."""
    parser = argparse.ArgumentParser(
        prog="raftpy", description="A replicated key-value store on raftpy.",
        epilog="exit codes: 0 ok, 1 key not found, 2 usage error, 3 cluster unavailable "
               "or timed out, 4 request failed")
    parser.add_argument("--version", action="version", version=f"raftpy {_version()}")
    parser.add_argument("--log-level", default=None,
                        choices=["debug", "info", "warning", "error"],
                        help="default: info for serve, warning for the other commands")
    parser.add_argument("--log-format", default="text", choices=["text", "json"],
                        help="text (key=value fields) or json (one object per line)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    tls = argparse.ArgumentParser(add_help=False)
    group = tls.add_argument_group("mutual TLS (all three or none)")
    group.add_argument("--tls-ca", metavar="PEM", help="CA certificate(s) to trust")
    group.add_argument("--tls-cert", metavar="PEM", help="this side's certificate chain")
    group.add_argument("--tls-key", metavar="PEM", help="this side's private key")

    cluster_id = argparse.ArgumentParser(add_help=False)
    cluster_id.add_argument(
        "--cluster-id", default=os.environ.get(ENV_CLUSTER_ID, "raftpy"),
        help=f"cluster name checked in every handshake (env {ENV_CLUSTER_ID}; "
             "default 'raftpy')")

    serve = sub.add_parser("serve", parents=[tls, cluster_id], help="run one member",
                           description="Run one member of the cluster until SIGINT/SIGTERM.")
    serve.add_argument("--id", type=_node_id, required=True, help="this member's id")
    serve.add_argument("--listen", type=_address, required=True, metavar="HOST:PORT",
                       help="address for peers and clients")
    serve.add_argument("--client-listen", type=_address, default=None, metavar="HOST:PORT",
                       help="a separate address for clients: --listen then admits peers "
                            "only, this one clients only (firewall them apart)")
    serve.add_argument("--peer", type=_peer, action="append", default=[],
                       metavar="ID=HOST:PORT",
                       help="another initial member, with --bootstrap (repeat for each)")
    start = serve.add_mutually_exclusive_group()
    start.add_argument("--bootstrap", action="store_true",
                       help="start a new cluster: write this member and the --peer members "
                            "as the first configuration (an empty data dir only)")
    start.add_argument("--join-token", default=None, metavar="TOKEN",
                       help="join with a token from `raftpy add ID ADDRESS --token`: obtain "
                            "this member's certificate from the cluster and write it, the "
                            "key and the CA to --tls-cert, --tls-key and --tls-ca (unless "
                            "all three exist already: a restart)")
    start.add_argument("--join", type=_members, default=None, metavar="HOST:PORT,...",
                       help="ask the cluster at these members to add this one (an empty "
                            "data dir only)")
    serve.add_argument("--role", type=_role, default=None,
                       help="with --join: the role to join as (voter, standby; default "
                            "spare)")
    serve.add_argument("--advertise", type=_address, default=None, metavar="HOST:PORT",
                       help="the address other members reach this one at (default: --listen)")
    serve.add_argument("--no-handover", action="store_true",
                       help="on SIGTERM/SIGINT stop at once, without handing over")
    serve.add_argument("--handover-timeout", type=_positive, default=10.0, metavar="SECONDS",
                       help="give up handing over after this long (default 10)")
    roles = serve.add_argument_group(
        "automatic roles (off unless --voters; give every member the same targets)")
    roles.add_argument("--voters", type=_count, default=None, metavar="N",
                       help="the leader keeps N online voters: it demotes offline voters "
                            "and standbys to spare and promotes standbys, then spares")
    roles.add_argument("--standbys", type=_count, default=None, metavar="M",
                       help="... and M online standbys (default 0)")
    roles.add_argument("--spare-retry", type=_positive, default=30.0, metavar="SECONDS",
                       help="a spare whose promotion failed, or demoted for being offline, "
                            "is not promoted again for this long (default 30)")
    serve.add_argument("--tls-ca-key", default=None, metavar="PEM",
                       help="the cluster CA's key: this member then issues certificates "
                            "to nodes joining with a token (docs/security.md)")
    serve.add_argument("--data-dir", required=True, help="where this member keeps its state")
    serve.add_argument("--metrics", type=_address, default=None, metavar="HOST:PORT",
                       help="serve Prometheus metrics at http://HOST:PORT/metrics "
                            "(needs the raftpy[metrics] extra)")
    serve.add_argument("--election-timeout-ms", type=_positive, default=150.0, metavar="MS",
                       help="minimum election timeout (the maximum is twice it; default 150)")
    serve.add_argument("--early-pre-vote", action="store_true",
                       help="a follower that loses every connection to its leader (and "
                            "one reconnect) starts a pre-vote at once instead of waiting "
                            "out the election timeout: failover after a crash in "
                            "milliseconds (off by default; docs/operations.md)")
    serve.add_argument("--inline-save-budget-ms", type=_non_negative, default=2.0,
                       metavar="MS",
                       help="while a follower's recent saves took at most MS, save small "
                            "batches on the event loop instead of a worker thread (faster "
                            "elections and transfers); 0 turns it off (default 2)")
    serve.add_argument("--snapshot-every", type=int, default=10000, metavar="N",
                       help="compact the log every N applied entries (default 10000)")

    client = argparse.ArgumentParser(add_help=False, parents=[tls, cluster_id])
    client.add_argument(
        "--cluster", type=_members, default=None, metavar="HOST:PORT,...",
        help=f"members to contact (env {ENV_CLUSTER})")
    client.add_argument("--timeout", type=_positive, default=10.0, metavar="SECONDS",
                        help="give up after this long, retries included (default 10)")

    put = sub.add_parser("put", parents=[client], help="set KEY to VALUE")
    put.add_argument("key")
    put.add_argument("value", nargs="?", default=None,
                     help="the value; '-' reads it from standard input")
    put.add_argument("--value-file", metavar="PATH",
                     help="read the value from PATH (UTF-8) instead")
    get = sub.add_parser("get", parents=[client], help="print the value of KEY")
    get.add_argument("key")
    get.add_argument("--stale", action="store_true",
                     help="read the member's own state at once (may be behind; not "
                          "linearizable)")
    delete = sub.add_parser("delete", parents=[client], help="remove KEY")
    delete.add_argument("key")
    status = sub.add_parser("status", parents=[client], help="show every member's state")
    status.add_argument("--json", action="store_true", help="print JSON")
    transfer = sub.add_parser("transfer", parents=[client], help="move leadership")
    transfer.add_argument("--to", type=_node_id, default=None, metavar="ID",
                          help="the new leader (default: the most up-to-date member)")
    members = sub.add_parser("members", parents=[client],
                             help="show the configuration as the leader sees it")
    members.add_argument("--json", action="store_true", help="print JSON")
    add = sub.add_parser("add", parents=[client], help="add a member")
    add.add_argument("id", type=_node_id)
    add.add_argument("address", type=_address, metavar="HOST:PORT")
    add.add_argument("--role", type=_role, default="spare",
                     help="voter (caught up first), standby or spare (default)")
    add.add_argument("--token", action="store_true",
                     help="also print a one-time join token for the new member "
                          "(`raftpy serve --join-token`; needs the TLS flags)")
    add.add_argument("--token-ttl", type=_positive, default=3600.0, metavar="SECONDS",
                     help="how long the token stays valid (default 3600)")
    assign = sub.add_parser("assign", parents=[client], help="change a member's role")
    assign.add_argument("id", type=_node_id)
    assign.add_argument("role", type=_role, help="voter, standby or spare")
    remove = sub.add_parser("remove", parents=[client], help="remove a member")
    remove.add_argument("id", type=_node_id)
    # Global flags work after the subcommand too (`raftpy get k --log-level debug`).
    for subparser in sub.choices.values():
        subparser.add_argument("--log-level", dest="sub_log_level", default=None,
                               choices=["debug", "info", "warning", "error"],
                               help="as the global --log-level")
        subparser.add_argument("--log-format", dest="sub_log_format", default=None,
                               choices=["text", "json"], help="as the global --log-format")
    _add_tls_commands(sub)
    return parser


def _add_tls_commands(sub: Any) -> None:
    tls = sub.add_parser("tls", help="issue the cluster's certificates (docs/security.md)",
                         description="Issue the CA and the node, client and admin "
                                     "certificates the --tls-* flags take (needs "
                                     "cryptography: pip install 'raftpy[tls]').")
    cmd = tls.add_subparsers(dest="tls_command", required=True, metavar="TLS_COMMAND")
    directory = argparse.ArgumentParser(add_help=False)
    directory.add_argument("--dir", default=".", metavar="DIR",
                           help="the directory holding ca.pem and ca-key.pem (default .)")
    directory.add_argument("--days", type=_positive, default=365,
                           help="validity in days (default 365)")
    init = cmd.add_parser("init-ca", help="create a CA for one cluster in DIR")
    init.add_argument("ca_dir", metavar="DIR")
    init.add_argument("--cluster-id", required=True, help="the cluster the CA issues for")
    init.add_argument("--days", type=_positive, default=3650,
                      help="validity in days (default 3650)")
    node = cmd.add_parser("node", parents=[directory], help="a member's certificate")
    node.add_argument("id", type=_node_id)
    node.add_argument("--host", action="append", default=None, metavar="HOST",
                      help="an IP address or DNS name peers dial it at (repeat; default "
                           "127.0.0.1 and localhost)")
    client = cmd.add_parser("client", parents=[directory],
                            help="a client's certificate (reads and writes)")
    client.add_argument("name")
    client.add_argument("--admin", action="store_true",
                        help="an administrator: also transfers and membership changes")


# ---------------------------------------------------------------------- TLS

def tls_contexts(ca: str | None, cert: str | None, key: str | None
                 ) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """(server, client) contexts for mutual TLS, or (None, None) without TLS flags."""
    given = [x is not None for x in (ca, cert, key)]
    if not any(given):
        return None, None
    if not all(given):
        raise ValueError("--tls-ca, --tls-cert and --tls-key go together")
    assert ca is not None and cert is not None
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
    server.load_cert_chain(cert, key)
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    client.load_cert_chain(cert, key)
    return server, client


# ---------------------------------------------------------------------- serve

def _open_storage(data_dir: str, node_id: int, cluster_id: str) -> FileStorage:
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise _Usage(f"--data-dir {data_dir} exists and is not a directory")
    os.makedirs(data_dir, exist_ok=True)
    return FileStorage(data_dir, node_id=node_id, cluster_id=cluster_id)


async def serve(args: argparse.Namespace) -> int:
    """Run one member until SIGINT or SIGTERM; returns the exit code."""
    from raftpy.logfmt import log_context

    running: list[Any] = []  # the node, once open: its term goes on every log line
    with log_context(args.id, lambda: running[0].term if running else None):
        return await _serve(args, running)


async def _serve(args: argparse.Namespace, running: list[Any]) -> int:
    from raftpy.kv.server import KVServer
    from raftpy.kv.statemachine import KVStore
    from raftpy.membership import Configuration, Member, MemberRole
    from raftpy.sessions import SessionStateMachine
    from raftpy.trio.autoroles import AutoRoles
    from raftpy.trio.membership import holds_state
    from raftpy.trio.runtime import open_node

    peers = dict(args.peer)
    if args.id in peers:
        raise _Usage(f"--peer {args.id}=... names this member itself (--id {args.id})")
    if len(peers) != len(args.peer):
        counts = Counter(i for i, _ in args.peer)
        twice = sorted(i for i, n in counts.items() if n > 1)
        raise _Usage(f"peer id{'s' if len(twice) > 1 else ''} "
                     f"{', '.join(map(str, twice))} given twice")
    if args.role is not None and args.join is None:
        raise _Usage("--role goes with --join")
    if peers and not args.bootstrap:
        raise _Usage("--peer lists the initial members for --bootstrap")
    if args.voters is None and args.standbys is not None:
        raise _Usage("--standbys goes with --voters (automatic roles)")
    if args.voters == 0:
        raise _Usage("--voters must be at least 1")
    token = None
    if args.join_token is not None:
        token = _join_token(args)
    if args.tls_ca_key is not None and args.tls_ca is None:
        raise _Usage("--tls-ca-key goes with the TLS flags")
    minimum = args.election_timeout_ms / 1000
    config = Config(election_timeout_min=minimum, election_timeout_max=2 * minimum,
                    snapshot_threshold=args.snapshot_every if args.snapshot_every > 0 else None,
                    early_pre_vote=args.early_pre_vote)
    # Listen first: a port in use must not leave a new, empty data directory behind.
    from raftpy.trio.runtime import parse_address

    host, port = parse_address(args.listen)
    metrics_listeners = await _metrics_listeners(args.metrics)
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise _Failed(f"cannot listen on {args.listen}: {exc.strerror or exc}") from None
    client_listeners = None
    if args.client_listen is not None:
        host, port = parse_address(args.client_listen)
        try:
            client_listeners = await trio.open_tcp_listeners(port, host=host)
        except OSError as exc:
            for listener in listeners:
                await listener.aclose()
            raise _Failed(f"cannot listen on {args.client_listen}: "
                          f"{exc.strerror or exc}") from None
    advertise = args.advertise or args.listen
    if token is not None:
        await _obtain_certificate(args, token, advertise, [*listeners,
                                                           *(client_listeners or ())])
    server_ctx, client_ctx = tls_contexts(args.tls_ca, args.tls_cert, args.tls_key)
    storage = await trio.to_thread.run_sync(_open_storage, args.data_dir, args.id,
                                            args.cluster_id)
    fresh = not await trio.to_thread.run_sync(lambda: holds_state(storage.load()[0]))
    joining = args.join is not None or token is not None
    bootstrap = None
    if not fresh:
        if args.bootstrap or joining:
            logger.warning("node %d: %s holds cluster state: ignoring --%s, membership comes "
                           "from its log", args.id, args.data_dir,
                           "bootstrap" if args.bootstrap else
                           "join" if args.join else "join-token")
    elif args.bootstrap:
        bootstrap = Configuration.of(
            [Member(args.id, MemberRole.VOTER, advertise)]
            + [Member(i, MemberRole.VOTER, a) for i, a in peers.items()])
    elif not joining:
        storage.close()
        raise _Usage(f"{args.data_dir} holds no cluster state: start a new cluster with "
                     "--bootstrap (and --peer for the other initial members) or join one "
                     "with --join HOST:PORT")
    # Client sessions make retried writes exactly-once (docs/sessions.md).
    machine = SessionStateMachine(KVStore())
    server = KVServer(machine, name_leader_address=client_listeners is None)
    join_handler = None
    if args.tls_ca_key is not None:
        from raftpy.kv.joining import CertificateIssuer
        from raftpy.trio import certs

        ca_cert, ca_key, bundle = certs.load_issuer(args.tls_ca, args.tls_ca_key)
        issuer = CertificateIssuer(ca_cert, ca_key, bundle, cluster_id=args.cluster_id,
                                   use_token=server.use_join_token,
                                   client_ssl_context=client_ctx)
        join_handler = issuer.serve
        assert server_ctx is not None
        # A joining node has no certificate yet: asked for, not required. Every other
        # hello still needs one (the transport refuses it without: docs/security.md).
        server_ctx.verify_mode = ssl.CERT_OPTIONAL
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_node(
            args.id, bootstrap=bootstrap, join=fresh and joining, join_handler=join_handler,
            advertise=advertise, state_machine=machine, storage=storage, config=config,
            listen=listeners, client_listen=client_listeners,
            cluster_id=args.cluster_id, ssl_context=server_ctx,
            client_ssl_context=client_ctx, client_handler=server.serve_connection,
            voters=args.voters, standbys=args.standbys or 0,
            inline_save_budget=args.inline_save_budget_ms / 1000,
            auto_roles=None if args.voters is None
            else AutoRoles(retry_spares_after=args.spare_retry),
        ) as node, trio.open_nursery() as extras:
            running.append(node)
            logger.info("node %d serving on %s (cluster %r, members %s)", args.id,
                        ", ".join(f"{h}:{p}" for h, p in node.listen_addresses)
                        + "".join(f", clients on {h}:{p}"
                                  for h, p in node.client_listen_addresses),
                        args.cluster_id,
                        (await node.members()).configuration.describe())
            if metrics_listeners:
                from raftpy.trio.prometheus import serve_metrics

                await extras.start(serve_metrics, node.metrics, metrics_listeners)
            if fresh and args.join is not None:
                code = await _join(args, node.id, advertise, client_ctx)
                if code != EXIT_OK:
                    extras.cancel_scope.cancel()  # (the metrics endpoint)
                    return code
            signum = await signals.__anext__()
            logger.info("node %d: %s, shutting down", args.id, signal.Signals(signum).name)
            if not args.no_handover:
                await _handover(args, node, client_ctx, signals)
            extras.cancel_scope.cancel()
    return EXIT_OK


async def _metrics_listeners(address: str | None) -> list[trio.SocketListener]:
    """The ``--metrics`` listeners, opened before anything else (a missing extra or
    a port in use fails before the data directory is created)."""
    if address is None:
        return []
    from raftpy.trio.prometheus import MetricsUnavailable, require_prometheus
    from raftpy.trio.runtime import parse_address

    try:
        require_prometheus()
    except MetricsUnavailable as exc:
        raise _Failed(f"--metrics: {exc}") from None
    host, port = parse_address(address)
    try:
        return list(await trio.open_tcp_listeners(port, host=host))
    except OSError as exc:
        raise _Failed(f"--metrics: cannot listen on {address}: {exc.strerror or exc}") from None


def _join_token(args: argparse.Namespace) -> Any:
    """The parsed ``--join-token``, checked against the other flags."""
    from raftpy.kv.joining import JoinToken

    try:
        token = JoinToken.decode(args.join_token)
    except ValueError as exc:
        raise _Usage(f"--join-token: {exc}") from None
    if token.node_id != args.id:
        raise _Usage(f"--join-token is for node {token.node_id}, not --id {args.id}")
    if token.cluster_id != args.cluster_id:
        raise _Usage(f"--join-token is for cluster {token.cluster_id!r}, not "
                     f"--cluster-id {args.cluster_id!r}")
    if None in (args.tls_ca, args.tls_cert, args.tls_key):
        raise _Usage("--join-token needs --tls-ca, --tls-cert and --tls-key: where to "
                     "write what it obtains")
    return token


async def _obtain_certificate(args: argparse.Namespace, token: Any, advertise: str,
                              listeners: Sequence[Any]) -> None:
    """Obtain this member's certificate with ``token`` unless the files exist already."""
    from raftpy.kv.joining import JoinFailed, obtain_certificate
    from raftpy.trio import certs
    from raftpy.trio.runtime import parse_address

    paths = [Path(args.tls_ca), Path(args.tls_cert), Path(args.tls_key)]
    if all(p.exists() for p in paths):
        return  # obtained before: this is a restart
    if any(p.exists() for p in paths):
        raise _Usage("--join-token: some of --tls-ca, --tls-cert, --tls-key exist, not all: "
                     "remove them or give new paths")
    hosts = list(dict.fromkeys([parse_address(advertise)[0], *certs.DEFAULT_HOSTS]))
    try:
        obtained = await obtain_certificate(token, hosts=hosts)
    except JoinFailed as exc:
        for listener in listeners:
            await listener.aclose()
        raise _Failed(f"joining with the token failed: {exc}") from None
    certs._write(paths[2], obtained.key, 0o600)
    certs._write(paths[1], obtained.cert, 0o644)
    certs._write(paths[0], obtained.ca, 0o644)
    logger.info("node %d: obtained certificate %s with the join token", args.id, paths[1])


async def _join(args: argparse.Namespace, node_id: int, advertise: str,
                client_ctx: ssl.SSLContext | None) -> int:
    """Ask the cluster to add this member (it runs already, so a leader can reach it)."""
    from raftpy.kv.client import ClusterUnavailable, ConnectionRejected, KVClient, RequestFailed

    role = args.role or "spare"
    async with KVClient(args.join, cluster_id=args.cluster_id, ssl_context=client_ctx,
                        timeout=120.0) as client:
        while True:
            try:
                index = await client.add_member(node_id, advertise, role)
            except RequestFailed as exc:
                if exc.code == "busy":  # another change is unfinished
                    await trio.sleep(0.1)
                    continue
                if exc.code == "invalid_change":  # added beforehand (raftpy add)?
                    members = (await client.membership())["members"]
                    if any(m["id"] == node_id and m["address"] == advertise for m in members):
                        logger.info("node %d: a member already", node_id)
                        return EXIT_OK
                print(f"raftpy serve: joining failed: {exc}", file=sys.stderr)
                return EXIT_FAILED
            except ConnectionRejected as exc:
                print(f"raftpy serve: joining failed: connection rejected: {exc}",
                      file=sys.stderr)
                return EXIT_FAILED
            except ClusterUnavailable as exc:
                print(f"raftpy serve: joining failed: cluster unavailable: {exc}",
                      file=sys.stderr)
                return EXIT_UNAVAILABLE
            logger.info("node %d: joined as %s (configuration at index %d)", node_id, role,
                        index)
            return EXIT_OK


async def _handover(args: argparse.Namespace, node: Any, client_ctx: ssl.SSLContext | None,
                    signals: Any) -> None:
    """Hand over before stopping, within --handover-timeout; another signal stops it."""
    from raftpy.kv.admin import ClusterAdmin
    from raftpy.kv.client import KVClient

    addresses = [m.address for m in (await node.members()).members
                 if m.address and m.id != node.id]
    if not addresses:
        return
    async with (KVClient(addresses, cluster_id=args.cluster_id, ssl_context=client_ctx,
                         timeout=args.handover_timeout) as client,
                trio.open_nursery() as nursery):
        async def second_signal() -> None:
            async for signum in signals:
                logger.warning("node %d: %s again, stopping without finishing the handover",
                               node.id, signal.Signals(signum).name)
                nursery.cancel_scope.cancel()

        nursery.start_soon(second_signal)
        start = trio.current_time()
        try:
            promoted = await node.handover(ClusterAdmin(client), timeout=args.handover_timeout)
        except Exception as exc:  # a failed handover must not keep the process up
            logger.warning("node %d: handover failed: %s: %s", node.id, type(exc).__name__,
                           exc)
        else:
            logger.info("node %d: handover done in %.0f ms (replacement: %s)", node.id,
                        (trio.current_time() - start) * 1000,
                        promoted if promoted is not None else "none")
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------- client commands

async def client_command(args: argparse.Namespace) -> int:
    """Run one client command; returns the exit code."""
    from raftpy.kv.client import (
        ClusterUnavailable,
        ConnectionRejected,
        InvalidRequest,
        KeyNotFound,
        KVClient,
        OutcomeUnknown,
        RequestFailed,
    )

    members = args.cluster
    if members is None:
        env = os.environ.get(ENV_CLUSTER)
        if not env:
            raise _Usage(f"say which cluster: --cluster HOST:PORT,... or {ENV_CLUSTER}")
        try:
            members = _members(env)
        except argparse.ArgumentTypeError as exc:
            raise _Usage(f"{ENV_CLUSTER}: {exc}") from None
    _, client_ctx = tls_contexts(args.tls_ca, args.tls_cert, args.tls_key)
    try:
        async with KVClient(members, cluster_id=args.cluster_id, ssl_context=client_ctx,
                            timeout=args.timeout) as client:
            if args.command == "status":
                return _print_status(await client.statuses(), as_json=args.json)
            if args.command == "members":
                return _print_members(await client.membership(), as_json=args.json)
            if args.command in ("add", "assign", "remove"):
                token = None
                if args.command == "add" and args.token:
                    token = await _register_token(args, client, members)
                if args.command == "add":
                    index = await client.add_member(args.id, args.address, args.role)
                elif args.command == "assign":
                    index = await client.assign_role(args.id, args.role)
                else:
                    index = await client.remove_member(args.id)
                print(f"configuration at index {index} committed")
                if token is not None:
                    print(token)
                return EXIT_OK
            if args.command == "put":
                await client.put(args.key, _put_value(args))
            elif args.command == "get":
                print(await client.get(args.key, stale=args.stale))
            elif args.command == "delete":
                await client.delete(args.key)
            else:
                start = trio.current_time()
                reply = await client.transfer(args.to)
                elapsed = (trio.current_time() - start) * 1000
                print(f"leader is now {reply['leader_id']} ({reply.get('leader_address')}): "
                      f"transfer took {reply['elapsed_ms']:.2f} ms on the leader, "
                      f"{elapsed:.2f} ms round trip")
    except KeyNotFound as exc:
        print(f"raftpy: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except InvalidRequest as exc:
        print(f"raftpy {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConnectionRejected as exc:
        print(f"raftpy: connection rejected: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ClusterUnavailable as exc:
        print(f"raftpy: cluster unavailable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except RequestFailed as exc:
        print(f"raftpy: {args.command} failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OutcomeUnknown as exc:
        print(f"raftpy: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


async def _register_token(args: argparse.Namespace, client: Any, members: list[str]) -> str:
    """A new join token for ``args.id``, recorded through the log; returns it encoded."""
    import time

    from cryptography import x509

    from raftpy.kv.joining import new_token
    from raftpy.trio import certs

    if args.tls_ca is None:
        raise _Usage("--token needs the TLS flags (the token pins the CA in --tls-ca)")
    ca = x509.load_pem_x509_certificates(Path(args.tls_ca).read_bytes())[0]
    token = new_token(args.cluster_id, args.id, certs.fingerprint(ca), members,
                      expires=time.time() + args.token_ttl)
    await client.register_join_token(args.id, token.digest, token.expires)
    return str(token.encode())


def _print_status(statuses: dict[str, dict[str, Any] | str], *, as_json: bool) -> int:
    reachable = {a: s for a, s in statuses.items() if isinstance(s, dict)}
    if as_json:
        print(json.dumps(statuses, indent=2, sort_keys=True))
    else:
        print(f"{'MEMBER':<22} {'ID':>3} {'ROLE':<10} {'TERM':>5} {'LEADER':>6} "
              f"{'COMMIT':>7} {'APPLIED':>7}")
        for address, status in statuses.items():
            if isinstance(status, dict):
                leader = status["leader_id"] if status["leader_id"] is not None else "-"
                print(f"{address:<22} {status['node_id']:>3} {status['role']:<10} "
                      f"{status['term']:>5} {leader!s:>6} {status['commit_index']:>7} "
                      f"{status['applied_index']:>7}")
            else:
                print(f"{address:<22} {'?':>3} unreachable ({status})")
    return EXIT_OK if reachable else EXIT_UNAVAILABLE


def _print_members(membership: dict[str, Any], *, as_json: bool) -> int:
    if as_json:
        print(json.dumps(membership, indent=2, sort_keys=True))
        return EXIT_OK
    state = "committed" if membership["committed"] else "not committed yet"
    print(f"configuration at index {membership['index']} ({state}), leader "
          f"{membership['leader_id']}")
    print(f"{'ID':>4} {'ADDRESS':<22} {'ROLE':<8} {'LAST CONTACT':>13} {'MATCH':>7}")
    for m in membership["members"]:
        contact = "-" if m["last_contact"] is None else f"{m['last_contact'] * 1000:.0f} ms"
        match = "-" if m["match_index"] is None else str(m["match_index"])
        print(f"{m['id']:>4} {m['address']:<22} {m['role']:<8} {contact:>13} {match:>7}")
    return EXIT_OK


# ---------------------------------------------------------------------- tls

def tls_command(args: argparse.Namespace) -> int:
    """``raftpy tls init-ca|node|client``: write PEM files; returns the exit code."""
    try:
        from raftpy.trio import certs
    except ImportError:
        print("raftpy tls: needs the cryptography package: pip install 'raftpy[tls]'",
              file=sys.stderr)
        return EXIT_FAILED
    try:
        if args.tls_command == "init-ca":
            issued = certs.init_ca(args.ca_dir, args.cluster_id, days=args.days)
        elif args.tls_command == "node":
            issued = certs.issue_node(args.dir, args.id, days=args.days,
                                      hosts=args.host or certs.DEFAULT_HOSTS)
        else:
            issued = certs.issue_client(args.dir, args.name, admin=args.admin, days=args.days)
    except (OSError, ValueError) as exc:
        print(f"raftpy tls {args.tls_command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{issued.cert}\n{issued.key}")
    return EXIT_OK


# ---------------------------------------------------------------------- main

class _Usage(Exception):
    """A usage error found after parsing (exit code 2)."""


class _Failed(Exception):
    """An error that names what failed, reported as is (exit code 4)."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("raftpy")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _put_value(args: argparse.Namespace) -> str:
    """The value of ``raftpy put``: the argument, standard input (``-``) or a file
    (for values too long for a command line)."""
    if args.value_file is not None:
        if args.value is not None:
            raise _Usage("give the value or --value-file, not both")
        try:
            with open(args.value_file, encoding="utf-8") as file:
                return file.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise _Usage(f"cannot read --value-file {args.value_file}: {exc}") from None
    if args.value is None:
        raise _Usage("put needs a VALUE ('-' for standard input) or --value-file")
    if args.value == "-":
        return sys.stdin.read()
    value: str = args.value
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``raftpy`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "sub_log_level", None) is not None:
        args.log_level = args.sub_log_level
    if getattr(args, "sub_log_format", None) is not None:
        args.log_format = args.sub_log_format
    if args.log_level is None:
        # A server's banner and leader changes are INFO: visible by default.
        args.log_level = "info" if args.command == "serve" else "warning"
    from raftpy.logfmt import configure

    configure(args.log_level, args.log_format)
    if args.command == "tls":
        return tls_command(args)
    command = serve if args.command == "serve" else client_command
    try:
        return trio.run(command, args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        error = _leaf(exc)
        if isinstance(error, _Usage):
            parser.error(str(error))  # exits with EXIT_USAGE
        if isinstance(error, _Failed):
            print(f"raftpy {args.command}: {error}", file=sys.stderr)
            return EXIT_FAILED
        if isinstance(error, (ValueError, ConfigError)):
            print(f"raftpy: {error}", file=sys.stderr)
            return EXIT_USAGE
        if isinstance(error, (StorageError, OSError)):
            print(f"raftpy {args.command}: {error}", file=sys.stderr)
            return EXIT_FAILED
        raise


def _leaf(exc: BaseException) -> BaseException:
    """The one error inside (possibly nested) exception groups, else ``exc``."""
    while isinstance(getattr(exc, "exceptions", None), tuple) and len(exc.exceptions) == 1:  # type: ignore[attr-defined]
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    return exc


if __name__ == "__main__":
    sys.exit(main())
