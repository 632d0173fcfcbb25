"""Changes of exposure: a dataset's CARE metadata differs from what kfmops last applied.

CARE label, sovereignty, heritage, sensitivity, visibility, authority, consent, review and waivers say
who may see a dataset; editing them changes its exposure even when no reference moves. Such a change is
part of the plan (so "no changes" never hides it), policy judges it, and applying the plan records it.
Pure: takes records, returns plain data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kfmops.references import Reference, ReferenceKind


def exposure_changes(
    desired: Mapping[str, Mapping[str, Any]],
    applied: Mapping[str, Mapping[str, Any]],
    references: Iterable[tuple[Reference, Any]],
) -> list[dict[str, Any]]:
    """One entry per dataset of `desired` whose `care` differs from its record in `applied` (the last
    applied records); a dataset never applied has nothing to compare with and is left out. `references`
    are the desired references and values: an entry lists its dataset's that can expose it (a STAC part
    only when it links the dataset from the catalog), so policy can tell whether it is exposed."""
    changes: list[dict[str, Any]] = []
    for name, record in sorted(desired.items()):
        last = applied.get(name)
        if last is None:
            continue
        before, after = dict(last.get("care") or {}), dict(record.get("care") or {})
        fields = sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))
        if fields:
            address = str(record.get("address") or f"dataset.{name}")
            changes.append({"dataset": name, "address": address, "fields": fields, "before": before, "after": after})
    parts: dict[str, list[dict[str, str]]] = {str(change["dataset"]): [] for change in changes}
    for reference, value in references if parts else ():
        if reference.dataset in parts and (reference.kind is not ReferenceKind.STAC or lists_child(value)):
            parts[reference.dataset].append({"address": reference.address, "kind": str(reference.kind)})
    return [change | {"references": sorted(parts[change["dataset"]], key=lambda p: p["address"])} for change in changes]


def lists_child(value: Any) -> bool:
    """Whether a STAC part's value links the dataset from a catalog (a non-empty `child` link list)."""
    return isinstance(value, Mapping) and any(
        isinstance(fields, Mapping) and fields.get("child") for fields in value.values()
    )
