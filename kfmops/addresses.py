"""Resource addresses: stable, readable names such as `dataset.landcover.graph` or `search_alias.kfm-x`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kfmops.references import ReferenceKind

DOCUMENT_TYPES = {
    "Dataset": "dataset",
    "StacLink": "stac_link",
    "GraphRelationship": "graph_relationship",
    "SearchAlias": "search_alias",
    "CacheKey": "cache_key",
    "Consent": "consent",
}
NAME_PATTERN = r"[a-z0-9][a-z0-9_-]{0,127}"
_ADDRESS = re.compile(
    rf"^(?P<type>{'|'.join(DOCUMENT_TYPES.values())})\.(?P<name>{NAME_PATTERN})"
    rf"(?:\.(?P<part>{'|'.join(ReferenceKind)}))?"
)


@dataclass(frozen=True, order=True)
class Address:
    """`<type>.<name>` for a raw reference, `dataset.<name>.<kind>` for one part of a dataset."""

    type: str
    name: str
    part: str | None = None

    @classmethod
    def parse(cls, text: str) -> Address:
        match = _ADDRESS.fullmatch(text)
        if not match or (match["part"] and match["type"] != "dataset"):
            raise ValueError(
                f"{text!r} is not an address; expected e.g. 'dataset.landcover', "
                "'dataset.landcover.graph' or 'search_alias.kfm-roads'"
            )
        return cls(match["type"], match["name"], match["part"])

    def __str__(self) -> str:
        base = f"{self.type}.{self.name}"
        return f"{base}.{self.part}" if self.part else base

    def covers(self, other: Address) -> bool:
        """True when `other` is this address or one of its parts (`dataset.x` covers `dataset.x.stac`)."""
        if (self.type, self.name) != (other.type, other.name):
            return False
        return self.part is None or self.part == other.part


def select(addresses: list[str], targets: list[str], excludes: list[str]) -> list[str]:
    """Addresses kept by `--target` (any, or all when empty) and not removed by `--exclude`."""
    if not targets and not excludes:
        return list(addresses)
    wanted = [Address.parse(t) for t in targets]
    unwanted = [Address.parse(e) for e in excludes]
    kept = []
    for text in addresses:
        address = Address.parse(text)
        if wanted and not any(w.covers(address) for w in wanted):
            continue
        if any(u.covers(address) for u in unwanted):
            continue
        kept.append(text)
    return kept
