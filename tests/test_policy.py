"""Policy as code: the default Rego policies over plan documents, and failing closed.

Pure tests on plan dicts (the shape of `kfmops show PLAN --format json`): each default rule, broken,
denies with its rule id and the dataset's address; fixed, allows. Any error in the policy set denies.
The Kansas example's real plan passes. When `opa` or `conftest` is on PATH, the same policy files run
under them unchanged and reach the same findings.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from regopy import Interpreter

from kfmops.governance import policy
from kfmops.governance.policy import (
    DEFAULT_POLICY_DIR,
    LOAD_ERROR,
    Finding,
    PolicyResult,
    evaluate,
    groups,
    load_policies,
)

ROOT = Path(__file__).resolve().parent.parent
POLICIES = load_policies(DEFAULT_POLICY_DIR, [])
TODAY = "2026-06-01"
SETTINGS = {"today": TODAY}
KINDS = ("stac", "graph", "search", "cache")


# Plans as data ------------------------------------------------------------------------------------


def record(name: str, **care: Any) -> dict[str, Any]:
    """The desired record of an open dataset pointing at v2 (with provenance); `care` overrides CARE keys."""
    target = {"id": "v2", "provenance": {"source": f"survey of {name}", "activity": "derive"}}
    return {
        "address": f"dataset.{name}",
        "source": "desired/datasets.yaml:1",
        "title": name,
        "version": "v2",
        "versions": [{"id": "v1", "provenance": {"source": "older survey"}}, target],
        "target": target,
        "care": {"label": "open", "sovereignty": "none", "visibility": "public", "review": "approved", **care},
    }


def change(name: str, kind: str, action: str = "update") -> dict[str, Any]:
    """A change of one of dataset `name`'s references (a STAC part links v2 from the catalog)."""
    before = None if action == "create" else f"{name}@v1"
    after = None if action == "delete" else f"{name}@v2"
    if kind == "stac" and after is not None:
        after = {"catalog.json": {"child": [f"{name}/v2/collection.json"]}}
    return {
        "address": f"dataset.{name}.{kind}",
        "kind": kind,
        "backend": "local",
        "dataset": name,
        "locator": {},
        "action": action,
        "before": before,
        "after": after,
        "reason": "test",
        "source": "desired/datasets.yaml:1",
        "precondition": "sha256:0123456789abcdef",
    }


