"""Discovery: find live references in kfmops' naming conventions that no document declares, and write the
Dataset and Import documents that adopt them (`kfmops import --discover`).

Read only: the backends are listed (catalog child links, `CURRENT_VERSION` edges, `kfm-*` aliases,
`kfm:dataset:*:current` keys, or whatever the workspace's conventions name), never written, and nothing is
created in the workspace but the file asked for. A dataset is written with the parts found live (others
disabled) and the versions its catalog holds, and only when what the document gives equals what is live,
so that `plan` after it shows imports only; everything left out is said in a note.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from kfmops.addresses import NAME_PATTERN
from kfmops.desired import DesiredState, expand, parse_documents
from kfmops.engine.plan import load_desired
from kfmops.engine.session import Session
from kfmops.errors import KfmopsError
from kfmops.io.clock import now
from kfmops.io.files import write_atomic
from kfmops.providers.resilient import Resilient
from kfmops.references import Reference, ReferenceKind
from kfmops.stores.state import State
from kfmops.workspace import PLACEHOLDERS, Conventions, Workspace, literal_prefix, unfill

Sighting = tuple[str, str, str]
"""(dataset name, version, where it was seen) of one live pointer."""


@dataclass(frozen=True)
class DiscoveredDataset:
    """A dataset found live: its version, where each part was seen, and the versions its catalog holds."""

    name: str
    version: str
    seen: dict[ReferenceKind, str]
    versions: list[str]
    version_links: bool = True


@dataclass
class Discovery:
    kinds: list[str]
    datasets: list[DiscoveredDataset] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def discover(session: Session, kinds: list[ReferenceKind]) -> Discovery:
    """The datasets whose live pointers (of `kinds`) follow the workspace's conventions and no document or
    state entry owns; each checked to give exactly the live values once expanded."""
    workspace = session.workspace
    desired = load_desired(workspace)
    state = session.state() or State.new()
    owned = {i for r in desired.references.values() for i in r.reference.identities()}
    owned |= {i for reference, _ in state.managed().values() for i in reference.identities()}
    result = Discovery([str(kind) for kind in kinds])
    sightings: dict[str, dict[ReferenceKind, tuple[str, str]]] = {}
    for kind in kinds:
        backend = workspace.routes[kind]
        provider = session.providers.get(backend, kind)
        for name, version, where in FINDERS[kind](provider, workspace.conventions, backend, result.notes):
            if name not in desired.datasets:
                sightings.setdefault(name, {})[kind] = (version, f"{where} on backend {backend!r}")
    for name, seen in sorted(sightings.items()):
        dataset = _agreed(name, seen, result.notes)
        if ReferenceKind.STAC in dataset.seen:
            provider = session.providers.get(workspace.routes[ReferenceKind.STAC], ReferenceKind.STAC)
            dataset = replace(dataset, versions=_catalog_versions(provider, workspace.conventions, dataset))
        dataset = _unowned(workspace, dataset, owned, result.notes)
        if dataset.seen:
            result.datasets.append(_matching(session, dataset, result.notes))
    return result


# finding pointers, one function per kind -------------------------------------------------------------------


def _stac(provider: Resilient, conventions: Conventions, backend: str, notes: list[str]) -> Iterator[Sighting]:
    catalog = conventions.stac_catalog
    children = Reference("stac_link.discovered", ReferenceKind.STAC, backend, {"slots": [_slot(catalog, "child")]})
    value = provider.read([children])[children.address] or {}
    paths = value.get(catalog, {}).get("child", [])
    names = provider.catalog.names(paths)
    for path in paths:
        parts = unfill(conventions.stac_collection, path)
        fields = names.get(path, {})
        name = (parts or {}).get("dataset") or fields.get("kfm:dataset") or _slug(fields.get("id"))
        if parts is None or "version" not in parts or not name:
            notes.append(f"{catalog} child {path} does not follow datasets.stac.collection; left out")
        elif _named(name, f"{catalog} child {path}", notes):
            yield name, parts["version"], f"{catalog} child -> {path}"


def _graph(provider: Resilient, conventions: Conventions, backend: str, notes: list[str]) -> Iterator[Sighting]:
    shape = {
        "from_label": conventions.graph_dataset_label,
        "key": conventions.graph_key,
        "type": conventions.graph_relationship,
        "to_label": conventions.graph_version_label,
        "to_key": conventions.graph_key,
        "prefix": literal_prefix(conventions.graph_dataset_id),
    }
    for source, target in sorted(provider.pointers(ReferenceKind.GRAPH, shape).items()):
        name = (unfill(conventions.graph_dataset_id, str(source)) or {}).get("dataset")
        version = name and (unfill(_for(conventions.graph_version_id, name), str(target)) or {}).get("version")
        where = f"({shape['from_label']} {source})-[:{shape['type']}]->({target})"
        if not name or not version:
            notes.append(f"{where} does not follow datasets.graph; left out")
        elif _named(name, where, notes):
            yield name, version, where


def _search(provider: Resilient, conventions: Conventions, backend: str, notes: list[str]) -> Iterator[Sighting]:
    shape = {"prefix": literal_prefix(conventions.search_alias)}
    for alias, value in sorted(provider.pointers(ReferenceKind.SEARCH, shape).items()):
        name = (unfill(conventions.search_alias, alias) or {}).get("dataset")
        if not name:
            continue  # another alias that shares the prefix
        indices = value["indices"]
        version = None
        if len(indices) == 1 and value.get("write_index") is None:
            version = (unfill(_for(conventions.search_index, name), indices[0]) or {}).get("version")
        where = f"alias {alias} -> {', '.join(indices)}"
        if version is None:
            notes.append(f"{where} is not one index of the dataset's naming; declare it as a SearchAlias")
        elif _named(name, where, notes):
            yield name, version, where


def _cache(provider: Resilient, conventions: Conventions, backend: str, notes: list[str]) -> Iterator[Sighting]:
    shape = {"pattern": literal_prefix(conventions.cache_key) + "*"}  # the keys of other shapes are skipped below
    for key, value in sorted(provider.pointers(ReferenceKind.CACHE, shape).items()):
        name = (unfill(conventions.cache_key, key) or {}).get("dataset")
        where = f"key {key} = {value}"
        if not name:
            continue
        if not re.fullmatch(PLACEHOLDERS["version"], str(value)):
            notes.append(f"{where}: the value is not a version id; left out")
        elif _named(name, where, notes):
            yield name, str(value), where


FINDERS: dict[ReferenceKind, Callable[[Resilient, Conventions, str, list[str]], Iterator[Sighting]]] = {
    ReferenceKind.STAC: _stac,
    ReferenceKind.GRAPH: _graph,
    ReferenceKind.SEARCH: _search,
    ReferenceKind.CACHE: _cache,
}


# one dataset from its sightings ----------------------------------------------------------------------------


def _agreed(name: str, seen: dict[ReferenceKind, tuple[str, str]], notes: list[str]) -> DiscoveredDataset:
    """The dataset at the catalog's version (else the most common one); parts at another version left out."""
    if ReferenceKind.STAC in seen:
        version = seen[ReferenceKind.STAC][0]
    else:
        version = Counter(v for v, _ in seen.values()).most_common(1)[0][0]
    for other, where in seen.values():
        if other != version:
            notes.append(f"dataset {name}: {where} points at {other}, not {version} like the rest; left out")
    kept = {kind: where for kind, (v, where) in seen.items() if v == version}
    return DiscoveredDataset(name, version, kept, [version])


