"""Read live values of references from their backends, batched per backend.

A read that fails raises BackendError naming the backend: a plan is never made from a partial read.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from kfmops.providers.base import Write, chunks
from kfmops.providers.registry import Providers
from kfmops.references import Reference


def by_backend(references: Iterable[Reference]) -> dict[str, list[Reference]]:
    groups: dict[str, list[Reference]] = defaultdict(list)
    for reference in references:
        groups[reference.backend].append(reference)
    return groups


def read_live(providers: Providers, references: Iterable[Reference], batch_size: int) -> dict[str, Any]:
    """{address: live value or None} for every reference."""
    live: dict[str, Any] = {}
    for backend, group in by_backend(references).items():
        for kind in {r.kind for r in group}:
            providers.get(backend, kind)
        provider = providers.get(backend)
        for batch in chunks(group, batch_size):
            live.update(provider.read(batch))  # the registry's Resilient wrapper turns faults into BackendError
    return live


def missing_targets(providers: Providers, items: Sequence[Write], batch_size: int) -> list[tuple[str, str]]:
    """(address, message) for every value that points at an immutable target that does not exist."""
    missing: list[tuple[str, str]] = []
    groups: dict[str, list[Write]] = defaultdict(list)
    for item in items:
        groups[item[0].backend].append(item)
    for backend, group in groups.items():
        provider = providers.get(backend)
        for batch in chunks(group, batch_size):
            missing.extend(provider.missing_targets(batch))
    return missing