def plan_of(
    records: list[dict[str, Any]],
    changes: list[dict[str, Any]] | None = None,
    facts: dict[str, Any] | None = None,
    exposure: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A plan over `records`; by default each dataset is promoted on all four kinds (updates). `facts` are
    the facts from the data by dataset (default: H3 cells at r7, 5 sites each, for every dataset)."""
    if changes is None:
        changes = [change(r["title"], kind) for r in records for kind in KINDS]
    if facts is None:
        facts = {r["title"]: cells(7) for r in records}
    return {
        "facts": facts,
        "exposure": exposure or [],
        "format_version": 1,
        "plan_id": "plan-20260601T000000Z-abcdef",
        "operation": "apply",
        "changes": changes,
        "datasets": {r["title"]: r for r in records},
        "policy": {"decision": "allow", "findings": []},
    }


def cells(*resolutions: int, sites: int = 5, **overrides: Any) -> dict[str, Any]:
    """Gathered facts of a version whose items are H3 cells at `resolutions` (as governance.facts gives them)."""
    return {
        "status": "gathered",
        "version": "v2",
        "items": 4,
        "geometry_types": ["Polygon"],
        "geometries": {"h3_cell": 4, "exact": 0, "region": 0, "none": 0},
        "coordinate_decimals": 7,
        "h3_resolutions": sorted(resolutions),
        "finest_resolution": max(resolutions),
        "coarsest_resolution": min(resolutions),
        "declared_h3_resolutions": [],
        "declared_coordinates_removed": [True],
        "licence": "CC-BY-4.0",
        "sites_per_cell_min": sites,
        **overrides,
    }


def denials(result: PolicyResult) -> set[tuple[str, str | None]]:
    return {(f.rule, f.address) for f in result.findings if f.severity == "deny"}


def only(result: PolicyResult, rule: str, address: str | None) -> Finding:
    """The result denies with exactly one finding, of `rule` about `address`; returns it."""
    assert result.decision == "deny", result
    assert denials(result) == {(rule, address)}, result
    return next(f for f in result.findings if f.rule == rule)


def check(plan: dict[str, Any], settings: dict[str, Any] | None = None) -> PolicyResult:
    return evaluate(plan, POLICIES, SETTINGS if settings is None else settings)


# A clean plan ----------------------------------------------------------------------------------------


def test_a_plan_that_breaks_no_rule_is_allowed():
    result = check(plan_of([record("landcover"), record("soils", label="attribution")]))
    assert (result.decision, result.findings) == ("allow", ())
    assert [(d["dataset"], d["access"], d["rationale"]) for d in result.decisions] == [
        ("landcover", "public", ["CARE label open, sovereignty none"]),
        ("soils", "public", ["CARE label attribution, sovereignty none"]),
    ]
    assert result.to_dict() == {"decision": "allow", "findings": [], "decisions": list(result.decisions)}


def test_the_result_is_the_plan_files_policy_member():
    schema = json.loads((ROOT / "kfmops" / "data" / "schemas" / "plan.schema.json").read_text())["properties"]["policy"]
    result = check(plan_of([record("landcover", label="")]))
    jsonschema.validate(result.to_dict(), schema)
    finding = result.to_dict()["findings"][0]
    assert set(finding) == {"rule", "address", "message", "fix", "severity"}


# 1. CARE label and sovereignty status ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("care", "rule"),
    [
        ({"label": None}, "care.label_required"),
        ({"label": ""}, "care.label_required"),
        ({"label": "  "}, "care.label_required"),
        ({"sovereignty": None}, "care.sovereignty_required"),
        ({"sovereignty": ""}, "care.sovereignty_required"),
    ],
)
def test_missing_care_metadata_denies(care, rule):
    broken = record("landcover")
    for key, value in care.items():
        if value is None:
            del broken["care"][key]
        else:
            broken["care"][key] = value
    finding = only(check(plan_of([broken, record("soils")])), rule, "dataset.landcover")
    assert "landcover" in finding.message
    assert finding.fix.startswith("add spec.care.")


def test_a_dataset_without_any_care_section_denies_on_both():
    broken = record("landcover")
    del broken["care"]
    assert denials(check(plan_of([broken]))) == {
        ("care.label_required", "dataset.landcover"),
        ("care.sovereignty_required", "dataset.landcover"),
    }


def test_care_is_required_even_when_the_plan_only_deletes():
    broken = record("landcover")
    del broken["care"]["label"]
    plan = plan_of([broken], [change("landcover", "search", "delete")])
    only(check(plan), "care.label_required", "dataset.landcover")


def test_a_moving_change_for_a_dataset_the_plan_has_no_record_of_denies():
    plan = plan_of([record("soils")], [change("soils", "graph"), change("ghost", "graph"), change("ghost", "cache")])
    assert denials(check(plan)) == {
        ("care.label_required", "dataset.ghost"),
        ("care.sovereignty_required", "dataset.ghost"),
        ("provenance.required", "dataset.ghost"),
    }


# 2. Restricted datasets exposed publicly need consent -------------------------------------------------

CONSENT = {"authority": "Kaw Nation", "reference": "KN-DSA-2025-004", "granted": "2025-03-01"}
NATION = {"authority": "Kaw Nation"}


@pytest.mark.parametrize(
    "care",
    [
        {"sovereignty": "sovereign"},
        {"sovereignty": "restricted"},
        {"sovereignty": "tribal"},
        {"label": "restricted"},
        {"label": "community-use-only"},
    ],
)
def test_a_restricted_dataset_exposed_publicly_without_consent_denies(care):
    finding = only(check(plan_of([record("kaw", **care)])), "sovereignty.consent_required", "dataset.kaw")
    assert "dataset.kaw.search, dataset.kaw.stac" in finding.message
    assert "no consent is recorded" in finding.message
    assert "spec.care.consent {authority, reference, granted <= today" in finding.fix


@pytest.mark.parametrize(
    ("consent", "problem"),
    [
        ({"authority": "", "reference": "KN-1"}, "authority is empty"),
        ({"reference": "KN-1"}, "authority is empty"),
        ({"authority": "Kaw Nation", "reference": " "}, "reference is empty"),
        ({**CONSENT, "expires": "2026-05-31"}, "expired on 2026-05-31"),
        ({**CONSENT, "expires": "2026-05-31T23:59:59Z"}, "expired on 2026-05-31"),
        ({**CONSENT, "expires": "next spring"}, "is not a date"),
        ({**CONSENT, "expires": None}, "is not a date"),
        ({**CONSENT, "expires": TODAY}, f"expired on {TODAY}"),
        ({**CONSENT, "granted": "2030-01-01"}, "granted from 2030-01-01, after today (2026-06-01)"),
        ({**CONSENT, "granted": "soon"}, "granted soon is not a date"),
        ({"authority": "Kaw Nation", "reference": "KN-1"}, "records no granted date"),
        ({**CONSENT, "authority": "KDOT"}, "given by KDOT, not by the dataset's governing authority Kaw Nation"),
        ({**CONSENT, "revoked": "2026-01-15", "revoked_by": "consent.kn"}, "was revoked on 2026-01-15 (consent.kn)"),
    ],
)
def test_an_incomplete_or_expired_consent_is_no_consent(consent, problem):
    plan = plan_of([record("kaw", sovereignty="sovereign", consent=consent, **NATION)])
    assert problem in only(check(plan), "sovereignty.consent_required", "dataset.kaw").message


def test_a_binding_consent_allows_public_exposure():
    for consent in (CONSENT, {**CONSENT, "granted": TODAY}, {**CONSENT, "expires": "2099-01-01"}):
        plan = plan_of([record("kaw", sovereignty="sovereign", label="restricted", consent=consent, **NATION)])
        assert check(plan).decision == "allow", consent


def test_indigenous_context_data_must_name_its_governing_authority():
    plan = plan_of([record("kaw", sovereignty="tribal", consent=CONSENT)])
    finding = only(check(plan), "sovereignty.consent_required", "dataset.kaw")
    assert "names no governing authority (spec.care.authority)" in finding.message


@pytest.mark.parametrize("care", [{"sovereignty": "sovereign"}, {"label": "restricted"}, {"heritage": True}])
def test_restricted_sovereign_or_heritage_data_moves_only_after_steward_review(care):
    reviewed = record("kaw", visibility="internal", **care)
    pending = record("kaw", visibility="internal", review="pending", **care)
    if care.get("heritage"):
        pending["target"]["masking"] = MASKED
        reviewed["target"]["masking"] = MASKED
    assert check(plan_of([reviewed])).decision == "allow"
    finding = only(check(plan_of([pending])), "care.review_required", "dataset.kaw")
    assert "steward review is pending" in finding.message


def test_unset_visibility_counts_as_public():
    broken = record("kaw", sovereignty="sovereign")
    del broken["care"]["visibility"]
    only(check(plan_of([broken])), "sovereignty.consent_required", "dataset.kaw")


def test_an_internal_restricted_dataset_needs_no_consent():
    assert check(plan_of([record("kaw", sovereignty="sovereign", visibility="internal")])).decision == "allow"


def test_only_the_catalog_and_search_alias_expose():
    restricted = record("kaw", sovereignty="sovereign")
    internal_only = [change("kaw", "graph"), change("kaw", "cache", "create")]
    assert check(plan_of([restricted], internal_only)).decision == "allow"
    finding = only(
        check(plan_of([restricted], [change("kaw", "stac", "create")])), "sovereignty.consent_required", "dataset.kaw"
    )
    assert "dataset.kaw.stac would expose it" in finding.message


def test_deleting_a_restricted_datasets_public_alias_is_fine():
    plan = plan_of(
        [record("kaw", sovereignty="sovereign")], [change("kaw", "search", "delete"), change("kaw", "stac", "no-op")]
    )
    assert check(plan).decision == "allow"


def test_restricted_statuses_and_labels_are_settings():
    plan = plan_of([record("treaty", sovereignty="tribal")])
    assert check(plan).decision == "deny"
    settings = {**SETTINGS, "restricted_sovereignty": ["sovereign", "restricted"]}
    assert check(plan, settings).decision == "allow"


def test_a_consent_about_to_expire_warns_without_blocking():
    plan = plan_of([record("kaw", sovereignty="sovereign", consent={**CONSENT, "expires": "2026-06-20"}, **NATION)])
    result = check(plan)
    assert result.decision == "allow"
    assert [(f.rule, f.address, f.severity) for f in result.findings] == [
        ("care.consent_expiring", "dataset.kaw", "warn")
    ]
    assert "expires on 2026-06-20" in result.findings[0].message
    assert check(plan, {**SETTINGS, "consent_warn_days": 7}).findings == ()


def test_consent_expiry_is_judged_against_the_current_date_by_default():
    plan = plan_of([record("kaw", sovereignty="sovereign", consent={**CONSENT, "expires": "2001-01-01"}, **NATION)])
    only(evaluate(plan, POLICIES, {}), "sovereignty.consent_required", "dataset.kaw")


# 3. Heritage: sensitivity levels judged against the facts from the data --------------------------------

MASKED = {"method": "h3", "resolution": 7, "coordinates_removed": True}


def heritage(masking: dict[str, Any] | None, **care: Any) -> dict[str, Any]:
    site = record("sites", heritage=True, **care)
    if masking is not None:
        site["target"]["masking"] = masking
    return site


def judged(site: dict[str, Any], facts: dict[str, Any]) -> PolicyResult:
    return check(plan_of([site], facts={"sites": facts}))


@pytest.mark.parametrize(
    ("masking", "problem"),
    [
        (None, "records no masking"),
        ({"method": "none"}, "method none, not h3"),
        ({"resolution": 7, "coordinates_removed": True}, "method unset, not h3"),
        ({"method": "h3", "coordinates_removed": True}, "no H3 resolution"),
        ({**MASKED, "resolution": 6}, "resolution 6, outside sensitivity default (h3 7-7)"),
        ({**MASKED, "resolution": 8}, "resolution 8, outside sensitivity default (h3 7-7)"),
        ({**MASKED, "coordinates_removed": False}, "coordinates_removed: true"),
        ({"method": "h3", "resolution": 7}, "coordinates_removed: true"),
    ],
)
def test_a_heritage_version_declared_unmasked_denies(masking, problem):
    finding = only(judged(heritage(masking), cells(7)), "heritage.masking_required", "dataset.sites")
    assert problem in finding.message
    assert "{method: h3, resolution within 7-7, coordinates_removed: true}" in finding.fix


@pytest.mark.parametrize(
    ("sensitivity", "resolution", "allowed"),
    [
        (None, 7, True),
        (None, 8, False),
        ("public", 7, True),
        ("public", 8, True),
        ("public", 9, False),
        ("restricted", 6, True),
        ("restricted", 8, False),
        ("indigenous", 4, True),
        ("indigenous", 5, True),
        ("indigenous", 6, False),
        ("indigenous", 3, False),
    ],
)
def test_each_sensitivity_level_has_its_h3_band(sensitivity, resolution, allowed):
    care = {"sensitivity": sensitivity} if sensitivity else {}
    site = heritage({**MASKED, "resolution": resolution}, **care)
    result = judged(site, cells(resolution))
    if allowed:
        assert result.decision == "allow", result
    else:
        rules = {rule for rule, _ in denials(result)}
        assert rules == {"heritage.sensitivity_band", "heritage.masking_required"}, result


def test_indigenous_context_data_defaults_to_restricted_and_an_unknown_level_to_concealed():
    tribal = heritage({**MASKED, "resolution": 6}, sovereignty="tribal", authority="Kaw Nation", consent=CONSENT)
    assert judged(tribal, cells(6)).decision == "allow"
    unknown = heritage({**MASKED}, sensitivity="secret-ish")  # not a level: held to the strictest
    result = judged(unknown, cells(7))
    assert ("heritage.sensitivity_band", "dataset.sites") in denials(result)
    assert any("sensitivity sacred (concealed concealed)" in f.message for f in result.findings), result


def test_the_data_decides_not_the_declaration():
    site = heritage(MASKED)  # declares r7, coordinates removed
    exact = cells(7, geometries={"h3_cell": 3, "exact": 1, "region": 0, "none": 0})
    assert "geometries.exact 1" in only(judged(site, exact), "heritage.facts_required", "dataset.sites").message
    finer = judged(site, cells(7, 12))
    assert "h3_resolutions [7, 12]" in only(finer, "heritage.sensitivity_band", "dataset.sites").message
    declared = judged(site, cells(7, declared_h3_resolutions=[12]))
    assert "declared_h3_resolutions [12]" in only(declared, "heritage.sensitivity_band", "dataset.sites").message
    kept = judged(site, cells(7, declared_coordinates_removed=[False]))
    assert "kfm:coordinates_removed: false" in only(kept, "heritage.sensitivity_band", "dataset.sites").message
    regions = judged(site, cells(7, geometries={"h3_cell": 3, "exact": 0, "region": 1, "none": 0}))
    assert "geometries.region 1" in only(regions, "heritage.sensitivity_band", "dataset.sites").message


@pytest.mark.parametrize(
    "facts",
    [
        None,
        {"status": "unavailable", "problem": "backend 'stac' is unreachable"},
        cells(7, items=0),
    ],
)
def test_facts_that_cannot_be_gathered_deny(facts):
    plan = plan_of([heritage(MASKED)], facts={} if facts is None else {"sites": facts})
    finding = only(check(plan), "heritage.facts_required", "dataset.sites")
    assert "could not be gathered" in finding.message or "items 0" in finding.message


def test_fewer_than_three_sites_in_a_cell_denies():
    finding = only(judged(heritage(MASKED), cells(7, sites=2)), "heritage.k_anonymity", "dataset.sites")
    assert "sites_per_cell_min 2" in finding.message
    assert judged(heritage(MASKED), cells(7, sites=3)).decision == "allow"
    fewer = {**SETTINGS, "min_sites_per_cell": 2}
    assert check(plan_of([heritage(MASKED)], facts={"sites": cells(7, sites=2)}), fewer).decision == "allow"


def test_region_only_and_concealed_levels():
    regional = heritage({"method": "region-only", "coordinates_removed": True}, sensitivity="regional")
    polygons = cells(7, geometries={"h3_cell": 0, "exact": 0, "region": 4, "none": 0}, h3_resolutions=[])
    polygons |= {"finest_resolution": None, "coarsest_resolution": None, "sites_per_cell_min": None}
    assert judged(regional, polygons).decision == "allow"
    assert ("heritage.sensitivity_band", "dataset.sites") in denials(judged(regional, cells(7)))
    sacred = heritage({"method": "concealed", "coordinates_removed": True}, sensitivity="sacred")
    hidden = polygons | {"geometries": {"h3_cell": 0, "exact": 0, "region": 0, "none": 4}, "geometry_types": []}
    assert judged(sacred, hidden).decision == "allow"
    finding = only(judged(sacred, polygons), "heritage.sensitivity_band", "dataset.sites")
    assert "must hold none" in finding.message


def test_sensitivity_levels_are_settings():
    site = heritage({**MASKED, "resolution": 9}, sensitivity="public")
    settings = {**SETTINGS, "sensitivity_levels": {"public": {"method": "h3", "min": 7, "max": 9}}}
    assert check(plan_of([site], facts={"sites": cells(9)}), settings).decision == "allow"
    assert check(plan_of([site], facts={"sites": cells(9)})).decision == "deny"


def test_heritage_is_checked_only_when_the_pointer_moves_or_its_exposure_changes():
    plan = plan_of([heritage(None)], [change("sites", kind, "delete") for kind in KINDS], facts={})
    assert check(plan).decision == "allow"


# Changes of exposure ------------------------------------------------------------------------------------


def exposure_of(site: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    return {
        "dataset": site["title"],
        "address": site["address"],
        "fields": sorted(k for k in before.keys() | site["care"].keys() if before.get(k) != site["care"].get(k)),
        "before": before,
        "after": site["care"],
        "references": [{"address": f"dataset.{site['title']}.{k}", "kind": k} for k in KINDS],
    }


def test_a_change_of_exposure_alone_is_judged():
    kaw = record("kaw", sovereignty="sovereign", **NATION)
    before = {**kaw["care"], "consent": CONSENT}
    plan = plan_of([kaw], [], exposure=[exposure_of(kaw, before)])
    finding = only(check(plan), "sovereignty.consent_required", "dataset.kaw")
    assert "dataset.kaw.search, dataset.kaw.stac would expose it" in finding.message


@pytest.mark.parametrize(
    ("before", "reason"),
    [
        ({"heritage": True}, "heritage: true was dropped"),
        ({"label": "restricted"}, "relabelled from restricted (sovereignty none, label restricted) to open/none"),
        ({"heritage": True, "sensitivity": "sacred"}, "heritage: true was dropped"),
    ],
)
def test_lowering_protection_denies_unless_waived_until_a_date(before, reason):
    site = record("sites", **NATION)
    entry = exposure_of(site, {**site["care"], **before})
    finding = only(check(plan_of([site], [], exposure=[entry])), "care.protection_lowered", "dataset.sites")
    assert reason in finding.message
    waiver = {"rule": "care.protection_lowered", "authority": "Kaw Nation", "reference": "W-1", "expires": "2099-01-01"}
    waived = record("sites", waivers=[waiver], **NATION)
    result = check(plan_of([waived], [], exposure=[exposure_of(waived, {**waived["care"], **before})]))
    assert result.decision == "allow"
    assert [f.severity for f in result.findings] == ["warn"]
    unwaivable = {**waiver, "rule": "heritage.k_anonymity"}
    for broken in ({**waiver, "expires": TODAY}, {**waiver, "authority": "KDOT"}, unwaivable):
        lapsed = record("sites", waivers=[broken], **NATION)
        entry = exposure_of(lapsed, {**lapsed["care"], **before})
        assert check(plan_of([lapsed], [], exposure=[entry])).decision == "deny", broken


# 4. Provenance of the target version --------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [{"id": "v2"}, {"id": "v2", "provenance": {}}, {"id": "v2", "provenance": {"source": ""}}, None],
)
def test_a_target_version_without_provenance_denies(target):
    broken = record("soils")
    broken["target"] = target
    finding = only(check(plan_of([broken])), "provenance.required", "dataset.soils")
    assert "version v2" in finding.message
    assert "add provenance {source, activity} to version v2" in finding.fix


def test_provenance_is_checked_only_when_the_pointer_moves():
    broken = record("soils")
    broken["target"] = {"id": "v2"}
    assert check(plan_of([broken], [change("soils", "cache", "delete")])).decision == "allow"
    only(check(plan_of([broken], [change("soils", "cache", "create")])), "provenance.required", "dataset.soils")


def test_every_broken_rule_is_reported_at_once():
    label = record("a")
    del label["care"]["label"]
    noprov = record("b")
    noprov["target"] = {"id": "v2"}
    plan = plan_of([label, noprov, record("c", sovereignty="sovereign", **NATION), heritage(None)])
    assert denials(check(plan)) == {
        ("care.label_required", "dataset.a"),
        ("provenance.required", "dataset.b"),
        ("sovereignty.consent_required", "dataset.c"),
        ("heritage.masking_required", "dataset.sites"),
    }


# Plans judged in groups of datasets ------------------------------------------------------------------


def varied_plan(count: int) -> dict[str, Any]:
    """A plan of `count` datasets breaking the default rules in turn, with exposure entries, a change
    that belongs to no dataset and drift: every member `groups` cuts up."""
    records, facts, exposure = [], {}, []
    for index in range(count):
        name = f"d{index:05d}"
        kind = index % 6
        if kind == 1:
            records.append(record(name, sovereignty="sovereign", **NATION))
        elif kind == 2:
            broken = record(name)
            broken["target"] = {"id": "v2"}
            records.append(broken)
        elif kind == 3:
            records.append(record(name, label="restricted", visibility="internal", heritage=True, **NATION))
        elif kind == 4:
            exposed = record(name, sovereignty="tribal", **NATION)
            exposure.append(exposure_of(exposed, {**exposed["care"], "consent": CONSENT}))
            records.append(exposed)
        else:
            records.append(record(name))
        facts[name] = cells(7, sites=2 if kind == 3 else 5)
    plan = plan_of(records, facts=facts, exposure=exposure)
    raw = dict(change("kfm-basemaps", "search"), address="search_alias.kfm-basemaps", dataset=None)
    plan["changes"].append(raw)
    plan["drift"] = [{"address": "dataset.d00000.cache", "type": "drift"}]
    plan["summary"] = {"create": 0, "update": len(plan["changes"]), "delete": 0, "no_op": 0}
    return plan


def test_a_plan_judged_in_groups_gives_the_findings_of_one_query(monkeypatch):
    plan = varied_plan(60)
    whole = check(plan)
    assert {rule for rule, _ in denials(whole)} >= {
        "sovereignty.consent_required",
        "provenance.required",
        "heritage.k_anonymity",
    }
    assert len(whole.decisions) == 60
    monkeypatch.setattr(policy, "GROUP_SIZE", 7)
    parts = groups(plan, policy.GROUP_SIZE)
    assert len(parts) == 9
    assert sorted(name for part in parts for name in part["datasets"]) == sorted(plan["datasets"])
    assert sum(len(part["changes"]) for part in parts) == len(plan["changes"])
    assert [len(part["drift"]) for part in parts] == [1] + [0] * 8
    assert all(part["summary"] == plan["summary"] for part in parts)
    grouped = check(plan)
    assert grouped.findings == whole.findings
    assert grouped.decisions == whole.decisions
    for cores in ({0}, set(range(4)), set(range(64))):  # the 9 groups on 1, 4 and 9 interpreters, in threads
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, cores=cores: cores)
        assert check(plan) == grouped


def test_a_rule_over_the_summary_sees_the_whole_plan_in_every_group(monkeypatch):
    user = (
        "limit.rego",
        'package kfmops\n\nimport rego.v1\n\ndeny contains "more than 100 updates" if input.summary.update > 100\n',
    )
    monkeypatch.setattr(policy, "GROUP_SIZE", 10)
    result = evaluate(varied_plan(30), [*POLICIES, user], SETTINGS)
    assert [f.message for f in result.findings if f.rule == "deny"] == ["more than 100 updates"]


@pytest.mark.slow
def test_an_initial_plan_of_ten_thousand_datasets_is_judged_not_stopped():
    # One query over it reached rego-cpp's statement limit: policy.error "Maximum statement count reached".
    plan = plan_of([record(f"d{index:05d}") for index in range(10_000)])
    for item in plan["changes"]:
        item["action"], item["before"] = "create", None
    result = check(plan)
    assert result.decision == "allow", result.findings[:3]
    assert len(result.decisions) == 10_000


# Failing closed ---------------------------------------------------------------------------------------


def errors(result: PolicyResult) -> list[str]:
    assert result.decision == "deny", result
    return [f.message for f in result.findings if f.rule == "policy.error"]


CLEAN = plan_of([record("landcover")])


def test_a_syntax_error_in_any_policy_file_denies_and_names_the_file_and_line():
    bad = ("policies/bad.rego", "package kfmops\n\nimport rego.v1\n\ndeny contains msg if {\n")
    messages = errors(evaluate(CLEAN, [*POLICIES, bad], SETTINGS))
    assert messages
    assert all(message.startswith("policies/bad.rego:") for message in messages)
    assert any(message.startswith("policies/bad.rego:5:") for message in messages)


def test_a_rego_v0_rule_or_garbage_denies():
    for text in ("this is not rego", "package kfmops\n\ndeny[msg] {\n  msg := 1\n", ""):
        assert evaluate(CLEAN, [*POLICIES, ("user.rego", text)], SETTINGS).decision == "deny", text


def test_an_evaluation_error_denies():
    conflict = (
        "user.rego",
        'package kfmops\n\nimport rego.v1\n\nlimit := 1\n\nlimit := 2\n\ndeny contains "x" if limit > 5\n',
    )
    assert "eval_conflict_error" in errors(evaluate(CLEAN, [*POLICIES, conflict], SETTINGS))[0]
    division = ("user.rego", "package kfmops\n\nimport rego.v1\n\ndeny contains msg if {\n  msg := 1 / 0\n}\n")
    assert errors(evaluate(CLEAN, [*POLICIES, division], SETTINGS))


def test_an_evaluation_error_in_one_group_of_many_denies(monkeypatch):
    """Groups are queried in threads: an error in any worker's group is a deny, not a lost answer."""
    last = sorted(varied_plan(60)["datasets"])[-1]
    failing = (
        "user.rego",
        "package kfmops\n\nimport rego.v1\n\n"
        f'deny contains msg if {{\n  input.datasets["{last}"]\n  msg := 1 / 0\n}}\n',
    )
    monkeypatch.setattr(policy, "GROUP_SIZE", 7)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)))
    assert errors(evaluate(varied_plan(60), [*POLICIES, failing], SETTINGS))


