"""The Kansas example on the four real backends, through the real `kfmops` entry point.

A copy of examples/kansas-servers and its desired state is planned, applied, promoted and rolled back; after
each step every backend is read with its own client (redis-py GET, elasticsearch-py GET _alias, Cypher over the
neo4j driver, json over the STAC files), never through kfmops. The copy names everything it creates on the
servers with a unique tag (kfmops.yaml `datasets:` conventions and tagged raw references), so it shares the
servers with other tests and their users, and removes it all afterwards.
"""

from __future__ import annotations

import json
import posixpath
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import elasticsearch
import neo4j
import pytest
import redis
import yaml
from conftest import plan_changes
from pgstate import drop
from servers import (
    aliases_of,
    create_indices,
    delete_indices,
    delete_keys,
    delete_nodes,
    es_client,
    keys_under,
    neo4j_driver,
    redis_client,
    unique_tag,
)

from benchmarks.seed import seed, versions_in
from kfmops.workspace import load_workspace

pytestmark = pytest.mark.servers

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "kansas-servers"
KANSAS = ROOT / "examples" / "kansas"
CONVENTIONS = """\
datasets:
  graph: {dataset_id: "TAG-{dataset}", version_id: "TAG-{dataset}@{version}"}
  search: {alias: "kfm-TAG-{dataset}", index: "kfm-TAG-{dataset}-{version}"}
  cache: {key: "kfm:TAG:dataset:{dataset}:current", invalidate: ["kfm:TAG:cache:{dataset}:*"]}
"""
# examples/kansas/desired/references.yaml, with the names it creates on the servers tagged
RAW = """\
apiVersion: kfmops/v1
kind: SearchAlias
metadata:
  name: kfm-basemaps
spec:
  alias: kfm-TAG-basemaps
  indices: [kfm-TAG-landcover-v2019, kfm-TAG-hydrography-v3, kfm-TAG-county-boundaries-v2]
---
apiVersion: kfmops/v1
kind: GraphRelationship
metadata:
  name: railroads-digitized-from
spec:
  from: {label: Dataset, id: TAG-railroads-1880}
  type: DIGITIZED_FROM
  to: {label: Dataset, id: TAG-historical-topo}
---
apiVersion: kfmops/v1
kind: CacheKey
metadata:
  name: default-basemap
spec:
  key: kfm:TAG:config:default-basemap
  value: landcover
  invalidate: ["kfm:TAG:cache:tiles:basemap:*"]
---
apiVersion: kfmops/v1
kind: StacLink
metadata:
  name: railroads-derived-from
spec:
  document: railroads-1880/v3/collection.json
  rel: derived_from
  targets: [historical-topo/v2/collection.json]
"""


@dataclass
class KansasOnServers:
    """The workspace copy, its tag, the environment its backends read, and a client per server."""

    root: Path
    tag: str
    env: dict[str, str]
    redis: redis.Redis
    graph: neo4j.Driver
    search: elasticsearch.Elasticsearch

    @property
    def catalog(self) -> Path:
        return self.root / "catalog"

    def datasets(self) -> dict[str, str]:
        """{dataset: spec.version} as the desired YAML says."""
        found = {}
        for file in sorted((self.root / "desired").glob("*.yaml")):
            for document in yaml.safe_load_all(file.read_text(encoding="utf-8")):
                if document and document["kind"] == "Dataset":
                    found[document["metadata"]["name"]] = document["spec"]["version"]
        return found

    def snapshot(self) -> dict[str, Any]:
        """Every reference this workspace manages, read from each server with its own client."""
        tag, names = self.tag, sorted(self.datasets())
        records = self.graph.execute_query(
            "MATCH (a)-[r]->(b) WHERE a.id STARTS WITH $prefix RETURN a.id AS a, type(r) AS type, b.id AS b",
            {"prefix": f"{tag}-"},
        ).records
        stac = {}
        for file in sorted(self.catalog.rglob("*.json")):
            document = json.loads(file.read_text(encoding="utf-8"))
            links = document.pop("links", [])
            stac[file.relative_to(self.catalog).as_posix()] = {
                "links": sorted((link["rel"], link["href"]) for link in links),
                "rest": document,
            }
        return {
            "cache": {k: v for k, v in keys_under(self.redis, f"kfm:{tag}:").items() if f"kfm:{tag}:cache:" not in k},
            "search": aliases_of(self.search, [f"kfm-{tag}-{d}" for d in names] + [f"kfm-{tag}-basemaps"]),
            "graph": sorted((r["a"], r["type"], r["b"]) for r in records),
            "stac": stac,
        }

    def files(self) -> dict[str, bytes]:
        return {f.relative_to(self.catalog).as_posix(): f.read_bytes() for f in sorted(self.catalog.rglob("*.json"))}


