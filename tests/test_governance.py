"""Governance through the real CLI: policy judges what the data is, and every change of exposure.

Each test is an exposure that the YAML alone let through (issue 17): a heritage version whose STAC items
hold exact points or cells finer than its sensitivity band, a consent from the wrong authority or granted
in the future, a pending review, CARE edits that move no version, an internal dataset in the public
catalog, a rollback judged by yesterday's record. Each now ends with exit 3 naming the rule and the fact.
Workspaces are copies of examples/kansas on the embedded local backend; the STAC documents checked are
real files read by kfmops, one of them a real item of the Planet Fusion catalog in ../shared/fixtures.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import h3
import pytest
from conftest import plan_changes, stac_links

ROOT = Path(__file__).resolve().parent.parent
FUSION_ITEM = (
    Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "open-stac" / "fusion/14N/29E-188N/2021-07-27.json"
)
DENIED = 3


def kansas(tmp_path: Path) -> Path:
    workspace = tmp_path / "kansas"
    shutil.copytree(ROOT / "examples" / "kansas", workspace, ignore=shutil.ignore_patterns("state", "plans"))
    (workspace / "state").mkdir()
    (workspace / "plans").mkdir()
    return workspace


def edit(workspace: Path, old: str, new: str, file: str = "history.yaml") -> None:
    path = workspace / "desired" / file
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def plan(cli, workspace: Path) -> tuple[int, str, dict[str, Any]]:
    """(exit code, human output, plan JSON) of one plan."""
    out_file = workspace / "plans" / "p.json"
    code, out, err = cli(workspace, "plan", "--out", str(out_file))
    assert "Traceback" not in out + err and "internal error" not in err, err
    shown = cli(workspace, "show", str(out_file), "--format", "json")
    return code, out + err, json.loads(shown[1])


def denied(cli, workspace: Path, rule: str, *facts: str) -> dict[str, Any]:
    """The plan is denied (exit 3) by `rule`, and the finding names each of `facts`; returns the plan."""
    code, text, document = plan(cli, workspace)
    assert code == DENIED, text
    findings = [f for f in document["policy"]["findings"] if f["rule"] == rule and f["severity"] == "deny"]
    assert findings, text
    for fact in facts:
        assert any(fact in f["message"] for f in findings), (fact, findings)
        assert fact in text
    return document


def allowed(cli, workspace: Path) -> dict[str, Any]:
    code, text, document = plan(cli, workspace)
    assert code == 0, text
    assert document["policy"]["decision"] == "allow", text
    return document


def applied(cli, workspace: Path) -> None:
    code, out, err = cli(workspace, "apply", "--auto-approve")
    assert code == 0, out + err


# A new heritage version, v3, published into the example's catalog before its first plan ------------------


def cell_item(cell: str, sites: int, **properties: Any) -> dict[str, Any]:
    ring = [[lng, lat] for lat, lng in h3.cell_to_boundary(cell)]
    ring.append(ring[0])
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": f"cell-{cell}",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "bbox": [min(p[0] for p in ring), min(p[1] for p in ring), max(p[0] for p in ring), max(p[1] for p in ring)],
        "properties": {"datetime": "2025-01-01T00:00:00Z", "kfm:h3_cell": cell, "kfm:site_count": sites, **properties},
        "links": [],
        "assets": {},
    }


def publish_v3(workspace: Path, items: list[dict[str, Any]], masking: str, care: dict[str, str] | None = None) -> None:
    """Add heritage-sites v3 (a collection linking `items`) to the data and point the YAML at it, declaring
    `masking`; `care` replaces CARE lines (`old: new`)."""
    folder = workspace / "data" / "catalog" / "heritage-sites" / "v3"
    folder.mkdir()
    collection = json.loads((folder.parent / "v2" / "collection.json").read_text())
    collection.update({"id": "heritage-sites-v3", "version": "v3"})
    collection.pop("kfm:h3_resolution")
    links = [link for link in collection["links"] if link["rel"] != "item"]
    for number, item in enumerate(items):
        (folder / f"item-{number}.json").write_text(json.dumps(item, indent=2))
        links.append({"rel": "item", "href": f"./item-{number}.json", "type": "application/geo+json"})
    collection["links"] = links
    (folder / "collection.json").write_text(json.dumps(collection, indent=2))
    edit(
        workspace,
        "      masking: {method: h3, resolution: 7, coordinates_removed: true}\n",
        "      masking: {method: h3, resolution: 7, coordinates_removed: true}\n"
        '    - id: v3\n      provenance: {source: "Kansas Historical Society site files 2026", activity: "h3"}\n'
        f"      masking: {masking}\n",
    )
    edit(
        workspace,
        '  version: v2\n  versions:\n    - id: v1\n      provenance: {source: "Kansas Historical',
        '  version: v3\n  versions:\n    - id: v1\n      provenance: {source: "Kansas Historical',
    )
    for old, new in (care or {}).items():
        edit(workspace, old, new)


KANSAS = (38.5, -98.0)
DECLARED_R7 = "{method: h3, resolution: 7, coordinates_removed: true}"


@pytest.mark.skipif(not FUSION_ITEM.is_file(), reason="../shared/fixtures/open-stac is absent")
def test_a_real_stac_item_with_an_exact_point_denies_though_the_yaml_declares_h3(cli, tmp_path):
    workspace = kansas(tmp_path)
    item = json.loads(FUSION_ITEM.read_text())  # a real Planet Fusion item; its footprint becomes a site's point
    west, south, east, north = item["bbox"]
    item["geometry"] = {"type": "Point", "coordinates": [(west + east) / 2, (south + north) / 2]}
    item["bbox"] = item["geometry"]["coordinates"] * 2
    item["properties"]["h3:resolution"] = 12
    item["links"] = []
    publish_v3(workspace, [item], DECLARED_R7)
    document = denied(cli, workspace, "heritage.facts_required", "exact point location", "geometries.exact 1")
    facts = document["facts"]["heritage-sites"]
    assert facts["status"] == "gathered" and facts["version"] == "v3"
    assert facts["declared_h3_resolutions"] == [12]
    assert facts["coordinate_decimals"] >= 10
    assert facts["licence"] == "CC-BY-4.0"


def test_h3_cells_finer_than_the_sensitivity_band_deny(cli, tmp_path):
    workspace = kansas(tmp_path)
    cells = h3.grid_disk(h3.latlng_to_cell(*KANSAS, 9), 1)
    publish_v3(workspace, [cell_item(c, 4) for c in cells], DECLARED_R7)  # the YAML still says r7
    denied(cli, workspace, "heritage.sensitivity_band", "resolution 9", "h3_resolutions [9]", "restricted (h3 6-7)")


def test_indigenous_cultural_places_at_r5_are_allowed_and_r6_is_not(cli, tmp_path):
    workspace = kansas(tmp_path)
    publish_v3(
        workspace,
        [cell_item(h3.latlng_to_cell(*KANSAS, 5), 12)],
        "{method: h3, resolution: 5, coordinates_removed: true}",
        {"sensitivity: restricted ": "sensitivity: indigenous "},
    )
    assert allowed(cli, workspace)["facts"]["heritage-sites"]["h3_resolutions"] == [5]
    second = kansas(tmp_path / "second")
    publish_v3(
        second,
        [cell_item(h3.latlng_to_cell(*KANSAS, 6), 12)],
        "{method: h3, resolution: 5, coordinates_removed: true}",
        {"sensitivity: restricted ": "sensitivity: indigenous "},
    )
    denied(cli, second, "heritage.sensitivity_band", "h3_resolutions [6]", "indigenous (h3 4-5)")


def test_a_cell_holding_fewer_than_three_sites_denies(cli, tmp_path):
    workspace = kansas(tmp_path)
    cells = h3.grid_disk(h3.latlng_to_cell(*KANSAS, 7), 1)
    publish_v3(workspace, [cell_item(c, 2 if i == 0 else 5) for i, c in enumerate(cells)], DECLARED_R7)
    denied(cli, workspace, "heritage.k_anonymity", "sites_per_cell_min 2")


def test_burial_and_sacred_sites_hold_no_geometry(cli, tmp_path):
    workspace = kansas(tmp_path)
    publish_v3(
        workspace,
        [cell_item(h3.latlng_to_cell(*KANSAS, 4), 9)],
        "{method: concealed, coordinates_removed: true}",
        {"sensitivity: restricted ": "sensitivity: sacred "},
    )
    denied(cli, workspace, "heritage.sensitivity_band", "must hold none", "geometry_types")
    concealed = kansas(tmp_path / "concealed")
    item = {**cell_item(h3.latlng_to_cell(*KANSAS, 4), 9), "geometry": None, "bbox": None}
    item["properties"] = {"datetime": "2025-01-01T00:00:00Z", "kfm:site_count": 9}
    publish_v3(
        concealed,
        [item],
        "{method: concealed, coordinates_removed: true}",
        {"sensitivity: restricted ": "sensitivity: sacred "},
    )
    assert allowed(cli, concealed)["facts"]["heritage-sites"]["geometries"]["none"] == 1


def test_facts_that_cannot_be_gathered_deny(cli, tmp_path):
    workspace = kansas(tmp_path)
    heritage_consent = '    consent: {authority: Kaw Nation, reference: "KN-THPO-2025-019", granted: "2025-09-15"}\n'
    edit(workspace, heritage_consent, heritage_consent + "  backends: {stac: false}\n")
    document = denied(cli, workspace, "heritage.facts_required", "could not be gathered", "no STAC part")
    assert document["facts"]["heritage-sites"]["status"] == "unavailable"


# Consent and review ------------------------------------------------------------------------------------


def test_a_consent_from_another_authority_than_the_governing_nation_denies(cli, tmp_path):
    workspace = kansas(tmp_path)
    edit(workspace, "    visibility: internal       # never linked from the public catalog", "    visibility: public")
    edit(
        workspace,
        'consent: {authority: "Kaw Nation", reference: "KN-DSA-2025-004"',
        'consent: {authority: "Kansas Department of Transportation", reference: "KDOT-2025-77"',
    )
    denied(
        cli,
        workspace,
        "sovereignty.consent_required",
        "given by Kansas Department of Transportation, not by the dataset's governing authority Kaw Nation",
    )


def test_a_consent_granted_in_the_future_denies(cli, tmp_path):
    workspace = kansas(tmp_path)
    edit(workspace, 'granted: "2025-06-12"', 'granted: "2030-01-01"')
    denied(cli, workspace, "sovereignty.consent_required", "granted from 2030-01-01, after today")


def test_a_pending_steward_review_denies_promoting_heritage_data(cli, tmp_path):
    workspace = kansas(tmp_path)
    edit(
        workspace,
        "H3 r6-r7\n    visibility: public\n    review: approved",
        "H3 r6-r7\n    visibility: public\n    review: pending",
    )
    denied(cli, workspace, "care.review_required", "steward review is pending")


# Every change of exposure is a change --------------------------------------------------------------------


@pytest.fixture
def applied_kansas(cli, tmp_path) -> Path:
    workspace = kansas(tmp_path)
    applied(cli, workspace)
    return workspace


def test_removing_a_public_datasets_consent_moves_no_version_and_is_still_judged(cli, applied_kansas):
    edit(
        applied_kansas,
        '    consent: {authority: Delaware Tribe of Indians, reference: "DTI-THPO-2025-031", granted: "2025-06-12"}\n',
        "",
    )
    document = denied(cli, applied_kansas, "sovereignty.consent_required", "no consent is recorded")
    assert [e["dataset"] for e in document["exposure"]] == ["treaty-1854"]
    assert document["exposure"][0]["fields"] == ["consent"]
    assert not [c for c in plan_changes(document) if c["action"] != "no-op"]
    code, out, _ = cli(applied_kansas, "plan")
    assert code == DENIED and "No changes" not in out and "1 change of exposure" in out


def test_an_allowed_change_of_exposure_is_applied_and_recorded(cli, applied_kansas):
    edit(
        applied_kansas,
        "care: {label: open, sovereignty: none, visibility: public, review: approved}",
        "care: {label: attribution, sovereignty: none, visibility: public, review: approved}",
        "basemaps.yaml",
    )
    code, out, _ = cli(applied_kansas, "plan", "--detailed-exitcode")
    assert code == 2 and "care.label: open -> attribution" in out, out
    applied(cli, applied_kansas)
    code, out, _ = cli(applied_kansas, "plan", "--detailed-exitcode")
    assert code == 0 and "No changes" in out, out


def test_dropping_heritage_or_relabelling_open_lowers_protection_and_denies(cli, applied_kansas, tmp_path):
    relabelled = tmp_path / "relabelled"
    shutil.copytree(applied_kansas, relabelled)
    edit(applied_kansas, "    heritage: true\n", "")
    denied(cli, applied_kansas, "care.protection_lowered", "heritage: true was dropped")
    edit(relabelled, "    label: attribution\n    sovereignty: tribal\n", "    label: open\n    sovereignty: none\n")
    denied(
        cli,
        relabelled,
        "care.protection_lowered",
        "relabelled from restricted (sovereignty tribal, label attribution) to open/none",
    )


def test_a_waiver_with_an_expiry_lets_a_lowering_pass_until_it_expires(cli, applied_kansas):
    edit(applied_kansas, "    heritage: true\n", "")
    waiver = '    waivers: [{rule: care.protection_lowered, authority: Kaw Nation, reference: KN-W-1, expires: "{}"}]\n'
    edit(
        applied_kansas,
        "    authority: Kaw Nation\n",
        "    authority: Kaw Nation\n" + waiver.replace("{}", "2099-01-01"),
    )
    document = allowed(cli, applied_kansas)
    warnings = [f for f in document["policy"]["findings"] if f["rule"] == "care.protection_lowered"]
    assert warnings and warnings[0]["severity"] == "warn" and "until 2099-01-01" in warnings[0]["message"]
    edit(applied_kansas, 'expires: "2099-01-01"', 'expires: "2020-01-01"')
    denied(cli, applied_kansas, "care.protection_lowered", "heritage: true was dropped")


def test_an_internal_dataset_is_never_linked_from_the_public_catalog(cli, applied_kansas):
    children = stac_links(applied_kansas, "catalog.json", "child")
    assert "./treaty-1854/v2/collection.json" in children
    assert not [c for c in children if "kaw-allotments" in c]  # internal since the first apply
    edit(
        applied_kansas,
        "    visibility: public\n    review: approved\n    consent: {authority: Delaware",
        "    visibility: internal\n    review: approved\n    consent: {authority: Delaware",
    )
    allowed(cli, applied_kansas)
    applied(cli, applied_kansas)
    assert not [c for c in stac_links(applied_kansas, "catalog.json", "child") if "treaty-1854" in c]


def test_a_revoked_consent_withdraws_the_dataset_at_the_next_plan(cli, applied_kansas):
    (applied_kansas / "desired" / "consents.yaml").write_text(
        "apiVersion: kfmops/v1\nkind: Consent\nmetadata: {name: kn-thpo-2025-019}\n"
        'spec: {authority: Kaw Nation, reference: KN-THPO-2025-019, revoked: "2026-01-15", reason: council vote}\n'
    )
    document = allowed(cli, applied_kansas)
    moves = {c["address"]: c["action"] for c in plan_changes(document) if c["action"] != "no-op"}
    assert moves == {"dataset.heritage-sites.stac": "update", "dataset.heritage-sites.search": "delete"}
    assert document["datasets"]["heritage-sites"]["care"]["consent"]["revoked"] == "2026-01-15"
    applied(cli, applied_kansas)
    assert not [c for c in stac_links(applied_kansas, "catalog.json", "child") if "heritage-sites" in c]
    code, _, document = plan(cli, applied_kansas)  # withdrawn: nothing left to do while it stays revoked
    assert code == 0 and not [c for c in plan_changes(document) if c["action"] != "no-op"]


# Rollback is judged today --------------------------------------------------------------------------------


def test_rollback_is_judged_by_todays_record_of_the_version_it_restores(cli, applied_kansas):
    edit(
        applied_kansas,
        '  version: v2\n  versions:\n    - id: v1\n      provenance: {source: "Kansas Historical',
        '  version: v1\n  versions:\n    - id: v1\n      provenance: {source: "Kansas Historical',
    )
    applied(cli, applied_kansas)  # heritage-sites v2 -> v1 (r6, within the restricted band)
    edit(
        applied_kansas,
        '  version: v1\n  versions:\n    - id: v1\n      provenance: {source: "Kansas Historical',
        '  version: v2\n  versions:\n    - id: v1\n      provenance: {source: "Kansas Historical',
    )
    applied(cli, applied_kansas)  # back to v2
    edit(
        applied_kansas,
        "masking: {method: h3, resolution: 6, coordinates_removed: true}",
        "masking: {method: h3, resolution: 6, coordinates_removed: false}",
    )
    code, out, err = cli(applied_kansas, "rollback", "--last", "--auto-approve")
    assert code == DENIED, out + err
    assert "policy deny heritage.masking_required" in out
    assert "does not record coordinates_removed: true" in out
    assert "./heritage-sites/v2/collection.json" in stac_links(applied_kansas, "catalog.json", "child")


# Access decisions: rationale and obligations, in the plan and the ledger ---------------------------------


def test_every_access_decision_records_its_rationale_and_obligations(cli, tmp_path):
    workspace = kansas(tmp_path)
    decisions = {d["dataset"]: d for d in allowed(cli, workspace)["policy"]["decisions"]}
    heritage = decisions["heritage-sites"]
    assert heritage["access"] == "restricted"
    assert "consent KN-THPO-2025-019 of Kaw Nation, granted 2025-09-15, expires never" in heritage["rationale"]
    assert "steward review approved" in heritage["rationale"]
    assert heritage["obligations"] == [
        "publish only H3 cells of resolution 6-7, at least 3 sites per cell, no exact coordinates"
    ]
    allotments = decisions["kaw-allotments"]
    assert allotments["access"] == "internal"
    assert "keep out of public catalogs and search" in allotments["obligations"]
    assert "renew consent KN-DSA-2025-004 with Kaw Nation before 2027-03-01" in allotments["obligations"]

    applied(cli, workspace)
    ledger = workspace / "docs" / "reports" / "audit" / "data_provenance_ledger.jsonl"
    entry = json.loads(ledger.read_text().splitlines()[-1])
    assert entry["op_type"] == "apply" and entry["outcome"] == "committed"
    recorded = {d["dataset"]: d for d in entry["access_decisions"]}
    assert recorded == decisions


def test_a_malformed_access_decision_rule_denies(cli, tmp_path):
    workspace = kansas(tmp_path)
    (workspace / "org-policies").mkdir()
    (workspace / "org-policies" / "decisions.rego").write_text(
        'package kfmops\n\nimport rego.v1\n\ndecisions contains "open to all" if true\n'
    )
    config = workspace / "kfmops.yaml"
    assert "policy:" not in config.read_text()
    bundled = config.read_text()
    # beside the bundled rule (a complete array rule), a set rule of the same name is a conflict: denied
    config.write_text(bundled + "policy:\n  paths: [org-policies]\n")
    denied(cli, workspace, "policy.error", "evaluation failed")
    # alone (with a deny rule, so that the set is not empty), the malformed decisions are refused by shape
    rules = (workspace / "org-policies" / "decisions.rego").read_text()
    (workspace / "org-policies" / "decisions.rego").write_text(rules + 'deny contains "never" if false\n')
    config.write_text(bundled + "policy:\n  paths: [org-policies]\n  defaults: false\n")
    denied(cli, workspace, "policy.error", "not a set of access decisions")
