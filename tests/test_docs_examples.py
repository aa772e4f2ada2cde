"""Every Python example in README.md and docs/**/*.md runs, as a reader would paste it.

The convention (docs/testing.md, "Examples in the docs run"):

* a fenced block opened with exactly ```` ```python ```` is executed; every other
  block (``sh``, ``text``, ``mermaid``, bare ```` ``` ````) is not;
* the blocks of one file run in document order in one shared namespace, in a
  temporary working directory, so a later block may use what an earlier one defined;
* ``<!-- skip: REASON -->`` on the line before a block skips it (the reason is
  required and is shown in the test output);
* a block with a top-level ``await`` / ``async with`` runs inside ``trio.run``;
* every block must finish within :data:`TIMEOUT` seconds (a hang fails the test).

The files are found by glob, so a new page is covered without touching this test.
"""

from __future__ import annotations

import ast
import inspect
import re
import signal
import textwrap
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FrameType

import pytest
import trio
from sybil import Document, Example, Region, Sybil

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = sorted([ROOT / "README.md", *ROOT.glob("docs/**/*.md")])
TIMEOUT = 60.0  # seconds per block; the examples themselves bound their waits tighter

_BLOCK = re.compile(
    r"^(?P<indent>[ \t]*)```python[ \t]*\n(?P<source>.*?)^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
_SKIP = re.compile(r"<!--\s*skip:\s*(?P<reason>.*?)\s*-->\s*$")


class _Skipped:
    """The parsed form of a block marked ``<!-- skip: reason -->``."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _skip_reason(text: str, block_start: int) -> str | None:
    before = text[:block_start].rstrip("\n").rsplit("\n", 1)[-1]
    match = _SKIP.search(before)
    return None if match is None else match.group("reason")


def parse_python_blocks(document: Document) -> Iterable[Region]:
    """Sybil parser: one region per ```` ```python ```` block of a Markdown file."""
    for match in _BLOCK.finditer(document.text):
        reason = _skip_reason(document.text, match.start())
        source = textwrap.dedent(match.group("source"))
        if reason is not None:
            yield Region(match.start(), match.end(), _Skipped(reason), _skip)
        else:
            yield Region(match.start(), match.end(), source, _run_block)


def _skip(example: Example) -> None:
    assert example.parsed.reason, f"{example.path}:{example.line}: a skip needs a reason"


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise TimeoutError(f"a docs example ran longer than {TIMEOUT} s")


def _run_block(example: Example) -> None:
    # Leading newlines make tracebacks point at the line in the Markdown file.
    source = "\n" * example.line + example.parsed
    code = compile(source, example.path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
                   dont_inherit=True)
    namespace = example.namespace
    namespace.setdefault("__name__", "__main__")
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, TIMEOUT)
    try:
        if code.co_flags & inspect.CO_COROUTINE:
            async def run() -> None:
                with trio.fail_after(TIMEOUT):
                    await eval(code, namespace)

            trio.run(run)
        else:
            exec(code, namespace)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


SYBIL = Sybil(parsers=[parse_python_blocks])


def _examples(path: Path) -> Iterator[Example]:
    return iter(SYBIL.parse(path))


@pytest.mark.parametrize("path", DOC_FILES, ids=[str(p.relative_to(ROOT)) for p in DOC_FILES])
def test_examples_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    ran = skipped = 0
    for example in _examples(path):
        try:
            example.evaluate()
        except BaseException as error:
            raise AssertionError(
                f"the example at {path.relative_to(ROOT)}:{example.line} failed: {error!r}"
            ) from error
        if isinstance(example.parsed, _Skipped):
            skipped += 1
        else:
            ran += 1
    print(f"{path.relative_to(ROOT)}: {ran} examples ran, {skipped} skipped")


def test_the_convention_finds_blocks_and_skips() -> None:
    text = textwrap.dedent("""\
        # Page

        ```python
        x = 1
        ```

        <!-- skip: talks to 10.0.0.2 -->
        ```python
        raise SystemExit("never runs")
        ```

        ```sh
        rm -rf /
        ```

        ```python
        y = await_free = x + 1
        ```
        """)
    document = Document(text, "page.md")
    for region in parse_python_blocks(document):
        document.add(region)
    examples = list(document)
    assert [type(e.parsed).__name__ for e in examples] == ["str", "_Skipped", "str"]
    assert examples[1].parsed.reason == "talks to 10.0.0.2"
    for example in examples:
        example.evaluate()
    assert document.namespace["y"] == 2


def test_a_block_with_top_level_await_runs_under_trio() -> None:
    document = Document("```python\nimport trio\nawait trio.sleep(0)\nz = 3\n```\n", "a.md")
    for region in parse_python_blocks(document):
        document.add(region)
    for example in document:
        example.evaluate()
    assert document.namespace["z"] == 3


def test_a_failing_block_names_its_line(tmp_path: Path) -> None:
    page = tmp_path / "bad.md"
    page.write_text("intro\n\n```python\nx = 1\nmy_storage\n```\n")
    document = SYBIL.parse(page)
    (example,) = list(document)
    with pytest.raises(NameError) as info:
        example.evaluate()
    assert info.traceback[-1].lineno + 1 == 5  # pytest's lineno is 0-based
