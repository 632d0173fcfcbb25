"""The Dataset fan-out: one reference per enabled backend, named by the workspace's conventions."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kfmops.desired import identifiers as ids
from kfmops.desired.collector import Collector
from kfmops.desired.document import Document
from kfmops.references import Reference, ReferenceKind
from kfmops.workspace import Conventions, fill
from kfmops.yamlio import plain

_Part = tuple[dict[str, Any] | None, Any]
"""A dataset part's (locator, value); the locator is None when a name was refused (the problem is recorded)."""


Revocation = dict[str, str]
"""What a Consent document says of a revoked consent: `revoked` (date) and `revoked_by` (where it is said)."""


def revocations(documents: list[Document]) -> dict[tuple[str, str], Revocation]:
    """{(authority, reference): revocation} of every Consent document that says `revoked:`."""
    return {
        (str(d.spec["authority"]), str(d.spec["reference"])): {
            "revoked": str(d.spec["revoked"]),
            "revoked_by": f"{d.address} ({d.file}:{d.line})",
        }
        for d in documents
        if d.kind == "Consent" and d.spec.get("revoked")
    }


def expand_dataset(
    c: Collector, doc: Document, conv: Conventions, revoked: Mapping[tuple[str, str], Revocation]
) -> dict[str, Any] | None:
    spec = doc.spec
    care = plain(spec.get("care", {}))
    consent = care.get("consent")
    key = (str(consent.get("authority")), str(consent.get("reference"))) if isinstance(consent, dict) else None
    # a revoked consent withdraws what it allowed: the public catalog link and the search alias
    withdrawn = key in revoked
    if key is not None and withdrawn:
        care["consent"] = {**consent, **revoked[key]}
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
    enabled = {kind: spec.get("backends", {}).get(kind, True) for kind in ReferenceKind}
    name = doc.name
    stac_backend = None
    if withdrawn:
        enabled[ReferenceKind.SEARCH] = False
    for kind, setting in enabled.items():
        if setting is False:
            continue
        backend = c.backend_for(doc, kind, setting if isinstance(setting, str) else None, "backends", kind)
        if backend is None:
            continue
        if kind is ReferenceKind.STAC:
            stac_backend = backend
        address = f"dataset.{name}.{kind}"
        locator, value = DATASET_PARTS[kind](c, doc, conv, name, versions, current, not withdrawn)
        if locator is not None:
            c.add(
                doc,
                Reference(address, ReferenceKind(kind), backend, locator, dataset=name),
                value,
                "version",
                version=current,
            )
    return {
        "address": f"dataset.{name}",
        "source": f"{doc.file}:{doc.line}",
        "title": spec.get("title", name),
        "version": current,
        "versions": plain(spec["versions"]),
        "target": next(plain(v) for v in spec["versions"] if v["id"] == current),
        "care": care,
        "stac_backend": stac_backend,  # where the data of its versions is read (facts); None: nowhere
    }


def _dataset_stac(
    c: Collector, doc: Document, conv: Conventions, name: str, versions: list[str], current: str, listed: bool
) -> _Part:
    catalog = conv.stac_catalog
    paths = [fill(conv.stac_collection, name, v) for v in versions]
    for path in (catalog, *paths):
        if problem := ids.stac_path_problem(path):
            c.problem(doc, problem, "version")
            return None, None
    current_path = paths[versions.index(current)]
    slots: list[dict[str, Any]] = [{"document": catalog, "field": "child", "scope": sorted(paths)}]
    # The catalog is public: an internal dataset's versions stay linked to each other, never from it.
    children = [current_path] if listed and published(doc.spec) else []
    value: dict[str, dict[str, Any]] = {catalog: {"child": children}}
    if doc.spec.get("version_links") is False:  # a catalog without the version extension: the child link only
        return {"slots": slots}, value
    for i, path in enumerate(paths):
        fields: dict[str, Any] = {"latest-version": [current_path], "deprecated": versions[i] != current}
        fields["predecessor-version"] = [paths[i - 1]] if i > 0 else []
        fields["successor-version"] = [paths[i + 1]] if i + 1 < len(paths) else []
        slots.extend({"document": path, "field": f, "scope": None} for f in fields)
        value[path] = fields
    return {"slots": slots}, value


def published(spec: Mapping[str, Any]) -> bool:
    """Whether the public catalog links the dataset: only when its visibility is public (or unset)."""
    care = spec.get("care") or {}
    return bool(care.get("visibility", "public") != "internal")


def _dataset_graph(
    c: Collector, doc: Document, conv: Conventions, name: str, versions: list[str], current: str, listed: bool
) -> _Part:
    for label in (conv.graph_dataset_label, conv.graph_version_label, conv.graph_relationship, conv.graph_key):
        if problem := ids.graph_identifier_problem(label, "graph name"):
            c.problem(doc, problem)
            return None, None
    locator = {
        "from": {"label": conv.graph_dataset_label, "key": conv.graph_key, "id": fill(conv.graph_dataset_id, name)},
        "type": conv.graph_relationship,
        "to": {"label": conv.graph_version_label, "key": conv.graph_key},
    }
    return locator, fill(conv.graph_version_id, name, current)


def _dataset_search(
    c: Collector, doc: Document, conv: Conventions, name: str, versions: list[str], current: str, listed: bool
) -> _Part:
    alias = fill(conv.search_alias, name)
    index = fill(conv.search_index, name, current)
    for what, value in (("alias", alias), ("index", index)):
        if problem := ids.search_name_problem(value, what):
            c.problem(doc, problem)
            return None, None
    return {"alias": alias}, {"indices": [index], "write_index": None}


def _dataset_cache(
    c: Collector, doc: Document, conv: Conventions, name: str, versions: list[str], current: str, listed: bool
) -> _Part:
    key = fill(conv.cache_key, name)
    invalidate = [fill(p, name) for p in conv.cache_invalidate]
    for problem in [ids.cache_key_problem(key), *(ids.cache_key_problem(p, pattern=True) for p in invalidate)]:
        if problem:
            c.problem(doc, problem)
            return None, None
    return {"key": key, "invalidate": invalidate}, current


DATASET_PARTS: dict[str, Callable[[Collector, Document, Conventions, str, list[str], str, bool], _Part]] = {
    ReferenceKind.STAC: _dataset_stac,
    ReferenceKind.GRAPH: _dataset_graph,
    ReferenceKind.SEARCH: _dataset_search,
    ReferenceKind.CACHE: _dataset_cache,
}
