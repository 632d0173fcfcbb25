"""Adoption through the real CLI: `kfmops import --discover` and `kfmops import` on backends that a script filled.

The references are written the way a platform's own scripts write them (sqlite3 and JSON files here, never
kfmops), following kfmops' conventions. Discovery writes Dataset and Import documents, `plan` then shows only
imports, `apply` writes nothing to the backend (its rows, documents and file times stay) and advances the
serial, a promotion afterwards moves the pointer as usual, and `rollback --last` of the import forgets the
references without touching them. Bad input gets one clear message each.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Cli, local_rows, plan_changes

DATASETS = {"roads": (["v1", "v2", "v3"], "v2"), "rivers": (["v1", "v2"], "v1"), "soils": (["v1", "v2", "v3"], "v3")}
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
OPEN_STAC = FIXTURES / "open-stac"


def seed_catalog(workspace: Path, datasets: dict[str, tuple[list[str], str]]) -> None:
    """The workspace's seed catalog: one STAC collection per dataset version (immutable data)."""
    root = workspace / "data" / "catalog"
    root.mkdir(parents=True)
    catalog = {"type": "Catalog", "stac_version": "1.1.0", "id": "kfm", "description": "test", "links": []}
    (root / "catalog.json").write_text(json.dumps(catalog, indent=2) + "\n")
    for name, (versions, _) in datasets.items():
        for version in versions:
            document = {
                "type": "Collection",
                "stac_version": "1.1.0",
                "id": f"{name}-{version}",
                "description": f"{name} {version}",
                "license": "CC-BY-4.0",
                "version": version,
                "kfm:dataset": name,
                "extent": {"spatial": {"bbox": [[-102, 37, -94.6, 40]]}, "temporal": {"interval": [[None, None]]}},
                "links": [{"rel": "root", "href": "../../catalog.json", "type": "application/json"}],
            }
            path = root / name / version / "collection.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps(document, indent=2) + "\n")


def script_stac(root: Path, datasets: dict[str, tuple[list[str], str]]) -> None:
    """Child links in catalog.json and version links in every version document, as a publishing script does."""
    catalog = json.loads((root / "catalog.json").read_text())
    for name, (versions, current) in datasets.items():
        catalog["links"].append({"rel": "child", "href": f"./{name}/{current}/collection.json"})
        for i, version in enumerate(versions):
            path = root / name / version / "collection.json"
            document = json.loads(path.read_text())
            document["links"].append({"rel": "latest-version", "href": f"../{current}/collection.json"})
            if i:
                document["links"].append(
                    {"rel": "predecessor-version", "href": f"../{versions[i - 1]}/collection.json"}
                )
            if i + 1 < len(versions):
                document["links"].append({"rel": "successor-version", "href": f"../{versions[i + 1]}/collection.json"})
            document["deprecated"] = version != current
            path.write_text(json.dumps(document, indent=2) + "\n")
    (root / "catalog.json").write_text(json.dumps(catalog, indent=2) + "\n")


def script_local(workspace: Path, datasets: dict[str, tuple[list[str], str]]) -> None:
    """Every pointer of every dataset written into the local backend with sqlite3 and json (not kfmops)."""
    database = sqlite3.connect(workspace / "state" / "local" / "references.sqlite")
    with database:
        for name, (_, current) in datasets.items():
            database.execute(
                "INSERT INTO relationships VALUES ('Dataset', 'id', ?, 'CURRENT_VERSION', 'DatasetVersion', 'id', ?)",
                (name, f"{name}@{current}"),
            )
            database.execute("INSERT INTO aliases VALUES (?, ?, 0)", (f"kfm-{name}", f"kfm-{name}-{current}"))
            database.execute("INSERT INTO kv VALUES (?, ?)", (f"kfm:dataset:{name}:current", current))
    database.close()
    script_stac(workspace / "state" / "local" / "stac", datasets)


def local_workspace(root: Path, cli: Cli) -> Path:
    """A workspace with no documents whose local backend a script filled with DATASETS' pointers."""
    workspace = root / "adopt"
    workspace.mkdir()
    (workspace / "kfmops.yaml").write_text(
        "apiVersion: kfmops/v1\nkind: Workspace\napply: {fsync: false}\nbackends:\n  local: {type: local, seed: data}\n"
    )
    (workspace / "desired").mkdir()
    seed_catalog(workspace, DATASETS)
    code, _, err = cli(workspace, "init")
    assert code == 0, err
    script_local(workspace, DATASETS)
    return workspace


