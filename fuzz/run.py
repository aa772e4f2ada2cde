"""Run one fuzz target under atheris: ``python fuzz/run.py TARGET SECONDS``.

Needs atheris (``pip install -e '.[fuzz]'``). The seed corpus is
``fuzz/corpus/TARGET`` (committed); new inputs go to ``.fuzz/TARGET`` (not
committed); a crash is written as ``crash-*`` in the working directory and the
run fails: turn it into a regression test in ``tests/test_fuzz_regressions.py``.
"""

from __future__ import annotations

import os
import sys

import atheris

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    target, seconds = sys.argv[1], int(sys.argv[2])
    sys.path.insert(0, HERE)
    with atheris.instrument_imports(include=["raftpy", "msgpack"]):
        import targets
    work = os.path.join(os.path.dirname(HERE), ".fuzz", target)
    os.makedirs(work, exist_ok=True)
    seeds = os.path.join(HERE, "corpus", target)
    atheris.Setup([sys.argv[0], f"-max_total_time={seconds}", "-max_len=4096",
                   "-timeout=5", "-rss_limit_mb=1024", work, seeds],
                  targets.TARGETS[target])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
