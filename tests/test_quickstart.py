"""The core loop through the real entry point: plan, apply, converge; promote; remove; stale plans.

Live state is checked by reading the local backend directly (SQLite and the STAC folder), never through
kfmops itself, so that a bug in kfmops' own reads cannot hide a bug in its writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import execute_sql, local_rows, plan_changes, remove_dataset, stac_document, stac_links

KINDS = ("stac", "graph", "search", "cache")


def versions_in(workspace: Path) -> dict[str, str]:
    """{dataset: spec.version} as written in the workspace's desired YAML."""
    found = {}
    for file in sorted((workspace / "desired").glob("*.yaml")):
        for document in yaml.safe_load_all(file.read_text()):
            if document and document["kind"] == "Dataset":
                found[document["metadata"]["name"]] = document["spec"]["version"]
    return found


def set_version(workspace: Path, dataset: str, version: str) -> None:
    """Edit one dataset's spec.version in place, the way a PR would (a one-line change)."""
    for file in (workspace / "desired").glob("*.yaml"):
        lines = file.read_text().splitlines()
        if f"  name: {dataset}" not in lines:
            continue
        at = next(i for i in range(lines.index(f"  name: {dataset}"), len(lines)) if lines[i].startswith("  version:"))
        lines[at] = f"  version: {version}"
        file.write_text("\n".join(lines) + "\n")
        return
    raise AssertionError(f"no document for {dataset}")


def other_version(current: str) -> str:
    return "v1" if current != "v1" else "v2"


def plan_json(cli, workspace: Path, *args: str) -> dict[str, Any]:
    code, out, err = cli(workspace, "plan", "--format", "json", *args)
    assert code == 0, err
    return json.loads(out)


def mutations(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["address"]: c for c in plan_changes(plan) if c["action"] != "no-op"}


def applied(cli, workspace: Path, *args: str) -> None:
    code, out, err = cli(workspace, "apply", *args, *(() if args else ("--auto-approve",)))
    assert code == 0, (out, err)
    assert "Traceback" not in out + err


def expected_rows(versions: dict[str, str]) -> dict[str, set[tuple[Any, ...]]]:
    """What the local backend's tables hold when every dataset points at its version (default conventions)."""
    return {
        "relationships": {
            ("Dataset", "id", d, "CURRENT_VERSION", "DatasetVersion", "id", f"{d}@{v}") for d, v in versions.items()
        },
        "aliases": {(f"kfm-{d}", f"kfm-{d}-{v}", 0) for d, v in versions.items()},
        "kv": {(f"kfm:dataset:{d}:current", v) for d, v in versions.items()},
    }


def managed_addresses(workspace: Path) -> set[str]:
    """Addresses kfmops' state records as managed (read from state/state.json directly)."""
    return set(json.loads((workspace / "state" / "state.json").read_text())["resources"])


def stac_files(workspace: Path, dataset: str) -> dict[str, str]:
    folder = workspace / "state" / "local" / "stac" / dataset
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*.json"))}


@pytest.fixture
def applied_workspace(make_workspace, cli) -> Path:
    """A workspace of 4 datasets x 3 versions, applied once."""
    workspace = make_workspace(n=4)
    applied(cli, workspace)
    return workspace


def test_quickstart_plan_apply_converges(make_workspace, cli):
    workspace = make_workspace(n=3)
    versions = versions_in(workspace)

    code, out, err = cli(workspace, "plan")
    assert code == 0, err
    assert "Plan: 12 to create, 0 to update, 0 to delete, 0 unchanged." in out
    assert cli(workspace, "plan", "--detailed-exitcode")[0] == 2

    code, out, err = cli(workspace, "apply", "--auto-approve")
    assert code == 0, err
    assert "Apply complete! 12 created, 0 updated, 0 deleted" in out

    code, out, err = cli(workspace, "plan", "--detailed-exitcode")
    assert code == 0, (out, err)
    assert "No changes. 12 references up to date." in out

    assert local_rows(workspace) == expected_rows(versions)
    for dataset, version in versions.items():
        current = f"{dataset}/{version}/collection.json"
        assert f"./{current}" in stac_links(workspace, "catalog.json", "child")
        for v in ("v1", "v2", "v3"):
            document = stac_document(workspace, f"{dataset}/{v}/collection.json")
            latest = "./collection.json" if v == version else f"../{version}/collection.json"
            assert stac_links(workspace, f"{dataset}/{v}/collection.json", "latest-version") == [latest]
            assert document["deprecated"] is (v != version)
        assert stac_links(workspace, f"{dataset}/v2/collection.json", "predecessor-version") == [
            "../v1/collection.json"
        ]
        assert stac_links(workspace, f"{dataset}/v2/collection.json", "successor-version") == ["../v3/collection.json"]
    assert len(stac_links(workspace, "catalog.json", "child")) == 3

    code, out, err = cli(workspace, "state", "list", "--json")
    assert code == 0, err
    listing = json.loads(out)
    assert listing["serial"] == 1
    addresses = [r["address"] for r in listing["resources"]]
    assert sorted(addresses) == sorted(f"dataset.{d}.{k}" for d in versions for k in KINDS)
    for dataset in versions:
        assert sum(a.startswith(f"dataset.{dataset}.") for a in addresses) == 4

    dataset, version = next(iter(versions.items()))
    code, out, err = cli(workspace, "state", "show", f"dataset.{dataset}.graph", "--json")
    assert code == 0, err
    entry = json.loads(out)
    assert entry["address"] == f"dataset.{dataset}.graph"
    assert (entry["kind"], entry["backend"], entry["dataset"]) == ("graph", "local", dataset)
    assert entry["value"] == f"{dataset}@{version}"
    assert entry["locator"]["from"] == {"label": "Dataset", "key": "id", "id": dataset}
    assert entry["apply_id"].startswith("apply-")

    code, out, err = cli(workspace, "state", "show", "dataset.nope.graph", "--json")
    assert code == 1
    assert "dataset.nope.graph is not managed" in err