@pytest.mark.parametrize(
    "rule",
    [
        "deny contains 5 if true",
        'deny contains {"message": "no msg key"} if true',
        'deny contains {"msg": ""} if true',
        'deny contains {"msg": "x", "fix": 3} if true',
        'deny contains {"msg": "x", "address": ["a"]} if true',
        "deny_flag := true",
    ],
)
def test_a_malformed_finding_denies(rule):
    user = ("user.rego", f"package kfmops\n\nimport rego.v1\n\n{rule}\n")
    (message,) = errors(evaluate(CLEAN, [*POLICIES, user], SETTINGS))
    assert "malformed finding" in message or "not a set of findings" in message


FINDING_SCHEMA = json.loads((ROOT / "kfmops" / "data" / "schemas" / "policy-finding.schema.json").read_text())


@pytest.mark.parametrize(
    "item",
    [
        "a message",
        " ",
        {"msg": "m"},
        {"msg": "m", "rule": "org.x", "address": "dataset.a", "fix": "do y", "details": {"n": 1}},
        {"msg": "m", "address": None},
        {"msg": " "},
        {"msg": "m", "rule": 1},
        {"message": "m"},
        7,
        ["m"],
    ],
)
def test_the_finding_schema_says_what_evaluate_accepts(item):
    user = ("user.rego", f"package kfmops\n\nimport rego.v1\n\ndeny contains {json.dumps(item)} if true\n")
    result = evaluate(CLEAN, [*POLICIES, user], SETTINGS)
    accepted = not any(f.rule == "policy.error" for f in result.findings)
    assert accepted == jsonschema.Draft202012Validator(FINDING_SCHEMA).is_valid(item)
    assert result.decision == "deny"


