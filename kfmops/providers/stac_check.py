"""Offline checks of a static STAC catalog: JSON Schema validity and broken links.

Schemas come from a local folder with a `schema-map.json` (canonical URL -> file), so no network is
needed. Documents of any STAC 1.x version are checked against the 1.1.0 core schemas with their
`stac_version` read as 1.1.0 (the only difference the core schemas enforce); extension schemas are
applied when present in the map and declared by the document, and reported as unchecked otherwise.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    unchecked_extensions: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.invalid and not self.broken_links


@cache
def _validators(schema_dir: Path) -> tuple[dict[str, Draft7Validator], Registry]:
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


def check_catalog(root: Path, schema_dir: Path | None = None) -> CatalogReport:
    """Every STAC document under `root`: broken links always, schema validity when `schema_dir` is given."""
    report = CatalogReport()
    validators = _validators(schema_dir.resolve())[0] if schema_dir else {}
    for file in sorted(root.rglob("*.json")):
        try:
            document = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            report.invalid.append((str(file.relative_to(root)), f"not valid JSON: {exc}"))
            continue
        if not isinstance(document, dict) or "stac_version" not in document:
            continue
        path = file.relative_to(root).as_posix()
        report.documents += 1
        report.broken_links.extend((path, href) for href in broken_links(path, document, root))
        if not validators:
            continue
        as_current = {**document, "stac_version": "1.1.0"}
        schemas = [CORE.get(document.get("type", ""))]
        for extension in document.get("stac_extensions", []):
            if extension in validators:
                schemas.append(extension)
            else:
                report.unchecked_extensions.add(extension)
        for url in schemas:
            if url is None:
                report.invalid.append((path, f"unknown STAC type {document.get('type')!r}"))
                continue
            for error in validators[url].iter_errors(as_current):
                where = "/".join(str(p) for p in error.absolute_path) or "document"
                report.invalid.append((path, f"{where}: {error.message} ({url.rsplit('/', 1)[-1]})"))
    return report
