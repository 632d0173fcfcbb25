"""Round trips and wall time of each provider for N references: reads must cost per batch, not per reference.

    source ~/.cache/kfmops-servers/run/env.sh
    python -m benchmarks.roundtrips --refs 10000 [--batch 1000] [--backends local,stac,neo4j,elasticsearch,redis]
    python -m benchmarks.backend_floor --refs 10000   # then each server backend against its own client's best

For each backend the immutable targets of N references are created with the backend's own client (sqlite3,
files, Cypher, the Elasticsearch client), never through kfmops. Then, with the provider itself (no retry layer):
`apply` writes N references in batches of --batch (and reads them back, as apply verifies), `plan` reads them
and checks their targets, and reads of 100, 1,000 and N references count round trips. Server backends use
KFMOPS_TEST_NEO4J_URI, KFMOPS_TEST_ES_URL and KFMOPS_TEST_REDIS_URL and are skipped when unset or unreachable.
Everything created (tagged nodes, keys, indices) is removed at the end; the two uniqueness constraints on the
benchmark's Neo4j labels stay, so that runs sharing the server never find their keys unindexed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfmops.providers.base import Provider, chunks
from kfmops.providers.registry import PROVIDER_TYPES
from kfmops.references import Reference
from kfmops.workspace import load_workspace

DATASET, VERSION = "KfmopsBenchDataset", "KfmopsBenchVersion"
KEYS = "kfmops-bench:"
WORKSPACE = f"""\
apiVersion: kfmops/v1
kind: Workspace
apply: {{fsync: false}}
backends:
  local: {{type: local}}
  stac: {{type: stac, root: catalog}}
  neo4j: {{type: neo4j, uri_env: KFMOPS_TEST_NEO4J_URI, timeout: 30}}
  elasticsearch: {{type: elasticsearch, url_env: KFMOPS_TEST_ES_URL, timeout: 120}}
  redis: {{type: redis, url_env: KFMOPS_TEST_REDIS_URL, prefixes: ["{KEYS}"], timeout: 30}}
