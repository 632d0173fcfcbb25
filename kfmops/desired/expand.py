"""Expand documents into references: a Dataset fans out to one reference per enabled backend.

Pure: takes documents, conventions and routes; returns a DesiredState or raises InputError listing
every problem (duplicate addresses, unknown versions or backends, names a backend would not accept).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kfmops.addresses import Address
from kfmops.desired.collector import Collector, DesiredReference
from kfmops.desired.datasets import expand_dataset, revocations
from kfmops.desired.document import Document
from kfmops.desired.raw import RAW_KINDS
from kfmops.errors import InputError
from kfmops.io.canonical import digest
from kfmops.references import ReferenceKind
from kfmops.workspace import Conventions


@dataclass
class DesiredState:
    """references: address -> the reference and its desired value; imports: each address an Import document
    names (a whole dataset or one reference) -> `file:line` of that document."""

    references: dict[str, DesiredReference]
    datasets: dict[str, dict[str, Any]]
    documents: dict[str, str] = field(default_factory=dict)
    imports: dict[str, str] = field(default_factory=dict)
    known_digest: str | None = field(default=None, repr=False, compare=False)

    def digest(self) -> str:
        """sha256 over every desired reference, dataset record and import: what the plan was made from."""
        if self.known_digest is None:
            content: dict[str, Any] = {
                "references": {a: [r.reference.locator, r.value] for a, r in sorted(self.references.items())},
                "datasets": self.datasets,
            }
            if self.imports:
                content["imports"] = sorted(self.imports)
            self.known_digest = digest(content)
        return self.known_digest

    def imported(self, extra: Sequence[str] = ()) -> dict[str, str]:
        """Each desired address an Import document (or `extra`, from the command line) covers -> who asked."""
        wanted = {Address.parse(text): source for text, source in self.imports.items()}
        wanted.update({Address.parse(text): "the command line" for text in extra})
        found: dict[str, str] = {}
        for address in self.references:
            parsed = Address.parse(address)
            for selector, source in wanted.items():
                if selector.covers(parsed):
                    found[address] = source
        return found


def expand(
    documents: list[Document], conventions: Conventions, routes: dict[ReferenceKind, str], backends: set[str]
) -> DesiredState:
    collector = Collector(routes, backends)
    datasets: dict[str, dict[str, Any]] = {}
    files: dict[str, str] = {}
    imports: list[Document] = []
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
        elif document.kind == "Import":
            imports.append(document)
        elif document.kind == "Consent":
            continue  # read by revocations(); it holds no reference
        else:
            RAW_KINDS[document.kind](collector, document)
    collector.check_invalidations()
    imported = _imports(collector, imports)
    if collector.problems:
        raise InputError(collector.problems)
    return DesiredState(collector.references, datasets, files, imported)


def _imports(collector: Collector, documents: list[Document]) -> dict[str, str]:
    """address -> `file:line` of each Import document; an address no document declares, or one imported twice,
    is a problem at the Import document."""
    found: dict[str, str] = {}
    declared = [Address.parse(address) for address in collector.references]
    for document in documents:
        text = str(document.spec["address"])
        try:
            address = Address.parse(text)
        except ValueError as exc:
            collector.problem(document, str(exc), "address")
            continue
        if text in found:
            collector.problem(document, f"{text} is imported twice", "address", detail=f"first at {found[text]}")
        elif not any(address.covers(other) for other in declared):
            collector.problem(
                document,
                f"Import names {text}, which no document declares",
                "address",
                detail="declare it next to the Import ('kfmops import --discover' writes both)",
            )
        else:
            found[text] = f"{document.file}:{document.line}"
    return found
