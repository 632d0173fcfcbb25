"""The floor of each backend: the best batched write and read its own client can do, without kfmops.

Each floor does the work kfmops' apply and plan do for the same N references (benchmarks.roundtrips
`reference` and `value`), in batches of the same size, with none of kfmops' guarantees:

- neo4j: one `UNWIND $rows AS r MATCH (a) MATCH (b) MERGE (a)-[:CURRENT_VERSION]->(b)` per batch in an
  explicit transaction, the keys backed by uniqueness constraints and sought with `USING INDEX SEEK` (the
  labels are filled just before, when the planner's statistics may still count them empty); read: one
  `UNWIND ... MATCH` per batch returning the batch as one record of two lists (a record per reference
  takes the driver 2-3 times as long to decode, a list of pairs about 1.4 times).
- elasticsearch: one `POST _aliases` of `add` actions per batch; read: one `GET _alias/<prefix>*` per batch.
- redis: one MULTI/EXEC pipeline of SETs per batch; read: one MGET per batch.
- stac: each document written with json.dump and one fsync; read: json.load of each document.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.roundtrips import DATASET, KEYS, VARIABLE, VERSION
from kfmops.providers.base import chunks


class Floor:
    """Writes and reads the references of one tag with the backend's own client."""

    def __init__(self, backend: str, workspace: Path, tag: str, n: int, batch: int):
        self.backend, self.workspace, self.tag, self.n, self.batch = backend, workspace, tag, n, batch
        self.close: Callable[[], Any] = lambda: None

    def write(self) -> None:
        """Writes every reference, connecting first (as the provider does) and closing after."""
        try:
            getattr(self, f"_write_{self.backend}")()
        finally:
            self.close()

    def read(self) -> int:
        """Reads every reference; the number that hold the value written."""
        try:
            found: int = getattr(self, f"_read_{self.backend}")()
        finally:
            self.close()
        return found

    # neo4j ------------------------------------------------------------------------------------------------

    def _driver(self) -> Any:
        import neo4j

        driver = neo4j.GraphDatabase.driver(os.environ[VARIABLE["neo4j"]])
        self.close = driver.close
        return driver

    def _write_neo4j(self) -> None:
        driver = self._driver()
        rows = [{"source": f"{self.tag}-{i}", "target": f"{self.tag}-{i}@v1"} for i in range(self.n)]
        cypher = (
            f"UNWIND $rows AS r MATCH (a:{DATASET} {{id: r.source}}) USING INDEX SEEK a:{DATASET}(id) "
            f"MATCH (b:{VERSION} {{id: r.target}}) USING INDEX SEEK b:{VERSION}(id) MERGE (a)-[:CURRENT_VERSION]->(b)"
        )
        with driver.session() as session:
            for batch in chunks(rows, self.batch):
                with session.begin_transaction() as tx:
                    tx.run(cypher, rows=list(batch)).consume()
                    tx.commit()

    def _read_neo4j(self) -> int:
        driver = self._driver()
        cypher = (
            f"UNWIND $ids AS id MATCH (a:{DATASET} {{id: id}})-[:CURRENT_VERSION]->(b:{VERSION}) "
            f"USING INDEX SEEK a:{DATASET}(id) RETURN collect(id) AS sources, collect(b.id) AS targets"
        )
        ids = [f"{self.tag}-{i}" for i in range(self.n)]
        good = 0
        with driver.session() as session:
            for batch in chunks(ids, self.batch):
                record = session.run(cypher, ids=list(batch)).single()
                good += sum(
                    1
                    for source, target in zip(record["sources"], record["targets"], strict=True)
                    if target == f"{source}@v1"
                )
        return good

    # elasticsearch ----------------------------------------------------------------------------------------

    def _client(self) -> Any:
        import elasticsearch

        client = elasticsearch.Elasticsearch(os.environ[VARIABLE["elasticsearch"]], request_timeout=120)
        self.close = client.close
        return client

    def _write_elasticsearch(self) -> None:
        client = self._client()
        index = f"kfmops-bench-{self.tag}-v1"
        aliases = [f"kfmops-bench-{self.tag}-{i}" for i in range(self.n)]
        for batch in chunks(aliases, self.batch):
            client.indices.update_aliases(actions=[{"add": {"index": index, "alias": alias}} for alias in batch])

    def _read_elasticsearch(self) -> int:
        client = self._client()
        index = f"kfmops-bench-{self.tag}-v1"
        aliases = [f"kfmops-bench-{self.tag}-{i}" for i in range(self.n)]
        good = 0
        for batch in chunks(aliases, self.batch):
            # A batch's names do not fit one request line; their prefix does (naming them, in request lines
            # of 3,000 characters, took 15 times as long on the test server).
            body = client.indices.get_alias(name=f"kfmops-bench-{self.tag}-*").body
            wanted = set(batch)
            good += sum(1 for alias in body.get(index, {}).get("aliases", {}) if alias in wanted)
        return good

    # redis ------------------------------------------------------------------------------------------------

    def _redis(self) -> Any:
        import redis

        client = redis.Redis.from_url(os.environ[VARIABLE["redis"]], decode_responses=True)
        self.close = client.close
        return client

    def _write_redis(self) -> None:
        client = self._redis()
        keys = [f"{KEYS}{self.tag}:{i}" for i in range(self.n)]
        for batch in chunks(keys, self.batch):
            pipeline = client.pipeline(transaction=True)
            for key in batch:
                pipeline.set(key, "v1")
            pipeline.execute()

    def _read_redis(self) -> int:
        client = self._redis()
        keys = [f"{KEYS}{self.tag}:{i}" for i in range(self.n)]
        return sum(sum(1 for v in client.mget(list(batch)) if v == "v1") for batch in chunks(keys, self.batch))

    # stac -------------------------------------------------------------------------------------------------

    def _documents(self) -> list[Path]:
        return [self.workspace / "catalog" / self.tag / f"d{i}.json" for i in range(self.n)]

    def _write_stac(self) -> None:
        for batch in chunks(self._documents(), self.batch):
            for file in batch:
                name = f"{self.tag}-{file.stem}"
                document = {
                    "type": "Catalog",
                    "stac_version": "1.1.0",
                    "id": name,
                    "description": name,
                    "links": [{"rel": "latest-version", "href": "./v1.json"}],
                    "deprecated": False,
                }
                with open(file, "w", encoding="utf-8") as handle:
                    json.dump(document, handle, indent=2)
                    handle.flush()
                    os.fsync(handle.fileno())

    def _read_stac(self) -> int:
        good = 0
        for file in self._documents():
            with open(file, encoding="utf-8") as handle:
                links = json.load(handle).get("links", [])
            good += any(link.get("rel") == "latest-version" for link in links)
        return good