def file_times(folder: Path) -> dict[str, int]:
    """Modification time of every file under `folder`: a write counter for a backend kept in files."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def backend_state(workspace: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """What the local backend holds and when each of its files last changed."""
    stac = workspace / "state" / "local" / "stac"
    documents = {p.relative_to(stac).as_posix(): p.read_bytes() for p in sorted(stac.rglob("*.json"))}
    return {**local_rows(workspace), "stac": documents}, file_times(workspace / "state" / "local")


def plan_json(cli: Cli, workspace: Path, *args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = cli(workspace, "plan", "--format", "json", "--detailed-exitcode", *args)
    assert code in (0, 2), err
    return code, json.loads(out)


def serial(cli: Cli, workspace: Path) -> int:
    code, out, err = cli(workspace, "state", "list", "--json")
    assert code == 0, err
    return int(json.loads(out)["serial"])


def set_version(file: Path, dataset: str, version: str) -> None:
    documents = list(yaml.safe_load_all(file.read_text()))
    for document in documents:
        if document["kind"] == "Dataset" and document["metadata"]["name"] == dataset:
            document["spec"]["version"] = version
    file.write_text(yaml.safe_dump_all(documents, sort_keys=False))


def test_discover_import_promote_and_forget_on_a_scripted_local_backend(tmp_path: Path, cli: Cli) -> None:
    workspace = local_workspace(tmp_path, cli)
    written = workspace / "desired" / "discovered.yaml"
    code, _, err = cli(workspace, "import", "--discover", "--write", str(written))
    assert code == 0, err
    assert "Discovered 3 dataset(s)" in err
    documents = list(yaml.safe_load_all(written.read_text()))
    datasets = {d["metadata"]["name"]: d["spec"] for d in documents if d["kind"] == "Dataset"}
    imports = sorted(d["spec"]["address"] for d in documents if d["kind"] == "Import")
    assert {name: ([v["id"] for v in spec["versions"]], spec["version"]) for name, spec in datasets.items()} == DATASETS
    assert imports == [f"dataset.{name}" for name in sorted(DATASETS)]
    assert "# REVIEW" in written.read_text()  # the placeholders say they are placeholders
    code, _, err = cli(workspace, "validate")
    assert code == 0, err

    code, plan = plan_json(cli, workspace)
    assert code == 2
    assert {c["action"] for c in plan_changes(plan)} == {"import"}
    assert len(plan["changes"]) == 4 * len(DATASETS)
    assert all(c["before"] == c["after"] is not None for c in plan_changes(plan))
    assert plan["policy"]["decision"] == "allow"

    before = backend_state(workspace)
    serial_before = serial(cli, workspace)
    code, out, err = cli(workspace, "apply", "--auto-approve")
    assert code == 0, err
    assert "12 imported" in out
    assert backend_state(workspace) == before  # not one row, document or file time changed
    assert serial(cli, workspace) == serial_before + 1
    code, out, _ = cli(workspace, "ledger", "show", "--json")
    entry = json.loads(out.splitlines()[-1])
    assert entry["op_type"] == "apply" and len(entry["changes"]["import"]) == 12
    assert plan_json(cli, workspace)[0] == 0  # clean: git and state now agree with what is live

    code, out, err = cli(workspace, "rollback", "--last", "--auto-approve")
    assert code == 0, err
    assert "12 forgotten" in out
    assert backend_state(workspace) == before
    code, out, _ = cli(workspace, "state", "list", "--json")
    assert json.loads(out)["resources"] == []
    code, plan = plan_json(cli, workspace)
    assert code == 2 and {c["action"] for c in plan_changes(plan)} == {"import"}  # the documents still ask for it

    code, _, err = cli(workspace, "apply", "--auto-approve")
    assert code == 0, err
    set_version(written, "roads", "v3")
    code, plan = plan_json(cli, workspace)
    assert {(c["address"], c["action"]) for c in plan_changes(plan) if c["action"] != "no-op"} == {
        (f"dataset.roads.{kind}", "update") for kind in ("stac", "graph", "search", "cache")
    }
    code, _, err = cli(workspace, "apply", "--auto-approve")
    assert code == 0, err
    rows = local_rows(workspace)
    assert ("kfm:dataset:roads:current", "v3") in rows["kv"]
    assert ("kfm-roads", "kfm-roads-v3", 0) in rows["aliases"]
    assert ("Dataset", "id", "roads", "CURRENT_VERSION", "DatasetVersion", "id", "roads@v3") in rows["relationships"]
    catalog = json.loads((workspace / "state" / "local" / "stac" / "catalog.json").read_text())
    assert {"rel": "child", "href": "./roads/v3/collection.json"} in [
        {"rel": link["rel"], "href": link["href"]} for link in catalog["links"]
    ]


def test_discovery_leaves_out_what_documents_declare_and_filters_by_kind(tmp_path: Path, cli: Cli) -> None:
    workspace = local_workspace(tmp_path, cli)
    (workspace / "desired" / "roads.yaml").write_text(
        "apiVersion: kfmops/v1\nkind: Dataset\nmetadata: {name: roads}\nspec:\n  version: v2\n  versions:\n"
        + "".join(f"    - {{id: {v}, provenance: {{source: s, activity: a}}}}\n" for v in ("v1", "v2", "v3"))
        + "  care: {label: open, sovereignty: none}\n"
    )
    code, out, err = cli(workspace, "import", "--discover", "--kind", "search", "--kind", "cache")
    assert code == 0, err
    documents = [d for d in yaml.safe_load_all(out) if d]
    datasets = {d["metadata"]["name"]: d["spec"] for d in documents if d["kind"] == "Dataset"}
    assert sorted(datasets) == ["rivers", "soils"]  # roads is declared already
    assert all(spec["backends"] == {"stac": False, "graph": False} for spec in datasets.values())
    assert not list((workspace / "desired").glob("discovered*"))  # printed, not written


def test_import_command_and_its_bad_input(tmp_path: Path, cli: Cli) -> None:
    workspace = local_workspace(tmp_path, cli)
    declared = workspace / "desired" / "declared.yaml"
    code, out, err = cli(workspace, "import", "--discover")
    assert code == 0, err
    documents = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "Dataset"]
    declared.write_text(yaml.safe_dump_all(documents, sort_keys=False))

    code, _, err = cli(workspace, "import", "dataset.nowhere", "--auto-approve")
    assert code == 1 and "cannot import dataset.nowhere: no desired document declares it" in err

    code, out, err = cli(workspace, "import", "dataset.roads.search", "--auto-approve")
    assert code == 0, err
    assert "<= dataset.roads.search" in out and "1 imported" in out
    code, out, _ = cli(workspace, "state", "list", "--json")
    assert [r["address"] for r in json.loads(out)["resources"]] == ["dataset.roads.search"]

    code, _, err = cli(workspace, "import", "dataset.roads.search", "--auto-approve")  # twice
    assert code == 1
    assert err.count("Error:") == 1 and "dataset.roads.search is already managed" in err

    # nothing live: the alias is gone (the index, the target, is still there)
    database = sqlite3.connect(workspace / "state" / "local" / "references.sqlite")
    with database:
        database.execute("DELETE FROM aliases WHERE alias = 'kfm-rivers'")
    database.close()
    code, _, err = cli(workspace, "import", "dataset.rivers.search", "--auto-approve")
    assert code == 1
    assert (
        err.count("Error:") == 1 and "cannot import dataset.rivers.search: nothing is live at search:kfm-rivers" in err
    )

    # a value another address owns: a raw SearchAlias takes over kfm-roads, which dataset.roads.search manages
    documents = [d for d in documents if d["metadata"]["name"] != "roads"]
    declared.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    (workspace / "desired" / "alias.yaml").write_text(
        "apiVersion: kfmops/v1\nkind: SearchAlias\nmetadata: {name: kfm-roads}\n"
        "spec: {alias: kfm-roads, indices: [kfm-roads-v2]}\n"
    )
    code, _, err = cli(workspace, "import", "search_alias.kfm-roads", "--auto-approve")
    assert code == 1
    assert err.count("Error:") == 1
    assert "cannot import search_alias.kfm-roads: its live value is already managed by dataset.roads.search" in err

    # a live value that is not the desired one: refused, unless --accept-live (which also plans the update)
    soils = next(d for d in documents if d["metadata"]["name"] == "soils")
    soils["spec"]["version"] = "v1"
    declared.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    code, _, err = cli(workspace, "import", "dataset.soils.cache", "--auto-approve")
    assert code == 1
    assert err.count("Error:") == 1
    assert "cannot import dataset.soils.cache: the live value v3 is not what desired/declared.yaml" in err
    assert "--accept-live" in err
    code, out, err = cli(workspace, "import", "dataset.soils.cache", "--accept-live", "--auto-approve")
    assert code == 0, err
    assert "<= dataset.soils.cache" in out and "~ dataset.soils.cache" in out
    assert ("kfm:dataset:soils:current", "v1") in local_rows(workspace)["kv"]
    code, out, err = cli(workspace, "rollback", "--last", "--auto-approve")  # back to v3, and forgotten
    assert code == 0, err
    assert ("kfm:dataset:soils:current", "v3") in local_rows(workspace)["kv"]
    code, out, _ = cli(workspace, "state", "list", "--json")
    assert [r["address"] for r in json.loads(out)["resources"]] == ["dataset.roads.search"]


def test_import_documents_are_validated(tmp_path: Path, cli: Cli) -> None:
    workspace = local_workspace(tmp_path, cli)
    (workspace / "desired" / "imports.yaml").write_text(
        "apiVersion: kfmops/v1\nkind: Dataset\nmetadata: {name: roads}\nspec:\n  version: v2\n"
        "  versions: [{id: v2, provenance: {source: s, activity: a}}]\n  care: {label: open, sovereignty: none}\n---\n"
        "apiVersion: kfmops/v1\nkind: Import\nmetadata: {name: a}\nspec: {address: dataset.roads}\n---\n"
        "apiVersion: kfmops/v1\nkind: Import\nmetadata: {name: b}\nspec: {address: dataset.roads}\n---\n"
        "apiVersion: kfmops/v1\nkind: Import\nmetadata: {name: c}\nspec: {address: dataset.ghost}\n"
    )
    code, _, err = cli(workspace, "validate")
    assert code == 1
    assert "desired/imports.yaml:17: dataset.roads is imported twice. first at desired/imports.yaml:9" in err
    assert "desired/imports.yaml:22: Import names dataset.ghost, which no document declares" in err
    assert err.count("Error:") == 2


@pytest.mark.skipif(not OPEN_STAC.is_dir(), reason="../shared/fixtures/open-stac is absent")
def test_discovery_on_the_planet_fusion_catalog(tmp_path: Path, cli: Cli) -> None:
    """The real published catalog, as it is: its root catalog's child is the Fusion collection, with no
    version links; discovery finds it, and the plan after the import is clean."""
    workspace = tmp_path / "fusion"
    shutil.copytree(OPEN_STAC, workspace / "catalog")
    (workspace / "desired").mkdir()
    (workspace / "kfmops.yaml").write_text(
        "apiVersion: kfmops/v1\nkind: Workspace\napply: {fsync: false}\n"
        "backends:\n  catalog: {type: stac, root: catalog}\nroutes: {stac: catalog}\n"
        'datasets:\n  stac: {catalog: catalog.json, collection: "fusion/14N/{version}/collection.json"}\n'
    )
    times = file_times(workspace / "catalog")
    written = workspace / "desired" / "discovered.yaml"
    code, _, err = cli(workspace, "import", "--discover", "--kind", "stac", "--write", str(written))
    assert code == 0, err
    (dataset,) = [d for d in yaml.safe_load_all(written.read_text()) if d["kind"] == "Dataset"]
    assert dataset["metadata"]["name"] == "planet-fusion-14n-29e-188n"  # from the collection's id
    assert dataset["spec"]["version"] == "29E-188N"
    assert dataset["spec"]["version_links"] is False  # the published catalog carries no version links
    code, plan = plan_json(cli, workspace)
    assert [(c["address"], c["action"]) for c in plan_changes(plan)] == [
        ("dataset.planet-fusion-14n-29e-188n.stac", "import")
    ]
    assert plan["changes"][0]["after"] == {"catalog.json": {"child": ["fusion/14N/29E-188N/collection.json"]}}
    code, _, err = cli(workspace, "apply", "--auto-approve")
    assert code == 0, err
    assert plan_json(cli, workspace)[0] == 0
    assert file_times(workspace / "catalog") == times  # the catalog was read, never written


def test_a_saved_import_plan_with_accept_live_is_reviewed_and_applied(tmp_path: Path, cli: Cli) -> None:
    workspace = local_workspace(tmp_path, cli)
    code, out, err = cli(workspace, "import", "--discover", "--kind", "cache")
    assert code == 0, err
    documents = [d for d in yaml.safe_load_all(out) if d and d["metadata"]["name"] == "soils"]
    documents[0]["spec"]["versions"].insert(0, {"id": "v2", "provenance": {"source": "s", "activity": "a"}})
    documents[0]["spec"]["version"] = "v2"  # git wants v2, the script left v3
    (workspace / "desired" / "soils.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))
    code, _, err = cli(workspace, "plan")
    assert code == 1 and "desired/soils.yaml:" in err and "cannot import dataset.soils.cache" in err
    saved = tmp_path / "import.json"
    code, out, err = cli(workspace, "plan", "--accept-live", "--out", str(saved))
    assert code == 0, err
    assert "<= dataset.soils.cache" in out and "~ dataset.soils.cache" in out
    code, out, err = cli(workspace, "apply", str(saved))
    assert code == 0, err
    assert ("kfm:dataset:soils:current", "v2") in local_rows(workspace)["kv"]
    code, out, _ = cli(workspace, "state", "show", "dataset.soils.cache", "--json")
    assert json.loads(out)["value"] == "v2"
