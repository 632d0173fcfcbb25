"""Offline checks of a static STAC catalog: JSON Schema validity, broken links and orphans.

An orphan is a STAC document under the catalog root that no link reaches from the root catalog (following
every relative link), or a version document (named by the workspace's `stac_collection` convention) of a
dataset that no `Dataset` declares.

Schemas come from a local folder with a `schema-map.json` (canonical URL -> file), so no network is
needed. Documents of any STAC 1.x version are checked against the 1.1.0 core schemas with their
`stac_version` read as 1.1.0 (the only difference the core schemas enforce); extension schemas are
applied when present in the map and declared by the document, and reported as unchecked otherwise.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfmops.schemas import import_jsonschema

if TYPE_CHECKING:  # jsonschema is imported by the first check, not when kfmops starts
    from jsonschema import Draft7Validator
    from referencing import Registry

CORE = {
    "Catalog": "https://schemas.stacspec.org/v1.1.0/catalog-spec/json-schema/catalog.json",
    "Collection": "https://schemas.stacspec.org/v1.1.0/collection-spec/json-schema/collection.json",
    "Feature": "https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/item.json",
}


@dataclass
class CatalogReport:
    documents: int = 0
    invalid: list[tuple[str, str]] = field(default_factory=list)
    broken_links: list[tuple[str, str]] = field(default_factory=list)
    orphans: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    unchecked_extensions: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.invalid and not self.broken_links and not self.orphans


@dataclass(frozen=True)
class Declared:
    """What the desired state says the catalog should hold: the root catalog's path, the `stac_collection`
    convention of version documents, and the declared datasets."""

    catalog: str = "catalog.json"
    version_document: str | None = None
    datasets: frozenset[str] = frozenset()


@cache
def _validators(schema_dir: Path) -> tuple[dict[str, Draft7Validator], Registry]:
    import_jsonschema()
    from jsonschema import Draft7Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT7

    mapping = json.loads((schema_dir / "schema-map.json").read_text())
    resources = []
    for url, file in mapping.items():
        contents = json.loads((schema_dir / file).read_text())
        resources.append((url, Resource.from_contents(contents, default_specification=DRAFT7)))
        resources.append((url + "#", Resource.from_contents(contents, default_specification=DRAFT7)))
    registry = Registry().with_resources(resources)
    validators = {
        url: Draft7Validator(json.loads((schema_dir / file).read_text()), registry=registry)
        for url, file in mapping.items()
    }
    return validators, registry


def validators_of(schema_dir: Path) -> dict[str, Draft7Validator]:
    """The validators of the schema folder (`schema-map.json` beside the schemas), by canonical schema URL."""
    return _validators(schema_dir.resolve())[0]


def schema_problems(
    document: Mapping[str, Any], validators: Mapping[str, Draft7Validator]
) -> tuple[list[str], set[str]]:
    """What is invalid in one STAC document against the core schema of its type and the schemas of the extensions
    it declares (`where: message (schema file)`), and the declared extensions the map has no schema for."""
    as_current = {**document, "stac_version": "1.1.0"}
    schemas = [CORE.get(document.get("type", ""))]
    unchecked = set()
    for extension in document.get("stac_extensions", []):
        if extension in validators:
            schemas.append(extension)
        else:
            unchecked.add(extension)
    problems = []
    for url in schemas:
        if url is None:
            problems.append(f"unknown STAC type {document.get('type')!r}")
            continue
        for error in validators[url].iter_errors(as_current):
            where = "/".join(str(p) for p in error.absolute_path) or "document"
            problems.append(f"{where}: {error.message} ({url.rsplit('/', 1)[-1]})")
    return problems, unchecked


def broken_links(path: str, document: dict[str, Any], root: Path) -> list[str]:
    """Relative hrefs of `document` (at root-relative `path`) that do not resolve to a file under root."""
    broken = []
    folder = posixpath.dirname(path)
    for link in document.get("links", []):
        href = link.get("href", "")
        if "://" in href or href.startswith("/"):
            continue
        target = posixpath.normpath(posixpath.join(folder, href))
        if target.startswith("..") or not (root / target).is_file():
            broken.append(href)
    return broken


def targets(path: str, document: Mapping[str, Any]) -> list[str]:
    """Root-relative paths of the relative links of `document` (at root-relative `path`)."""
    folder = posixpath.dirname(path)
    return [
        posixpath.normpath(posixpath.join(folder, href))
        for link in document.get("links", [])
        if (href := link.get("href", "")) and "://" not in href and not href.startswith("/")
    ]


def unreached(start: str, links: Mapping[str, Sequence[str]]) -> list[str]:
    """Paths of `links` (path -> the paths its relative links point at, see `targets`) that no chain of links
    from `start` reaches (none when `start` is absent)."""
    if start not in links:
        return []
    seen, todo = {start}, [start]
    while todo:
        for target in links[todo.pop()]:
            if target in links and target not in seen:
                seen.add(target)
                todo.append(target)
    return sorted(set(links) - seen)


def check_catalog(root: Path, schema_dir: Path | None = None, declared: Declared | None = None) -> CatalogReport:
    """Every STAC document under `root`: broken links and orphans always, schema validity when `schema_dir` is
    given; version documents of undeclared datasets when `declared` names the datasets."""
    report = CatalogReport()
    loaded: dict[str, dict[str, Any]] = {}
    validators = validators_of(schema_dir) if schema_dir else {}
    for file in sorted(root.rglob("*.json")):
        try:
            document = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            report.invalid.append((str(file.relative_to(root)), f"not valid JSON: {exc}"))
            continue
        if not isinstance(document, dict) or "stac_version" not in document:
            continue
        path = file.relative_to(root).as_posix()
        loaded[path] = document
        report.documents += 1
        report.broken_links.extend((path, href) for href in broken_links(path, document, root))
        if validators:
            invalid, unchecked = schema_problems(document, validators)
            report.invalid.extend((path, problem) for problem in invalid)
            report.unchecked_extensions |= unchecked
    report.orphans = orphans(loaded, declared or Declared())
    return report


def orphans(documents: Mapping[str, Mapping[str, Any]], declared: Declared) -> list[tuple[str, str]]:
    """(path, why) of each orphan among `documents` (root-relative path -> parsed STAC document)."""
    found = {
        path: f"no link reaches it from {declared.catalog}"
        for path in unreached(declared.catalog, {p: targets(p, d) for p, d in documents.items()})
    }
    if declared.version_document and "{dataset}" in declared.version_document and declared.datasets:
        pattern = version_pattern(declared.version_document)
        for path in documents:
            match = pattern.fullmatch(path)
            if match and match["dataset"] not in declared.datasets:
                found[path] = f"a version of dataset {match['dataset']!r}, which no Dataset declares"
    return sorted(found.items())


def version_pattern(template: str) -> re.Pattern[str]:
    """The `stac_collection` convention (`{dataset}/{version}/collection.json`) as a pattern naming its parts."""
    parts = re.split(r"(\{dataset\}|\{version\})", template)
    names = {"{dataset}": "(?P<dataset>[^/]+)", "{version}": "(?P<version>[^/]+)"}
    return re.compile("".join(names.get(part, re.escape(part)) for part in parts))
