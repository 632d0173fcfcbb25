"""One conformance suite that every provider passes (kfmops/providers/base.py states the rules).

Each case is one provider and the kind of reference it holds: the embedded local backend once per kind, a
STAC catalog folder, and real Neo4j, Elasticsearch and Redis servers. The targets a pointer may point at
(nodes, indices, STAC documents) are created with each backend's own client (sqlite3, files, Cypher, the
Elasticsearch client), never through kfmops; live pointers are counted the same way. Every case names what
it creates with a unique tag and removes it afterwards.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import elasticsearch
import neo4j
import pytest
import redis
from servers import (
    CLOSED_PORT,
    aliases_of,
    create_indices,
    create_nodes,
    delete_indices,
    delete_keys,
    delete_nodes,
    es_client,
    index_nodes,
    keys_under,
    neo4j_driver,
    open_provider,
    provider_for,
    redis_client,
    unique_tag,
    write_stac,
)

from kfmops.errors import BackendError
from kfmops.providers.base import Provider, WriteKey
from kfmops.providers.elasticsearch import MAX_URL_NAMES
from kfmops.references import Reference
from kfmops.workspace import BackendConfig, load_workspace

N = 1000  # references in one batch
DATASET, VERSION, POINTS_AT = "KfmopsTestDataset", "KfmopsTestVersion", "CURRENT_VERSION"
KEYS = "kfmops-test:"  # the Redis backend's only prefix
WORKSPACE = f"""\
apiVersion: kfmops/v1
kind: Workspace
apply: {{fsync: false}}
backends:
  local: {{type: local}}
  catalog: {{type: stac, root: catalog}}
  graph: {{type: neo4j, uri_env: KFMOPS_TEST_NEO4J_URI}}
  search: {{type: elasticsearch, url_env: KFMOPS_TEST_ES_URL}}
  cache: {{type: redis, url_env: KFMOPS_TEST_REDIS_URL, prefixes: ["{KEYS}"]}}
