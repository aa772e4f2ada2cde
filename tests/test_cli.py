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
    (["put", "k", "--cluster", "h:1"], "put needs a VALUE"),
    (["put", "k", "v", "--value-file", "f", "--cluster", "h:1"], "not both"),
    (["put", "k", "--value-file", "/nonexistent/v", "--cluster", "h:1"],
     "cannot read --value-file /nonexistent/v"),
    (["serve", "--id", "1", "--listen", "h:1", "--bootstrap", "--peer", "2=h:2",
      "--peer", "2=h:3", "--peer", "3=h:4", "--peer", "3=h:5", "--data-dir", "d"],
     "peer ids 2, 3 given twice"),
    (["get", "k", "--cluster", ""], "HOST:PORT"),
    (["get", "k", "--cluster", "h:1", "--timeout", "0"], "positive number"),
    (["get", "k", "--cluster", "h:1", "--timeout", "nan"], "positive number, got 'nan'"),
    (["get", "k", "--cluster", "h:1", "--timeout", "inf"], "positive number, got 'inf'"),
    (["serve", "--id", "1", "--listen", "h:1", "--bootstrap", "--data-dir", "d",
      "--election-timeout-ms", "NaN"], "positive number, got 'NaN'"),
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


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("raftpy ")


def test_global_flags_work_after_the_subcommand(capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.ENV_CLUSTER, raising=False)
    code, _, err = run(capsys, "get", "k", "--log-level", "debug")
    # Parsed (not "unrecognized arguments"): the next complaint is the missing cluster.
    assert code == cli.EXIT_USAGE and "RAFTPY_CLUSTER" in err
    assert "unrecognized" not in err


def test_put_reads_its_value_from_stdin_or_a_file(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse
    import io

    big = "x" * 900_000  # too long for a command line
    path = tmp_path / "value"
    path.write_text(big, encoding="utf-8")
    args = argparse.Namespace(value=None, value_file=str(path))
    assert cli._put_value(args) == big
    monkeypatch.setattr("sys.stdin", io.StringIO("from stdin"))
    assert cli._put_value(argparse.Namespace(value="-", value_file=None)) == "from stdin"
    assert cli._put_value(argparse.Namespace(value="plain", value_file=None)) == "plain"


def test_a_port_in_use_is_named_and_leaves_no_data_dir(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        data_dir = tmp_path / "new"
        code, _, err = run(capsys, "serve", "--id", "1", "--listen", f"127.0.0.1:{port}",
                           "--bootstrap", "--data-dir", str(data_dir))
    assert code == cli.EXIT_FAILED
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in err
    assert not data_dir.exists()


def test_a_data_dir_that_is_a_file_is_a_usage_error(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("not a directory")
    code, _, err = run(capsys, "serve", "--id", "1", "--listen", "127.0.0.1:0",
                       "--bootstrap", "--data-dir", str(path))
    assert code == cli.EXIT_USAGE
    assert f"--data-dir {path} exists and is not a directory" in err