def test_editing_one_version_updates_exactly_its_four_references(applied_workspace, cli):
    workspace = applied_workspace
    versions = versions_in(workspace)
    dataset, neighbour = sorted(versions)[1], sorted(versions)[2]
    new = other_version(versions[dataset])
    cached = [f"kfm:cache:{dataset}:tile:1", f"kfm:cache:{dataset}:tile:2", f"kfm:cache:{neighbour}:tile:1"]
    for key in cached:
        execute_sql(workspace, "INSERT INTO kv VALUES (?, 'cached')", (key,))
    before = local_rows(workspace)
    others_stac = {d: stac_files(workspace, d) for d in versions if d != dataset}
    set_version(workspace, dataset, new)

    plan = plan_json(cli, workspace)
    changed = mutations(plan)
    assert sorted(changed) == sorted(f"dataset.{dataset}.{k}" for k in KINDS)
    assert {c["action"] for c in changed.values()} == {"update"}
    assert plan["summary"] == {"create": 0, "update": 4, "delete": 0, "no_op": 12}
    assert changed[f"dataset.{dataset}.graph"]["after"] == f"{dataset}@{new}"
    assert changed[f"dataset.{dataset}.graph"]["before"] == f"{dataset}@{versions[dataset]}"
    assert changed[f"dataset.{dataset}.search"]["after"] == {"indices": [f"kfm-{dataset}-{new}"], "write_index": None}
    assert changed[f"dataset.{dataset}.cache"]["after"] == new
    stac = changed[f"dataset.{dataset}.stac"]["after"]
    assert stac["catalog.json"] == {"child": [f"{dataset}/{new}/collection.json"]}
    assert plan["datasets"][dataset]["version"] == new

    applied(cli, workspace)
    versions[dataset] = new
    after = local_rows(workspace)
    assert {key for key, _ in after["kv"]} & set(cached) == {cached[2]}, "only the moved dataset's cache is invalidated"
    after["kv"] -= {(cached[2], "cached")}
    before["kv"] -= {(key, "cached") for key in cached}
    assert after == expected_rows(versions)
    for table in after:
        assert {r for r in after[table] if dataset not in str(r)} == {r for r in before[table] if dataset not in str(r)}
    assert {d: stac_files(workspace, d) for d in others_stac} == others_stac, "other datasets' STAC untouched"
    assert cli(workspace, "plan", "--detailed-exitcode")[0] == 0


def test_plan_explains_promotion_and_drift(applied_workspace, cli):
    workspace = applied_workspace
    versions = versions_in(workspace)
    promoted, drifted = sorted(versions)[:2]
    set_version(workspace, promoted, other_version(versions[promoted]))
    execute_sql(workspace, "UPDATE kv SET value = 'v9' WHERE key = ?", (f"kfm:dataset:{drifted}:current",))
    changed = mutations(plan_json(cli, workspace))
    assert changed[f"dataset.{promoted}.graph"]["reason"] == "desired value changed"
    assert changed[f"dataset.{drifted}.cache"]["reason"] == "live value drifted from the last applied value"