@pytest.fixture
def kansas(tmp_path, monkeypatch, redis_url, neo4j_uri, es_url, postgres_dsn) -> Iterator[KansasOnServers]:
    tag = unique_tag("e2e")
    root = tmp_path / "kansas-servers"
    shutil.copytree(EXAMPLE, root)
    shutil.copytree(KANSAS / "desired", root / "desired")
    (root / "desired" / "references.yaml").write_text(RAW.replace("TAG", tag), encoding="utf-8")
    config = root / "kfmops.yaml"
    text = config.read_text(encoding="utf-8").replace("desired: ../kansas/desired", "desired: desired")
    text = text.replace("workspace: kansas-servers ", f"workspace: {tag} ")  # its own state in the shared database
    config.write_text(text + CONVENTIONS.replace("TAG", tag), encoding="utf-8")
    env = {"KFMOPS_NEO4J_URI": neo4j_uri, "KFMOPS_ES_URL": es_url, "KFMOPS_REDIS_URL": redis_url}
    env["KFMOPS_STATE_DSN"] = postgres_dsn
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.delenv("KFMOPS_NEO4J_USER", raising=False)
    kansas = KansasOnServers(root, tag, env, redis_client(redis_url), neo4j_driver(neo4j_uri), es_client(es_url))
    names = sorted(kansas.datasets())
    # benchmarks.seed creates dataset nodes by dataset name, not by the graph.dataset_id convention; note
    # which of those existed, to remove only the ones it adds, and create the tagged ones here.
    untagged = "MATCH (n:Dataset) WHERE n.id IN $names RETURN collect(n.id) AS ids"
    existed = set(kansas.graph.execute_query(untagged, {"names": names}).records[0]["ids"])
    try:
        counts = seed(load_workspace(root), KANSAS / "data")
        assert counts["versions"] == counts["nodes"] == 23
        kansas.graph.execute_query(
            "UNWIND $ids AS id MERGE (:Dataset {id: id})", {"ids": [f"{tag}-{d}" for d in names]}
        )
        # benchmarks.seed recognises Elasticsearch by its provider's class name, which the registry now wraps:
        # create the version indices it skipped (it reports "indices" when it created them).
        if "indices" not in counts:
            create_indices(kansas.search, [f"kfm-{tag}-{d}-{v}" for d, v in versions_in(KANSAS / "data" / "catalog")])
        yield kansas
    finally:
        delete_keys(kansas.redis, f"kfm:{tag}:")
        delete_nodes(kansas.graph, ["Dataset", "DatasetVersion"], f"{tag}-")
        delete_indices(kansas.search, f"kfm-{tag}-")
        added = sorted(set(names) - existed)
        kansas.graph.execute_query("MATCH (n:Dataset) WHERE n.id IN $ids AND NOT (n)--() DELETE n", {"ids": added})
        kansas.redis.close()
        kansas.graph.close()
        kansas.search.close()
        drop(postgres_dsn, tag)


def ok(result: tuple[int, str, str], code: int = 0) -> str:
    assert result[0] == code, result
    assert "Traceback" not in result[1] + result[2]
    return result[1]


def set_version(root: Path, dataset: str, version: str) -> None:
    """Edit one dataset's spec.version in place, as a pull request would (a one-line change)."""
    for file in sorted((root / "desired").glob("*.yaml")):
        lines = file.read_text(encoding="utf-8").splitlines()
        if f"  name: {dataset}" in lines:
            start = lines.index(f"  name: {dataset}")
            at = next(i for i in range(start, len(lines)) if lines[i].startswith("  version:"))
            lines[at] = f"  version: {version}"
            file.write_text("\n".join(lines) + "\n", encoding="utf-8")
            return
    raise AssertionError(f"no document for {dataset}")


