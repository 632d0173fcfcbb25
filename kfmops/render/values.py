"""Flatten a before/after pair into the fields that differ, for every view."""

from __future__ import annotations

from typing import Any

from kfmops.io.canonical import canonical_json

MISSING = object()
CELL_CHARS = 120
"""Longest value shown in a table cell or diagram label; the full value is in the change's diff."""


def field_changes(before: Any, after: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(path, before, after) for each leaf that differs; absent sides are MISSING."""
    if isinstance(before, dict) or isinstance(after, dict):
        b = before if isinstance(before, dict) else {}
        a = after if isinstance(after, dict) else {}
        found = []
        for key in sorted(set(b) | set(a), key=str):
            sub = f"{path}.{key}" if path else str(key)
            found.extend(field_changes(b.get(key, MISSING), a.get(key, MISSING), sub))
        return found
    if before == after:
        return []
    return [(path or "value", before, after)]


def show(value: Any) -> str:
    if value is MISSING or value is None:
        return "(absent)"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def headline(action: str, address: str, reason: str) -> str:
    verb = {
        "create": "will be created",
        "update": "will be updated",
        "delete": "will be deleted",
        "no-op": "is unchanged",
        "import": "will be imported, nothing written",
        "forget": "will be forgotten, left as it is live",
    }[action]
    return f"{address} {verb} ({reason})"


def short(value: Any) -> str:
    if value is None or value is MISSING:
        return "(absent)"
    text = value if isinstance(value, str) else canonical_json(value)
    return text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 1] + "…"
