"""References: where a managed pointer lives (kind, backend, locator) and the canonical form of its value.

Values per kind (None always means "absent"):
- cache:  the pointer key's string value.
- search: {"indices": [sorted index names], "write_index": name or None}.
- graph:  the key value of the node the relationship points at.
- stac:   {document: {rel: [sorted root-relative paths], "deprecated": bool}} over the locator's slots.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Reference:
    """Identity of one managed reference. `locator` is kind-specific, JSON-able and never secret."""

    address: str
    kind: str
    backend: str
    locator: dict[str, Any]
    dataset: str | None = None

    def identities(self) -> list[str]:
        """The live pointers this reference owns; two addresses may not own the same one."""
        if self.kind == "stac":
            return [
                f"stac:{slot['document']}#{slot['field']}" + (f"@{','.join(slot['scope'])}" if slot["scope"] else "")
                for slot in self.locator["slots"]
            ]
        if self.kind == "graph":
            source, target = self.locator["from"], self.locator["to"]
            return [f"graph:{canonical_json(source)}-{self.locator['type']}->{target['label']}"]
        if self.kind == "search":
            return [f"search:{self.locator['alias']}"]
        return [f"cache:{self.locator['key']}"]


def canonical_json(value: Any) -> str:
    """Deterministic JSON used for digests, comparisons and fingerprints."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(value: Any) -> str:
    """Short, stable digest of a value (the compare-and-swap precondition shown in plans)."""
    return "sha256:" + hashlib.sha256(canonical_json(value).encode()).hexdigest()[:16]


def normalize(kind: str, value: Any) -> Any:
    """The canonical form of a value of `kind`, so that equal pointers compare equal."""
    if value is None:
        return None
    if kind == "search":
        return {"indices": sorted(value["indices"]), "write_index": value.get("write_index")}
    if kind == "stac":
        documents = {}
        for document, fields in sorted(value.items()):
            kept = {
                name: (sorted(content) if isinstance(content, list) else content)
                for name, content in sorted(fields.items())
                if content not in ([], None)
            }
            if kept:
                documents[document] = kept
        return documents or None
    return value
