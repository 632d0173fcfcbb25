"""The real test servers, reached with their own clients: find them, seed immutable targets, read back, clean up.

Nothing here goes through kfmops: targets a provider must find are created the way a data platform would
create them, and what a provider wrote is read the way a consumer would read it, so that a bug in kfmops'
reads cannot hide a bug in its writes. Every test names what it creates with a unique tag and removes it
afterwards, so that tests can share the servers with each other and with the engineers who use them.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import elasticsearch
import neo4j
import pytest
import redis

from kfmops.providers.base import Provider
from kfmops.providers.registry import PROVIDER_TYPES
from kfmops.workspace import BackendConfig, Workspace

REQUIRED = os.environ.get("KFMOPS_REQUIRE_SERVERS") == "1"
START = "run scripts/servers/all.sh start and source ~/.cache/kfmops-servers/run/env.sh"
CLOSED_PORT = "127.0.0.1:1"  # nothing listens on port 1: connecting is refused at once


@dataclass(frozen=True)
class Server:
    name: str
    variable: str  # the environment variable giving its address to the tests


SERVERS = {
    "redis": Server("Redis", "KFMOPS_TEST_REDIS_URL"),
    "neo4j": Server("Neo4j", "KFMOPS_TEST_NEO4J_URI"),
    "elasticsearch": Server("Elasticsearch", "KFMOPS_TEST_ES_URL"),
    "postgres": Server("PostgreSQL", "KFMOPS_TEST_POSTGRES_DSN"),
}


def unavailable(problem: str) -> None:
    """Skip the test, or fail it when KFMOPS_REQUIRE_SERVERS=1 (CI), where a missing server is an error."""
    if REQUIRED:
        pytest.fail(f"{problem} (KFMOPS_REQUIRE_SERVERS=1: servers are required, not skipped)", pytrace=False)
    pytest.skip(problem)


@cache
def _problem(kind: str, address: str) -> str | None:
    """Why the server at `address` cannot be used, or None; asked once per session."""
    try:
        if kind == "redis":
            with redis.Redis.from_url(address, socket_timeout=3, socket_connect_timeout=3) as client:
                client.ping()
        elif kind == "postgres":
            import psycopg  # only the postgres store's tests need it

            psycopg.connect(address, connect_timeout=3).close()
        elif kind == "neo4j":
            with neo4j.GraphDatabase.driver(address, connection_timeout=3) as driver:
                driver.verify_connectivity()
        else:  # the integration-test distribution does not answer GET /; an index lookup it does
            with es_client(address) as client:
                client.indices.exists(index="kfmops-probe")
    except Exception as exc:  # any failure means "not usable here"; the reason goes in the message
        return f"{type(exc).__name__}: {exc}"
    return None


def address_of(kind: str) -> str:
    """The address of a running server of `kind` from its environment variable (skips or fails when absent)."""
    server = SERVERS[kind]
    address = os.environ.get(server.variable)
    if not address:
        unavailable(f"{server.name} is not configured: {server.variable} is not set; {START}")
    problem = _problem(kind, address)
    if problem is not None:
        shown = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", address)  # never a password in a skip reason
        unavailable(f"{server.name} not reachable at {shown}; {START} ({problem})")
    return address


def unique_tag(prefix: str) -> str:
    """A name part no other test (or run) uses: lowercase, digits and '-', valid in every backend's names."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# clients ----------------------------------------------------------------------------------------------------


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=10)


def neo4j_driver(uri: str) -> neo4j.Driver:
    return neo4j.GraphDatabase.driver(uri, connection_timeout=10)


def es_client(url: str) -> elasticsearch.Elasticsearch:
    return elasticsearch.Elasticsearch(url, request_timeout=30, max_retries=0)


# seeding and cleaning up ------------------------------------------------------------------------------------


def create_nodes(driver: neo4j.Driver, label: str, ids: list[str], key: str = "id") -> None:
    """Nodes `(:label {key: id})`, as the platform publishes them (MERGE: idempotent)."""
    for start in range(0, len(ids), 5000):
        driver.execute_query(
            f"UNWIND $ids AS id MERGE (:`{label}` {{`{key}`: id}})", {"ids": ids[start : start + 5000]}
        )