def test_interpreter_output_that_is_not_json_denies():
    # rego-cpp quotes a concat result inside sprintf without escaping; whatever it does, never allow.
    user = (
        "user.rego",
        'package kfmops\n\nimport rego.v1\n\ndeny contains sprintf("<%v>", [concat(",", ["a"])]) if true\n',
    )
    assert evaluate(CLEAN, [*POLICIES, user], SETTINGS).decision == "deny"


def test_an_interpreter_failure_denies(monkeypatch):
    def broken(self, query):
        raise RuntimeError("interpreter exploded")

    monkeypatch.setattr(Interpreter, "query", broken)
    assert "RuntimeError: interpreter exploded" in errors(check(CLEAN))[0]


def test_an_empty_policy_set_denies_unless_allowed():
    result = evaluate(CLEAN, [], SETTINGS)
    assert denials(result) == {("policy.empty", None)}
    assert "allow_empty" in result.findings[0].fix
    assert evaluate(CLEAN, [], {"allow_empty": True}) == PolicyResult("allow", ())
    assert evaluate(CLEAN, [], {"allow_empty": "yes"}).decision == "deny"


def test_policies_without_a_deny_rule_in_the_namespace_count_as_empty():
    warn_only = [("w.rego", 'package kfmops\n\nimport rego.v1\n\nwarn contains "w" if true\n')]
    assert denials(evaluate(CLEAN, warn_only, SETTINGS)) == {("policy.empty", None)}
    elsewhere = [("o.rego", 'package other\n\nimport rego.v1\n\ndeny contains "x" if true\n')]
    assert denials(evaluate(CLEAN, elsewhere, SETTINGS)) == {("policy.empty", None)}


