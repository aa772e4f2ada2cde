"""The client history of a chaos run: one :class:`Op` per client operation.

Times are seconds since the run started (the runner's clock). An outcome is
``ok`` (acknowledged), ``fail`` (refused: certainly not applied) or ``unknown``
(a write that timed out or whose connection died: it may or may not have been
applied, possibly later). A ``get`` answers a value or ``None`` (no such key); a
``delete`` answers ``True`` (it removed the key) or ``False`` (no such key).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

OK, FAIL, UNKNOWN = "ok", "fail", "unknown"


@dataclass(slots=True)
class Op:
    """One client operation."""

    process: int
    """The worker that ran it (one client each, one operation at a time)."""
    kind: str
    """``put``, ``get`` or ``delete``."""
    key: str
    value: str | None
    """What a put wrote (unique per run)."""
    invoke: float
    complete: float | None = None
    outcome: str | None = None
    result: Any = None
    """A get's value (``None``: not found), a delete's ``True``/``False``."""
    error: str | None = None

    @property
    def is_write(self) -> bool:
        return self.kind in ("put", "delete")


class History:
    """Every operation of a run, in invocation order."""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def invoke(self, process: int, kind: str, key: str, value: str | None,
               now: float) -> Op:
        op = Op(process, kind, key, value, now)
        self.ops.append(op)
        return op

    @staticmethod
    def complete(op: Op, now: float, outcome: str, result: Any = None,
                 error: str | None = None) -> None:
        op.complete, op.outcome, op.result, op.error = now, outcome, result, error

    def counts(self) -> dict[str, int]:
        """Operations per outcome."""
        out = {OK: 0, FAIL: 0, UNKNOWN: 0}
        for op in self.ops:
            out[op.outcome or UNKNOWN] += 1
        return out

    def write_jsonl(self, path: Path) -> None:
        """One JSON object per line, in invocation order."""
        with open(path, "w") as f:
            for op in self.ops:
                f.write(json.dumps(asdict(op)) + "\n")

    @classmethod
    def read_jsonl(cls, path: Path) -> History:
        history = cls()
        with open(path) as f:
            history.ops = [Op(**json.loads(line)) for line in f if line.strip()]
        return history
