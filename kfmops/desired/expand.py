"""Expand documents into references: a Dataset fans out to one reference per enabled backend.

Pure: takes documents, conventions and routes; returns a DesiredState or raises InputError listing
every problem (duplicate addresses, unknown versions or backends, names a backend would not accept).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kfmops.desired import identifiers as ids
from kfmops.desired.load import Document
from kfmops.errors import Diagnostic, InputError
from kfmops.io.canonical import digest
from kfmops.references import Reference
from kfmops.workspace import Conventions
from kfmops.yamlio import plain


@dataclass(frozen=True)
class DesiredReference:
    """A reference and the value git wants it to hold; `source` is `file:line` of the field giving the value."""

    reference: Reference
    value: Any
    source: str
    version: str | None = None  # for dataset parts: the dataset version the value expresses


@dataclass
class DesiredState:
    references: dict[str, DesiredReference]
    datasets: dict[str, dict[str, Any]]
    documents: dict[str, str] = field(default_factory=dict)

    def digest(self) -> str:
        """sha256 over every desired reference and dataset record: what the plan was made from."""
        content = {
            "references": {a: [r.reference.locator, r.value] for a, r in sorted(self.references.items())},
            "datasets": self.datasets,
        }
        return digest(content)


class _Collector:
    def __init__(self, routes: dict[str, str], backends: set[str]):
        self.routes = routes
        self.backends = backends
        self.problems: list[Diagnostic] = []
        self.references: dict[str, DesiredReference] = {}
        self.owners: dict[str, str] = {}
        self.stac_slots: dict[tuple[str, str], dict[str | None, str]] = {}

    def problem(self, document: Document, message: str, *path: Any, detail: str = "") -> None:
        self.problems.append(Diagnostic(message, detail, file=document.file, line=document.line_of(*path)))

    def backend_for(self, document: Document, kind: str, named: str | None, *path: Any) -> str | None:
        backend = named or self.routes[kind]
        if backend not in self.backends:
            self.problem(
                document,
                f"unknown backend {backend!r}",
                *path,
                detail=f"define it under 'backends:' in kfmops.yaml (known: {', '.join(sorted(self.backends))})",
            )
            return None
        return backend

    def named(self, document: Document, message: str, detail: str = "") -> None:
        """A problem with the document as a whole, reported at its metadata.name."""
        self.problems.append(Diagnostic(message, detail, file=document.file, line=document.name_line or document.line))

    def add(self, document: Document, reference: Reference, value: Any, *path: Any, version: str | None = None) -> None:
        """Record `reference`; `path` (inside spec) is the field its value comes from, shown as its source."""
        source = f"{document.file}:{document.line_of(*path) if path else document.line}"
        if reference.address in self.references:
            first = self.references[reference.address].source
            self.named(document, f"duplicate address {reference.address}", detail=f"first defined at {first}")
            return
        owner = self.owner_of(reference)
        if owner is not None:
            self.named(
                document,
                f"{reference.address} manages the same {reference.kind} reference as {owner}",
                detail="one live reference may have only one owner",
            )
            return
        self.owners.update(dict.fromkeys(reference.identities(), reference.address))
        if reference.kind == "stac":
            for slot in reference.locator["slots"]:
                owners = self.stac_slots.setdefault((slot["document"], slot["field"]), {})
                for target in slot["scope"] if slot["scope"] is not None else [None]:
                    owners[target] = reference.address
        self.references[reference.address] = DesiredReference(reference, reference.normalize(value), source, version)

    def owner_of(self, reference: Reference) -> str | None:
        """The address that already owns a live pointer `reference` would manage, if any."""
        owned = [self.owners[identity] for identity in reference.identities() if identity in self.owners]
        if owned or reference.kind != "stac":
            return owned[0] if owned else None
        for slot in reference.locator["slots"]:
            # owners maps each target path of a scoped slot to its address, and None to the owner of an
            # unscoped slot, which owns every link of its rel in the document and so overlaps any other.
            owners = self.stac_slots.get((slot["document"], slot["field"]), {})
            if not owners:
                continue
            if None in owners:
                return owners[None]
            if slot["scope"] is None:
                return next(iter(owners.values()))
            for path in slot["scope"]:
                if path in owners:
                    return owners[path]
        return None


def expand(
    documents: list[Document], conventions: Conventions, routes: dict[str, str], backends: set[str]
) -> DesiredState:
    collector = _Collector(routes, backends)
    datasets: dict[str, dict[str, Any]] = {}
    files: dict[str, str] = {}
    for document in documents:
        if document.address in files:
            # One message per document, not one per reference a Dataset would fan out to.
            first = files[document.address]
            collector.named(document, f"duplicate address {document.address}", f"first defined at {first}")
            continue
        files[document.address] = f"{document.file}:{document.line}"
        if document.kind == "Dataset":
            record = _expand_dataset(collector, document, conventions)
            if record is not None:
                datasets[document.name] = record
        else:
            _RAW[document.kind](collector, document)
    if collector.problems:
        raise InputError(collector.problems)
    return DesiredState(collector.references, datasets, files)


_Part = tuple[dict[str, Any] | None, Any]
"""A dataset part's (locator, value); the locator is None when a name was refused (the problem is recorded)."""


