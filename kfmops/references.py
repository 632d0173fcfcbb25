"""References: the four kinds of managed pointer, where one lives (kind, backend, locator), its canonical value.

Values per kind (None always means "absent"):
- cache:  the pointer key's string value.
- search: {"indices": [sorted index names], "write_index": name or None}.
- graph:  the key value of the node the relationship points at.
- stac:   {document: {rel: [sorted root-relative paths], "deprecated": bool}} over the locator's slots.

Everything that differs by kind is in one table, `KIND_RULES`; no other module branches on a kind's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from kfmops.io.canonical import canonical_json


class ReferenceKind(StrEnum):
    """The kinds of reference kfmops manages, in the default apply order."""

    STAC = "stac"
    GRAPH = "graph"
    SEARCH = "search"
    CACHE = "cache"

    @property
    def rules(self) -> KindRules:
        return KIND_RULES[self]


@dataclass(frozen=True)
class Reference:
    """Identity of one managed reference. `locator` is kind-specific, JSON-able and never secret."""

    address: str
    kind: ReferenceKind
    backend: str
    locator: dict[str, Any]
    dataset: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, ReferenceKind):  # built from JSON or YAML text
            object.__setattr__(self, "kind", ReferenceKind(self.kind))

    def identities(self) -> list[str]:
        """The live pointers this reference owns; two addresses may not own the same one."""
        return self.kind.rules.identities(self.locator)

    def normalize(self, value: Any) -> Any:
        """`value` in the canonical form of this reference's kind."""
        return None if value is None else self.kind.rules.normalize(value)

    def mixes(self, value: Any, before: Any, after: Any) -> bool:
        """Whether `value` is made of parts of `before` and `after` only: what a write that stopped half way
        through a reference written in several parts (a STAC reference spans several documents) leaves."""
        parts = self.kind.rules.parts
        old, new, live = parts(before), parts(after), parts(value)
        return all(live.get(name) in (old.get(name), new.get(name)) for name in {*old, *new, *live})

    def describe(self, value: Any) -> str:
        """One line saying where `value` points, e.g. `kfm-roads -> kfm-roads-v2` (for graphs and tables)."""
        return self.kind.rules.describe(self.locator, value)

    def target_names(self, value: Any) -> str:
        """The names `value` points at, comma-joined (index names, child paths, the node key, the key's value)."""
        return self.kind.rules.targets(value)


@dataclass(frozen=True)
class KindRules:
    """What differs by kind: the live pointers a locator owns, and the canonical form of a value."""

    identities: Callable[[dict[str, Any]], list[str]]
    normalize: Callable[[Any], Any]
    describe: Callable[[dict[str, Any], Any], str]
    targets: Callable[[Any], str]
    parts: Callable[[Any], dict[str, Any]] = lambda value: {"": value}
    """The parts of a value that are written separately (STAC: one per document)."""


def _stac_identities(locator: dict[str, Any]) -> list[str]:
    return [
        f"stac:{slot['document']}#{slot['field']}" + (f"@{','.join(slot['scope'])}" if slot["scope"] else "")
        for slot in locator["slots"]
    ]


def _stac_value(value: Any) -> Any:
    documents = {}
    for document, fields in sorted(value.items()):
        kept = {
            name: (sorted(content) if isinstance(content, list) else content)
            for name, content in sorted(fields.items())
            if content not in ([], None)
        }
        if kept:
            documents[document] = kept
    return documents or None


def _search_value(value: Any) -> Any:
    return {"indices": sorted(value["indices"]), "write_index": value.get("write_index")}


def _unchanged(value: Any) -> Any:
    return value


def _stac_children(value: Any) -> list[str]:
    return [str(t) for fields in value.values() if isinstance(fields, dict) for t in fields.get("child", [])]


def _stac_describe(locator: dict[str, Any], value: Any) -> str:
    children = _stac_children(value)
    return f"child -> {children[0]}" if children else f"{len(value)} documents"


def _indices(value: Any) -> str:
    return ",".join(str(i) for i in value.get("indices", [])) if isinstance(value, dict) else str(value)


KIND_RULES: dict[ReferenceKind, KindRules] = {
    ReferenceKind.STAC: KindRules(
        _stac_identities,
        _stac_value,
        _stac_describe,
        lambda value: ",".join(_stac_children(value)) if isinstance(value, dict) else str(value),
        lambda value: dict(value or {}),
    ),
    ReferenceKind.GRAPH: KindRules(
        lambda locator: [f"graph:{canonical_json(locator['from'])}-{locator['type']}->{locator['to']['label']}"],
        _unchanged,
        lambda locator, value: f"({locator['to']['label']} {value})",
        str,
    ),
    ReferenceKind.SEARCH: KindRules(
        lambda locator: [f"search:{locator['alias']}"],
        _search_value,
        lambda locator, value: f"{locator['alias']} -> {', '.join(value['indices'])}",
        _indices,
    ),
    ReferenceKind.CACHE: KindRules(
        lambda locator: [f"cache:{locator['key']}"],
        _unchanged,
        lambda locator, value: f"{locator['key']} = {value}",
        str,
    ),
}
