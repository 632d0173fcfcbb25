"""Orphan links through the real console script: `catalog check` counts STAC documents no link reaches from
the root catalog and version documents of datasets no Dataset declares; the kfm.ops_broken_links metric of an
apply counts the orphans it leaves among the documents it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def succeeded(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 0, (code, out, err)
    assert "Traceback" not in out + err
    return out


def undeclare(workspace: Path, name: str) -> None:
    """Remove dataset `name` from the desired state, as a pull request would."""
    for file in (workspace / "desired").glob("*.yaml"):
        documents = list(yaml.safe_load_all(file.read_text()))
        kept = [d for d in documents if d["metadata"]["name"] != name]
        if kept != documents:
            file.write_text(yaml.safe_dump_all(kept, sort_keys=False))


def broken_links_metric(workspace: Path, command: str) -> list[int]:
    records = [
        json.loads(line) for line in (workspace / "state" / "telemetry" / "metrics.jsonl").read_text().splitlines()
    ]
    return [
        point["value"]
        for record in records
        if record.get("name") == "kfm.ops_broken_links"
        for point in record["points"]
        if point["attributes"].get("command") == command
    ]


def test_orphans_are_counted_by_catalog_check_and_by_the_broken_links_metric(make_workspace, cli):
    workspace = make_workspace(n=3)
    code, out, _ = cli(workspace, "catalog", "check")
    assert code == 1 and "0 broken links, 9 orphans." in out, out  # seeded versions no catalog link reaches yet
    assert "orphan   ds-000001/v2/collection.json: no link reaches it from catalog.json" in out

    succeeded(cli(workspace, "apply", "--auto-approve"))
    assert "0 broken links, 0 orphans." in succeeded(cli(workspace, "catalog", "check"))
    assert broken_links_metric(workspace, "apply") == [0]

    undeclare(workspace, "ds-000002")
    code, out, _ = cli(workspace, "catalog", "check")
    assert code == 1 and "0 broken links, 3 orphans." in out, out
    assert "orphan   ds-000002/v1/collection.json: a version of dataset 'ds-000002', which no Dataset declares" in out

    (workspace / "state" / "telemetry" / "metrics.jsonl").unlink()
    succeeded(cli(workspace, "apply", "--auto-approve"))  # the catalog stops linking ds-000002
    assert broken_links_metric(workspace, "apply") == [3], "its three versions are orphans now"
    code, out, _ = cli(workspace, "catalog", "check")
    assert code == 1 and "3 orphans" in out
    assert "ds-000002/v3/collection.json: a version of dataset 'ds-000002', which no Dataset declares" in out
