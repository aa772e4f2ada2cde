"""The ``raftpy`` command: run a key-value server, or talk to a cluster of them.

    raftpy serve --id 1 --listen 127.0.0.1:7001 --peer 2=127.0.0.1:7002 \\
                 --peer 3=127.0.0.1:7003 --data-dir /var/lib/raftpy/1
    raftpy put KEY VALUE | get KEY | delete KEY | status | transfer [--to ID]

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
from collections.abc import Sequence
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


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``raftpy`` command."""
    parser = argparse.ArgumentParser(
        prog="raftpy", description="A replicated key-value store on raftpy.",
        epilog="exit codes: 0 ok, 1 key not found, 2 usage error, 3 cluster unavailable "
               "or timed out, 4 request failed")
    parser.add_argument("--log-level", default="warning",
                        choices=["debug", "info", "warning", "error"])
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
    serve.add_argument("--peer", type=_peer, action="append", default=[],
                       metavar="ID=HOST:PORT", help="another member (repeat for each)")
    serve.add_argument("--data-dir", required=True, help="where this member keeps its state")
    serve.add_argument("--election-timeout-ms", type=_positive, default=150.0, metavar="MS",
                       help="minimum election timeout (the maximum is twice it; default 150)")
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
    put.add_argument("value")
    get = sub.add_parser("get", parents=[client], help="print the value of KEY")
    get.add_argument("key")
    delete = sub.add_parser("delete", parents=[client], help="remove KEY")
    delete.add_argument("key")
    status = sub.add_parser("status", parents=[client], help="show every member's state")
    status.add_argument("--json", action="store_true", help="print JSON")
    transfer = sub.add_parser("transfer", parents=[client], help="move leadership")
    transfer.add_argument("--to", type=_node_id, default=None, metavar="ID",
                          help="the new leader (default: the most up-to-date member)")
    return parser


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
    os.makedirs(data_dir, exist_ok=True)
    return FileStorage(data_dir, node_id=node_id, cluster_id=cluster_id)


async def serve(args: argparse.Namespace) -> int:
    """Run one member until SIGINT or SIGTERM; returns the exit code."""
    from raftpy.kv.server import KVServer
    from raftpy.kv.statemachine import KVStore
    from raftpy.sessions import SessionStateMachine
    from raftpy.trio.runtime import open_node

    peers = dict(args.peer)
    if args.id in peers:
        raise _Usage(f"--peer {args.id}=... names this member itself (--id {args.id})")
    if len(peers) != len(args.peer):
        raise _Usage("a peer id is given twice")
    server_ctx, client_ctx = tls_contexts(args.tls_ca, args.tls_cert, args.tls_key)
    minimum = args.election_timeout_ms / 1000
    config = Config(election_timeout_min=minimum, election_timeout_max=2 * minimum,
                    snapshot_threshold=args.snapshot_every if args.snapshot_every > 0 else None)
    storage = await trio.to_thread.run_sync(_open_storage, args.data_dir, args.id,
                                            args.cluster_id)
    # Client sessions make retried writes exactly-once (docs/sessions.md).
    machine = SessionStateMachine(KVStore())
    server = KVServer(machine)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_node(
            args.id, peers, state_machine=machine, storage=storage, config=config,
            listen=args.listen, cluster_id=args.cluster_id, ssl_context=server_ctx,
            client_ssl_context=client_ctx, client_handler=server.serve_connection,
        ) as node:
            logger.warning("node %d serving on %s (cluster %r, peers %s)", args.id,
                           ", ".join(f"{h}:{p}" for h, p in node.listen_addresses),
                           args.cluster_id,
                           ", ".join(f"{i}={a}" for i, a in sorted(peers.items())) or "none")
            async for signum in signals:
                logger.warning("node %d: %s, shutting down", args.id,
                               signal.Signals(signum).name)
                break
    return EXIT_OK


# ---------------------------------------------------------------------- client commands

async def client_command(args: argparse.Namespace) -> int:
    """Run one client command; returns the exit code."""
    from raftpy.kv.client import (
        ClusterUnavailable,
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
            if args.command == "put":
                await client.put(args.key, args.value)
            elif args.command == "get":
                print(await client.get(args.key))
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


# ---------------------------------------------------------------------- main

class _Usage(Exception):
    """A usage error found after parsing (exit code 2)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``raftpy`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = serve if args.command == "serve" else client_command
    try:
        return trio.run(command, args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        error = _leaf(exc)
        if isinstance(error, _Usage):
            parser.error(str(error))  # exits with EXIT_USAGE
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
