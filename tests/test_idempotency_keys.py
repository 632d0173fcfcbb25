"""Idempotency keys on the real Redis and Neo4j, through the real `kfmops` entry point.

Every keyed write records (transaction id, batch number) where the backend can hold it: a hash per batch with
a TTL in Redis, properties on the new relationship in Neo4j. Both are read here with each server's own client.
`recover` uses them: an apply killed before its cache batch was written, whose cache pointer and graph
relationship an outside script then set to the very values the apply meant to write, is reported as moved by
someone else (not written by the apply), left as found, and refused by `recover --forward`; killed after its
last write with nobody else touching anything, every reference is reported as written by the apply and undone.
The workspace is the adoption test's: Datasets discovered on servers filled by a script, names tagged.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, plan_changes
from servers import unique_tag
from test_adoption import plan_json, set_version
from test_adoption_servers import Servers, workspace_for

from kfmops.stores.wal import read_wal

pytestmark = pytest.mark.servers

SEVEN_DAYS = 7 * 24 * 3600
DATASETS = {"roads": (["v1", "v2", "v3"], "v2"), "rivers": (["v1", "v2"], "v1")}
KINDS = ("stac", "graph", "search", "cache")  # one batch each, in the default apply order


@pytest.fixture
def adopted(tmp_path: Path, cli: Cli, neo4j_uri: str, es_url: str, redis_url: str) -> Iterator[tuple[Path, Servers]]:
    """A workspace whose Datasets were discovered on the servers and imported (nothing written yet)."""
    servers = Servers(unique_tag("keys"), neo4j_uri, es_url, redis_url)
    try:
        servers.fill()
        workspace = workspace_for(tmp_path, servers.tag, cli)
        succeeded(cli(workspace, "import", "--discover", "--write", str(workspace / "desired" / "discovered.yaml")))
        succeeded(cli(workspace, "apply", "--auto-approve"))
        yield workspace, servers
    finally:
        servers.close()


def succeeded(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 0, (code, out, err)
    return out


def promote(cli: Cli, workspace: Path, version: str, crash_at: str) -> str:
    """Plan roads -> `version` and apply it killed at `crash_at`; the id of the interrupted apply."""
    set_version(workspace / "desired" / "discovered.yaml", "roads", version)
    code, _, err = cli(workspace, "apply", "--auto-approve", env={"KFMOPS_CRASH_AT": crash_at})
    assert code == -9, err
    (wal,) = (workspace / "state" / "wal").glob("*.jsonl")
    intents = [r for r in read_wal(wal) if r.type.value == "INTENT"]
    assert [r.fields["addresses"] for r in intents] == [[f"dataset.roads.{k}"] for k in KINDS][: len(intents)]
    return wal.stem


def record(servers: Servers, apply_id: str, batch: int) -> tuple[dict[str, str], int]:
    """The Redis idempotency key of one batch: {key: value written, as JSON} and its TTL in seconds."""
    name = f"kfmt:{servers.tag}:txn:{apply_id}:{batch}"
    return servers.redis.hgetall(name), servers.redis.ttl(name)


def current_version(servers: Servers, dataset: str) -> list[dict[str, Any]]:
    """Each CURRENT_VERSION relationship of a dataset: its target and the key properties it carries."""
    records = servers.driver.execute_query(
        "MATCH (:Dataset {id: $id})-[r:CURRENT_VERSION]->(b) "
        "RETURN b.id AS target, r.kfmops_transaction AS transaction, r.kfmops_batch AS batch",
        {"id": f"{servers.tag}-{dataset}"},
    ).records
    return [record.data() for record in records]


def found(output: str) -> dict[str, str]:
    """{address: what recover found} from its report lines `  ADDRESS: WHAT when the apply stopped`."""
    return dict(re.findall(r"^  (\S+): (.+) when the apply stopped$", output, re.MULTILINE))


def test_every_write_carries_its_key_and_the_keys_are_no_references(adopted: tuple[Path, Servers], cli: Cli) -> None:
    workspace, servers = adopted
    tag, cache_key = servers.tag, f"kfmt:{servers.tag}:dataset:roads:current"
    set_version(workspace / "desired" / "discovered.yaml", "roads", "v3")
    out = succeeded(cli(workspace, "apply", "--auto-approve"))
    apply_id = re.search(r"Apply id: (\S+)\.", out)[1]  # type: ignore[index]

    fields, ttl = record(servers, apply_id, KINDS.index("cache"))
    assert fields == {cache_key: '"v3"'}
    assert SEVEN_DAYS - 60 < ttl <= SEVEN_DAYS
    assert current_version(servers, "roads") == [
        {"target": f"{tag}-roads@v3", "transaction": apply_id, "batch": KINDS.index("graph")}
    ]
    assert current_version(servers, "rivers")[0]["transaction"] is None  # not written by this apply

    # the key is kfmops' own: no plan, drift or discovery sees it, and no reference may name it
    assert plan_json(cli, workspace)[0] == 0
    succeeded(cli(workspace, "drift"))
    again = workspace / "discovered-again.yaml"
    succeeded(cli(workspace, "import", "--discover", "--write", str(again)))
    assert ":txn:" not in again.read_text()
    (workspace / "desired" / "claim.yaml").write_text(
        "apiVersion: kfmops/v1\nkind: CacheKey\nmetadata: {name: claim}\n"
        f"spec: {{key: 'kfmt:{tag}:txn:{apply_id}:3', value: stolen}}\n"
    )
    code, out, err = cli(workspace, "plan")
    assert code == 1 and "where kfmops keeps its idempotency keys" in out + err, (out, err)
    assert record(servers, apply_id, KINDS.index("cache"))[0] == {cache_key: '"v3"'}


def test_recover_knows_its_own_writes_by_their_keys(adopted: tuple[Path, Servers], cli: Cli) -> None:
    workspace, servers = adopted
    tag, cache_key = servers.tag, f"kfmt:{servers.tag}:dataset:roads:current"
    apply_id = promote(cli, workspace, "v3", crash_at=f"write:{len(KINDS) - 1}")
    assert record(servers, apply_id, KINDS.index("cache"))[0] == {cache_key: '"v3"'}

    out = succeeded(cli(workspace, "recover"))
    assert found(out) == {f"dataset.roads.{kind}": "written" for kind in KINDS}
    assert "back at its value before the apply" in out
    assert servers.redis.get(cache_key) == "v2"
    # compensation writes under the batch's own key: the key speaks for what kfmops last put there
    assert record(servers, apply_id, KINDS.index("cache"))[0] == {cache_key: '"v2"'}
    assert current_version(servers, "roads") == [
        {"target": f"{tag}-roads@v2", "transaction": apply_id, "batch": KINDS.index("graph")}
    ]
    assert plan_json(cli, workspace)[0] == 2  # the desired v3 is still to be applied


def test_the_same_move_made_by_someone_else_is_moved_and_left_as_found(adopted: tuple[Path, Servers], cli: Cli) -> None:
    workspace, servers = adopted
    tag, cache_key = servers.tag, f"kfmt:{servers.tag}:dataset:roads:current"
    # killed once the cache batch is announced (its INTENT is WAL record 8) and before it is written
    apply_id = promote(cli, workspace, "v3", crash_at=f"wal:{2 + 2 * KINDS.index('cache')}")
    assert record(servers, apply_id, KINDS.index("cache")) == ({}, -2)  # no such key
    assert current_version(servers, "roads")[0]["transaction"] == apply_id

    # an outside script makes the same move: the cache pointer, and the relationship made anew
    servers.redis.set(cache_key, "v3")
    servers.driver.execute_query(
        "MATCH (a:Dataset {id: $a})-[r:CURRENT_VERSION]->() DELETE r WITH DISTINCT a "
        "MATCH (b:DatasetVersion {id: $b}) CREATE (a)-[:CURRENT_VERSION]->(b)",
        {"a": f"{tag}-roads", "b": f"{tag}-roads@v3"},
    )

    code, out, err = cli(workspace, "recover", "--forward")
    assert code == 5 and "moved outside kfmops" in out + err, (code, out, err)

    out = succeeded(cli(workspace, "recover"))
    assert found(out) == {
        "dataset.roads.stac": "written",
        "dataset.roads.graph": "moved",
        "dataset.roads.search": "written",
        "dataset.roads.cache": "moved",
    }
    assert "Left 2 references as found" in out
    # someone else's writes stand; this apply's own writes are undone
    assert servers.redis.get(cache_key) == "v3"
    assert current_version(servers, "roads") == [{"target": f"{tag}-roads@v3", "transaction": None, "batch": None}]
    assert servers.aliases()[f"kfmt-{tag}-roads"] == [servers.index("roads", "v2")]
    code, drift = plan_json(cli, workspace, "--refresh-only")
    assert code == 2
    assert sorted(d["address"] for d in drift["drift"]) == [
        "dataset.roads.cache",
        "dataset.roads.graph",
    ]
    code, plan = plan_json(cli, workspace)
    assert sorted(c["address"] for c in plan_changes(plan) if c["action"] != "no-op") == [
        "dataset.roads.search",
        "dataset.roads.stac",
    ]