def _fill(template: str, dataset: str, version: str = "") -> str:
    return template.replace("{dataset}", dataset).replace("{version}", version)


def _expand_dataset(c: _Collector, doc: Document, conv: Conventions) -> dict[str, Any] | None:
    spec = doc.spec
    versions = [v["id"] for v in spec["versions"]]
    if len(set(versions)) != len(versions):
        c.problem(doc, "versions lists the same id twice", "versions")
        return None
    current = spec["version"]
    if current not in versions:
        c.problem(
            doc,
            f"version {current!r} is not one of the dataset's versions",
            "version",
            detail=f"declared versions: {', '.join(versions)}",
        )
        return None
    enabled = {kind: spec.get("backends", {}).get(kind, True) for kind in ("stac", "graph", "search", "cache")}
    name = doc.name
    for kind, setting in enabled.items():
        if setting is False:
            continue
        backend = c.backend_for(doc, kind, setting if isinstance(setting, str) else None, "backends", kind)
        if backend is None:
            continue
        address = f"dataset.{name}.{kind}"
        locator, value = _DATASET_PARTS[kind](c, doc, conv, name, versions, current)
        if locator is not None:
            c.add(doc, Reference(address, kind, backend, locator, dataset=name), value, "version", version=current)
    return {
        "address": f"dataset.{name}",
        "source": f"{doc.file}:{doc.line}",
        "title": spec.get("title", name),
        "version": current,
        "versions": plain(spec["versions"]),
        "target": next(plain(v) for v in spec["versions"] if v["id"] == current),
        "care": plain(spec.get("care", {})),
    }


def _dataset_stac(
    c: _Collector, doc: Document, conv: Conventions, name: str, versions: list[str], current: str
) -> _Part:
    catalog = conv.stac_catalog
    paths = [_fill(conv.stac_collection, name, v) for v in versions]
    for path in (catalog, *paths):
        if problem := ids.stac_path_problem(path):
            c.problem(doc, problem, "version")
            return None, None
    current_path = paths[versions.index(current)]
    slots: list[dict[str, Any]] = [{"document": catalog, "field": "child", "scope": sorted(paths)}]
    value: dict[str, dict[str, Any]] = {catalog: {"child": [current_path]}}
    for i, path in enumerate(paths):
        fields: dict[str, Any] = {"latest-version": [current_path], "deprecated": versions[i] != current}
        fields["predecessor-version"] = [paths[i - 1]] if i > 0 else []
        fields["successor-version"] = [paths[i + 1]] if i + 1 < len(paths) else []
        slots.extend({"document": path, "field": f, "scope": None} for f in fields)
        value[path] = fields
    return {"slots": slots}, value


def _dataset_graph(
    c: _Collector, doc: Document, conv: Conventions, name: str, versions: list[str], current: str
) -> _Part:
    for label in (conv.graph_dataset_label, conv.graph_version_label, conv.graph_relationship, conv.graph_key):
        if problem := ids.graph_identifier_problem(label, "graph name"):
            c.problem(doc, problem)
            return None, None
    locator = {
        "from": {"label": conv.graph_dataset_label, "key": conv.graph_key, "id": _fill(conv.graph_dataset_id, name)},
        "type": conv.graph_relationship,
        "to": {"label": conv.graph_version_label, "key": conv.graph_key},
    }
    return locator, _fill(conv.graph_version_id, name, current)


def _dataset_search(
    c: _Collector, doc: Document, conv: Conventions, name: str, versions: list[str], current: str
) -> _Part:
    alias = _fill(conv.search_alias, name)
    index = _fill(conv.search_index, name, current)
    for what, value in (("alias", alias), ("index", index)):
        if problem := ids.search_name_problem(value, what):
            c.problem(doc, problem)
            return None, None
    return {"alias": alias}, {"indices": [index], "write_index": None}


def _dataset_cache(
    c: _Collector, doc: Document, conv: Conventions, name: str, versions: list[str], current: str
) -> _Part:
    key = _fill(conv.cache_key, name)
    invalidate = [_fill(p, name) for p in conv.cache_invalidate]
    for problem in [ids.cache_key_problem(key), *(ids.cache_key_problem(p, pattern=True) for p in invalidate)]:
        if problem:
            c.problem(doc, problem)
            return None, None
    return {"key": key, "invalidate": invalidate}, current