def _catalog_versions(provider: Resilient, conventions: Conventions, dataset: DiscoveredDataset) -> list[str]:
    """The versions whose documents the catalog holds, oldest first by their predecessor links (else by name)."""
    template = _for(conventions.stac_collection, dataset.name)
    paths = {
        parts["version"]: path
        for path in provider.catalog.find(template.replace("{version}", "*"))
        if (parts := unfill(template, path)) and "version" in parts
    }
    paths.setdefault(dataset.version, template.replace("{version}", dataset.version))
    probe = Reference(
        "stac_link.discovered", ReferenceKind.STAC, provider.name,
        {"slots": [_slot(path, "predecessor-version") for path in paths.values()]},
    )  # fmt: skip
    links = provider.read([probe])[probe.address] or {}
    by_path = {path: version for version, path in paths.items()}
    before = {v: [by_path[p] for p in links.get(path, {}).get("predecessor-version", []) if p in by_path]
              for v, path in paths.items()}  # fmt: skip

    def depth(version: str, seen: frozenset[str] = frozenset()) -> int:
        earlier = [v for v in before[version] if v not in seen]
        return 1 + max((depth(v, seen | {version}) for v in earlier), default=-1)

    return sorted(paths, key=lambda v: (depth(v), v))


def _unowned(workspace: Workspace, dataset: DiscoveredDataset, owned: set[str], notes: list[str]) -> DiscoveredDataset:
    """Without the parts whose live pointer a document or the state already owns."""
    expanded = _expand(workspace, [dataset])
    kept = dict(dataset.seen)
    for desired in expanded.references.values():
        reference = desired.reference
        if reference.kind in kept and owned.intersection(reference.identities()):
            notes.append(f"dataset {dataset.name}: its {reference.kind} reference is already declared or managed")
            del kept[reference.kind]
    return replace(dataset, seen=kept)


