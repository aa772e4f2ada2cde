"""raftpy's log lines: one logger hierarchy, ``key=value`` fields, text or JSON.

Loggers (all under ``raftpy``; set a level on any of them):

==========================  ===================================================
``raftpy.core``             the protocol core's decision traces (DEBUG only)
``raftpy.runtime``          the Trio driver: leader changes, snapshots, shutdown
``raftpy.runtime.*``        membership calls, automatic roles
``raftpy.transport``        connections, handshakes, refusals, peer reachability
``raftpy.storage.*``        the file storage: recovery, repairs
``raftpy.kv.*``             the key-value example's server and client
``raftpy.metrics``          the Prometheus endpoint
``raftpy.cli``              the ``raftpy`` command
==========================  ===================================================

Every record logged by a running node carries the fields ``node`` and ``term``
(from :func:`log_context`, which the runtime enters for each node's tasks: no
call site has to pass them), and ``peer`` where a line is about a peer (passed
as ``extra={"peer": id}``). :class:`KeyValueFormatter` writes them as
``key=value`` between the logger name and the message::

    2026-12-03 14:50:00,123 INFO raftpy.runtime node=1 term=3: node 1: leader is 2 (term 3)

:class:`JsonFormatter` writes one JSON object per line (``ts``, ``level``,
``logger``, ``msg``, the fields, and ``exc`` for a traceback).
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, TextIO

FIELDS = ("node", "term", "peer")
"""The ``key=value`` fields, in the order they are written."""

FORMATS = ("text", "json")


@dataclass(frozen=True, slots=True)
class LogContext:
    """Who is logging: a node id and how to read its current term."""

    node: int
    term: Callable[[], int | None] | None = None


_CONTEXT: contextvars.ContextVar[LogContext | None] = contextvars.ContextVar(
    "raftpy_log_context", default=None)


@contextmanager
def log_context(node: int, term: Callable[[], int | None] | None = None) -> Iterator[None]:
    """Records logged in this context (and in tasks started from it) carry ``node``
    and the current ``term()``. Trio tasks copy the context they are started in."""
    token = _CONTEXT.set(LogContext(node, term))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


class ContextFilter(logging.Filter):
    """Adds ``node`` and ``term`` from :func:`log_context` to each record (a value
    passed in ``extra`` wins). Attach it to a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _CONTEXT.get()
        if ctx is not None:
            if getattr(record, "node", None) is None:
                setattr(record, "node", ctx.node)  # noqa: B010
            if getattr(record, "term", None) is None and ctx.term is not None:
                with suppress(Exception):  # a log line must never fail
                    term = ctx.term()
                    if term is not None:
                        setattr(record, "term", term)  # noqa: B010
        return True


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The :data:`FIELDS` a record carries, in order."""
    out = {}
    for name in FIELDS:
        value = getattr(record, name, None)
        if value is not None:
            out[name] = value
    return out


class KeyValueFormatter(logging.Formatter):
    """``time LEVEL logger key=value...: message`` (plus a traceback, if any)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(_fields)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        fields = fields_of(record)
        setattr(record, "_fields", "".join(f" {k}={v}" for k, v in fields.items()))  # noqa: B010
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (ISO 8601, UTC), ``level``, ``logger``,
    ``msg``, the fields present, and ``exc`` (the formatted traceback) if any."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(fields_of(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, default=str)


def core_trace() -> Callable[[str], None] | None:
    """The core's decision-trace hook writing to ``raftpy.core`` at DEBUG, or ``None``
    when that logger would drop DEBUG (tracing then costs nothing)."""
    core = logging.getLogger("raftpy.core")
    if not core.isEnabledFor(logging.DEBUG):
        return None

    def trace(line: str) -> None:
        core.debug("%s", line)

    return trace


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at each record (it may be replaced)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def make_handler(fmt: str = "text", stream: TextIO | None = None) -> logging.Handler:
    """A stream handler (stderr by default) writing ``fmt`` (``"text"`` or ``"json"``)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    handler.addFilter(ContextFilter())
    return handler


def configure(level: int | str = logging.INFO, fmt: str = "text",
              stream: TextIO | None = None) -> logging.Handler:
    """Send every log record at ``level`` or above to ``stream`` in format ``fmt``
    through one handler on the root logger (what the ``raftpy`` command does); a
    handler installed by an earlier call is replaced, other handlers are kept."""
    handler = make_handler(fmt, stream)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_raftpy_configured", False):
            root.removeHandler(old)
    setattr(handler, "_raftpy_configured", True)  # noqa: B010
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