def test_an_unreadable_or_missing_policy_path_denies(tmp_path):
    loaded = load_policies(DEFAULT_POLICY_DIR, [tmp_path / "missing.rego", tmp_path / "notes.txt"])
    (tmp_path / "notes.txt").write_text("x")
    loaded += load_policies(tmp_path / "no-such-dir", [tmp_path / "notes.txt"])
    assert [name for name, text in loaded if text.startswith(LOAD_ERROR)] == [
        str(tmp_path / "missing.rego"),
        str(tmp_path / "notes.txt"),
        str(tmp_path / "no-such-dir"),
        str(tmp_path / "notes.txt"),
    ]
    messages = errors(evaluate(CLEAN, loaded, SETTINGS))
    assert any("missing.rego: no such file or folder" in message for message in messages)


def test_the_whole_plan_is_one_query(monkeypatch):
    queries = []
    original = Interpreter.query

    def counting(self, query):
        queries.append(query)
        return original(self, query)

    monkeypatch.setattr(Interpreter, "query", counting)
    check(plan_of([record(f"d{i}") for i in range(30)]))
    assert len(queries) == 1


# User policies -----------------------------------------------------------------------------------------

USER_POLICY = """\
package kfmops

import rego.v1

deny contains {"rule": "org.title_required", "address": record.address, "msg": msg, "fix": "add spec.title"} if {
\tsome name, record in input.datasets
\trecord.title == name
\tmsg := sprintf("dataset %v has no title of its own", [name])
}

warn_review contains msg if {
\tsome name, record in input.datasets
\trecord.care.review != "approved"
\tmsg := sprintf("dataset %v is not CARE-reviewed", [name])
}
"""


