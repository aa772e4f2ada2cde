"""A Griffe extension: raftpy's docstrings use Sphinx roles; mkdocstrings wants Markdown.

``:class:`~raftpy.trio.Node``` becomes ``[`Node`][raftpy.trio.runtime.Node]`` (a
cross-reference that ``mkdocs build --strict`` checks), names relative to the
docstring's scope are resolved by Griffe, and a reST literal-block marker (a line
ending in ``::``) becomes ``:`` (the indented block after it is Markdown code).
Loaded by mkdocs.yml (``extensions: [docs/_ext/griffe_roles.py]``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|meth|func|mod|attr|data|exc|obj):`(?P<tilde>~?)(?P<target>[^`<>]+)`")
_LITERAL = re.compile(r"::$", re.MULTILINE)


def _canonical(root: Any, path: str) -> str:
    """``raftpy.RaftNode.advance`` -> ``raftpy.node.RaftNode.advance`` (where it is
    rendered): follow re-exports, look up inherited members on their class."""
    parts = path.split(".")
    if parts[0] != root.name:
        return path
    current: Any = root
    for index, name in enumerate(parts[1:], start=1):
        try:
            members = current.all_members if current.is_class else current.members
            member = members[name]
            if member.is_alias:
                member = member.final_target
        except (KeyError, AttributeError, griffe.AliasResolutionError,
                griffe.CyclicAliasError):
            return ".".join([current.path, *parts[index:]])
        if current.is_class and member.parent is not current:
            return ".".join([current.path, *parts[index:]])  # inherited: shown on the class
        current = member
    return str(current.path)


def _resolve(obj: griffe.Object, target: str) -> str:
    target = target.strip().removesuffix("()")
    root: Any = obj.package
    if target.startswith(root.name + "."):
        return _canonical(root, target)
    head, _, rest = target.partition(".")
    scope: Any = obj
    while scope is not None:
        if scope.is_class and head in scope.all_members:
            return _canonical(root, f"{scope.path}.{target}")
        try:
            resolved = scope.resolve(head)
        except (griffe.NameResolutionError, AttributeError, KeyError):
            scope = scope.parent
            continue
        return _canonical(root, f"{resolved}.{rest}" if rest else resolved)
    return target  # left unresolved: the strict build names it


def convert(obj: griffe.Object, text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        target = match.group("target").strip()
        shown = target.rsplit(".", 1)[-1] if match.group("tilde") else target
        return f"[`{shown}`][{_resolve(obj, target)}]"

    return _LITERAL.sub(":", _ROLE.sub(replace, text))


class SphinxRoles(griffe.Extension):
    """Rewrite every docstring once the package is loaded (names resolve then)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        seen: set[int] = set()

        def walk(obj: griffe.Object) -> None:
            if id(obj) in seen:
                return
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = convert(obj, obj.docstring.value)
            for member in obj.members.values():
                if not member.is_alias:
                    walk(member)  # type: ignore[arg-type]

        walk(pkg)
