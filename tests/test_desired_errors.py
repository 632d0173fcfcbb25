"""Errors a user can make in desired state or kfmops.yaml, through the real CLI.

Each one must exit 1 with one clear message naming the file and the exact line, and no traceback.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

HEADER = "apiVersion: kfmops/v1\n"


def refused(result: tuple[int, str, str], where: str, fragment: str) -> None:
    """Exit 1, no traceback, and a message at `where` (file:line) that says `fragment`."""
    code, out, err = result
    assert code == 1, (code, out, err)
    assert "Traceback" not in out + err
    assert "internal error" not in err
    at_line = [line for line in err.splitlines() if re.search(rf"(^|\s){re.escape(where)}: ", line)]
    assert at_line, f"no message at {where}:\n{err}"
    assert any(fragment in line for line in at_line), f"the message at {where} does not say {fragment!r}:\n{err}"


def no_plan_written(workspace: Path) -> None:
    assert not list(workspace.glob("plans/*.json")), "a refused plan must not leave a plan file"


# (id, content of a desired-state file, line the error is on, fragment of the message at that line)
CASES = [
    (
        "malformed-yaml",
        HEADER + "kind: CacheKey\nmetadata:\n  name: a: b\nspec: {}\n",
        4,
        "YAML syntax error",
    ),
    (
        "wrong-type",
        HEADER + "kind: CacheKey\nmetadata:\n  name: ck\nspec:\n  key: kfm:x\n  value: 3\n",
        7,
        "spec.value: 3 is not of type 'string'",
    ),
    (
        "wrong-type-versions",
        HEADER + "kind: Dataset\nmetadata:\n  name: d\nspec:\n  version: v1\n  versions: v1\n",
        7,
        "spec.versions: 'v1' is not of type 'array'",
    ),
    (
        "unknown-kind",
        HEADER + "kind: Bogus\nmetadata:\n  name: ck\nspec: {}\n",
        2,
        "unknown kind 'Bogus'",
    ),
    (
        "missing-required-field",
        HEADER + "kind: Dataset\nmetadata:\n  name: d\nspec:\n  version: v1\n",
        5,
        "'versions' is a required property",
    ),
    (
        "unknown-field",
        HEADER + "kind: Dataset\nmetadata:\n  name: d\nspec:\n  version: v1\n  versions:\n  - id: v1\n  verison: v2\n",
        9,
        "'verison' was unexpected",
    ),
    (
        "duplicate-yaml-key",
        HEADER + "kind: CacheKey\nmetadata:\n  name: ck\nspec:\n  key: kfm:x\n  value: a\n  value: b\n",
        8,
        "duplicate key 'value'",
    ),
    (
        "version-not-declared",
        HEADER + "kind: Dataset\nmetadata:\n  name: d\nspec:\n  version: v9\n  versions:\n  - id: v1\n  - id: v2\n",
        6,
        "version 'v9' is not one of the dataset's versions",
    ),
    (
        "version-listed-twice",
        HEADER + "kind: Dataset\nmetadata:\n  name: d\nspec:\n  version: v1\n  versions:\n  - id: v1\n  - id: v1\n",
        7,
        "versions lists the same id twice",
    ),
    (
        "version-id-pattern",
        HEADER + "kind: Dataset\nmetadata:\n  name: d\nspec:\n  version: v1; rm -rf /\n  versions:\n  - id: v1\n",
        6,
        "spec.version: 'v1; rm -rf /' does not match",
    ),
    (
        "unknown-backend",
        HEADER + "kind: Dataset\nmetadata:\n  name: d\nspec:\n  version: v1\n  versions:\n  - id: v1\n"
        "  backends:\n    search: nope\n",
        10,
        "unknown backend 'nope'",
    ),
    (
        "unknown-backend-raw",
        HEADER + "kind: CacheKey\nmetadata:\n  name: ck\nspec:\n  key: kfm:x\n  value: a\n  backend: redis\n",
        8,
        "unknown backend 'redis'",
    ),
    (
        "stac-path-escapes-root",
        HEADER + "kind: StacLink\nmetadata:\n  name: evil\nspec:\n  document: ../../etc/passwd\n  rel: child\n"
        "  targets: []\n",
        6,
        "STAC path '../../etc/passwd' escapes the catalog root",
    ),
    (
        "stac-target-absolute",
        HEADER + "kind: StacLink\nmetadata:\n  name: evil\nspec:\n  document: catalog.json\n  rel: child\n"
        "  targets:\n  - ok/collection.json\n  - /etc/passwd.json\n",
        10,
        "STAC path '/etc/passwd.json' must be a relative path inside the catalog root",
    ),
    (
        "graph-label-injection",
        HEADER + "kind: GraphRelationship\nmetadata:\n  name: evil\nspec:\n  from:\n    label: Dataset\n    id: x\n"
        "  type: CURRENT_VERSION\n  to:\n    label: Dataset) DETACH DELETE n //\n    id: y\n",
        11,
        "label 'Dataset) DETACH DELETE n //' is not allowed",
    ),
    (
        "graph-type-injection",
        HEADER + "kind: GraphRelationship\nmetadata:\n  name: evil\nspec:\n  from:\n    label: Dataset\n    id: x\n"
        "  type: 'X]->() DETACH DELETE n //'\n  to:\n    label: DatasetVersion\n    id: y\n",
        9,
        "relationship type 'X]->() DETACH DELETE n //' is not allowed",
    ),
    (
        "search-alias-wildcard",
        HEADER + "kind: SearchAlias\nmetadata:\n  name: evil\nspec:\n  alias: kfm alias*\n  indices: [kfm-x]\n",
        6,
        "alias 'kfm alias*' is not a valid Elasticsearch name",
    ),
    (
        "search-index-wildcard",
        HEADER
        + "kind: SearchAlias\nmetadata:\n  name: evil\nspec:\n  alias: kfm-x\n  indices:\n  - kfm-x-v1\n  - '*'\n",
        9,
        "index '*' is not a valid Elasticsearch name",
    ),
    (
        "cache-key-spaces-and-star",
        HEADER + "kind: CacheKey\nmetadata:\n  name: evil\nspec:\n  key: kfm key *\n  value: v1\n",
        6,
        "cache key 'kfm key *' is not allowed",
    ),
    (
        "cache-invalidate-star-inside",
        HEADER + "kind: CacheKey\nmetadata:\n  name: evil\nspec:\n  key: kfm:x\n  value: v1\n  invalidate:\n"
        "  - kfm:cache:x:*\n  - '*:secret'\n",
        10,
        "cache invalidation pattern '*:secret' is not allowed",
    ),
    (
        "complex-mapping-key",
        HEADER + "kind: CacheKey\nmetadata:\n  name: ck\nspec:\n  key: kfm:x\n  value: a\n  ? [a, b]\n  : c\n",
        8,
        "a mapping key must be a plain value",
    ),
    (
        "aliases-that-multiply",  # "billion laughs": 9**8 values from a few lines must not hang CI on a PR
        HEADER
        + "kind: CacheKey\nmetadata:\n  name: ck\nx0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
        + "".join(f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))
        + "spec:\n  key: kfm:x\n  value: a\n",
        1,
        "more than 100000 values once its YAML aliases are expanded",
    ),
    (
        "stac-target-listed-twice",
        HEADER + "kind: StacLink\nmetadata:\n  name: twice\nspec:\n  document: catalog.json\n  rel: related\n"
        "  targets:\n  - ds-000000/v1/collection.json\n  - ./ds-000000/v1/collection.json\n",
        10,
        "targets list 'ds-000000/v1/collection.json' twice",
    ),
    (
        "not-a-mapping",
        "- a\n- b\n",
        1,
        "a document must be a mapping",
    ),
    (
        "alias-owned-by-a-dataset",
        HEADER
        + "kind: SearchAlias\nmetadata:\n  name: steal\nspec:\n  alias: kfm-ds-000000\n  indices: [kfm-ds-000000-v1]\n",
        4,
        "manages the same search reference as dataset.ds-000000.search",
    ),
    (
        "stac-links-owned-by-datasets",
        HEADER + "kind: StacLink\nmetadata:\n  name: children\nspec:\n  document: catalog.json\n  rel: child\n"
        "  targets: [ds-000000/v1/collection.json]\n",
        4,
        "manages the same stac reference as dataset.ds-000000.stac",
    ),
]


# Problems found while reading files (syntax and schema) stop before expansion; the rest are found expanding.
READING = {
    "malformed-yaml",
    "wrong-type",
    "wrong-type-versions",
    "unknown-kind",
    "missing-required-field",
    "unknown-field",
    "duplicate-yaml-key",
    "version-id-pattern",
    "not-a-mapping",
    "complex-mapping-key",
    "aliases-that-multiply",
}


@pytest.mark.parametrize("phase", ["reading", "expanding"])
def test_validate_and_plan_refuse_each_problem_at_its_file_and_line(make_workspace, cli, phase):
    """Each case in its own file, all in one workspace (every problem is reported at once, so one run
    checks them all): exit 1, exactly one message per case, at its file and line, and no traceback."""
    workspace = make_workspace(n=2)
    cases = [c for c in CASES if (c[0] in READING) == (phase == "reading")]
    for name, content, _line, _fragment in cases:
        unique = re.sub(r"(?m)^  name: [a-z]+$", f"  name: {name}", content, count=1)  # no accidental duplicates
        # Named to sort after the generated documents, so that an ownership clash blames the case file.
        (workspace / "desired" / f"x-{name}.yaml").write_text(unique, encoding="utf-8")
    for result in cli.concurrently(workspace, ("validate",), ("plan",)):
        for name, _content, line, fragment in cases:
            refused(result, f"desired/x-{name}.yaml:{line}", fragment)
            assert result[2].count(f"desired/x-{name}.yaml:") == 1, f"{name}: exactly one message"
        assert "datasets-00000.yaml" not in result[2], "valid documents are not blamed"
    no_plan_written(workspace)


def test_a_file_that_is_not_utf8_is_refused_at_its_line(make_workspace, cli):
    workspace = make_workspace(n=2)
    (workspace / "desired" / "x.yaml").write_bytes(
        b"apiVersion: kfmops/v1\nkind: CacheKey\nmetadata:\n  name: ck\nspec:\n  key: kfm:x\n  value: caf\xe9\n"
    )
    for result in cli.concurrently(workspace, ("validate",), ("plan",)):
        refused(result, "desired/x.yaml:7", "not UTF-8")


def test_duplicate_address_across_two_files_names_both(make_workspace, cli):
    workspace = make_workspace(n=2)
    first = workspace / "desired" / "datasets-00000.yaml"
    start = first.read_text().splitlines().index("  name: ds-000001") + 1 - 3  # apiVersion line of that document
    (workspace / "desired" / "x.yaml").write_text(
        HEADER + "kind: Dataset\nmetadata:\n  name: ds-000001\nspec:\n  version: v1\n  versions:\n  - id: v1\n"
    )
    for result in cli.concurrently(workspace, ("validate",), ("plan",)):
        refused(result, "desired/x.yaml:4", "duplicate address dataset.ds-000001")
        assert f"first defined at desired/datasets-00000.yaml:{start}" in result[2]
        assert result[2].count("duplicate address") == 1, "one message per duplicate document, not per reference"


def test_pointer_at_a_version_the_backend_lacks_is_refused_by_plan(make_workspace, cli):
    """validate does not read backends; plan does, and refuses to point at a version that was never published."""
    workspace = make_workspace(n=2)
    file = workspace / "desired" / "datasets-00000.yaml"
    lines = file.read_text().splitlines()
    start = lines.index("  name: ds-000001")
    version_line = next(i for i in range(start, len(lines)) if lines[i].startswith("  version: "))
    lines[version_line] = "  version: v4"
    care = next(i for i in range(start, len(lines)) if lines[i] == "  care:")
    lines[care:care] = ["  - id: v4"]
    file.write_text("\n".join(lines) + "\n")

    code, _out, err = cli(workspace, "validate")
    assert code == 0, err

    where = f"desired/datasets-00000.yaml:{version_line + 1}"
    result = cli(workspace, "plan")
    refused(result, where, "dataset.ds-000001.stac points at a target that does not exist")
    err = result[2]
    assert "ds-000001/v4/collection.json is not in the catalog" in err
    assert "dataset.ds-000001.graph points at a target that does not exist" in err
    assert "'ds-000001@v4'" in err
    assert "index 'kfm-ds-000001-v4' does not exist" in err
    assert "ds-000000" not in err, "only the broken dataset is reported"
    no_plan_written(workspace)


def test_raw_reference_at_a_missing_index_is_refused_at_its_line(make_workspace, cli):
    workspace = make_workspace(n=2)
    (workspace / "desired" / "x.yaml").write_text(
        HEADER + "kind: SearchAlias\nmetadata:\n  name: roads\nspec:\n  alias: kfm-roads\n  indices: [kfm-roads-v1]\n"
    )
    assert cli(workspace, "validate")[0] == 0
    refused(cli(workspace, "plan"), "desired/x.yaml:7", "index 'kfm-roads-v1' does not exist")


WORKSPACE_CASES = {
    "unknown-route-backend": ("routes:\n  search: elastic\n", [(11, "routes.search: unknown backend 'elastic'")]),
    "schema": (
        "  es:\n    type: solr\nbogus: 1\napply:\n  order: [stac, neo4j]\n",
        [(11, "backends.es.type: 'solr' is not one of"), (12, "'bogus' was unexpected"), (14, "'neo4j' is not one of")],
    ),
    "yaml-syntax": ("routes:\n  search: [elastic\n", [(12, "YAML syntax error")]),
}


@pytest.mark.parametrize(("extra", "expected"), list(WORKSPACE_CASES.values()), ids=list(WORKSPACE_CASES))
def test_bad_kfmops_yaml_is_refused_at_its_line(make_workspace, cli, extra, expected):
    workspace = make_workspace(n=1)
    config = workspace / "kfmops.yaml"
    assert len(config.read_text().splitlines()) == 9, "the cases count lines from the generated kfmops.yaml"
    config.write_text(config.read_text() + extra)
    for result in cli.concurrently(workspace, ("validate",), ("plan",)):
        for line, fragment in expected:
            refused(result, f"kfmops.yaml:{line}", fragment)