def test_a_user_policy_from_extra_paths_is_evaluated(tmp_path):
    folder = tmp_path / "org-policies"
    (folder / "nested").mkdir(parents=True)
    (folder / "nested" / "org.rego").write_text(USER_POLICY)
    (folder / "org_test.rego").write_text("package kfmops_test\n\nthis is an OPA unit test file, never loaded\n")
    policies = load_policies(DEFAULT_POLICY_DIR, [folder])
    assert [Path(name).name for name, _ in policies][-1] == "org.rego"
    pending = record("landcover", review="pending")
    result = evaluate(plan_of([pending]), policies, SETTINGS)
    assert denials(result) == {("org.title_required", "dataset.landcover")}
    assert [(f.rule, f.address, f.message, f.fix, f.severity) for f in result.findings if f.severity == "warn"] == [
        ("warn_review", None, "dataset landcover is not CARE-reviewed", "", "warn")
    ]


def test_policy_files_load_sorted_once_each(tmp_path):
    (tmp_path / "b.rego").write_text("package kfmops\n")
    (tmp_path / "a.rego").write_text("package kfmops\n")
    (tmp_path / "a_test.rego").write_text("package kfmops_test\n")
    loaded = load_policies(tmp_path, [tmp_path / "a.rego", tmp_path])
    assert [Path(name).name for name, _ in loaded] == ["a.rego", "b.rego"]
    assert [Path(name).name for name, _ in POLICIES] == [
        "access.rego",
        "care.rego",
        "heritage.rego",
        "lib.rego",
        "provenance.rego",
        "sovereignty.rego",
    ]