def test_removing_a_document_deletes_exactly_its_four_references(applied_workspace, cli):
    workspace = applied_workspace
    versions = versions_in(workspace)
    dataset = sorted(versions)[2]
    others_stac = {d: stac_files(workspace, d) for d in versions if d != dataset}
    remove_dataset(workspace, dataset)

    plan = plan_json(cli, workspace)
    changed = mutations(plan)
    assert sorted(changed) == sorted(f"dataset.{dataset}.{k}" for k in KINDS)
    assert {c["action"] for c in changed.values()} == {"delete"}
    assert all(c["after"] is None and c["before"] is not None for c in changed.values())
    assert plan["summary"] == {"create": 0, "update": 0, "delete": 4, "no_op": 12}

    applied(cli, workspace)
    del versions[dataset]
    rows = local_rows(workspace)
    assert rows == expected_rows(versions)
    assert not any(dataset in str(row) for table in rows.values() for row in table)

    children = stac_links(workspace, "catalog.json", "child")
    assert not any(dataset in href for href in children)
    assert len(children) == 3
    for v in ("v1", "v2", "v3"):
        document = stac_document(workspace, f"{dataset}/{v}/collection.json")
        assert {link["rel"] for link in document["links"]} == {"root", "parent"}, "only kfmops' links are gone"
        assert "deprecated" not in document
        assert document["id"] == f"{dataset}-{v}", "the immutable version itself is untouched"
    assert {d: stac_files(workspace, d) for d in others_stac} == others_stac

    assert managed_addresses(workspace) == {f"dataset.{d}.{k}" for d in versions for k in KINDS}
    assert cli(workspace, "plan", "--detailed-exitcode")[0] == 0


def test_live_references_kfmops_never_managed_are_never_touched(applied_workspace, cli):
    workspace = applied_workspace
    versions = versions_in(workspace)
    strangers = [
        "INSERT INTO kv VALUES ('kfm:dataset:stranger:current', 'v9')",
        "INSERT INTO kv VALUES ('other:prefix:key', 'theirs')",
        "INSERT INTO aliases VALUES ('stranger-alias', 'kfm-ds-000000-v1', 1)",
        "INSERT INTO relationships VALUES "
        "('Dataset', 'id', 'stranger', 'CURRENT_VERSION', 'DatasetVersion', 'id', 'x')",
        "INSERT INTO relationships VALUES "
        "('Dataset', 'id', 'ds-000000', 'PREVIOUS_VERSION', 'DatasetVersion', 'id', 'ds-000000@v1')",
    ]
    for statement in strangers:
        execute_sql(workspace, statement)
    catalog = workspace / "state" / "local" / "stac" / "catalog.json"
    document = json.loads(catalog.read_text())
    document["links"].append({"rel": "child", "href": "./stranger/collection.json", "type": "application/json"})
    catalog.write_text(json.dumps(document, indent=2) + "\n")
    planted = local_rows(workspace)
    stranger_rows = {t: rows - expected_rows(versions)[t] for t, rows in planted.items()}
    assert sum(len(rows) for rows in stranger_rows.values()) == 5

    plan = plan_json(cli, workspace)
    assert plan["summary"]["update"] == plan["summary"]["delete"] == plan["summary"]["create"] == 0
    assert not any("stranger" in json.dumps(c) for c in plan_changes(plan))

    for dataset in versions:  # move every pointer, and remove one dataset
        set_version(workspace, dataset, other_version(versions[dataset]))
    remove_dataset(workspace, "ds-000000")
    applied(cli, workspace)

    rows = local_rows(workspace)
    for table, mine in stranger_rows.items():
        assert mine <= rows[table], f"{table}: a reference kfmops never managed was changed"
    assert "./stranger/collection.json" in stac_links(workspace, "catalog.json", "child")
    assert "kfm:dataset:ds-000000:current" not in {key for key, _ in rows["kv"]}, "its own pointers did go"
    assert "kfm-ds-000000" not in {alias for alias, _, _ in rows["aliases"]}


def test_target_and_exclude_restrict_the_plan(make_workspace, cli):
    workspace = make_workspace(n=3)
    everything = {f"dataset.ds-00000{i}.{k}" for i in range(3) for k in KINDS}

    only_one = mutations(plan_json(cli, workspace, "--target", "dataset.ds-000001"))
    assert set(only_one) == {f"dataset.ds-000001.{k}" for k in KINDS}

    one_part = plan_json(cli, workspace, "--target", "dataset.ds-000001.graph", "--target", "dataset.ds-000002.cache")
    assert [c["address"] for c in plan_changes(one_part)] == ["dataset.ds-000001.graph", "dataset.ds-000002.cache"]
    assert one_part["origin"]["targets"] == ["dataset.ds-000001.graph", "dataset.ds-000002.cache"]

    without = mutations(
        plan_json(cli, workspace, "--exclude", "dataset.ds-000001", "--exclude", "dataset.ds-000002.stac")
    )
    assert set(without) == everything - {f"dataset.ds-000001.{k}" for k in KINDS} - {"dataset.ds-000002.stac"}

    code, out, err = cli(workspace, "plan", "--target", "dataset.nope")
    assert code == 1
    assert "unknown address 'dataset.nope'" in err
    assert "Traceback" not in out + err

    plan = workspace / "targeted.json"
    selection = ("--target", "dataset.ds-000001", "--exclude", "dataset.ds-000001.stac")
    assert cli(workspace, "plan", *selection, "--out", str(plan))[0] == 0
    applied(cli, workspace, str(plan))
    rows = local_rows(workspace)
    assert {key for key, _ in rows["kv"]} == {"kfm:dataset:ds-000001:current"}
    assert {alias for alias, _, _ in rows["aliases"]} == {"kfm-ds-000001"}
    assert len(rows["relationships"]) == 1
    assert stac_links(workspace, "catalog.json", "child") == [], "the excluded STAC part was not applied"
    assert managed_addresses(workspace) == {f"dataset.ds-000001.{k}" for k in ("graph", "search", "cache")}


