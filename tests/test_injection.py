"""Names that would inject into a backend are refused twice: at validation, and by the provider itself.

tests/test_desired_errors.py covers the first injections through `kfmops validate` (a label without backtick,
a relationship type, an alias with a space and '*', an index '*', a key with spaces, a '*' inside a pattern,
a document path with '../', an absolute target). This module adds the rest through the real entry point, and
then calls each provider with hand-built references carrying the same names, as defence in depth: each must
raise BackendError before sending anything, and the servers must be unchanged afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import (
    aliases_of,
    closing,
    create_indices,
    create_nodes,
    delete_indices,
    delete_keys,
    delete_nodes,
    es_client,
    keys_under,
    neo4j_driver,
    open_provider,
    redis_client,
    unique_tag,
    write_stac,
)
from test_desired_errors import HEADER, refused

from kfmops.desired.identifiers import stac_path_problem
from kfmops.errors import BackendError
from kfmops.providers.base import Provider
from kfmops.references import Reference
from kfmops.workspace import load_workspace

CYPHER = "Dataset`) DETACH DELETE n //"

# (id, content of a desired-state file, line the error is on, fragment of the message at that line)
CASES = [
    (
        "graph-label-backtick",
        HEADER
        + "kind: GraphRelationship\nmetadata:\n  name: evil\nspec:\n  from:\n    label: 'Dataset`) DETACH DELETE n //'"
        "\n    id: x\n  type: CURRENT_VERSION\n  to:\n    label: DatasetVersion\n    id: y\n",
        7,
        f"label {CYPHER!r} is not allowed",
    ),
    (
        "graph-type-backtick",
        HEADER + "kind: GraphRelationship\nmetadata:\n  name: evil\nspec:\n  from:\n    label: Dataset\n    id: x\n"
        "  type: 'CURRENT_VERSION`]->(m) DETACH DELETE m //'\n  to:\n    label: DatasetVersion\n    id: y\n",
        9,
        "relationship type 'CURRENT_VERSION`]->(m) DETACH DELETE m //' is not allowed",
    ),
    (
        "graph-key-injection",
        HEADER + "kind: GraphRelationship\nmetadata:\n  name: evil\nspec:\n  from:\n    label: Dataset\n"
        "    key: 'id}) DETACH DELETE n //'\n    id: x\n  type: CURRENT_VERSION\n  to:\n    label: DatasetVersion\n"
        "    id: y\n",
        8,
        "key 'id}) DETACH DELETE n //' is not allowed",
    ),
    (
        "graph-node-id-newline",
        HEADER + "kind: GraphRelationship\nmetadata:\n  name: evil\nspec:\n  from:\n    label: Dataset\n    id: x\n"
        '  type: CURRENT_VERSION\n  to:\n    label: DatasetVersion\n    id: "y\\nMATCH (n) DETACH DELETE n"\n',
        12,
        "has control characters",
    ),
    (
        "search-alias-comma",
        HEADER + "kind: SearchAlias\nmetadata:\n  name: evil\nspec:\n  alias: kfm-a,kfm-b\n  indices: [kfm-x]\n",
        6,
        "alias 'kfm-a,kfm-b' is not a valid Elasticsearch name",
    ),
    (
        "search-alias-uppercase",
        HEADER + "kind: SearchAlias\nmetadata:\n  name: evil\nspec:\n  alias: KFM-Roads\n  indices: [kfm-x]\n",
        6,
        "alias 'KFM-Roads' is not a valid Elasticsearch name",
    ),
    (
        "search-alias-all",
        HEADER + "kind: SearchAlias\nmetadata:\n  name: evil\nspec:\n  alias: _all\n  indices: [kfm-x]\n",
        6,
        "alias '_all' is not a valid Elasticsearch name",
    ),
    (
        "search-index-comma",
        HEADER + "kind: SearchAlias\nmetadata:\n  name: evil\nspec:\n  alias: kfm-x\n  indices:\n  - kfm-x-v1\n"
        "  - kfm-x-v2,kfm-secret\n",
        9,
        "index 'kfm-x-v2,kfm-secret' is not a valid Elasticsearch name",
    ),
    (
        "cache-key-crlf",
        HEADER + 'kind: CacheKey\nmetadata:\n  name: evil\nspec:\n  key: "kfm:x\\r\\nFLUSHALL"\n  value: v1\n',
        6,
        "cache key 'kfm:x\\r\\nFLUSHALL' is not allowed",
    ),
    (
        "cache-key-star",
        HEADER + "kind: CacheKey\nmetadata:\n  name: evil\nspec:\n  key: kfm:*\n  value: v1\n",
        6,
        "cache key 'kfm:*' is not allowed",
    ),
    (
        "cache-invalidate-glob-class",
        HEADER + "kind: CacheKey\nmetadata:\n  name: evil\nspec:\n  key: kfm:x\n  value: v1\n  invalidate:\n"
        "  - kfm:cache:[a-z]*\n",
        9,
        "cache invalidation pattern 'kfm:cache:[a-z]*' is not allowed",
    ),
    (
        "stac-target-climbs-out",
        HEADER + "kind: StacLink\nmetadata:\n  name: evil\nspec:\n  document: catalog.json\n  rel: related\n"
        "  targets:\n  - a/../../../etc/passwd.json\n",
        9,
        "STAC path 'a/../../../etc/passwd.json' escapes the catalog root",
    ),
    (
        "stac-target-dotdot",
        HEADER + "kind: StacLink\nmetadata:\n  name: evil\nspec:\n  document: catalog.json\n  rel: related\n"
        "  targets:\n  - ../../etc/passwd\n",
        9,
        "STAC path '../../etc/passwd' escapes the catalog root",
    ),
    (
        "stac-document-absolute",
        HEADER + "kind: StacLink\nmetadata:\n  name: evil\nspec:\n  document: /etc/passwd.json\n  rel: related\n"
        "  targets: []\n",
        6,
        "STAC path '/etc/passwd.json' must be a relative path inside the catalog root",
    ),
    (
        "stac-target-url",
        HEADER + "kind: StacLink\nmetadata:\n  name: evil\nspec:\n  document: catalog.json\n  rel: related\n"
        "  targets:\n  - file:///etc/passwd.json\n",
        9,
        "STAC path 'file:///etc/passwd.json' must be a relative path inside the catalog root",
    ),
    (
        "stac-target-backslash",
        HEADER + "kind: StacLink\nmetadata:\n  name: evil\nspec:\n  document: catalog.json\n  rel: related\n"
        "  targets:\n  - '..\\..\\evil.json'\n",
        9,
        "must be a relative path inside the catalog root",
    ),
]


def test_validate_refuses_each_injection_at_its_file_and_line(make_workspace, cli):
    workspace = make_workspace(n=2)
    for name, content, _line, _fragment in CASES:
        unique = re.sub(r"(?m)^  name: [a-z]+$", f"  name: {name}", content, count=1)
        (workspace / "desired" / f"x-{name}.yaml").write_text(unique, encoding="utf-8")
    result = cli(workspace, "validate")
    for name, _content, line, fragment in CASES:
        refused(result, f"desired/x-{name}.yaml:{line}", fragment)
        assert result[2].count(f"desired/x-{name}.yaml:") == 1, f"{name}: exactly one message"
    assert not list(workspace.glob("plans/*.json"))


# A convention in kfmops.yaml that makes bad names for every dataset (reported at each dataset document).
CONVENTIONS = {
    "graph-label": ("graph: {dataset_label: 'Dataset`) DETACH DELETE n //'}", f"graph name {CYPHER!r} is not allowed"),
    "search-alias": ("search: {alias: 'KFM-{dataset}'}", "alias 'KFM-ds-000000' is not a valid Elasticsearch name"),
    "search-index": ("search: {index: 'kfm-*-{version}'}", "index 'kfm-*-v2' is not a valid Elasticsearch name"),
    "cache-key": ("cache: {key: 'kfm:{dataset} *'}", "cache key 'kfm:ds-000000 *' is not allowed"),
    "cache-pattern": ("cache: {invalidate: ['kfm:*:{dataset}']}", "pattern 'kfm:*:ds-000000' is not allowed"),
    "stac-collection": ("stac: {collection: '../../{dataset}/{version}.json'}", "escapes the catalog root"),
}


@pytest.mark.parametrize("convention", list(CONVENTIONS.values()), ids=list(CONVENTIONS))
def test_validate_refuses_conventions_that_make_bad_names(make_workspace, cli, convention):
    setting, fragment = convention
    workspace = make_workspace(n=1)
    config = workspace / "kfmops.yaml"
    config.write_text(config.read_text(encoding="utf-8") + f"datasets:\n  {setting}\n", encoding="utf-8")
    code, out, err = cli(workspace, "validate")
    assert code == 1, (code, out, err)
    assert "Traceback" not in out + err
    assert any(fragment in line and "desired/datasets-00000.yaml:" in line for line in err.splitlines()), err


# Defence in depth: the providers themselves ----------------------------------------------------------------

WORKSPACE = """\
apiVersion: kfmops/v1
kind: Workspace
apply: {fsync: false}
backends:
  catalog: {type: stac, root: catalog}
  graph: {type: neo4j, uri_env: KFMOPS_TEST_NEO4J_URI}
  search: {type: elasticsearch, url_env: KFMOPS_TEST_ES_URL}
  cache: {type: redis, url_env: KFMOPS_TEST_REDIS_URL, prefixes: ["kfmops-test:"]}
