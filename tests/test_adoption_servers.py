"""Adoption on the real servers: Neo4j, Elasticsearch and Redis filled by a script with each one's own client.

`import --discover` writes the documents, `plan` shows only imports, and `apply` writes nothing, proved with a
write counter of each server read by its own client: the element ids of the Neo4j relationships (a rewrite
makes new ones), the `aliases_version` Elasticsearch keeps per index (every alias change on an index bumps it)
and Redis keyspace notifications on the test's keys (one per write). A promotion afterwards moves every
pointer and moves every counter too, so the counters do see writes; `rollback --last` of the import forgets
the references and moves no counter. Names carry a unique tag; the naming conventions of the workspace put
the tag in every name, so discovery lists only what this test wrote on the shared servers.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from conftest import Cli, plan_changes
from servers import (
    create_indices,
    create_nodes,
    delete_indices,
    delete_keys,
    delete_nodes,
    es_client,
    neo4j_driver,
    redis_client,
    unique_tag,
)
from test_adoption import file_times, plan_json, script_stac, seed_catalog, serial, set_version

DATASETS = {"roads": (["v1", "v2", "v3"], "v2"), "rivers": (["v1", "v2"], "v1")}


class Servers:
    """The three servers of one test, seeded and read natively, and the counters of their writes."""

    def __init__(self, tag: str, neo4j_uri: str, es_url: str, redis_url: str):
        self.tag = tag
        self.driver = neo4j_driver(neo4j_uri)
        self.es = es_client(es_url)
        self.redis = redis_client(redis_url)
        self.events = self.redis.pubsub()

    def index(self, name: str, version: str) -> str:
        return f"kfmt-{self.tag}-{name}-{version}"

    def fill(self) -> None:
        """What a platform's scripts made: targets and pointers, never through kfmops."""
        for name, (versions, current) in DATASETS.items():
            create_nodes(self.driver, "Dataset", [f"{self.tag}-{name}"])
            create_nodes(self.driver, "DatasetVersion", [f"{self.tag}-{name}@{v}" for v in versions])
            self.driver.execute_query(
                "MATCH (a:Dataset {id: $a}), (b:DatasetVersion {id: $b}) CREATE (a)-[:CURRENT_VERSION]->(b)",
                {"a": f"{self.tag}-{name}", "b": f"{self.tag}-{name}@{current}"},
            )
            create_indices(self.es, [self.index(name, v) for v in versions])
            self.es.indices.put_alias(index=self.index(name, current), name=f"kfmt-{self.tag}-{name}")
            self.redis.set(f"kfmt:{self.tag}:dataset:{name}:current", current)

    def relationship_ids(self) -> dict[str, str]:
        records = self.driver.execute_query(
            "MATCH (a:Dataset)-[r:CURRENT_VERSION]->(b) WHERE a.id STARTS WITH $tag "
            "RETURN b.id AS b, elementId(r) AS r",
            {"tag": f"{self.tag}-"},
        ).records
        return {record["b"]: record["r"] for record in records}

    def alias_versions(self) -> dict[str, int]:
        body = self.es.cluster.state(metric="metadata", index=f"kfmt-{self.tag}-*").body
        return {name: index["aliases_version"] for name, index in body["metadata"]["indices"].items()}

    def aliases(self) -> dict[str, list[str]]:
        body = self.es.indices.get_alias(name=f"kfmt-{self.tag}-*").body
        return {
            alias: sorted(i for i, e in body.items() if alias in e["aliases"])
            for e in body.values()
            for alias in e["aliases"]
        }

    def listen(self) -> None:
        """Keyspace notifications for the test's keys: every write to one of them is one message."""
        self.events.psubscribe(f"__keyspace@*__:kfmt:{self.tag}:*")
        self.events.get_message(timeout=1)  # the subscription's confirmation

    def redis_writes(self) -> list[str]:
        time.sleep(0.2)
        found = []
        while (message := self.events.get_message(timeout=0.2)) is not None:
            if message["type"] == "pmessage":
                found.append(f"{message['channel']} {message['data']}")
        return found

    def counters(self) -> dict[str, Any]:
        return {"neo4j": self.relationship_ids(), "elasticsearch": self.alias_versions()}

    def close(self) -> None:
        delete_nodes(self.driver, ["Dataset", "DatasetVersion"], f"{self.tag}-")
        delete_indices(self.es, f"kfmt-{self.tag}-")
        delete_keys(self.redis, f"kfmt:{self.tag}:")
        self.events.close()
        self.driver.close()
        self.es.close()
        self.redis.close()