def index_nodes(driver: neo4j.Driver, label: str, key: str = "id") -> None:
    """A range index on `label.key`, as a real graph has for the keys it is looked up by (kept between runs)."""
    name = f"kfmops_test_{label}_{key}".lower()
    driver.execute_query(f"CREATE INDEX {name} IF NOT EXISTS FOR (n:`{label}`) ON (n.`{key}`)")
    driver.execute_query("CALL db.awaitIndexes(60)")


def delete_nodes(driver: neo4j.Driver, labels: list[str], prefix: str, key: str = "id") -> None:
    """Every node of `labels` whose key starts with `prefix`, with its relationships."""
    with driver.session() as session:  # CALL ... IN TRANSACTIONS needs an auto-commit transaction
        for label in labels:
            session.run(
                f"MATCH (n:`{label}`) WHERE n.`{key}` STARTS WITH $prefix "
                "CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 5000 ROWS",
                prefix=prefix,
            ).consume()


def create_indices(client: elasticsearch.Elasticsearch, names: list[str]) -> None:
    for name in names:
        client.indices.create(index=name, settings={"number_of_shards": 1, "number_of_replicas": 0})


def delete_indices(client: elasticsearch.Elasticsearch, prefix: str) -> None:
    """Every index whose name starts with `prefix`, and so every alias on them (never a bare wildcard)."""
    names = sorted(client.indices.get(index=f"{prefix}*", expand_wildcards="all", allow_no_indices=True).body)
    for start in range(0, len(names), 100):
        client.indices.delete(index=",".join(names[start : start + 100]))


def aliases_of(client: elasticsearch.Elasticsearch, aliases: list[str]) -> dict[str, dict[str, bool]]:
    """{alias: {index: is_write_index}} for those of `aliases` that exist, read with GET _alias."""
    found: dict[str, dict[str, bool]] = {}
    for start in range(0, len(aliases), 100):
        body = client.options(ignore_status=404).indices.get_alias(name=aliases[start : start + 100]).body
        for index, entry in body.items():
            if isinstance(entry, dict):
                for alias, properties in entry.get("aliases", {}).items():
                    found.setdefault(alias, {})[index] = bool(properties.get("is_write_index"))
    return found


def delete_keys(client: redis.Redis, prefix: str) -> None:
    """Every key starting with `prefix` (SCAN, never KEYS)."""
    batch = []
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) == 1000:
            client.unlink(*batch)
            batch = []
    if batch:
        client.unlink(*batch)


def keys_under(client: redis.Redis, prefix: str) -> dict[str, str]:
    """{key: value} of every string key starting with `prefix`."""
    keys = sorted(client.scan_iter(match=f"{prefix}*", count=1000))
    return dict(zip(keys, client.mget(keys), strict=True)) if keys else {}


def write_stac(root: Path, path: str, kind: str = "Catalog", **fields: Any) -> None:
    """A minimal valid STAC document at `root/path`, written as tools write them (2-space indent, final newline)."""
    name = path.removesuffix(".json").replace("/", "-")
    if kind == "Catalog":
        document = {"type": "Catalog", "stac_version": "1.1.0", "id": name, "description": f"{name} (test)"}
    else:
        document = {
            "type": "Collection",
            "stac_version": "1.1.0",
            "id": name,
            "description": f"{name} (test)",
            "license": "CC-BY-4.0",
            "extent": {"spatial": {"bbox": [[-102.05, 36.99, -94.59, 40.0]]}, "temporal": {"interval": [[None, None]]}},
        }
    document |= fields
    document.setdefault("links", [])
    file = root / path
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def stac_links(root: Path, path: str) -> list[tuple[str, str]]:
    """(rel, href) of every link of one document, in file order, read with json."""
    document = json.loads((root / path).read_text(encoding="utf-8"))
    return [(link["rel"], link["href"]) for link in document.get("links", [])]


# providers --------------------------------------------------------------------------------------------------


def open_provider(workspace: Workspace, backend: str) -> Provider:
    """The provider of a workspace backend itself, as the registry builds it (no retries around it)."""
    config = workspace.backends[backend]
    return provider_for(config, workspace)


def provider_for(config: BackendConfig, workspace: Workspace) -> Provider:
    module_name, class_name = PROVIDER_TYPES[config.type].split(":")
    return getattr(importlib.import_module(module_name), class_name)(config, workspace)


@contextmanager
def closing(provider: Provider) -> Iterator[Provider]:
    try:
        yield provider
    finally:
        provider.close()
