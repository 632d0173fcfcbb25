"""Open the providers a workspace names, once each, and route references to them."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager

from kfmops.engine.retry import Resilient, RetrySettings
from kfmops.errors import Diagnostic, InputError
from kfmops.workspace import Workspace

PROVIDER_TYPES = {
    "local": "kfmops.providers.local:LocalProvider",
    "stac": "kfmops.providers.stac:StacProvider",
    "neo4j": "kfmops.providers.neo4j:Neo4jProvider",
    "elasticsearch": "kfmops.providers.elasticsearch:ElasticsearchProvider",
    "redis": "kfmops.providers.redis:RedisProvider",
}


class Providers(AbstractContextManager):
    """The live providers of one command run, opened lazily and closed together."""

    def __init__(self, workspace: Workspace, on_retry: Callable[[str, str], None] | None = None):
        self.workspace = workspace
        self.opened: dict[str, Resilient] = {}
        self.retry = RetrySettings.from_config(workspace.section("retry"))
        self.on_retry = on_retry or (lambda _backend, _error_class: None)

    def get(self, backend: str, kind: str | None = None) -> Resilient:
        if backend not in self.opened:
            config = self.workspace.backends.get(backend)
            if config is None:
                raise InputError(
                    [Diagnostic(f"unknown backend {backend!r}", "define it under 'backends:' in kfmops.yaml")]
                )
            module_name, class_name = PROVIDER_TYPES[config.type].split(":")
            provider_class = getattr(importlib.import_module(module_name), class_name)
            self.opened[backend] = Resilient(provider_class(config, self.workspace), self.retry, self.on_retry)
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

    def all(self) -> Iterable[Resilient]:
        return self.opened.values()

    def close(self) -> None:
        for provider in self.opened.values():
            provider.close()
        self.opened.clear()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