def test_a_saved_plan_applies_once(make_workspace, cli):
    workspace = make_workspace(n=2)
    plan = workspace / "once.json"
    assert cli(workspace, "plan", "--out", str(plan))[0] == 0
    applied(cli, workspace, str(plan))
    rows = local_rows(workspace)

    code, out, err = cli(workspace, "apply", str(plan))
    assert code == 5, (code, out, err)
    assert "already applied" in err
    assert local_rows(workspace) == rows
    assert json.loads((workspace / "state" / "state.json").read_text())["serial"] == 1


def test_a_plan_whose_references_another_apply_moved_is_stale(applied_workspace, cli):
    workspace = applied_workspace
    versions = versions_in(workspace)
    dataset = sorted(versions)[0]
    first, second = [v for v in ("v1", "v2", "v3") if v != versions[dataset]]

    set_version(workspace, dataset, first)
    old_plan = workspace / "old.json"
    assert cli(workspace, "plan", "--out", str(old_plan))[0] == 0
    set_version(workspace, dataset, second)
    applied(cli, workspace)
    rows = local_rows(workspace)

    code, out, err = cli(workspace, "apply", str(old_plan))
    assert code == 5, (code, out, err)
    assert "Make a new plan" in err
    assert local_rows(workspace) == rows
    assert (f"kfm:dataset:{dataset}:current", second) in rows["kv"]


def test_a_plan_whose_live_values_moved_outside_kfmops_changes_nothing(applied_workspace, cli):
    workspace = applied_workspace
    versions = versions_in(workspace)
    for dataset in versions:
        set_version(workspace, dataset, other_version(versions[dataset]))
    plan = workspace / "p.json"
    assert cli(workspace, "plan", "--out", str(plan))[0] == 0
    last = sorted(versions)[-1]
    execute_sql(workspace, "UPDATE kv SET value = 'v9' WHERE key = ?", (f"kfm:dataset:{last}:current",))
    rows = local_rows(workspace)
    stac = {d: stac_files(workspace, d) for d in versions}

    code, out, err = cli(workspace, "apply", str(plan))
    assert code == 5, (code, out, err)
    assert f"dataset.{last}.cache" in err
    assert local_rows(workspace) == rows, "compare-and-swap failed: nothing may change, not even other references"
    assert {d: stac_files(workspace, d) for d in versions} == stac


def test_moving_a_reference_to_another_address_does_not_delete_it(applied_workspace, cli):
    workspace = applied_workspace
    versions = versions_in(workspace)
    file = workspace / "desired" / "datasets-00000.yaml"
    documents = list(yaml.safe_load_all(file.read_text()))
    documents[0]["spec"]["backends"] = {"search": False}
    alias = f"kfm-{documents[0]['metadata']['name']}"
    index = f"{alias}-{documents[0]['spec']['version']}"
    documents.append(
        {
            "apiVersion": "kfmops/v1",
            "kind": "SearchAlias",
            "metadata": {"name": alias},
            "spec": {"alias": alias, "indices": [index]},
        }
    )
    file.write_text(yaml.safe_dump_all(documents, sort_keys=False))

    plan = plan_json(cli, workspace)
    assert mutations(plan) == {}
    moved = next(c for c in plan_changes(plan) if c["address"] == f"dataset.{documents[0]['metadata']['name']}.search")
    assert "moved to search_alias." in moved["reason"]

    applied(cli, workspace)
    assert (alias, index, 0) in local_rows(workspace)["aliases"]
    state = managed_addresses(workspace)
    assert f"search_alias.{alias}" in state
    assert f"dataset.{documents[0]['metadata']['name']}.search" not in state
    assert local_rows(workspace) == expected_rows(versions)