def changed_addresses(cli, kansas: KansasOnServers) -> dict[str, str]:
    out = ok(cli(kansas.root, "plan", "--format", "json", "--out", "plans/check.json", env=kansas.env))
    return {c["address"]: c["action"] for c in plan_changes(json.loads(out)) if c["action"] != "no-op"}


def expected_live(kansas: KansasOnServers, versions: dict[str, str]) -> dict[str, Any]:
    """What the servers hold when every dataset points at `versions` and the raw references are applied."""
    tag = kansas.tag
    searchable = {d: v for d, v in versions.items() if d != "kaw-allotments"}  # search: false
    basemaps = ["landcover-v2019", "hydrography-v3", "county-boundaries-v2"]
    return {
        "cache": {f"kfm:{tag}:dataset:{d}:current": v for d, v in versions.items()}
        | {f"kfm:{tag}:config:default-basemap": "landcover"},
        "search": {f"kfm-{tag}-{d}": {f"kfm-{tag}-{d}-{v}": False} for d, v in searchable.items()}
        | {f"kfm-{tag}-basemaps": {f"kfm-{tag}-{index}": False for index in basemaps}},
        "graph": sorted(
            [(f"{tag}-{d}", "CURRENT_VERSION", f"{tag}-{d}@{v}") for d, v in versions.items()]
            + [(f"{tag}-railroads-1880", "DIGITIZED_FROM", f"{tag}-historical-topo")]
        ),
    }


def resolve(path: str, href: str) -> str:
    """The catalog-root-relative path a relative href in the document at `path` points at."""
    return posixpath.normpath(posixpath.join(posixpath.dirname(path), href))


def stac_current(kansas: KansasOnServers, versions: dict[str, str]) -> None:
    """The catalog links each dataset's current version, and flags every other version deprecated."""
    snapshot = kansas.snapshot()["stac"]
    children = {href for rel, href in snapshot["catalog.json"]["links"] if rel == "child"}
    public = {d: v for d, v in versions.items() if d != "kaw-allotments"}  # visibility: internal, never linked
    assert children == {f"./{d}/{v}/collection.json" for d, v in public.items()}
    for path, document in snapshot.items():
        dataset, version = document["rest"].get("kfm:dataset"), document["rest"].get("version")
        if dataset in versions:
            assert document["rest"]["deprecated"] is (version != versions[dataset]), path
            latest = [resolve(path, href) for rel, href in document["links"] if rel == "latest-version"]
            assert latest == [f"{dataset}/{versions[dataset]}/collection.json"], path


def test_promotion_and_rollback_across_the_four_backends(cli, kansas):
    versions = kansas.datasets()
    ok(cli(kansas.root, "validate", env=kansas.env))
    out = ok(cli(kansas.root, "plan", "--out", "plans/first.json", env=kansas.env))
    assert "Plan: 43 to create, 0 to update, 0 to delete" in out
    ok(cli(kansas.root, "apply", "plans/first.json", env=kansas.env))
    applied = kansas.snapshot()
    assert {k: applied[k] for k in ("cache", "search", "graph")} == expected_live(kansas, versions)
    stac_current(kansas, versions)
    assert changed_addresses(cli, kansas) == {}, "a second plan has nothing to do"
    files = kansas.files()
    tag = kansas.tag
    for dataset in ("landcover", "soils"):  # caches that a promotion of landcover must invalidate, or not
        kansas.redis.set(f"kfm:{tag}:cache:{dataset}:tile-0-0-0", "png")

    set_version(kansas.root, "landcover", "v2021")
    promoted = versions | {"landcover": "v2021"}
    expected_plan = {f"dataset.landcover.{kind}": "update" for kind in ("stac", "graph", "search", "cache")}
    assert changed_addresses(cli, kansas) == expected_plan
    ok(cli(kansas.root, "apply", "--auto-approve", env=kansas.env))
    moved = kansas.snapshot()
    assert moved["cache"][f"kfm:{tag}:dataset:landcover:current"] == "v2021"
    assert moved["search"][f"kfm-{tag}-landcover"] == {f"kfm-{tag}-landcover-v2021": False}
    assert (f"{tag}-landcover", "CURRENT_VERSION", f"{tag}-landcover@v2021") in moved["graph"]
    stac_current(kansas, promoted)
    live = expected_live(kansas, promoted)
    assert {k: moved[k] for k in ("cache", "search", "graph")} == live, "only landcover moved"
    assert moved["search"][f"kfm-{tag}-basemaps"] == applied["search"][f"kfm-{tag}-basemaps"], "raw alias untouched"
    assert kansas.redis.get(f"kfm:{tag}:cache:landcover:tile-0-0-0") is None, "landcover's caches invalidated"
    assert kansas.redis.get(f"kfm:{tag}:cache:soils:tile-0-0-0") == "png", "and only landcover's"

    ok(cli(kansas.root, "rollback", "--last", "--auto-approve", env=kansas.env))
    assert kansas.snapshot() == applied, "every backend is back where the promotion found it"
    assert kansas.files() == files, "every STAC file is byte for byte what it was, links in their places"
    assert changed_addresses(cli, kansas) == expected_plan, "git still asks for v2021: plan says so"


