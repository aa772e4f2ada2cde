"""Log lines: the logger hierarchy, key=value and JSON formats, node/term fields from the
runtime's context, and the transport's quiet handling of peers that are not up yet."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing
from helpers import cluster
from test_trio_transport import MemoryNet, pair, receive, vote

from raftpy import logfmt
from raftpy.demo_net import _free_ports


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Everything logged under ``raftpy`` at INFO+, as JSON lines."""
    stream = io.StringIO()
    handler = logfmt.make_handler("json", stream)
    root = logging.getLogger("raftpy")
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_key_value_format_puts_the_context_fields_before_the_message() -> None:
    stream = io.StringIO()
    handler = logfmt.make_handler("text", stream)
    log = logging.getLogger("raftpy.test.kv")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        with logfmt.log_context(7, lambda: 42):
            log.info("hello %s", "world", extra={"peer": 3})
        log.info("outside")
    finally:
        log.removeHandler(handler)
    first, second = stream.getvalue().splitlines()
    assert first.endswith(" INFO raftpy.test.kv node=7 term=42 peer=3: hello world")
    assert second.endswith(" INFO raftpy.test.kv: outside")


def test_json_format_is_one_object_per_line_with_fields_and_traceback() -> None:
    stream = io.StringIO()
    handler = logfmt.make_handler("json", stream)
    log = logging.getLogger("raftpy.test.json")
    log.addHandler(handler)
    log.propagate = False
    try:
        with logfmt.log_context(2, lambda: 5):
            log.warning("multi\nline %d", 1, extra={"peer": 1})
            try:
                raise ValueError("boom")
            except ValueError:
                log.exception("failed")
    finally:
        log.removeHandler(handler)
    raw = stream.getvalue().splitlines()
    assert len(raw) == 2
    first, second = (json.loads(line) for line in raw)
    assert first["level"] == "WARNING" and first["logger"] == "raftpy.test.json"
    assert (first["msg"], first["node"], first["term"], first["peer"]) == ("multi\nline 1", 2, 5, 1)
    assert str(first["ts"]).endswith("Z")
    assert second["msg"] == "failed" and "ValueError: boom" in second["exc"]
    with pytest.raises(ValueError, match="log format"):
        logfmt.make_handler("xml")


async def test_the_runtime_logs_leader_changes_with_its_node_and_term(
        autojump_clock: trio.testing.MockClock, captured: io.StringIO) -> None:
    async with cluster() as c:
        leader = await c.leader()
        await leader.apply(b"x")
        term = leader.term
    changes = [r for r in lines(captured)
               if r["logger"] == "raftpy.runtime" and "leader is" in str(r["msg"])]
    assert {r["node"] for r in changes} == set(c.ids)  # every node, each with its own id
    for record in changes:
        assert record["level"] == "INFO"
        assert f"node {record['node']}: leader is" in str(record["msg"])
    assert {r["term"] for r in changes if f"leader is {leader.id}" in str(r["msg"])} == {term}


async def test_a_peer_not_up_yet_is_one_info_line_then_one_warning_past_the_threshold(
        autojump_clock: trio.testing.MockClock, captured: io.StringIO) -> None:
    async with trio.open_nursery() as nursery:
        net = MemoryNet(nursery)
        net.fail_first = 15  # about 15 s of failed dials with the default backoff
        t1, t2 = pair(net, unreachable_warning_after=10.0)
        changes: list[tuple[int, bool]] = []
        t1.peer_health.listeners.append(lambda peer, up, why: changes.append((peer, up)))
        nursery.start_soon(t1.run)
        nursery.start_soon(t2.run)
        t1.send(vote(1, 2))
        with trio.fail_after(60):  # virtual seconds
            assert await t2.incoming.receive() == vote(1, 2)
        nursery.cancel_scope.cancel()
    about_peer = [r for r in lines(captured) if r.get("node") is None and r.get("peer") == 2
                  and r["logger"] == "raftpy.transport"]
    assert [r["level"] for r in about_peer] == ["INFO", "WARNING", "INFO"]
    assert "not reachable at mem:2 yet" in str(about_peer[0]["msg"])
    assert "unreachable at mem:2 for 1" in str(about_peer[1]["msg"])  # 10..13 s
    assert "reachable at mem:2 after 1" in str(about_peer[2]["msg"])
    assert changes == [(2, False), (2, True)]
    assert t1.peer_health.reachable(2) is True


async def test_a_short_outage_never_warns(autojump_clock: trio.testing.MockClock,
                                          captured: io.StringIO) -> None:
    async with trio.open_nursery() as nursery:
        net = MemoryNet(nursery)
        net.fail_first = 5  # well under the 10 s threshold
        t1, t2 = pair(net)
        nursery.start_soon(t1.run)
        nursery.start_soon(t2.run)
        t1.send(vote(1, 2))
        assert await receive(t2) == [vote(1, 2)]
        nursery.cancel_scope.cancel()
    records = lines(captured)
    assert not [r for r in records if r["level"] == "WARNING"]
    assert len([r for r in records if "not reachable" in str(r["msg"])]) == 1


def test_serve_logs_the_banner_at_info_by_default_and_json_on_request(tmp_path: Path) -> None:
    (port,) = _free_ports(1)
    # A member whose only peer never comes up: it logs its banner and the peer, then
    # exits on SIGTERM (no handover: nobody to hand over to).
    argv = [sys.executable, "-m", "raftpy.cli", "serve", "--log-format", "json",
            "--id", "1", "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "d"),
            "--bootstrap", "--peer", f"2=127.0.0.1:{_free_ports(1)[0]}", "--no-handover"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        seen: list[dict[str, object]] = []
        while not any("not reachable" in str(r["msg"]) for r in seen):
            line = proc.stderr.readline()
            assert line, f"serve ended early: {seen}"
            seen.append(json.loads(line))
    finally:
        proc.terminate()
        _, rest = proc.communicate(timeout=30)
    seen += [json.loads(line) for line in rest.splitlines()]
    banner = [r for r in seen if "serving on" in str(r["msg"])]
    assert len(banner) == 1 and banner[0]["level"] == "INFO" and banner[0]["node"] == 1
    assert banner[0]["logger"] == "raftpy.cli"
    assert all(r["node"] == 1 for r in seen)  # every line of the process names the node
    assert not [r for r in seen if r["level"] in ("WARNING", "ERROR")]
    assert proc.returncode == 0


async def test_core_traces_go_to_raftpy_core_at_debug_only_when_enabled(
        autojump_clock: trio.testing.MockClock, captured: io.StringIO) -> None:
    async with cluster() as c:  # raftpy.core at INFO: the core gets no trace hook
        await c.leader()
        assert all(node._raft._trace is None for node in c.nodes.values())
    assert not [r for r in lines(captured) if r["logger"] == "raftpy.core"]
    core = logging.getLogger("raftpy.core")
    core.setLevel(logging.DEBUG)
    try:
        async with cluster() as c:
            leader = await c.leader()
    finally:
        core.setLevel(logging.NOTSET)
    traces = [r for r in lines(captured) if r["logger"] == "raftpy.core"]
    assert any(r["node"] == leader.id and f"-> leader, term {r['term']}" in str(r["msg"])
               for r in traces)
    assert {r["level"] for r in traces} == {"DEBUG"}
