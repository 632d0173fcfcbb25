"""Open the providers a workspace names, once each, route references to them, and read or check in batches.

Every provider is wrapped in `Resilient` (retries, circuit breaker). Reads never write: `read_only`
providers (used by `plan`) create nothing on disk, so planning leaves the workspace as it found it.
"""

from __future__ import annotations

import importlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from kfmops.errors import Diagnostic, InputError
from kfmops.providers.base import Provider, Write, chunks
from kfmops.providers.resilient import Resilient, RetrySettings
from kfmops.references import Reference, ReferenceKind
from kfmops.workspace import Workspace

T = TypeVar("T")
PROVIDER_TYPES = {
    "local": "kfmops.providers.local:LocalProvider",
    "stac": "kfmops.providers.stac:StacProvider",
    "neo4j": "kfmops.providers.neo4j:Neo4jProvider",
    "elasticsearch": "kfmops.providers.elasticsearch:ElasticsearchProvider",
    "redis": "kfmops.providers.redis:RedisProvider",
}


class Providers:
    """The live providers of one command run, opened lazily and closed together."""

    def __init__(
        self,
        workspace: Workspace,
        on_retry: Callable[[str, str], None] | None = None,
        *,
        read_only: bool = False,
    ):
        self.workspace = workspace
        self.read_only = read_only
        self.opened: dict[str, Resilient] = {}
        self.retry = RetrySettings.from_config(workspace.section("retry"))
        self.on_retry = on_retry or (lambda _backend, _error_class: None)

    def get(self, backend: str, kind: ReferenceKind | None = None) -> Resilient:
        if backend not in self.opened:
            config = self.workspace.backends.get(backend)
            if config is None:
                raise InputError(
                    [Diagnostic(f"unknown backend {backend!r}", "define it under 'backends:' in kfmops.yaml")]
                )
            module_name, class_name = PROVIDER_TYPES[config.type].split(":")
            provider_class: Callable[..., Provider] = getattr(importlib.import_module(module_name), class_name)
            inner = provider_class(config, self.workspace, read_only=self.read_only)
            self.opened[backend] = Resilient(inner, self.retry, self.on_retry)
        provider = self.opened[backend]
        if kind is not None and kind not in provider.kinds:
            raise InputError(
                [
                    Diagnostic(
                        f"backend {backend!r} ({self.workspace.backends[backend].type}) cannot hold {kind} references",
                        "route this kind to a backend that can in kfmops.yaml 'routes:'",
                        file=str(self.workspace.relative(self.workspace.config_file)),
                    )
                ]
            )
        return provider

    def open_routed(self) -> list[str]:
        """Open every backend a reference kind is routed to (the local one seeds itself); their names."""
        backends = sorted(set(self.workspace.routes.values()))
        for backend in backends:
            self.get(backend)
        return backends

    def catalog_root(self) -> Path:
        """The folder of the STAC catalog that the `stac` route writes links into."""
        root: Path = self.get(self.workspace.routes[ReferenceKind.STAC], ReferenceKind.STAC).catalog.root
        return root

    def read_live(self, references: Iterable[Reference]) -> dict[str, Any]:
        """{address: live value or None} for every reference, read in batches per backend.

        A read that fails raises BackendError naming the backend: a plan is never made from a partial read.
        """
        live: dict[str, Any] = {}
        for backend, group in _by_backend(references, lambda r: r).items():
            for kind in {r.kind for r in group}:
                self.get(backend, kind)
            provider = self.get(backend)
            for batch in chunks(group, self.workspace.batch_size):
                live.update(provider.read(batch))
        return live

    def missing_targets(self, items: Sequence[Write]) -> list[tuple[str, str]]:
        """(address, message) for every value that points at an immutable target that does not exist."""
        missing: list[tuple[str, str]] = []
        for backend, group in _by_backend(items, lambda item: item[0]).items():
            provider = self.get(backend)
            for batch in chunks(group, self.workspace.batch_size):
                missing.extend(provider.missing_targets(batch))
        return missing

    def broken_links(self, references: Iterable[Reference]) -> int:
        """Broken links in what these references point from (only STAC documents have links)."""
        return sum(self.get(b).broken_links(group) for b, group in _by_backend(references, lambda r: r).items())

    def close(self) -> None:
        for provider in self.opened.values():
            provider.close()
        self.opened.clear()

    def __enter__(self) -> Providers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _by_backend(items: Iterable[T], reference_of: Callable[[T], Reference]) -> dict[str, list[T]]:
    groups: dict[str, list[T]] = defaultdict(list)
    for item in items:
        groups[reference_of(item).backend].append(item)
    return groups
