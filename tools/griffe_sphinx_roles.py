"""A griffe extension for the API reference (``mkdocs.yml``): Sphinx-isms in docstrings → Markdown.

pgconnector's docstrings are written in the Sphinx way: ``:class:`~pgconnector.Client```
roles, ``code`` in double backquotes (already valid Markdown) and reST literal blocks introduced
by ``::``. mkdocstrings' Sphinx parser reads the ``:param x:`` fields but renders the text as
Markdown, so this extension rewrites, before rendering:

* a role ``:class:`X```, ``:meth:`X```, … into a code span that links to ``X`` when the API
  reference documents it (an *optional* cross-reference: an object that is not documented, such
  as a private helper, stays plain code without a warning);
* a paragraph ending in ``::`` into one ending in ``:`` (a lone ``::`` line is dropped), as reST
  renders it; the indented block that follows is a Markdown code block already.

Docstrings stay as they are in the source.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import griffe

import pgconnector

ROLE = re.compile(r":(?:class|meth|func|attr|data|exc|mod|obj):`(?P<target>[^`]+)`")
PUBLIC_ROOT = "pgconnector"
PUBLIC_NAMES = frozenset(pgconnector.__all__)


def _public_path(obj: griffe.Object) -> str:
    """Where the API reference documents *obj*: ``pgconnector.X`` for what the package root
    re-exports from a private module, else its own path."""
    if obj.is_module:
        return obj.path if not any(p.startswith("_") for p in obj.path.split(".")) else PUBLIC_ROOT
    parent = obj.parent
    assert parent is not None
    if parent.is_module and _public_path(parent) == PUBLIC_ROOT and obj.name in PUBLIC_NAMES:
        return f"{PUBLIC_ROOT}.{obj.name}"
    return f"{_public_path(parent)}.{obj.name}"


def _exists(identifier: str, package: griffe.Module) -> bool:
    try:
        package[identifier.removeprefix(PUBLIC_ROOT + ".")]
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return False
    return True


def _identifier(target: str, obj: griffe.Object, package: griffe.Module) -> str:
    """The identifier the API reference gives the role's target, looked up from *obj*'s scope:
    its class, its module, then the package root."""
    if target.startswith(PUBLIC_ROOT + "."):
        return target
    candidates: list[str] = []
    scope: griffe.Object | None = obj
    while scope is not None:
        if scope.is_class or scope.is_module:
            candidates.append(f"{_public_path(scope)}.{target}")
        scope = scope.parent
    found = [c for c in candidates if _exists(c, package)]
    return found[0] if found else candidates[-1]


def _role_to_markdown(match: re.Match[str], obj: griffe.Object, package: griffe.Module) -> str:
    target = match["target"]
    short = target.startswith("~")
    target = target.lstrip("~")
    shown = target.rsplit(".", 1)[-1] if short else target
    # ``optional``: autorefs links it when the reference documents it, else leaves plain code.
    identifier = _identifier(target, obj, package)
    return f'<autoref identifier="{identifier}" optional><code>{shown}</code></autoref>'


def _literal_blocks(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    for line in lines:
        if line.strip() == "::":
            continue
        if line.endswith("::"):
            line = line[:-1]
        out.append(line)
    return "\n".join(out)


def convert(text: str, obj: griffe.Object, package: griffe.Module) -> str:
    return ROLE.sub(lambda m: _role_to_markdown(m, obj, package), _literal_blocks(text))


def _objects(obj: griffe.Object) -> Iterator[griffe.Object]:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)  # type: ignore[arg-type]  # not an alias


class SphinxRoles(griffe.Extension):
    """Rewrite every docstring of the package once all of it is loaded (to resolve roles)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.name != PUBLIC_ROOT:
            return
        for obj in _objects(pkg):
            if obj.docstring is not None:
                obj.docstring.value = convert(obj.docstring.value, obj, pkg)