_DATASET_PARTS: dict[str, Callable[[_Collector, Document, Conventions, str, list[str], str], _Part]] = {
    "stac": _dataset_stac,
    "graph": _dataset_graph,
    "search": _dataset_search,
    "cache": _dataset_cache,
}


def _raw_stac(c: _Collector, doc: Document) -> None:
    spec = doc.spec
    problems: list[tuple[str, *tuple[str | int, ...]]] = [
        (p, "document") for p in [ids.stac_path_problem(spec["document"])] if p
    ]
    problems += [(p, "targets", i) for i, t in enumerate(spec["targets"]) if (p := ids.stac_path_problem(t))]
    normal = [posixpath.normpath(t) for t in spec["targets"]]
    # `a.json` and `./a.json` are one link: listing both would never match what the catalog holds.
    problems += [(f"targets list {t!r} twice", "targets", i) for i, t in enumerate(normal) if t in normal[:i]]
    for problem, *path in problems:
        c.problem(doc, problem, *path)
    backend = c.backend_for(doc, "stac", spec.get("backend"), "backend")
    if problems or backend is None:
        return
    document = posixpath.normpath(spec["document"])
    locator = {"slots": [{"document": document, "field": spec["rel"], "scope": None}]}
    value = {document: {spec["rel"]: normal}}
    c.add(doc, Reference(doc.address, "stac", backend, locator), value, "targets")


def _raw_graph(c: _Collector, doc: Document) -> None:
    spec = doc.spec
    found = False
    for path, what in (
        (("from", "label"), "label"),
        (("to", "label"), "label"),
        (("type",), "relationship type"),
        (("from", "key"), "key"),
        (("to", "key"), "key"),
    ):
        node: Any = spec
        for step in path:
            node = node.get(step, "id") if isinstance(node, dict) else node
        if problem := ids.graph_identifier_problem(node, what):
            c.problem(doc, problem, *path)
            found = True
    for end in ("from", "to"):
        if problem := ids.node_id_problem(spec[end]["id"]):
            c.problem(doc, problem, end, "id")
            found = True
    backend = c.backend_for(doc, "graph", spec.get("backend"), "backend")
    if found or backend is None:
        return
    source = {"label": spec["from"]["label"], "key": spec["from"].get("key", "id"), "id": spec["from"]["id"]}
    locator = {
        "from": source,
        "type": spec["type"],
        "to": {"label": spec["to"]["label"], "key": spec["to"].get("key", "id")},
    }
    c.add(doc, Reference(doc.address, "graph", backend, locator), spec["to"]["id"], "to", "id")


def _raw_search(c: _Collector, doc: Document) -> None:
    spec = doc.spec
    names: list[tuple[str, str, tuple[str | int, ...]]] = [("alias", spec["alias"], ("alias",))]
    names += [("index", name, ("indices", i)) for i, name in enumerate(spec["indices"])]
    found = False
    for what, name, path in names:
        if problem := ids.search_name_problem(name, what):
            c.problem(doc, problem, *path)
            found = True
    write_index = spec.get("write_index")
    if write_index is not None and write_index not in spec["indices"]:
        c.problem(doc, f"write_index {write_index!r} is not one of the alias' indices", "write_index")
        found = True
    backend = c.backend_for(doc, "search", spec.get("backend"), "backend")
    if found or backend is None:
        return
    value = {"indices": list(spec["indices"]), "write_index": write_index}
    c.add(doc, Reference(doc.address, "search", backend, {"alias": spec["alias"]}), value, "indices")


def _raw_cache(c: _Collector, doc: Document) -> None:
    spec = doc.spec
    invalidate = list(spec.get("invalidate", []))
    problems: list[tuple[str, tuple[str | int, ...]]] = [
        (p, ("key",)) for p in [ids.cache_key_problem(spec["key"])] if p
    ]
    problems += [
        (p, ("invalidate", i)) for i, pat in enumerate(invalidate) if (p := ids.cache_key_problem(pat, pattern=True))
    ]
    for problem, path in problems:
        c.problem(doc, problem, *path)
    backend = c.backend_for(doc, "cache", spec.get("backend"), "backend")
    if problems or backend is None:
        return
    locator = {"key": spec["key"], "invalidate": invalidate}
    c.add(doc, Reference(doc.address, "cache", backend, locator), spec["value"], "value")


_RAW = {"StacLink": _raw_stac, "GraphRelationship": _raw_graph, "SearchAlias": _raw_search, "CacheKey": _raw_cache}