"""


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "kfmops.yaml").write_text(WORKSPACE, encoding="utf-8")
    return root


@pytest.fixture
def provider(request: pytest.FixtureRequest, workspace: Path) -> Iterator[Provider]:
    """The provider of the backend named by the test's `backend` parameter."""
    with closing(open_provider(load_workspace(workspace), request.param)) as opened:
        yield opened


def refuses(provider: Provider, reference: Reference, value: Any, fragment: str, *, targets: bool = False) -> None:
    """read and write (and missing_targets when `targets`) raise BackendError saying `fragment`."""
    calls = [lambda: provider.read([reference]), lambda: provider.write([(reference, value)])]
    if targets:
        calls.append(lambda: provider.missing_targets([(reference, value)]))
    for call in calls:
        with pytest.raises(BackendError) as raised:
            call()
        assert f"backend {provider.name!r}" in str(raised.value)
        assert fragment in str(raised.value), str(raised.value)
        assert not raised.value.retryable


def graph_reference(label: str = "KfmopsTestDataset", kind: str = "CURRENT_VERSION", key: str = "id", id: str = "x"):
    locator = {
        "from": {"label": label, "key": key, "id": id},
        "type": kind,
        "to": {"label": "KfmopsTestVersion", "key": "id"},
    }
    return Reference("graph_relationship.evil", "graph", "graph", locator)