# The shipped example -------------------------------------------------------------------------------------


def kansas_plan(cli, tmp_path: Path) -> dict[str, Any]:
    """The real plan of a fresh copy of examples/kansas, as `kfmops show PLAN --format json` prints it."""
    workspace = tmp_path / "kansas"
    shutil.copytree(ROOT / "examples" / "kansas", workspace)
    code, _, err = cli(workspace, "plan", "--out", str(workspace / "p.json"))
    assert code in (0, 2), err
    code, out, err = cli(workspace, "show", str(workspace / "p.json"), "--format", "json")
    assert code == 0, err
    return json.loads(out)


def test_the_kansas_example_passes_the_default_policies(cli, tmp_path):
    plan = kansas_plan(cli, tmp_path)
    assert {"heritage-sites", "kaw-allotments", "treaty-1854"} <= set(plan["datasets"])
    result = evaluate(plan, POLICIES, SETTINGS)
    assert result.decision == "allow", result
    assert denials(result) == set()


def test_the_kansas_example_breaks_when_its_care_metadata_does(cli, tmp_path):
    plan = kansas_plan(cli, tmp_path)
    broken = copy.deepcopy(plan)
    del broken["datasets"]["treaty-1854"]["care"]["consent"]
    broken["datasets"]["heritage-sites"]["target"]["masking"]["coordinates_removed"] = False
    assert denials(evaluate(broken, POLICIES, SETTINGS)) == {
        ("sovereignty.consent_required", "dataset.treaty-1854"),
        ("heritage.masking_required", "dataset.heritage-sites"),
    }


# The same files under opa and conftest ------------------------------------------------------------------

UNSET_VISIBILITY = record("hidden", label="restricted")
del UNSET_VISIBILITY["care"]["visibility"]

SCENARIOS = {
    "clean": plan_of([record("landcover"), record("kaw", sovereignty="sovereign", consent=CONSENT, **NATION)]),
    "edges": plan_of(
        [record("soils"), heritage({"resolution": 8, "coordinates_removed": True}), UNSET_VISIBILITY],
        [
            *[change(name, kind) for name in ("soils", "sites", "hidden") for kind in KINDS],
            change("ghost", "graph"),
            change("ghost", "cache", "create"),
            change("gone", "search", "delete"),
        ],
        facts={"soils": cells(7), "sites": cells(7, 9, sites=2)},
    ),
    "broken": plan_of(
        [
            record("a", label=""),
            record("c", sovereignty="tribal", consent={**CONSENT, "expires": "2020-01-01"}, **NATION),
            heritage({**MASKED, "resolution": 10}, review="pending"),
            {**record("b"), "target": {"id": "v2"}},
            record("w", sovereignty="sovereign", consent={**CONSENT, "expires": "2026-06-10"}, **NATION),
            record("g", sovereignty="tribal", consent={**CONSENT, "granted": "2030-01-01"}, authority="KDOT"),
        ],
        facts={"sites": {"status": "unavailable", "problem": "no STAC part"}},
        exposure=[exposure_of(record("x", **NATION), {**record("x")["care"], "heritage": True})],
    ),
}


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def write_inputs(tmp_path: Path, plan: dict[str, Any]) -> tuple[Path, Path]:
    plan_file, data_file = tmp_path / "plan.json", tmp_path / "settings.json"
    plan_file.write_text(json.dumps(plan))
    data_file.write_text(json.dumps({"kfmops": {"config": SETTINGS}}))
    return plan_file, data_file


