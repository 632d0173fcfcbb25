"""Which dataset version a reference's value points at, read back from the value (for plan views)."""

from __future__ import annotations

import re
from typing import Any

from kfmops.plans.model import Change, Plan
from kfmops.references import ReferenceKind
from kfmops.render.markup import code
from kfmops.render.values import short


def dataset_versions(plan: Plan, name: str, changes: list[Change]) -> tuple[str | None, str | None]:
    """(before, after) version of a dataset's pointer, from its `changes` (no-ops included): read from its
    cache part, else its graph part (the parts that hold the version itself), else the other parts, else
    the desired record."""
    versions = version_ids(plan, name)
    every = {c.reference.kind: c for c in changes}
    for kind in (ReferenceKind.CACHE, ReferenceKind.GRAPH, ReferenceKind.SEARCH, ReferenceKind.STAC):
        if kind in every:
            c = every[kind]
            return pointer_version(c, c.before, versions), pointer_version(c, c.after, versions)
    return None, plan.datasets.get(name, {}).get("version")


def version_ids(plan: Plan, name: str) -> list[str]:
    return [str(v.get("id")) for v in plan.datasets.get(name, {}).get("versions", []) if isinstance(v, dict)]


def pointer_version(change: Change, value: Any, versions: list[str]) -> str | None:
    """The version a dataset part's value points at, e.g. `v3` from `kfm-landcover-v3`."""
    if value is None:
        return None
    text = change.reference.target_names(value)
    if text in versions:
        return text
    rest = text.replace(change.reference.dataset or "\0", " ")
    found = [v for v in versions if re.search(rf"(?<![A-Za-z0-9.]){re.escape(v)}(?![A-Za-z0-9.])", rest)]
    return max(found, key=len) if found else short(value)


def version_arrow(before: str | None, after: str | None) -> str:
    """`v1 → v2` for a diagram label (plain text)."""
    if before == after and before is not None:
        return f"{before} (unchanged)"
    return f"{before or '(absent)'} → {after or '(removed)'}"


def version_move(before: str | None, after: str | None) -> str:
    """`v1` → `v2` for a table cell (as code spans)."""
    if before == after and before is not None:
        return f"{code(before)} (pointer unchanged)"
    shown = [code(v) if v is not None else text for v, text in ((before, "(absent)"), (after, "(removed)"))]
    return " → ".join(shown)