@pytest.mark.parametrize("provider", ["graph"], indirect=True)
def test_neo4j_refuses_labels_types_and_keys_that_are_not_identifiers(neo4j_uri, provider):
    tag = unique_tag("inj")
    with neo4j_driver(neo4j_uri) as driver:
        create_nodes(driver, "KfmopsTestDataset", [f"{tag}-d"])
        create_nodes(driver, "KfmopsTestVersion", [f"{tag}-v"])
        try:
            for reference, fragment, in_targets in (  # missing_targets looks nodes up by label and key only
                (graph_reference(label=CYPHER, id=f"{tag}-d"), f"label {CYPHER!r} is not allowed", True),
                (graph_reference(kind="X`]->(n) DETACH DELETE n //"), "relationship type 'X`]->(n) DETACH", False),
                (graph_reference(key="id`: 1}) DETACH DELETE n //"), "key 'id`: 1}) DETACH DELETE n //'", True),
                (graph_reference(label="Dataset\nMATCH (n) DETACH DELETE n"), "is not allowed", True),
            ):
                refuses(provider, reference, f"{tag}-v", fragment, targets=in_targets)
            count = "MATCH (n) WHERE n.id STARTS WITH $tag RETURN count(n) AS n"
            assert driver.execute_query(count, {"tag": tag}).records[0]["n"] == 2, "nothing was deleted"
        finally:
            delete_nodes(driver, ["KfmopsTestDataset", "KfmopsTestVersion"], f"{tag}-")


@pytest.mark.parametrize("provider", ["graph"], indirect=True)
def test_neo4j_takes_ids_as_parameters_whatever_they_hold(neo4j_uri, provider):
    """Node ids are values, never Cypher: an id spelled like an injection is just an id."""
    tag = unique_tag("inj")
    source, target = f"{tag}-{CYPHER}", f"{tag}-v' OR 1=1 //"
    with neo4j_driver(neo4j_uri) as driver:
        create_nodes(driver, "KfmopsTestDataset", [source])
        create_nodes(driver, "KfmopsTestVersion", [target])
        try:
            reference = graph_reference(id=source)
            provider.write([(reference, target)])
            assert provider.read([reference]) == {reference.address: target}
            records = driver.execute_query(
                "MATCH (a)-[r:CURRENT_VERSION]->(b) WHERE a.id STARTS WITH $tag RETURN a.id AS a, b.id AS b",
                {"tag": tag},
            ).records
            assert [(r["a"], r["b"]) for r in records] == [(source, target)]
        finally:
            delete_nodes(driver, ["KfmopsTestDataset", "KfmopsTestVersion"], f"{tag}-")


