"""The simulated demo prints the whole story and agrees with itself."""

import io
import re

from raftpy.demo import run


def test_demo_timeline() -> None:
    out = io.StringIO()
    assert run(seed=1, out=out) == 0
    text = out.getvalue()
    assert re.search(r"node \d elected leader of term 2 \(first election took", text)
    assert re.search(r"transfer took \d+\.\d ms", text)
    assert re.search(r"re-election took \d+\.\d ms", text)
    assert "every node applied the same 5 commands: True" in text
