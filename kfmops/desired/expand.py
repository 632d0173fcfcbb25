"""Expand documents into references: a Dataset fans out to one reference per enabled backend.

Pure: takes documents, conventions and routes; returns a DesiredState or raises InputError listing
every problem (duplicate addresses, unknown versions or backends, names a backend would not accept).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kfmops.desired.collector import Collector, DesiredReference
from kfmops.desired.datasets import expand_dataset, revocations
from kfmops.desired.load import Document
from kfmops.desired.raw import RAW_KINDS
from kfmops.errors import InputError
from kfmops.io.canonical import digest
from kfmops.references import ReferenceKind
from kfmops.workspace import Conventions


@dataclass
class DesiredState:
    references: dict[str, DesiredReference]
    datasets: dict[str, dict[str, Any]]
    documents: dict[str, str] = field(default_factory=dict)

    def digest(self) -> str:
        """sha256 over every desired reference and dataset record: what the plan was made from."""
        content = {
            "references": {a: [r.reference.locator, r.value] for a, r in sorted(self.references.items())},
            "datasets": self.datasets,
        }
        return digest(content)


def expand(
    documents: list[Document], conventions: Conventions, routes: dict[ReferenceKind, str], backends: set[str]
) -> DesiredState:
    collector = Collector(routes, backends)
    datasets: dict[str, dict[str, Any]] = {}
    files: dict[str, str] = {}
    revoked = revocations(documents)
    for document in documents:
        if document.address in files:
            # One message per document, not one per reference a Dataset would fan out to.
            first = files[document.address]
            collector.named(document, f"duplicate address {document.address}", f"first defined at {first}")
            continue
        files[document.address] = f"{document.file}:{document.line}"
        if document.kind == "Dataset":
            record = expand_dataset(collector, document, conventions, revoked)
            if record is not None:
                datasets[document.name] = record
        elif document.kind == "Consent":
            continue  # read by revocations(); it holds no reference
        else:
            RAW_KINDS[document.kind](collector, document)
    collector.check_invalidations()
    if collector.problems:
        raise InputError(collector.problems)
    return DesiredState(collector.references, datasets, files)
