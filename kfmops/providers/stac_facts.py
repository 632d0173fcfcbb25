"""Facts about one dataset version read from its STAC documents: what the data is, not what YAML says.

Pure: takes the parsed collection (or item) and its items, returns plain JSON data for the policy input.
H3 resolutions are computed with the `h3` library from the cell ids and geometries found, never taken
from a declared field; declared fields (`kfm:h3_resolution`, `h3:resolution`, `kfm:coordinates_removed`)
are reported beside them, so policy can compare what is said with what is there.

Geometry kinds: a geometry is an `h3_cell` when it is exactly an H3 cell (its boundary polygon, or the
cell's centre point) at some resolution, `exact` when it is a point that is no cell centre (a site's
own location), `region` for any other shape, and `none` when the item has no geometry (concealed).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

# h3 ships neither type hints nor a py.typed marker.
import h3  # type: ignore[import-untyped]

DECLARED_RESOLUTION = ("kfm:h3_resolution", "h3:resolution")
DECLARED_REMOVED = "kfm:coordinates_removed"
SITE_COUNT = "kfm:site_count"
"""An H3-aggregated item may say how many sites its cell holds; without it, each item is one site."""

TOLERANCE = 1e-7  # degrees (about 1 cm): a coordinate written with 7 decimals still matches its cell
_CELL_TEXT = re.compile(r"^[0-9a-fA-F]{15}$")


def version_facts(version: dict[str, Any], items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The facts of one version document (a Collection with `items`, or an Item on its own)."""
    features = [version] if version.get("type") == "Feature" else list(items)
    kinds: Counter[str] = Counter()
    resolutions: set[int] = set()
    per_cell: Counter[str] = Counter()
    geometry_types: set[str] = set()
    decimals = 0
    for feature in features:
        geometry = feature.get("geometry")
        kind, cell = _geometry_kind(geometry)
        kinds[kind] += 1
        if geometry:
            geometry_types.add(str(geometry.get("type")))
            decimals = max(decimals, _decimals(geometry.get("coordinates")))
        cells = set(_cells(feature.get("properties") or {})) | ({cell} if cell else set())
        cells |= {str(feature["id"])} if _is_cell(feature.get("id")) else set()
        resolutions.update(h3.get_resolution(c) for c in cells)
        if len(cells) == 1:
            count = (feature.get("properties") or {}).get(SITE_COUNT, 1)
            per_cell[cells.pop()] += count if isinstance(count, int) and not isinstance(count, bool) else 1
    documents = [version, *features]
    return {
        "items": len(features),
        "geometry_types": sorted(geometry_types),
        "geometries": {k: kinds[k] for k in ("h3_cell", "exact", "region", "none")},
        "coordinate_decimals": decimals,
        "h3_resolutions": sorted(resolutions),
        "finest_resolution": max(resolutions) if resolutions else None,
        "coarsest_resolution": min(resolutions) if resolutions else None,
        "declared_h3_resolutions": sorted(
            {v for d in documents for v in _declared(d, DECLARED_RESOLUTION) if isinstance(v, int)}
        ),
        "declared_coordinates_removed": sorted(
            {v for d in documents for v in _declared(d, (DECLARED_REMOVED,)) if isinstance(v, bool)}
        ),
        "licence": _licence(version, features),
        "sites_per_cell_min": min(per_cell.values()) if per_cell else None,
    }


def _geometry_kind(geometry: Any) -> tuple[str, str | None]:
    """(kind, the H3 cell it is, if it is one)."""
    if not isinstance(geometry, dict) or geometry.get("coordinates") is None:
        return "none", None
    kind, coordinates = geometry.get("type"), geometry["coordinates"]
    if kind == "Point" and _is_position(coordinates):
        cell = _centre_cell(coordinates)
        return ("h3_cell", cell) if cell else ("exact", None)
    if kind == "MultiPoint":
        return "exact", None
    if kind == "Polygon" and isinstance(coordinates, list) and len(coordinates) == 1:
        cell = _boundary_cell(coordinates[0])
        if cell:
            return "h3_cell", cell
    return "region", None


def _centre_cell(position: list[Any]) -> str | None:
    """The coarsest cell whose centre is this point, or None when it is no cell centre."""
    lng, lat = float(position[0]), float(position[1])
    for resolution in range(16):
        cell = h3.latlng_to_cell(lat, lng, resolution)
        centre_lat, centre_lng = h3.cell_to_latlng(cell)
        if abs(centre_lat - lat) <= TOLERANCE and abs(centre_lng - lng) <= TOLERANCE:
            return str(cell)
    return None


def _boundary_cell(ring: Any) -> str | None:
    """The cell whose boundary this closed ring is (vertices in any order and start), or None."""
    if not isinstance(ring, list) or not all(_is_position(p) for p in ring) or len(ring) < 6:
        return None
    vertices = [(float(p[1]), float(p[0])) for p in ring[:-1]] if ring[0] == ring[-1] else []
    if len(vertices) not in (5, 6):  # a hexagon, or one of the twelve pentagons
        return None
    lat = sum(v[0] for v in vertices) / len(vertices)
    lng = sum(v[1] for v in vertices) / len(vertices)
    for resolution in range(16):
        cell = h3.latlng_to_cell(lat, lng, resolution)
        boundary = h3.cell_to_boundary(cell)
        if len(boundary) == len(vertices) and all(
            any(abs(a - c) <= TOLERANCE and abs(b - d) <= TOLERANCE for c, d in boundary) for a, b in vertices
        ):
            return str(cell)
    return None


def _is_position(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) >= 2
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in value[:2])
    )


def _is_cell(value: Any) -> bool:
    return isinstance(value, str) and bool(_CELL_TEXT.match(value)) and bool(h3.is_valid_cell(value))


def _cells(value: Any, depth: int = 0) -> Iterator[str]:
    """Every H3 cell id among the string values of an item's properties (nested a little)."""
    if _is_cell(value):
        yield str(value).lower()
    elif isinstance(value, dict) and depth < 3:
        for inner in value.values():
            yield from _cells(inner, depth + 1)
    elif isinstance(value, list) and depth < 3:
        for inner in value:
            yield from _cells(inner, depth + 1)


def _decimals(coordinates: Any) -> int:
    """The most decimal places written in any coordinate: how precisely a location is given."""
    if isinstance(coordinates, list):
        return max((_decimals(c) for c in coordinates), default=0)
    if isinstance(coordinates, float):
        text = json.dumps(coordinates)
        if "e" in text or "E" in text:
            return 17
        return len(text.partition(".")[2].rstrip("0"))
    return 0


def _declared(document: dict[str, Any], keys: tuple[str, ...]) -> list[Any]:
    places = [document, document.get("properties") or {}, document.get("summaries") or {}]
    found = []
    for place in places:
        for key in keys:
            value = place.get(key) if isinstance(place, dict) else None
            found.extend(value if isinstance(value, list) else [value] if value is not None else [])
    return found


def _licence(version: dict[str, Any], features: Sequence[dict[str, Any]]) -> str | None:
    """The collection's licence; for items on their own, their licence when they all give the same one."""
    if isinstance(version.get("license"), str):
        return str(version["license"])
    licences = {str((f.get("properties") or {}).get("license")) for f in features}
    return licences.pop() if len(licences) == 1 and "None" not in licences else None