"""
# case: (backend in WORKSPACE, kind, fixture giving the server's address or None)
CASES = {
    "local-graph": ("local", "graph", None),
    "local-search": ("local", "search", None),
    "local-cache": ("local", "cache", None),
    "local-stac": ("local", "stac", None),
    "stac": ("catalog", "stac", None),
    "neo4j": ("graph", "graph", "neo4j_uri"),
    "elasticsearch": ("search", "search", "es_url"),
    "redis": ("cache", "cache", "redis_url"),
}


class Case:
    """One provider under test, the references of its kind, and its backend read and seeded natively."""

    def __init__(self, name: str, kind: str, provider: Provider, tag: str, workspace: Path):
        self.name = name
        self.kind = kind
        self.provider = provider
        self.tag = tag
        self.workspace = workspace
        self.driver: neo4j.Driver | None = None
        self.es: elasticsearch.Elasticsearch | None = None
        self.redis: redis.Redis | None = None
        self.seeded = 0

    # references and values ---------------------------------------------------------------------------------

    def reference(self, i: int) -> Reference:
        tag, kind = self.tag, self.kind
        if kind == "graph":
            locator = {
                "from": {"label": DATASET, "key": "id", "id": f"{tag}-{i}"},
                "type": POINTS_AT,
                "to": {"label": VERSION, "key": "id"},
            }
        elif kind == "search":
            locator = {"alias": f"kfmops-test-{tag}-{i}"}
        elif kind == "cache":
            locator = {"key": f"{KEYS}{tag}:{i}", "invalidate": [f"{KEYS}{tag}:tiles:{i}:*"]}
        else:
            document = f"{tag}/d{i}.json"
            locator = {
                "slots": [{"document": document, "field": f, "scope": None} for f in ("latest-version", "deprecated")]
            }
        return Reference(f"{kind}.{tag}-{i}", kind, self.provider.name, locator)

    def references(self, n: int) -> list[Reference]:
        return [self.reference(i) for i in range(n)]

    def value(self, i: int, version: int) -> Any:
        """Version 1 and 2 exist once seeded; any other version is a target that does not exist."""
        tag = self.tag
        if self.kind == "graph":
            return f"{tag}-{i}@v{version}"
        if self.kind == "search":
            first, this = f"kfmops-test-{tag}-v1", f"kfmops-test-{tag}-v{version}"
            return {"indices": sorted({first, this}), "write_index": this if this != first else None}
        if self.kind == "cache":
            return f"v{version}"
        return {f"{tag}/d{i}.json": {"latest-version": [f"{tag}/v{version}.json"], "deprecated": version == 1}}

    def values(self, n: int, version: int) -> list[tuple[Reference, Any]]:
        return [(self.reference(i), self.value(i, version)) for i in range(n)]

    def missing_target(self) -> str:
        """The name of the target version 9 would point at, as missing_targets names it."""
        return {
            "graph": f"{self.tag}-0@v9",
            "search": f"kfmops-test-{self.tag}-v9",
            "stac": f"{self.tag}/v9.json",
        }[self.kind]

    # the backend, natively ----------------------------------------------------------------------------------

    @property
    def local(self) -> bool:
        return self.name.startswith("local")

    @property
    def stac_root(self) -> Path:
        return self.workspace / ("state/local/stac" if self.local else "catalog")

    def sql(self, statement: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        database = sqlite3.connect(self.workspace / "state" / "local" / "references.sqlite")
        try:
            with database:
                return list(database.execute(statement, parameters))
        finally:
            database.close()

    def sql_many(self, statement: str, rows: list[tuple[Any, ...]]) -> None:
        database = sqlite3.connect(self.workspace / "state" / "local" / "references.sqlite")
        try:
            with database:
                database.executemany(statement, rows)
        finally:
            database.close()

    def seed(self, n: int) -> None:
        """The targets of references 0..n-1 at versions 1 and 2 (and their source nodes and documents)."""
        tag = self.tag
        sources = [f"{tag}-{i}" for i in range(n)]
        versions = [f"{tag}-{i}@v{v}" for i in range(n) for v in (1, 2)]
        indices = [f"kfmops-test-{tag}-v1", f"kfmops-test-{tag}-v2"]
        if self.kind == "graph" and self.local:
            rows = [(DATASET, "id", s) for s in sources] + [(VERSION, "id", v) for v in versions]
            self.sql_many("INSERT OR IGNORE INTO nodes VALUES (?, ?, ?)", rows)
        elif self.kind == "graph":
            create_nodes(self.driver, DATASET, sources)
            create_nodes(self.driver, VERSION, versions)
        elif self.kind == "search" and self.local:
            self.sql_many("INSERT OR IGNORE INTO indices VALUES (?)", [(i,) for i in indices])
        elif self.kind == "search" and not self.seeded:
            create_indices(self.es, indices)
        elif self.kind == "stac":
            for version in (1, 2):
                write_stac(self.stac_root, f"{tag}/v{version}.json", "Collection")
            for i in range(self.seeded, n):
                write_stac(self.stac_root, f"{tag}/d{i}.json", "Collection")
        self.seeded = max(self.seeded, n)

    def live_pointers(self, n: int) -> int:
        """How many pointer entries references 0..n-1 hold live: relationships, (alias, index) pairs, keys or links."""
        tag = self.tag
        if self.kind == "graph" and self.local:
            return self.sql("SELECT count(*) FROM relationships WHERE from_id LIKE ?", (f"{tag}-%",))[0][0]
        if self.kind == "graph":
            records = self.driver.execute_query(
                f"MATCH (a:{DATASET})-[r:{POINTS_AT}]->() WHERE a.id STARTS WITH $tag RETURN count(r) AS n",
                {"tag": f"{tag}-"},
            ).records
            return records[0]["n"]
        if self.kind == "search" and self.local:
            return self.sql("SELECT count(*) FROM aliases WHERE alias LIKE ?", (f"kfmops-test-{tag}-%",))[0][0]
        if self.kind == "search":
            found = aliases_of(self.es, [r.locator["alias"] for r in self.references(n)])
            return sum(len(indices) for indices in found.values())
        if self.kind == "cache" and self.local:
            return self.sql("SELECT count(*) FROM kv WHERE key LIKE ?", (f"{KEYS}{tag}:%",))[0][0]
        if self.kind == "cache":
            return len([k for k in keys_under(self.redis, f"{KEYS}{tag}:") if ":tiles:" not in k])
        return sum(
            1
            for i in range(n)
            for link in json.loads((self.stac_root / f"{tag}/d{i}.json").read_text())["links"]
            if link["rel"] == "latest-version"
        )

    def cleanup(self) -> None:
        if self.driver is not None:
            delete_nodes(self.driver, [DATASET, VERSION], f"{self.tag}-")
            self.driver.close()
        if self.es is not None:
            delete_indices(self.es, f"kfmops-test-{self.tag}-")
            self.es.close()
        if self.redis is not None:
            delete_keys(self.redis, f"{KEYS}{self.tag}:")
            self.redis.close()


@pytest.fixture(params=list(CASES))
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Case]:
    backend, kind, server = CASES[request.param]
    address = request.getfixturevalue(server) if server else None
    root = tmp_path / "ws"
    root.mkdir()
    (root / "kfmops.yaml").write_text(WORKSPACE, encoding="utf-8")
    provider = open_provider(load_workspace(root), backend)
    built = Case(request.param, kind, provider, unique_tag("kc"), root)
    if server == "neo4j_uri":
        built.driver = neo4j_driver(address)
        index_nodes(built.driver, DATASET)
        index_nodes(built.driver, VERSION)
    elif server == "es_url":
        built.es = es_client(address)
    elif server == "redis_url":
        built.redis = redis_client(address)
    try:
        yield built
    finally:
        provider.close()
        built.cleanup()


def read_all(case: Case, n: int) -> dict[str, Any]:
    return case.provider.read(case.references(n))


# the rules ------------------------------------------------------------------------------------------------


def test_absent_reads_as_none(case):
    """References never written read as None, with or without their source node or document."""
    case.seed(2)
    assert read_all(case, 3) == {case.reference(i).address: None for i in range(3)}


def test_create_update_delete_round_trip(case):
    case.seed(3)
    for version in (1, 2, 1):
        case.provider.write(case.values(3, version))
        assert read_all(case, 3) == dict((r.address, v) for r, v in case.values(3, version))
        expected = 3 * (len(case.value(0, version)["indices"]) if case.kind == "search" else 1)
        assert case.live_pointers(3) == expected
    case.provider.write([(r, None) for r in case.references(3)])
    assert read_all(case, 3) == {r.address: None for r in case.references(3)}
    assert case.live_pointers(3) == 0


def test_rewriting_the_same_values_is_idempotent(case):
    """A retried write changes nothing: same read-back, no duplicate relationships, aliases, keys or links."""
    case.seed(3)
    items = case.values(3, 2)
    case.provider.write(items)
    first = read_all(case, 3)
    files = {p: p.read_bytes() for p in case.stac_root.rglob("*.json")} if case.kind == "stac" else {}
    case.provider.write(items)
    assert read_all(case, 3) == first == {r.address: v for r, v in items}
    assert case.live_pointers(3) == 3 * (2 if case.kind == "search" else 1)
    assert {p: p.read_bytes() for p in files} == files, "a STAC document already right is not rewritten"


def test_a_keyed_write_is_known_by_its_key_where_the_backend_holds_keys(case):
    """written_by names what was written under a key and is still live (Redis, Neo4j); None where keys are not held."""
    case.seed(3)
    references = case.references(3)
    mine, other = WriteKey(f"apply-{case.tag}", 0), WriteKey(f"apply-{case.tag}-other", 0)
    try:
        case.provider.write(case.values(3, 1), key=mine)
        case.provider.write(case.values(3, 2)[:1])  # someone else's write of the first reference, unkeyed
        found = case.provider.written_by(mine, references)
        if case.name not in ("neo4j", "redis"):
            assert found is None
            return
        assert found == {r.address for r in references[1:]}
        assert case.provider.written_by(other, references) == set()
    finally:
        if case.redis is not None:
            case.redis.delete(f"{KEYS}txn:{mine.transaction}:0")


def test_a_batch_costs_round_trips_per_batch_not_per_reference(case):
    """1,000 references in one write and one read: a handful of round trips, whatever N."""
    case.seed(N)
    case.provider.round_trips = 0
    case.provider.write(case.values(N, 1))
    writes = case.provider.round_trips
    case.provider.round_trips = 0
    assert read_all(case, N) == {r.address: v for r, v in case.values(N, 1)}
    reads = case.provider.round_trips
    assert case.live_pointers(N) == N
    # A handful, except that Elasticsearch names aliases in the request line (MAX_URL_NAMES characters a
    # request), and Redis invalidation walks the keyspace once per batch (one SCAN page per 1,000 keys).
    budget = 10
    if case.es is not None:
        budget += len(",".join(r.locator["alias"] for r in case.references(N))) // MAX_URL_NAMES
    if case.redis is not None:
        budget += 2 * case.redis.dbsize() // 1000
    assert reads <= budget, f"{case.name}: {reads} round trips to read {N} references"
    assert writes <= budget, f"{case.name}: {writes} round trips to write {N} references"


@pytest.mark.parametrize("backend", ["neo4j", "redis"])
def test_round_trips_grow_with_the_number_of_batches(backend, request, tmp_path, monkeypatch):
    """With batch_size 250, 1,000 references take exactly 4 round trips to read (and 1 when it is 1,000)."""
    variable = {"neo4j": "KFMOPS_TEST_NEO4J_URI", "redis": "KFMOPS_TEST_REDIS_URL"}[backend]
    monkeypatch.setenv(variable, request.getfixturevalue({"neo4j": "neo4j_uri", "redis": "redis_url"}[backend]))
    settings = {"neo4j": {"uri_env": variable}, "redis": {"url_env": variable, "prefixes": [KEYS]}}[backend]
    root = tmp_path / "ws"
    root.mkdir()
    (root / "kfmops.yaml").write_text(WORKSPACE, encoding="utf-8")
    workspace = load_workspace(root)
    kind = {"neo4j": "graph", "redis": "cache"}[backend]
    for batch_size, expected in ((250, 4), (1000, 1)):
        provider = provider_for(BackendConfig(backend, backend, settings | {"batch_size": batch_size}), workspace)
        try:
            # Never written, so no targets are needed: reading absent references costs the same round trips.
            case = Case(backend, kind, provider, unique_tag("kb"), root)
            assert set(read_all(case, N).values()) == {None}
            assert provider.round_trips == expected
        finally:
            provider.close()


def test_a_missing_target_is_named(case):
    if case.kind == "cache" and case.local:
        pytest.skip("a cache pointer's value is a plain string: it has no target to be missing")
    case.seed(2)
    if case.kind == "cache":
        outside = Reference("cache.outside", "cache", case.provider.name, {"key": "kfm-other:x", "invalidate": []})
        items, target = [(outside, "v1")], "kfm-other:x"
    else:
        items, target = [(case.reference(0), case.value(0, 9))], case.missing_target()
    assert case.provider.missing_targets(case.values(2, 1)) == []
    missing = case.provider.missing_targets(items)
    assert len(missing) == 1, missing
    address, message = missing[0]
    assert address == items[0][0].address
    assert target in message, message


def test_writing_a_pointer_at_nothing_fails_and_writes_nothing(case):
    """The batch [good, pointer at nothing] raises BackendError naming the backend, and the good one is not written."""
    if case.kind == "cache" and case.local:
        pytest.skip("a cache pointer's value is a plain string: it has no target to be missing")
    case.seed(2)
    good = (case.reference(0), case.value(0, 1))
    if case.kind == "cache":
        bad = (Reference("cache.outside", "cache", case.provider.name, {"key": "kfm-other:x", "invalidate": []}), "v1")
    else:
        bad = (case.reference(1), case.value(1, 9))
    before = {p: p.read_bytes() for p in case.stac_root.rglob("*.json")} if case.kind == "stac" else {}
    with pytest.raises(BackendError) as raised:
        case.provider.write([good, bad])
    assert f"backend {case.provider.name!r}" in str(raised.value)
    assert not raised.value.retryable
    assert read_all(case, 2) == {case.reference(0).address: None, case.reference(1).address: None}
    assert case.live_pointers(2) == 0
    assert {p: p.read_bytes() for p in before} == before


# retryable or not ------------------------------------------------------------------------------------------

CLOSED = {
    "neo4j": ("neo4j", {"uri_env": "KFMOPS_CONFORMANCE_CLOSED"}, f"bolt://{CLOSED_PORT}"),
    "elasticsearch": ("elasticsearch", {"url_env": "KFMOPS_CONFORMANCE_CLOSED"}, f"http://{CLOSED_PORT}"),
    "redis": ("redis", {"url_env": "KFMOPS_CONFORMANCE_CLOSED", "prefixes": [KEYS]}, f"redis://{CLOSED_PORT}/0"),
}


def test_a_refused_connection_is_retryable(case, monkeypatch):
    if case.name not in CLOSED:  # no network: the error is the operating system's own
        try:
            socket.create_connection(("127.0.0.1", 1), timeout=2)
        except OSError as exc:
            assert isinstance(exc, ConnectionRefusedError)
            assert case.provider.is_retryable(exc)
        return
    backend_type, settings, address = CLOSED[case.name]
    monkeypatch.setenv("KFMOPS_CONFORMANCE_CLOSED", address)
    config = BackendConfig("nowhere", backend_type, settings | {"timeout": 3})
    provider = provider_for(config, load_workspace(case.workspace))
    try:
        started = time.monotonic()
        with pytest.raises(BackendError) as raised:
            provider.read([case.reference(0)])
        elapsed = time.monotonic() - started
    finally:
        provider.close()
    error = raised.value
    assert "backend 'nowhere'" in str(error)
    assert error.retryable and provider.is_retryable(error)
    assert error.__cause__ is not None and provider.is_retryable(error.__cause__)
    assert elapsed < 5, f"{elapsed:.1f}s: the client retried by itself (kfmops retries within its own budget)"


def test_a_validation_error_is_not_retryable(case):
    """The server's own refusal of bad input, and the provider's refusal of a bad name, are permanent."""
    if case.driver is not None:
        with pytest.raises(neo4j.exceptions.ClientError) as raised:
            case.driver.execute_query("MATCH (n:KfmopsTestDataset RETURN n")
    elif case.es is not None:
        with pytest.raises(elasticsearch.ApiError) as raised:
            case.es.indices.create(index=f"KFMOPS-TEST-{case.tag}")  # uppercase index names are invalid
    elif case.redis is not None:
        with pytest.raises(redis.exceptions.ResponseError) as raised:
            case.redis.execute_command("KFMOPS-NO-SUCH-COMMAND")
    else:
        raised = None
    if raised is not None:
        assert not case.provider.is_retryable(raised.value)
    bad = {
        "graph": {
            "from": {"label": "Bad Label", "key": "id", "id": "x"},
            "type": POINTS_AT,
            "to": {"label": VERSION, "key": "id"},
        },
        "search": {"alias": "Bad Alias"},
        "cache": {"key": f"{KEYS}bad key", "invalidate": []},
        "stac": {"slots": [{"document": "../bad.json", "field": "child", "scope": None}]},
    }[case.kind]
    if case.local and case.kind in ("graph", "search", "cache"):
        return  # SQLite takes any name as a parameter; only names a backend interprets need refusing
    with pytest.raises(BackendError) as refused:
        case.provider.read([Reference("x.bad", case.kind, case.provider.name, bad)])
    assert not refused.value.retryable and not case.provider.is_retryable(refused.value)