@pytest.fixture
def servers(neo4j_uri: str, es_url: str, redis_url: str) -> Iterator[Servers]:
    opened = Servers(unique_tag("adopt"), neo4j_uri, es_url, redis_url)
    events = opened.redis.config_get("notify-keyspace-events")["notify-keyspace-events"]
    opened.redis.config_set("notify-keyspace-events", "K$g")  # string and generic commands, keyspace channel
    try:
        yield opened
    finally:
        with contextlib.suppress(redis.RedisError):
            opened.redis.config_set("notify-keyspace-events", events)
        opened.close()


def workspace_for(root: Path, tag: str, cli: Cli) -> Path:
    workspace = root / "servers"
    workspace.mkdir()
    (workspace / "desired").mkdir()
    (workspace / "kfmops.yaml").write_text(
        f"""\
apiVersion: kfmops/v1
kind: Workspace
apply: {{fsync: false}}
backends:
  local: {{type: local, seed: data}}
  graph: {{type: neo4j, uri_env: KFMOPS_TEST_NEO4J_URI}}
  search: {{type: elasticsearch, url_env: KFMOPS_TEST_ES_URL}}
  cache: {{type: redis, url_env: KFMOPS_TEST_REDIS_URL, prefixes: ["kfmt:{tag}:"]}}
routes: {{graph: graph, search: search, cache: cache}}
datasets:
  graph: {{dataset_id: "{tag}-{{dataset}}", version_id: "{tag}-{{dataset}}@{{version}}"}}
  search: {{alias: "kfmt-{tag}-{{dataset}}", index: "kfmt-{tag}-{{dataset}}-{{version}}"}}
  cache: {{key: "kfmt:{tag}:dataset:{{dataset}}:current", invalidate: ["kfmt:{tag}:cache:{{dataset}}:*"]}}
"""
    )
    seed_catalog(workspace, DATASETS)
    code, _, err = cli(workspace, "init")
    assert code == 0, err
    script_stac(workspace / "state" / "local" / "stac", DATASETS)
    return workspace


def test_discover_and_import_write_nothing_to_any_server(tmp_path: Path, cli: Cli, servers: Servers) -> None:
    servers.fill()
    workspace = workspace_for(tmp_path, servers.tag, cli)
    written = workspace / "desired" / "discovered.yaml"
    code, _, err = cli(workspace, "import", "--discover", "--write", str(written))
    assert code == 0, err
    documents = list(yaml.safe_load_all(written.read_text()))
    found = {d["metadata"]["name"]: d["spec"] for d in documents if d["kind"] == "Dataset"}
    assert {n: ([v["id"] for v in s["versions"]], s["version"]) for n, s in found.items()} == DATASETS
    assert all("backends" not in spec for spec in found.values())  # every part found live

    code, plan = plan_json(cli, workspace)
    assert code == 2 and {c["action"] for c in plan_changes(plan)} == {"import"}
    assert {c["backend"] for c in plan_changes(plan)} == {"local", "graph", "search", "cache"}

    counters, catalog = servers.counters(), file_times(workspace / "state" / "local")
    servers.listen()
    serial_before = serial(cli, workspace)
    code, out, err = cli(workspace, "apply", "--auto-approve")
    assert code == 0, err
    assert "8 imported" in out
    assert servers.counters() == counters
    assert servers.redis_writes() == []
    assert file_times(workspace / "state" / "local") == catalog
    assert serial(cli, workspace) == serial_before + 1
    assert plan_json(cli, workspace)[0] == 0

    code, out, err = cli(workspace, "rollback", "--last", "--auto-approve")
    assert code == 0, err
    assert "8 forgotten" in out
    assert servers.counters() == counters and servers.redis_writes() == []
    code, out, _ = cli(workspace, "state", "list", "--json")
    assert json.loads(out)["resources"] == []

    code, _, err = cli(workspace, "apply", "--auto-approve")  # imported again, still writing nothing
    assert code == 0, err
    assert servers.counters() == counters and servers.redis_writes() == []
    set_version(written, "roads", "v3")
    code, _, err = cli(workspace, "apply", "--auto-approve")
    assert code == 0, err
    tag = servers.tag
    assert servers.redis.get(f"kfmt:{tag}:dataset:roads:current") == "v3"
    assert servers.aliases()[f"kfmt-{tag}-roads"] == [servers.index("roads", "v3")]
    ids = servers.relationship_ids()
    assert f"{tag}-roads@v3" in ids and f"{tag}-roads@v2" not in ids
    assert ids[f"{tag}-rivers@v1"] == counters["neo4j"][f"{tag}-rivers@v1"]  # rivers was not touched
    versions = servers.alias_versions()
    assert versions[servers.index("roads", "v3")] > counters["elasticsearch"][servers.index("roads", "v3")]
    assert versions[servers.index("rivers", "v1")] == counters["elasticsearch"][servers.index("rivers", "v1")]
    assert any(f"kfmt:{tag}:dataset:roads:current" in event for event in servers.redis_writes())