def test_raw_references_plan_apply_and_roll_back(cli, kansas):
    """Each raw kind changed in git moves on its server, and rollback --last moves it back."""
    ok(cli(kansas.root, "apply", "--auto-approve", env=kansas.env))
    before, files = kansas.snapshot(), kansas.files()
    tag = kansas.tag
    raw = kansas.root / "desired" / "references.yaml"
    text = raw.read_text(encoding="utf-8")
    for old, new in (
        (
            f"indices: [kfm-{tag}-landcover-v2019, kfm-{tag}-hydrography-v3, kfm-{tag}-county-boundaries-v2]",
            f"indices: [kfm-{tag}-landcover-v2021, kfm-{tag}-hydrography-v3]\n  write_index: kfm-{tag}-landcover-v2021",
        ),
        (f"to: {{label: Dataset, id: {tag}-historical-topo}}", f"to: {{label: Dataset, id: {tag}-landcover}}"),
        ("value: landcover", "value: hydrography"),
        (
            "targets: [historical-topo/v2/collection.json]",
            "targets: [historical-topo/v1/collection.json, soils/v2/collection.json]",
        ),
    ):
        assert old in text, old
        text = text.replace(old, new)
    raw.write_text(text, encoding="utf-8")
    changes = changed_addresses(cli, kansas)
    assert changes == {
        "search_alias.kfm-basemaps": "update",
        "graph_relationship.railroads-digitized-from": "update",
        "cache_key.default-basemap": "update",
        "stac_link.railroads-derived-from": "update",
    }
    kansas.redis.set(f"kfm:{tag}:cache:tiles:basemap:z0", "png")
    ok(cli(kansas.root, "apply", "--auto-approve", env=kansas.env))

    after = kansas.snapshot()
    assert after["search"][f"kfm-{tag}-basemaps"] == {
        f"kfm-{tag}-landcover-v2021": True,
        f"kfm-{tag}-hydrography-v3": False,
    }
    assert (f"{tag}-railroads-1880", "DIGITIZED_FROM", f"{tag}-landcover") in after["graph"]
    assert (f"{tag}-railroads-1880", "DIGITIZED_FROM", f"{tag}-historical-topo") not in after["graph"]
    assert after["cache"][f"kfm:{tag}:config:default-basemap"] == "hydrography"
    assert kansas.redis.get(f"kfm:{tag}:cache:tiles:basemap:z0") is None
    derived = [
        href for rel, href in after["stac"]["railroads-1880/v3/collection.json"]["links"] if rel == "derived_from"
    ]
    assert derived == ["../../historical-topo/v1/collection.json", "../../soils/v2/collection.json"]
    moved = {  # the one live pointer of each kind the raw documents own
        "cache": {f"kfm:{tag}:config:default-basemap"},
        "search": {f"kfm-{tag}-basemaps"},
        "graph": {(f"{tag}-railroads-1880", "DIGITIZED_FROM", f"{tag}-historical-topo")},
        "stac": {"railroads-1880/v3/collection.json"},
    }
    for kind, owned in moved.items():  # nothing else moved
        if kind == "graph":
            owned |= {(f"{tag}-railroads-1880", "DIGITIZED_FROM", f"{tag}-landcover")}
            assert set(after[kind]) - owned == set(before[kind]) - owned
        else:
            assert {k: v for k, v in after[kind].items() if k not in owned} == {
                k: v for k, v in before[kind].items() if k not in owned
            }, kind

    ok(cli(kansas.root, "rollback", "--last", "--auto-approve", env=kansas.env))
    assert kansas.snapshot() == before
    assert kansas.files() == files