@pytest.mark.parametrize("provider", ["search"], indirect=True)
def test_elasticsearch_refuses_alias_and_index_names_it_would_expand(es_url, provider):
    tag = unique_tag("inj")
    indices = [f"kfmops-test-{tag}-a", f"kfmops-test-{tag}-b"]
    with es_client(es_url) as client:
        create_indices(client, indices)
        try:
            for alias in (f"kfmops-test-{tag}-a,kfmops-test-{tag}-b", f"kfmops-test-{tag}-*", "KFMOPS-TEST", "_all"):
                reference = Reference("search_alias.evil", "search", "search", {"alias": alias})
                refuses(provider, reference, {"indices": [indices[0]], "write_index": None}, "is not a valid")
            # An index name is sent in the request body, where `_aliases` expands a wildcard to every index.
            reference = Reference("search_alias.evil", "search", "search", {"alias": f"kfmops-test-{tag}"})
            for index in (f"kfmops-test-{tag}-*", f"{indices[0]},{indices[1]}", "_all"):
                with pytest.raises(BackendError, match="is not a valid Elasticsearch name"):
                    provider.write([(reference, {"indices": [index], "write_index": None})])
            assert aliases_of(client, [f"kfmops-test-{tag}"]) == {}
            assert all(not entry["aliases"] for entry in client.indices.get_alias(index=indices).body.values())
        finally:
            delete_indices(client, f"kfmops-test-{tag}-")


@pytest.mark.parametrize("provider", ["cache"], indirect=True)
def test_redis_refuses_keys_outside_its_prefixes_and_keys_that_are_patterns(redis_url, provider):
    tag = unique_tag("inj")
    prefix = f"kfmops-test:{tag}:"
    with redis_client(redis_url) as client:
        client.set(f"{prefix}victim", "keep")
        client.set(f"kfm-other:{tag}", "keep")
        try:
            for key, fragment in (
                (f"kfm-other:{tag}", "is outside the configured prefixes ['kfmops-test:']"),
                (f"kfmops-test:{tag}:a b", "is not allowed"),
                (f"kfmops-test:{tag}:a\r\nFLUSHALL", "is not allowed"),
                (f"kfmops-test:{tag}:*", "is not allowed"),
                (f"kfmops-test:{tag}:[a-z]", "is not allowed"),
            ):
                reference = Reference("cache_key.evil", "cache", "cache", {"key": key, "invalidate": []})
                refuses(provider, reference, "v1", fragment)
            for pattern, fragment in (
                (f"kfm-other:{tag}*", "is outside the configured prefixes"),
                ("*", "is not allowed"),
                (f"{prefix}*:victim", "is not allowed"),
                (f"{prefix}[a-z]*", "is not allowed"),
            ):
                reference = Reference(
                    "cache_key.evil", "cache", "cache", {"key": f"{prefix}ok", "invalidate": [pattern]}
                )
                with pytest.raises(BackendError, match=re.escape(fragment)):
                    provider.write([(reference, "v1")])
            assert keys_under(client, prefix) == {f"{prefix}victim": "keep"}, "nothing written, nothing invalidated"
            assert client.get(f"kfm-other:{tag}") == "keep"
        finally:
            delete_keys(client, prefix)
            client.delete(f"kfm-other:{tag}")


@pytest.mark.parametrize("provider", ["catalog"], indirect=True)
def test_stac_refuses_documents_and_hrefs_outside_the_catalog_root(workspace, provider):
    root = workspace / "catalog"
    write_stac(root, "catalog.json")
    write_stac(root, "a/collection.json", "Collection")
    write_stac(workspace, "outside.json")  # a real document beside the catalog, which no link may reach
    before = {p: p.read_bytes() for p in workspace.rglob("*.json")}
    for document in ("../outside.json", "/etc/passwd.json", "..\\outside.json", "a/../../outside.json", "x:y.json"):
        slot = {"document": document, "field": "related", "scope": None}
        reference = Reference("stac_link.evil", "stac", "catalog", {"slots": [slot]})
        value = {document: {"related": ["a/collection.json"]}}
        refuses(provider, reference, value, "STAC path")
        assert [m for _, m in provider.missing_targets([(reference, value)])] == [stac_path_problem(document)]
    slot = {"document": "catalog.json", "field": "related", "scope": None}
    reference = Reference("stac_link.evil", "stac", "catalog", {"slots": [slot]})
    for target in ("../outside.json", "a/../../outside.json", "/etc/passwd.json", "file:///etc/passwd.json"):
        with pytest.raises(BackendError, match="STAC path"):
            provider.write([(reference, {"catalog.json": {"related": ["a/collection.json", target]}})])
        assert provider.missing_targets([(reference, {"catalog.json": {"related": [target]}})])
    assert {p: p.read_bytes() for p in workspace.rglob("*.json")} == before, "no file changed"
