"""Helpers shared by the benchmark scripts: statistics, tables, JSON, plots, progress.

Nothing here is part of the library. matplotlib and tqdm are optional (the
``bench`` extra): without matplotlib no PNG is written, without tqdm progress
is a plain counter on stderr.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_DIR = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------- statistics

def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, interpolated linearly
    between closest ranks (numpy's default method)."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] * (1 - frac) + sorted_values[hi] * frac


def summarize(values: Iterable[float], scale: float = 1.0) -> dict[str, float]:
    """min/median/p95/p99/max/mean of ``values`` multiplied by ``scale``."""
    data = sorted(v * scale for v in values)
    if not data:
        return {"n": 0}
    return {
        "n": len(data),
        "min": data[0],
        "median": percentile(data, 50),
        "mean": sum(data) / len(data),
        "p90": percentile(data, 90),
        "p95": percentile(data, 95),
        "p99": percentile(data, 99),
        "max": data[-1],
    }


# ---------------------------------------------------------------------- output

def print_table(headers: Sequence[str], rows: Iterable[Sequence[object]],
                title: str | None = None) -> None:
    """Print an aligned plain-text table on stdout."""
    text_rows = [[_fmt(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    if title:
        print(f"\n{title}")
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in text_rows:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))


def _fmt(cell: object) -> str:
    if isinstance(cell, float):
        if math.isnan(cell):
            return "-"
        if abs(cell) >= 1000:
            return f"{cell:,.0f}"
        if abs(cell) >= 100:
            return f"{cell:.1f}"
        return f"{cell:.2f}"
    return str(cell)


def machine_info() -> dict[str, Any]:
    """Where and with what the numbers were measured."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpu_model": _cpu_model(),
        "command": _command_line(),
    }
    try:
        from importlib.metadata import version

        info["raftpy"] = version("raftpy")
    except Exception:  # pragma: no cover - not installed
        info["raftpy"] = None
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_DIR,
                             capture_output=True, text=True, timeout=5, check=False)
        info["git"] = rev.stdout.strip() or None
    except OSError:
        info["git"] = None
    return info


def _command_line() -> str:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    program = ["-m", spec.name] if spec is not None else sys.argv[:1]
    return " ".join(["python", *program, *sys.argv[1:]])


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def write_json(results_dir: Path, name: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus machine info) to ``results_dir/name.json``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    payload = {"benchmark": name, "machine": machine_info(), **payload}
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    print(f"\nwrote {path}")
    return path


def pyplot() -> Any:
    """matplotlib.pyplot with a file-only backend, or None (and a note) if missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'raftpy[bench]'): no PNG written",
              file=sys.stderr)
        return None
    return plt


def save_figure(fig: Any, results_dir: Path, name: str) -> Path:
    """Save a matplotlib figure as ``results_dir/name.png``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    print(f"wrote {path}")
    return path


def cdf_points(values: Sequence[float]) -> tuple[list[float], list[float]]:
    """x (sorted values) and y (cumulative fraction) of an empirical CDF."""
    data = sorted(values)
    count = len(data)
    return data, [(i + 1) / count for i in range(count)]


# ---------------------------------------------------------------------- progress

class _Counter:
    """A minimal stand-in for tqdm: a counter on stderr, redrawn at most twice a second."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.done = total, desc, 0
        self._last = 0.0

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= 0.5 or self.done >= self.total:
            self._last = now
            print(f"\r{self.desc}: {self.done}/{self.total}", end="", file=sys.stderr,
                  flush=True)

    def close(self) -> None:
        if self.done:
            print(file=sys.stderr)


@contextmanager
def progress(total: int, desc: str, enabled: bool = True) -> Iterator[Any]:
    """A progress bar (tqdm if installed) with an ``update(n)`` method."""
    if not enabled:
        yield _Silent()
        return
    try:
        from tqdm import tqdm  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        bar: Any = _Counter(total, desc)
    else:
        bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=False,
                   mininterval=0.5, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


class _Silent:
    def update(self, n: int = 1) -> None:
        pass
