"""MkDocs hooks: the site is built from the repository as GitHub shows it.

* The home page is README.md (no copy in docs/ to keep in step).
* A page's relative link to a file outside docs/ (README's ``docs/runtime.md``,
  ``CHANGELOG.md``, benchmarks' ``../benchmarks/results/x.png``) is rewritten to
  point into the site: files of docs/ by their place there, others copied under
  ``_repo/`` (Markdown ones rendered as pages), so ``--strict`` still checks them.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
_LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s#]+)((?:#[^)\s]*)?\))")
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)

# site path of a generated page -> its file in the repository
_repo_pages: dict[str, str] = {"index.md": "README.md"}


def _site_path(repo_path: str) -> str:
    return repo_path[len("docs/"):] if repo_path.startswith("docs/") else f"_repo/{repo_path}"


def _repo_path_of(src_uri: str) -> str:
    return _repo_pages.get(src_uri, f"docs/{src_uri}")


def _outside_targets(repo_path: str) -> set[str]:
    """Repository files outside docs/ that ``repo_path`` links to."""
    found = set()
    text = (ROOT / repo_path).read_text(encoding="utf-8")
    for match in _LINK.finditer(text):
        target = match.group(2)
        if _EXTERNAL.match(target) or target.startswith("/"):
            continue
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(repo_path), target))
        if not resolved.startswith("docs/") and (ROOT / resolved).is_file():
            found.add(resolved)
    return found


def on_files(files: Files, config: Any, **kwargs: Any) -> Files:
    pending = ["README.md", *(f"docs/{f.src_uri}" for f in files.documentation_pages())]
    seen: set[str] = set()
    files.append(File.generated(config, "index.md", abs_src_path=str(ROOT / "README.md")))
    while pending:
        for target in _outside_targets(pending.pop()):
            if target in seen:
                continue
            seen.add(target)
            site = _site_path(target)
            files.append(File.generated(config, site, abs_src_path=str(ROOT / target)))
            if target.endswith(".md"):
                _repo_pages[site] = target
                pending.append(target)
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files, **kwargs: Any) -> str:
    repo_path = _repo_path_of(page.file.src_uri)
    page_dir = posixpath.dirname(page.file.src_uri)

    def rewrite(match: re.Match[str]) -> str:
        target = match.group(2)
        if _EXTERNAL.match(target) or target.startswith("/"):
            return match.group(0)
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(repo_path), target))
        new = posixpath.relpath(_site_path(resolved), page_dir or ".")
        return f"{match.group(1)}{new}{match.group(3)}"

    return _LINK.sub(rewrite, markdown)