def as_findings(values: list[Any], severity: str) -> set[tuple[str, str | None, str]]:
    return {(v["rule"], v["address"], severity) for v in values}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_opa_eval_reaches_the_same_findings(scenario, tmp_path):
    opa = shutil.which("opa")
    if opa is None:
        pytest.skip("opa is not on PATH (go install github.com/open-policy-agent/opa@latest)")
    plan_file, data_file = write_inputs(tmp_path, SCENARIOS[scenario])
    query = '{"deny": data.kfmops.deny, "warn": data.kfmops.warn}'
    done = run(
        opa,
        "eval",
        "--strict-builtin-errors",
        "-d",
        str(DEFAULT_POLICY_DIR),
        "-d",
        str(data_file),
        "-i",
        str(plan_file),
        "--format",
        "raw",
        query,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    expected = {(f.rule, f.address, f.severity) for f in check(SCENARIOS[scenario]).findings}
    assert as_findings(found["deny"], "deny") | as_findings(found["warn"], "warn") == expected
    assert bool(found["deny"]) == (scenario != "clean")


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_conftest_reaches_the_same_findings(scenario, tmp_path):
    conftest = shutil.which("conftest")
    if conftest is None:
        pytest.skip("conftest is not on PATH (go install github.com/open-policy-agent/conftest@latest)")
    plan_file, data_file = write_inputs(tmp_path, SCENARIOS[scenario])
    done = run(
        conftest,
        "test",
        "--no-color",
        "--policy",
        str(DEFAULT_POLICY_DIR),
        "--namespace",
        "kfmops",
        "--data",
        str(data_file),
        "--output",
        "json",
        str(plan_file),
    )
    result = check(SCENARIOS[scenario])
    assert done.returncode == (1 if result.decision == "deny" else 0), done.stdout + done.stderr
    (report,) = json.loads(done.stdout)
    messages = {(item["msg"], "deny") for item in report.get("failures") or []}
    messages |= {(item["msg"], "warn") for item in report.get("warnings") or []}
    assert messages == {(f.message, f.severity) for f in result.findings}


def test_opa_accepts_the_policies_as_strict_rego_v1():
    opa = shutil.which("opa")
    if opa is None:
        pytest.skip("opa is not on PATH (go install github.com/open-policy-agent/opa@latest)")
    done = run(opa, "check", "--strict", str(DEFAULT_POLICY_DIR))
    assert done.returncode == 0, done.stdout + done.stderr


# Docs ---------------------------------------------------------------------------------------------------


def test_every_default_rule_is_documented():
    text = (ROOT / "docs" / "policy.md").read_text()
    rules = set()
    for file in DEFAULT_POLICY_DIR.glob("*.rego"):
        rules |= set(re.findall(r'lib\.finding\("([a-z_.]+)"', file.read_text()))
    assert rules == {
        "care.label_required",
        "care.sovereignty_required",
        "care.consent_expiring",
        "care.review_required",
        "care.protection_lowered",
        "sovereignty.consent_required",
        "heritage.facts_required",
        "heritage.sensitivity_band",
        "heritage.k_anonymity",
        "heritage.masking_required",
        "provenance.required",
    }
    for rule in sorted(rules | {"policy.error", "policy.empty"}):
        assert f"`{rule}`" in text, f"docs/policy.md does not document {rule}"


def test_the_gate_judges_a_plan_once_and_a_changed_plan_again(tmp_path):
    """`apply --auto-approve` asks the gate about its plan when it is made and again under the lock: the
    second answer is the first one (same input, its own verdict aside); any other input is judged anew."""
    from dataclasses import replace

    from benchmarks.generate import generate
    from kfmops.engine.plan import PlanRequest, plan
    from kfmops.engine.session import Session
    from kfmops.workspace import load_workspace

    generate(tmp_path / "ws", 3, 3, 1854)
    with Session(load_workspace(tmp_path / "ws"), "plan", read_only=True) as session:
        judged = plan(session, PlanRequest())
        first = session.policy.check(judged)
        assert judged.policy == first.to_dict() and first.decision == "allow"
        assert session.policy.check(replace(judged, policy={"decision": "deny", "findings": []})) is first
        fewer = replace(judged, changes=judged.changes[1:])
        assert session.policy.check(fewer) is not first


def test_the_policy_input_leaves_out_no_ops_but_still_counts_them():
    from kfmops.governance.gate import policy_input
    from kfmops.plans.model import Action, Change, Operation, Plan, StateRef
    from kfmops.references import Reference, ReferenceKind

    def changed(name: str, action: Action) -> Change:
        reference = Reference(f"dataset.{name}.cache", ReferenceKind.CACHE, "local", {"key": name}, name)
        return Change(reference, action, "v1", "v1" if action is Action.NOOP else "v2", "test")

    changes = (changed("a", Action.UPDATE), changed("b", Action.NOOP), changed("c", Action.NOOP))
    plan = Plan("plan-1", "2026-06-01T00:00:00Z", Operation.APPLY, "ws", StateRef("lineage", 1), changes)
    document = policy_input(plan)
    assert [c["address"] for c in document["changes"]] == ["dataset.a.cache"]
    assert document["summary"] == {"create": 0, "update": 1, "delete": 0, "no_op": 2}


def test_a_signed_plan_carries_its_verdict_to_apply_which_judges_again_whatever_differs(tmp_path, monkeypatch):
    """The verdict a plan records is sealed with the digest of what was judged; applying the plan, signed,
    reuses it only while everything it depends on is the same under the lock: input (facts gathered again
    included), settings, policies and day. A changed verdict, a changed input or an unsigned plan is judged."""
    from dataclasses import replace

    from benchmarks.generate import generate
    from kfmops.engine.plan import PlanRequest, plan
    from kfmops.engine.session import Session
    from kfmops.governance import gate
    from kfmops.io import clock
    from kfmops.plans import planfile
    from kfmops.workspace import load_workspace

    generate(tmp_path / "ws", 3, 3, 1854)
    workspace = load_workspace(tmp_path / "ws")
    monkeypatch.setenv("KFMOPS_PLAN_KEY", "policy-seal-key")
    with Session(workspace, "plan", read_only=True) as session:
        made = plan(session, PlanRequest())
    assert made.policy["decision"] == "allow" and made.policy["judged"].startswith("sha256:")
    planfile.write(made, tmp_path / "p.plan")
    signed = planfile.read(tmp_path / "p.plan")

    queries: list[int] = []
    evaluate = gate.evaluate
    monkeypatch.setattr(gate, "evaluate", lambda *args: queries.append(1) or evaluate(*args))

    def judged(plan_read, workspace=workspace):
        """(decision, finding rules, queries run) of the gate of a new session over `plan_read`."""
        queries.clear()
        with Session(workspace, "apply", read_only=True) as session:
            result = session.policy.check(plan_read)
        return result.decision, sorted(f.rule for f in result.findings), len(queries)

    assert judged(signed) == ("allow", [], 0)  # reused: no query ran
    assert signed.policy["decisions"][0]["access"] == "public"
    hidden = [{**signed.policy["decisions"][0], "access": "internal"}, *signed.policy["decisions"][1:]]
    assert judged(replace(signed, policy={**signed.policy, "decisions": hidden})) == ("allow", [], 1)
    warned = [{"rule": "warn", "address": None, "message": "m", "fix": "", "severity": "warn"}]
    assert judged(replace(signed, policy={**signed.policy, "findings": warned})) == ("allow", [], 1)
    unproven = {name: dict(record) for name, record in signed.datasets.items()}
    for record in unproven.values():
        record["target"] = {key: value for key, value in record["target"].items() if key != "provenance"}
    decision, rules, ran = judged(replace(signed, datasets=unproven))  # an allow carried over another input
    assert (decision, set(rules), ran) == ("deny", {"provenance.required"}, 1)

    today = clock.today
    monkeypatch.setattr(clock, "today", lambda: "2099-01-01")
    assert judged(signed)[2] == 1  # another day: consents may have expired since
    monkeypatch.setattr(clock, "today", today)
    assert judged(signed)[2] == 0
    settled = load_workspace(tmp_path / "ws")
    settled.raw.setdefault("policy", {})["consent_warn_days"] = 5
    assert judged(signed, settled)[2] == 1  # other settings
    monkeypatch.delenv("KFMOPS_PLAN_KEY")
    assert judged(signed)[2] == 1  # unsigned: anyone could have written the seal
