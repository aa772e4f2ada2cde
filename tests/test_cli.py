"""The ``raftpy`` command line: flags, messages and exit codes (no cluster needed)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from raftpy import cli


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("argv", "message"), [
    ([], "required: COMMAND"),
    (["serve", "--listen", "127.0.0.1:1", "--data-dir", "d"], "--id"),
    (["serve", "--id", "0", "--listen", "127.0.0.1:1", "--data-dir", "d"], "positive integer"),
    (["serve", "--id", "1", "--listen", "localhost", "--data-dir", "d"], "HOST:PORT"),
    (["serve", "--id", "1", "--listen", "h:1", "--peer", "2:h:2", "--data-dir", "d"],
     "ID=HOST:PORT"),
    (["serve", "--id", "1", "--listen", "h:1", "--peer", "1=h:2", "--data-dir", "d"],
     "names this member itself"),
    (["serve", "--id", "1", "--listen", "h:1", "--peer", "2=h:2", "--peer", "2=h:3",
      "--data-dir", "d"], "given twice"),
    (["serve", "--id", "1", "--listen", "h:1", "--peer", "2=h:2", "--data-dir", "d"],
     "--peer lists the initial members for --bootstrap"),
    (["serve", "--id", "1", "--listen", "h:1", "--role", "standby", "--data-dir", "d"],
     "--role goes with --join"),
    (["serve", "--id", "1", "--listen", "h:1", "--bootstrap", "--join", "h:2",
      "--data-dir", "d"], "not allowed with argument"),
    (["serve", "--id", "1", "--listen", "h:1", "--join", "h:2", "--role", "king",
      "--data-dir", "d"], "a role is voter, standby or spare"),
    (["add", "4", "localhost", "--cluster", "h:1"], "HOST:PORT"),
    (["assign", "4", "king", "--cluster", "h:1"], "a role is voter, standby or spare"),
    (["remove", "x", "--cluster", "h:1"], "positive integer"),
    (["put", "k"], "required: value"),
    (["get", "k", "--cluster", ""], "HOST:PORT"),
    (["get", "k", "--cluster", "h:1", "--timeout", "0"], "positive number"),
    (["transfer", "--to", "x", "--cluster", "h:1"], "positive integer"),
    (["get", "k"], "RAFTPY_CLUSTER"),
    (["get", "k", "--cluster", "h:1", "--tls-ca", "ca.pem"], "go together"),
])
def test_usage_errors_exit_2_with_a_message(capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch,
                                            argv: list[str], message: str) -> None:
    monkeypatch.delenv(cli.ENV_CLUSTER, raising=False)
    code, out, err = run(capsys, *argv)
    assert code == cli.EXIT_USAGE
    assert message in err
    assert out == ""


def test_a_new_data_dir_needs_bootstrap_or_join(capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path) -> None:
    code, _, err = run(capsys, "serve", "--id", "1", "--listen", "127.0.0.1:0",
                         "--data-dir", str(tmp_path / "n1"))
    assert code == cli.EXIT_USAGE
    assert "holds no cluster state: start a new cluster with --bootstrap" in err


def test_bad_cluster_env_var_is_a_usage_error(capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cli.ENV_CLUSTER, "nonsense")
    code, _, err = run(capsys, "get", "k")
    assert code == cli.EXIT_USAGE
    assert "RAFTPY_CLUSTER: expected HOST:PORT" in err


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_unreachable_cluster_exits_3(capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    port = _closed_port()
    monkeypatch.setenv(cli.ENV_CLUSTER, f"127.0.0.1:{port}")
    code, out, err = run(capsys, "get", "k", "--timeout", "0.3")
    assert code == cli.EXIT_UNAVAILABLE
    assert err.startswith("raftpy: cluster unavailable: no answer from the cluster within 0.3s")
    assert "connection refused" in err
    code, out, err = run(capsys, "status", "--timeout", "0.3")
    assert code == cli.EXIT_UNAVAILABLE
    assert f"127.0.0.1:{port}" in out and "unreachable (connection refused)" in out


def test_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert "1 key not found, 2 usage error, 3 cluster unavailable" in out
