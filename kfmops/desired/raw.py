"""The raw kinds: StacLink, GraphRelationship, SearchAlias and CacheKey documents, one reference each."""

from __future__ import annotations

import posixpath
from typing import Any

from kfmops.desired import identifiers as ids
from kfmops.desired.collector import Collector
from kfmops.desired.document import Document
from kfmops.references import Reference, ReferenceKind


def _raw_stac(c: Collector, doc: Document) -> None:
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
    backend = c.backend_for(doc, ReferenceKind.STAC, spec.get("backend"), "backend")
    if problems or backend is None:
        return
    document = posixpath.normpath(spec["document"])
    locator = {"slots": [{"document": document, "field": spec["rel"], "scope": None}]}
    value = {document: {spec["rel"]: normal}}
    c.add(doc, Reference(doc.address, ReferenceKind.STAC, backend, locator), value, "targets")


def _raw_graph(c: Collector, doc: Document) -> None:
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
    backend = c.backend_for(doc, ReferenceKind.GRAPH, spec.get("backend"), "backend")
    if found or backend is None:
        return
    source = {"label": spec["from"]["label"], "key": spec["from"].get("key", "id"), "id": spec["from"]["id"]}
    locator = {
        "from": source,
        "type": spec["type"],
        "to": {"label": spec["to"]["label"], "key": spec["to"].get("key", "id")},
    }
    c.add(doc, Reference(doc.address, ReferenceKind.GRAPH, backend, locator), spec["to"]["id"], "to", "id")


def _raw_search(c: Collector, doc: Document) -> None:
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
    backend = c.backend_for(doc, ReferenceKind.SEARCH, spec.get("backend"), "backend")
    if found or backend is None:
        return
    value = {"indices": list(spec["indices"]), "write_index": write_index}
    c.add(doc, Reference(doc.address, ReferenceKind.SEARCH, backend, {"alias": spec["alias"]}), value, "indices")


def _raw_cache(c: Collector, doc: Document) -> None:
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
    backend = c.backend_for(doc, ReferenceKind.CACHE, spec.get("backend"), "backend")
    if problems or backend is None:
        return
    locator = {"key": spec["key"], "invalidate": invalidate}
    c.add(doc, Reference(doc.address, ReferenceKind.CACHE, backend, locator), spec["value"], "value")


RAW_KINDS = {"StacLink": _raw_stac, "GraphRelationship": _raw_graph, "SearchAlias": _raw_search, "CacheKey": _raw_cache}
