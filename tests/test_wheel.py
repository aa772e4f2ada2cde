"""The built wheel installs into a clean virtual environment and works there.

Builds the wheel with pip (hatchling, in pip's isolated build environment),
installs it with its dependencies into a fresh venv (from PyPI, or pip's cache:
the test needs the package index, as ``make test``'s own install does),
then, from outside the source tree and without PYTHONPATH:

* ``raftpy --version`` (the console script) prints the version;
* ``import raftpy`` works and does not import trio (the sans-I/O core stays
  importable without the runtime: only ``raftpy.trio`` and the CLI need it);
* the wheel holds the package, ``py.typed`` and the licence, and no tests, docs or
  benchmark results.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import raftpy

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str | Path], cwd: Path, timeout: float = 300) -> str:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, (
        f"{args} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result.stdout


def test_the_wheel_installs_in_a_clean_venv_and_imports_without_trio(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, ROOT],
         cwd=tmp_path)
    (wheel,) = dist.glob("raftpy-*.whl")
    assert wheel.name.startswith(f"raftpy-{raftpy.__version__}-py3-none-any")

    names = zipfile.ZipFile(wheel).namelist()
    assert "raftpy/__init__.py" in names and "raftpy/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    assert not [n for n in names if n.split("/")[0] in ("tests", "docs", "benchmarks")]

    # A venv without pip of its own (ensurepip takes seconds): this pip installs into it.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", wheel],
         cwd=tmp_path)

    version = _run([venv / "bin" / "raftpy", "--version"], cwd=tmp_path)
    assert version.strip() == f"raftpy {raftpy.__version__}"

    probe = (
        "import sys, raftpy\n"
        "print(raftpy.__file__)\n"
        "print(sorted(m for m in sys.modules if m == 'trio' or m.startswith('trio.')))\n"
        "import raftpy.trio\n"
        "print('trio' in sys.modules)\n"
    )
    where, trio_modules, trio_after = _run([python, "-c", probe], cwd=tmp_path).splitlines()
    assert where.startswith(str(venv)), where  # the installed copy, not the source tree
    assert trio_modules == "[]"                 # the core imports no trio
    assert trio_after == "True"                 # the runtime does, and it is installed
