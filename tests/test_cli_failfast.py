"""Errors that retrying cannot fix end a client command at once, with the reason
and exit 2 or 4 (they used to retry until ``--timeout`` and say "cluster
unavailable"), against real ``raftpy serve`` processes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from raftpy import cli
from raftpy.demo_net import Servers
from raftpy.kv import protocol
from raftpy.kv.client import ClusterUnavailable, KVClient
from raftpy.trio.client import connect_client

TIMEOUT = "20"  # what a retry loop would use up; each case here takes well under 2 s
FAST = 5.0


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Member 1's certificate, made by ``raftpy tls`` (a member's certificate may
    also speak the client protocol: docs/security.md)."""
    root = tmp_path_factory.mktemp("tls")
    assert cli.main(["tls", "init-ca", str(root), "--cluster-id", "failfast"]) == 0
    assert cli.main(["tls", "node", "1", "--dir", str(root)]) == 0
    return {"ca": str(root / "ca.pem"), "cert": str(root / "node-1.pem"),
            "key": str(root / "node-1-key.pem")}


def _tls_flags(files: dict[str, str]) -> list[str]:
    return ["--tls-ca", files["ca"], "--tls-cert", files["cert"], "--tls-key", files["key"]]


def _ready(servers: Servers, *flags: str) -> None:
    """Wait until the single member leads (a put goes through)."""
    deadline = time.monotonic() + 30
    while True:
        code = cli.main(["put", "ready", "yes", "--cluster", servers.address(1),
                         "--cluster-id", servers.cluster_id, "--timeout", "2", *flags])
        if code == cli.EXIT_OK:
            return
        assert time.monotonic() < deadline, "the server never became ready"


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    s = Servers(tmp_path_factory.mktemp("plain"), 1, cluster_id="failfast")
    try:
        s.start(1)
        _ready(s)
        yield s
    finally:
        s.stop_all()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory, tls_files: dict[str, str]
        ) -> Iterator[Servers]:
    s = Servers(tmp_path_factory.mktemp("tls-server"), 1, cluster_id="failfast")
    try:
        s.start(1, extra=_tls_flags(tls_files))
        _ready(s, *_tls_flags(tls_files))
        yield s
    finally:
        s.stop_all()


def run(capsys: pytest.CaptureFixture[str], servers: Servers, *argv: str,
        cluster_id: str | None = None) -> tuple[int, str, float]:
    start = time.monotonic()
    code = cli.main([*argv, "--cluster", servers.address(1), "--cluster-id",
                     cluster_id or servers.cluster_id, "--timeout", TIMEOUT])
    elapsed = time.monotonic() - start
    _, err = capsys.readouterr()
    return code, err, elapsed


@pytest.mark.parametrize(("argv", "message"), [
    (["put", "k", "x" * (protocol.MAX_VALUE_BYTES + 1)],
     "raftpy put: the value is 1048577 bytes, above the limit of 1048576"),
    (["put", "k" * (protocol.MAX_KEY_BYTES + 1), "v"],
     "raftpy put: the key is 4097 bytes, above the limit of 4096"),
    # A key that is not UTF-8 on the command line arrives as a lone surrogate.
    (["get", "caf\udce9"],
     "raftpy get: the key is not valid Unicode text (surrogates not allowed at position 3)"),
    (["put", "k", "\udcff"],
     "raftpy put: the value is not valid Unicode text (surrogates not allowed at position 0)"),
])
def test_keys_and_values_the_cluster_cannot_take_exit_2_at_once(
        capsys: pytest.CaptureFixture[str], plain: Servers, argv: list[str],
        message: str) -> None:
    code, err, elapsed = run(capsys, plain, *argv)
    assert (code, err.strip()) == (cli.EXIT_USAGE, message)
    assert elapsed < FAST


def test_the_server_refuses_a_value_above_the_limit_itself(plain: Servers) -> None:
    async def raw() -> dict[str, object]:
        stream = await connect_client(plain.address(1), cluster_id=plain.cluster_id)
        await stream.send(protocol.encode(
            {"op": "put", "key": "k", "value": "x" * (protocol.MAX_VALUE_BYTES + 1)}))
        data = await stream.receive()
        await stream.aclose()
        assert data is not None
        return protocol.decode_response(data)

    assert trio.run(raw) == protocol.error(
        protocol.TOO_LARGE, "the value is 1048577 bytes, above the limit of 1048576")


def test_a_value_at_the_limit_is_stored(capsys: pytest.CaptureFixture[str],
                                        plain: Servers) -> None:
    value = "é" * (protocol.MAX_VALUE_BYTES // 2)  # two bytes each: exactly the limit
    code, err, _ = run(capsys, plain, "put", "big", value)
    assert code == cli.EXIT_OK, err

    async def read() -> str:
        async with KVClient([plain.address(1)], cluster_id=plain.cluster_id) as client:
            return await client.get("big")
    assert trio.run(read) == value


def test_another_cluster_id_exits_4_at_once(capsys: pytest.CaptureFixture[str],
                                            plain: Servers) -> None:
    code, err, elapsed = run(capsys, plain, "get", "ready", cluster_id="other")
    assert code == cli.EXIT_FAILED
    assert err.startswith(f"raftpy: connection rejected: {plain.address(1)} refused us: ")
    assert "failfast" in err and "other" in err
    assert elapsed < FAST


def test_tls_on_one_side_only_exits_4_at_once(
        capsys: pytest.CaptureFixture[str], plain: Servers, tls: Servers,
        tls_files: dict[str, str]) -> None:
    code, err, elapsed = run(capsys, plain, "get", "ready", *_tls_flags(tls_files))
    assert code == cli.EXIT_FAILED
    assert err.startswith(f"raftpy: connection rejected: TLS handshake with "
                          f"{plain.address(1)} failed")
    assert elapsed < FAST

    code, err, elapsed = run(capsys, tls, "get", "ready")
    assert code == cli.EXIT_FAILED, err
    assert err.strip() == (f"raftpy: connection rejected: {tls.address(1)} refused us: "
                           "this member requires TLS")
    assert elapsed < FAST

    code, err, _ = run(capsys, tls, "get", "ready", *_tls_flags(tls_files))
    assert (code, err) == (cli.EXIT_OK, "")


def test_a_certificate_from_another_ca_exits_4_at_once(
        capsys: pytest.CaptureFixture[str], tls: Servers, tmp_path: Path) -> None:
    assert cli.main(["tls", "init-ca", str(tmp_path), "--cluster-id", "failfast"]) == 0
    assert cli.main(["tls", "node", "1", "--dir", str(tmp_path)]) == 0
    paths = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "node-1.pem",
             "key": tmp_path / "node-1-key.pem"}
    code, err, elapsed = run(capsys, tls, "get", "ready",
                             *_tls_flags({k: str(v) for k, v in paths.items()}))
    assert code == cli.EXIT_FAILED
    assert err.startswith(f"raftpy: connection rejected: TLS handshake with {tls.address(1)} "
                          "failed")
    assert elapsed < FAST


def test_an_unreachable_cluster_still_retries_until_the_timeout() -> None:
    # The fail-fast errors above are the exceptions: a refused connection is retried.
    async def attempt() -> float:
        start = trio.current_time()
        async with KVClient(["127.0.0.1:1"], timeout=0.5) as client:
            with pytest.raises(ClusterUnavailable, match="no answer from the cluster"):
                await client.get("k")
        return trio.current_time() - start
    assert trio.run(attempt) >= 0.5
