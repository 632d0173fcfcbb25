"""Collecting expanded references: every problem recorded (not raised one by one), every live pointer owned
by one address only."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from kfmops.desired.document import Document
from kfmops.errors import Diagnostic
from kfmops.references import Reference, ReferenceKind


@dataclass(frozen=True)
class DesiredReference:
    """A reference and the value git wants it to hold; `source` is `file:line` of the field giving the value."""

    reference: Reference
    value: Any
    source: str
    version: str | None = None  # for dataset parts: the dataset version the value expresses


class Collector:
    def __init__(self, routes: dict[ReferenceKind, str], backends: set[str]):
        self.routes = routes
        self.backends = backends
        self.problems: list[Diagnostic] = []
        self.references: dict[str, DesiredReference] = {}
        self.owners: dict[str, str] = {}
        self.stac_slots: dict[tuple[str, str], dict[str | None, str]] = {}
        self.documents: dict[str, Document] = {}

    def problem(self, document: Document, message: str, *path: Any, detail: str = "") -> None:
        self.problems.append(Diagnostic(message, detail, file=document.file, line=document.line_of(*path)))

    def backend_for(self, document: Document, kind: ReferenceKind, named: str | None, *path: Any) -> str | None:
        backend = named or self.routes[kind]
        if backend not in self.backends:
            self.problem(
                document,
                f"unknown backend {backend!r}",
                *path,
                detail=f"define it under 'backends:' in kfmops.yaml (known: {', '.join(sorted(self.backends))})",
            )
            return None
        return backend

    def named(self, document: Document, message: str, detail: str = "") -> None:
        """A problem with the document as a whole, reported at its metadata.name."""
        self.problems.append(Diagnostic(message, detail, file=document.file, line=document.name_line or document.line))

    def add(self, document: Document, reference: Reference, value: Any, *path: Any, version: str | None = None) -> None:
        """Record `reference`; `path` (inside spec) is the field its value comes from, shown as its source."""
        source = f"{document.file}:{document.line_of(*path) if path else document.line}"
        if reference.address in self.references:
            first = self.references[reference.address].source
            self.named(document, f"duplicate address {reference.address}", detail=f"first defined at {first}")
            return
        identities = reference.identities()
        owner = self.owner_of(reference, identities)
        if owner is not None:
            self.named(
                document,
                f"{reference.address} manages the same {reference.kind} reference as {owner}",
                detail="one live reference may have only one owner",
            )
            return
        self.owners.update(dict.fromkeys(identities, reference.address))
        if reference.kind is ReferenceKind.STAC:
            for slot in reference.locator["slots"]:
                owners = self.stac_slots.setdefault((slot["document"], slot["field"]), {})
                for target in slot["scope"] if slot["scope"] is not None else [None]:
                    owners[target] = reference.address
        self.references[reference.address] = DesiredReference(reference, reference.normalize(value), source, version)
        self.documents[reference.address] = document

    def check_invalidations(self) -> None:
        """Refuse invalidation patterns that match a key some address manages: invalidating would delete a
        managed pointer that no plan, WAL or rollback knows about."""
        for reference, pattern, key, owner in invalidation_conflicts([r.reference for r in self.references.values()]):
            self.named(
                self.documents[reference.address],
                f"{reference.address}: invalidation pattern {pattern!r} matches {key!r}, which {owner} manages",
                detail="narrow the pattern (kfmops.yaml datasets.cache.invalidate, or the CacheKey's invalidate)",
            )

    def owner_of(self, reference: Reference, identities: list[str]) -> str | None:
        """The address that already owns a live pointer `reference` (whose `identities` are given) would manage."""
        owned = [self.owners[identity] for identity in identities if identity in self.owners]
        if owned or reference.kind is not ReferenceKind.STAC:
            return owned[0] if owned else None
        for slot in reference.locator["slots"]:
            # owners maps each target path of a scoped slot to its address, and None to the owner of an
            # unscoped slot, which owns every link of its rel in the document and so overlaps any other.
            owners = self.stac_slots.get((slot["document"], slot["field"]), {})
            if not owners:
                continue
            if None in owners:
                return owners[None]
            if slot["scope"] is None:
                return next(iter(owners.values()))
            for path in slot["scope"]:
                if path in owners:
                    return owners[path]
        return None


def invalidation_conflicts(references: list[Reference]) -> list[tuple[Reference, str, str, str]]:
    """(reference, pattern, key, owner address) for every invalidation pattern that matches a managed key.

    Patterns are exact keys or prefixes with one trailing `*` (identifiers.CACHE_PATTERN), so each is
    looked up in the sorted keys instead of being matched against every key.
    """
    owners = {r.locator["key"]: r.address for r in references if r.kind is ReferenceKind.CACHE}
    keys = sorted(owners)
    conflicts = []
    for reference in references:
        for pattern in reference.locator.get("invalidate", []) if reference.kind is ReferenceKind.CACHE else []:
            prefix = pattern[:-1] if pattern.endswith("*") else None
            start = bisect.bisect_left(keys, prefix if prefix is not None else pattern)
            for key in keys[start:]:
                if (prefix is None and key != pattern) or (prefix is not None and not key.startswith(prefix)):
                    break
                conflicts.append((reference, pattern, key, owners[key]))
    return conflicts