"""
KIND = {"local": "graph", "stac": "stac", "neo4j": "graph", "elasticsearch": "search", "redis": "cache"}
VARIABLE = {"neo4j": "KFMOPS_TEST_NEO4J_URI", "elasticsearch": "KFMOPS_TEST_ES_URL", "redis": "KFMOPS_TEST_REDIS_URL"}


@dataclass
class Row:
    backend: str
    refs: int
    batches: int
    read_trips: int
    read_seconds: float
    write_trips: int | None = None
    plan_seconds: float | None = None
    apply_seconds: float | None = None
    notes: list[str] = field(default_factory=list)


def reference(backend: str, tag: str, i: int) -> Reference:
    kind = KIND[backend]
    if kind == "graph":
        locator: dict[str, Any] = {
            "from": {"label": DATASET, "key": "id", "id": f"{tag}-{i}"},
            "type": "CURRENT_VERSION",
            "to": {"label": VERSION, "key": "id"},
        }
    elif kind == "search":
        locator = {"alias": f"kfmops-bench-{tag}-{i}"}
    elif kind == "cache":
        locator = {"key": f"{KEYS}{tag}:{i}", "invalidate": [f"{KEYS}{tag}:tiles:{i}:*"]}
    else:
        slots = [{"document": f"{tag}/d{i}.json", "field": f, "scope": None} for f in ("latest-version", "deprecated")]
        locator = {"slots": slots}
    return Reference(f"{kind}.{tag}-{i}", kind, backend, locator)


def value(backend: str, tag: str, i: int) -> Any:
    kind = KIND[backend]
    if kind == "graph":
        return f"{tag}-{i}@v1"
    if kind == "search":
        return {"indices": [f"kfmops-bench-{tag}-v1"], "write_index": None}
    if kind == "cache":
        return "v1"
    return {f"{tag}/d{i}.json": {"latest-version": [f"{tag}/v1.json"], "deprecated": False}}


# targets, with each backend's own client ------------------------------------------------------------------


def stac_document(root: Path, path: str) -> None:
    name = path.removesuffix(".json").replace("/", "-")
    document = {"type": "Catalog", "stac_version": "1.1.0", "id": name, "description": name, "links": []}
    file = root / path
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


class Targets:
    """Creates the targets of N references on one backend, and removes everything tagged afterwards."""

    def __init__(self, backend: str, workspace: Path, tag: str):
        self.backend, self.workspace, self.tag = backend, workspace, tag
        self.cleanups: list[Callable[[], None]] = []

    def seed(self, n: int) -> None:
        tag = self.tag
        sources = [f"{tag}-{i}" for i in range(n)]
        versions = [f"{tag}-{i}@v1" for i in range(n)]
        if self.backend == "local":
            database = sqlite3.connect(self.workspace / "state" / "local" / "references.sqlite")
            with database:
                rows = [(DATASET, "id", s) for s in sources] + [(VERSION, "id", v) for v in versions]
                database.executemany("INSERT OR IGNORE INTO nodes VALUES (?, ?, ?)", rows)
            database.close()
        elif self.backend == "stac":
            root = self.workspace / "catalog"
            stac_document(root, f"{tag}/v1.json")
            for i in range(n):
                stac_document(root, f"{tag}/d{i}.json")
        elif self.backend == "neo4j":
            import neo4j

            driver = neo4j.GraphDatabase.driver(os.environ[VARIABLE["neo4j"]])
            for label in (DATASET, VERSION):  # keyed nodes, as a data platform keeps them: unique and indexed
                driver.execute_query(f"DROP INDEX kfmops_bench_{label.lower()} IF EXISTS")  # left by older runs
                driver.execute_query(
                    f"CREATE CONSTRAINT kfmops_bench_{label.lower()}_id IF NOT EXISTS "
                    f"FOR (n:{label}) REQUIRE n.id IS UNIQUE"
                )
            driver.execute_query("CALL db.awaitIndexes(120)")
            for label, ids in ((DATASET, sources), (VERSION, versions)):
                for batch in chunks(ids, 5000):
                    driver.execute_query(f"UNWIND $ids AS id MERGE (:{label} {{id: id}})", {"ids": list(batch)})

            def drop_nodes() -> None:
                with driver.session() as session:
                    for label in (DATASET, VERSION):
                        session.run(
                            f"MATCH (n:{label}) WHERE n.id STARTS WITH $tag "
                            "CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 5000 ROWS",
                            tag=f"{tag}-",
                        ).consume()
                driver.close()

            self.cleanups.append(drop_nodes)
        elif self.backend == "elasticsearch":
            import elasticsearch

            client = elasticsearch.Elasticsearch(os.environ[VARIABLE["elasticsearch"]], request_timeout=120)
            index = f"kfmops-bench-{tag}-v1"
            client.indices.create(index=index, settings={"number_of_shards": 1, "number_of_replicas": 0})
            self.cleanups.append(lambda: (client.indices.delete(index=index), client.close()))
        elif self.backend == "redis":
            import redis

            client = redis.Redis.from_url(os.environ[VARIABLE["redis"]])

            def drop_keys() -> None:
                keys = list(client.scan_iter(match=f"{KEYS}{tag}:*", count=1000))
                for batch in chunks(keys, 1000):
                    client.unlink(*batch)
                client.close()

            self.cleanups.append(drop_keys)

    def cleanup(self) -> None:
        for step in self.cleanups:
            step()


# measuring -------------------------------------------------------------------------------------------------


def open_provider(workspace: Path, backend: str) -> Provider:
    config = load_workspace(workspace).backends[backend]
    module_name, class_name = PROVIDER_TYPES[config.type].split(":")
    return getattr(importlib.import_module(module_name), class_name)(config, load_workspace(workspace))


def batched(call: Callable[[Sequence[Any]], Any], items: Sequence[Any], size: int) -> None:
    for batch in chunks(items, size):
        call(batch)


def unreachable(backend: str) -> str | None:
    """Why a server backend cannot be measured, or None."""
    if backend not in VARIABLE:
        return None
    if not os.environ.get(VARIABLE[backend]):
        return f"{VARIABLE[backend]} is not set (source ~/.cache/kfmops-servers/run/env.sh)"
    return None


def measure(backend: str, sizes: list[int], batch: int, folder: Path) -> list[Row]:
    n = max(sizes)
    workspace = folder / backend
    workspace.mkdir()
    (workspace / "kfmops.yaml").write_text(WORKSPACE, encoding="utf-8")
    tag = f"b{uuid.uuid4().hex[:8]}"
    provider = open_provider(workspace, backend)  # first, so that the local backend creates its database
    targets = Targets(backend, workspace, tag)
    try:
        targets.seed(n)
        references = [reference(backend, tag, i) for i in range(n)]
        items = [(r, value(backend, tag, i)) for i, r in enumerate(references)]

        provider.round_trips = 0
        started = time.perf_counter()
        batched(provider.write, items, batch)
        write_trips = provider.round_trips
        batched(provider.read, references, batch)  # apply reads each batch back to verify it
        apply_seconds = time.perf_counter() - started

        started = time.perf_counter()
        batched(provider.read, references, batch)
        batched(provider.missing_targets, items, batch)
        plan_seconds = time.perf_counter() - started

        rows = []
        for size in sizes:
            provider.round_trips = 0
            started = time.perf_counter()
            live: dict[str, Any] = {}
            batched(lambda b, live=live: live.update(provider.read(b)), references[:size], batch)
            seconds = time.perf_counter() - started
            wrong = sum(1 for r, v in items[:size] if live.get(r.address) != v)
            row = Row(backend, size, math.ceil(size / batch), provider.round_trips, seconds)
            if wrong:
                row.notes.append(f"{wrong} read back wrong")
            if size == n:
                row.write_trips, row.plan_seconds, row.apply_seconds = write_trips, plan_seconds, apply_seconds
            rows.append(row)
        return rows
    finally:
        provider.close()
        targets.cleanup()


def table(rows: list[Row], skipped: dict[str, str]) -> str:
    header = ("backend", "refs", "batches", "read RT", "read s", "write RT", "plan s", "apply s", "notes")
    lines = [header]
    for row in rows:
        lines.append(
            (
                row.backend,
                f"{row.refs:,}",
                str(row.batches),
                str(row.read_trips),
                f"{row.read_seconds:.2f}",
                "" if row.write_trips is None else str(row.write_trips),
                "" if row.plan_seconds is None else f"{row.plan_seconds:.2f}",
                "" if row.apply_seconds is None else f"{row.apply_seconds:.2f}",
                "; ".join(row.notes),
            )
        )
    lines += [(backend, "-", "-", "-", "-", "-", "-", "-", f"skipped: {why}") for backend, why in skipped.items()]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    rendered = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in lines]
    rendered.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in rendered)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--refs", type=int, default=10000, help="references written and read (default 10000)")
    parser.add_argument("--batch", type=int, default=1000, help="references per provider call (default 1000)")
    parser.add_argument("--backends", default=",".join(KIND), help=f"comma-separated (default {','.join(KIND)})")
    args = parser.parse_args(argv)
    sizes = sorted({s for s in (100, 1000, args.refs) if s <= args.refs})
    rows: list[Row] = []
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="kfmops-roundtrips-") as folder:
        for backend in args.backends.split(","):
            if (why := unreachable(backend)) is not None:
                skipped[backend] = why
                continue
            try:
                rows += measure(backend, sizes, args.batch, Path(folder))
            except Exception as exc:  # a server that is down is reported, the others still measured
                skipped[backend] = f"{type(exc).__name__}: {exc}"
    print(f"{args.refs:,} references, {args.batch:,} per provider call; RT = provider round trips")
    print(table(rows, skipped))


if __name__ == "__main__":
    main()