def _matching(session: Session, dataset: DiscoveredDataset, notes: list[str]) -> DiscoveredDataset:
    """The dataset as it gives the live values: with version_links off when the catalog has none of them."""
    candidates = [dataset, replace(dataset, version_links=False)] if ReferenceKind.STAC in dataset.seen else [dataset]
    differing: list[str] = []
    for candidate in candidates:
        expanded = _expand(session.workspace, [candidate])
        live = session.providers.read_live(r.reference for r in expanded.references.values())
        differing = [a for a, r in expanded.references.items() if live.get(a) != r.value]
        if not differing:
            return candidate
    notes.append(
        f"dataset {dataset.name}: live {', '.join(differing)} is not exactly what the document gives; "
        "its import needs --accept-live (which then also updates it), or edit the document"
    )
    return dataset


# the documents ---------------------------------------------------------------------------------------------


def documents_text(discovery: Discovery, when: str) -> str:
    """The YAML of a Dataset and an Import document per discovered dataset, commented for review."""
    lines = [
        f"# Written by 'kfmops import --discover' at {when}: live references in kfmops' conventions that no",
        "# document declared. Review each dataset (title, CARE metadata, provenance) before merging: the values",
        "# marked REVIEW are placeholders. The Import documents make the next apply record the live values in",
        "# state without writing to any backend; once applied they change nothing and may be removed.",
    ]
    for dataset in discovery.datasets:
        found = [f"#   {kind}: {where}" for kind, where in sorted(dataset.seen.items())]
        spec: dict[str, Any] = {
            "title": dataset.name,
            "version": dataset.version,
            "versions": [
                {"id": v, "provenance": {"source": "found live by kfmops import --discover", "activity": "adopted"}}
                for v in dataset.versions
            ],
            "care": {"label": "unreviewed", "sovereignty": "none", "review": "pending"},
        }
        if not dataset.version_links:
            spec["version_links"] = False
        disabled = {str(kind): False for kind in ReferenceKind if kind not in dataset.seen}
        if disabled:
            spec["backends"] = disabled
        lines += [
            "---",
            f"# {dataset.name}: found live at",
            *found,
            *[
                line + ("  # REVIEW: placeholders; set the CARE label and sovereignty" if " care:" in line else "")
                for line in _yaml(
                    {"apiVersion": "kfmops/v1", "kind": "Dataset", "metadata": {"name": dataset.name}, "spec": spec}
                )
            ],
            "---",
            f"# Import the live values of dataset.{dataset.name} (nothing is written)",
            *_yaml(
                {
                    "apiVersion": "kfmops/v1",
                    "kind": "Import",
                    "metadata": {"name": dataset.name},
                    "spec": {"address": f"dataset.{dataset.name}"},
                }
            ),
        ]
    return "\n".join(lines) + "\n"


def write_discovered(discovery: Discovery, path: Path | None) -> str:
    """The documents' text, written to `path` when given (never over an existing file); checked first."""
    text = documents_text(discovery, now())
    parse_documents([(str(path or "discovered.yaml"), text)])  # schema-valid, or an internal error
    if path is not None:
        if path.exists():
            raise KfmopsError(f"{path} exists; discovery never overwrites a file: choose a new one")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text.encode("utf-8"))
        path.chmod(0o644)  # a document for git, not a secret
    return text


def _expand(workspace: Workspace, datasets: list[DiscoveredDataset]) -> DesiredState:
    text = documents_text(Discovery([], datasets), "")
    documents = [d for d in parse_documents([("discovered.yaml", text)]) if d.kind == "Dataset"]
    return expand(documents, workspace.conventions, workspace.routes, set(workspace.backends))


def _yaml(document: dict[str, Any]) -> list[str]:
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=110).splitlines()


def _slot(document: str, rel: str) -> dict[str, Any]:
    return {"document": document, "field": rel, "scope": None}


def _for(template: str, name: str) -> str:
    """A convention with the dataset filled in and `{version}` left to match."""
    return template.replace("{dataset}", name)


def _slug(text: Any) -> str | None:
    """A dataset name from a document id (`planet/fusion/14N/29E-188N` -> `planet-fusion-14n-29e-188n`)."""
    if not isinstance(text, str):
        return None
    slug = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_")
    return slug[:128] or None


def _named(name: str, where: str, notes: list[str]) -> bool:
    if re.fullmatch(NAME_PATTERN, name):
        return True
    notes.append(f"{where}: {name!r} is not a valid dataset name; left out")
    return False
