"""A desired-state document: the unit that loading, caching and expanding pass along."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kfmops.addresses import DOCUMENT_TYPES
from kfmops.yamlio import LineDict, line_of


@dataclass(frozen=True)
class Document:
    """One schema-valid desired-state document and where it came from (`name_line`: its metadata.name)."""

    kind: str
    name: str
    spec: LineDict
    file: str
    line: int
    name_line: int | None = None

    @property
    def address(self) -> str:
        return f"{DOCUMENT_TYPES.get(self.kind, self.kind.lower())}.{self.name}"

    def line_of(self, *path: Any) -> int:
        return line_of(self.spec, path) or self.line
