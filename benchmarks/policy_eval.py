"""Time policy evaluation (one query per plan) over a synthetic plan of N changes.

    python -m benchmarks.policy_eval --changes 10000
    python -m benchmarks.policy_eval --changes 10000 --violations 0.01 --repeat 5

The plan has the shape `kfmops show PLAN --format json` gives: changes/4 datasets, each promoted from
one version to the next, so each contributes four updates (stac, graph, search, cache), and a
`datasets` record per dataset. CARE metadata is mixed like the Kansas example: mostly open data, some
tribal datasets published with consent, some sovereign ones kept internal, some H3-masked heritage.
With --violations, that fraction of datasets breaks one default rule each, in turn.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

from kfmops.governance.policy import DEFAULT_POLICY_DIR, evaluate, load_policies

VERSIONS = ("v1", "v2", "v3")
VIOLATIONS = ("care.label_required", "sovereignty.consent_required", "heritage.masking_required", "provenance.required")


def care_for(index: int, rng: random.Random) -> dict[str, Any]:
    """CARE metadata for dataset number index: 90% open, 5% tribal with consent, 3% sovereign, 2% heritage."""
    bucket = index % 100
    if bucket < 90:
        return {
            "label": rng.choice(["open", "attribution"]),
            "sovereignty": "none",
            "visibility": "public",
            "review": "approved",
        }
    if bucket < 95:
        return {
            "label": "attribution",
            "sovereignty": "tribal",
            "authority": f"Nation {index}",
            "visibility": "public",
            "review": "approved",
            "consent": {
                "authority": f"Nation {index}",
                "reference": f"DSA-{index}",
                "granted": "2025-01-01",
                "expires": "2099-01-01",
            },
        }
    if bucket < 98:
        return {
            "label": "restricted",
            "sovereignty": "sovereign",
            "authority": f"Nation {index}",
            "visibility": "internal",
            "review": "approved",
            "consent": {"authority": f"Nation {index}", "reference": f"DSA-{index}"},
        }
    return {
        "label": "community-use-only",
        "sovereignty": "tribal",
        "heritage": True,
        "authority": f"Nation {index}",
        "visibility": "public",
        "review": "approved",
        "consent": {"authority": f"Nation {index}", "reference": f"THPO-{index}", "granted": "2025-01-01"},
    }


def version_record(name: str, version: str, heritage: bool) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": version,
        "provenance": {"source": f"survey of {name} {version}", "activity": "derive"},
    }
    if heritage:
        record["masking"] = {"method": "h3", "resolution": 7, "coordinates_removed": True}
    return record


def cell_facts(version: str) -> dict[str, Any]:
    """Facts from the data of a heritage version, as governance.facts gathers them: H3 cells at r7."""
    return {
        "status": "gathered",
        "version": version,
        "items": 40,
        "geometry_types": ["Polygon"],
        "geometries": {"h3_cell": 40, "exact": 0, "region": 0, "none": 0},
        "coordinate_decimals": 7,
        "h3_resolutions": [7],
        "finest_resolution": 7,
        "coarsest_resolution": 7,
        "declared_h3_resolutions": [7],
        "declared_coordinates_removed": [True],
        "licence": "CC-BY-4.0",
        "sites_per_cell_min": 3,
    }


def break_rule(record: dict[str, Any], rule: str) -> None:
    care, target = record["care"], record["target"]
    if rule == "care.label_required":
        care.pop("label", None)
    elif rule == "sovereignty.consent_required":
        care.update({"sovereignty": "sovereign", "visibility": "public"})
        care.pop("consent", None)
    elif rule == "heritage.masking_required":
        care["heritage"] = True
        target["masking"] = {"method": "h3", "resolution": 12, "coordinates_removed": True}
    else:
        target["provenance"] = {}


def changes_for(name: str, old: str, new: str) -> list[dict[str, Any]]:
    """The four updates of one dataset promotion from version old to new, as the planner writes them."""
    catalog, paths = "catalog.json", [f"{name}/{v}/collection.json" for v in VERSIONS]
    current = f"{name}/{new}/collection.json"
    stac_after: dict[str, Any] = {catalog: {"child": [current]}}
    for i, path in enumerate(paths):
        links: dict[str, Any] = {"deprecated": path != current, "latest-version": [current]}
        if i:
            links["predecessor-version"] = [paths[i - 1]]
        if i < len(paths) - 1:
            links["successor-version"] = [paths[i + 1]]
        stac_after[path] = links
    stac_before = {document: dict(links) for document, links in stac_after.items()}
    stac_before[catalog] = {"child": [f"{name}/{old}/collection.json"]}
    common = {
        "backend": "local",
        "dataset": name,
        "action": "update",
        "reason": "desired version differs",
        "source": f"desired/{name}.yaml:1",
        "precondition": "sha256:0123456789abcdef",
    }
    return [
        {
            **common,
            "address": f"dataset.{name}.stac",
            "kind": "stac",
            "locator": {"slots": [{"document": catalog, "field": "child", "scope": paths}]},
            "before": stac_before,
            "after": stac_after,
        },
        {
            **common,
            "address": f"dataset.{name}.graph",
            "kind": "graph",
            "locator": {
                "from": {"label": "Dataset", "key": "id", "id": name},
                "type": "CURRENT_VERSION",
                "to": {"label": "DatasetVersion", "key": "id"},
            },
            "before": f"{name}@{old}",
            "after": f"{name}@{new}",
        },
        {
            **common,
            "address": f"dataset.{name}.search",
            "kind": "search",
            "locator": {"alias": f"kfm-{name}"},
            "before": {"indices": [f"kfm-{name}-{old}"], "write_index": None},
            "after": {"indices": [f"kfm-{name}-{new}"], "write_index": None},
        },
        {
            **common,
            "address": f"dataset.{name}.cache",
            "kind": "cache",
            "locator": {"key": f"kfm:dataset:{name}:current", "invalidate": [f"kfm:cache:{name}:*"]},
            "before": old,
            "after": new,
        },
    ]


def synthetic_plan(changes: int, violations: float = 0.0, seed: int = 1854) -> dict[str, Any]:
    """A plan document of `changes` changes (rounded down to a multiple of 4)."""
    rng = random.Random(seed)
    all_changes: list[dict[str, Any]] = []
    datasets: dict[str, Any] = {}
    facts: dict[str, Any] = {}
    broken = 0
    for index in range(changes // 4):
        name = f"ds-{index:06d}"
        old, new = rng.sample(VERSIONS, 2)
        care = care_for(index, rng)
        versions = [version_record(name, v, bool(care.get("heritage"))) for v in VERSIONS]
        record = {
            "address": f"dataset.{name}",
            "source": f"desired/{name}.yaml:1",
            "title": name,
            "version": new,
            "versions": versions,
            "target": next(v for v in versions if v["id"] == new),
            "care": care,
        }
        if rng.random() < violations:
            break_rule(record, VIOLATIONS[broken % len(VIOLATIONS)])
            broken += 1
        datasets[name] = record
        facts[name] = cell_facts(new) if care.get("heritage") else {"status": "gathered", "version": new, "items": 0}
        all_changes.extend(changes_for(name, old, new))
    return {
        "format_version": 1,
        "kfmops_version": "0.1.0",
        "plan_id": "plan-20260101T000000Z-000000",
        "created_at": "2026-01-01T00:00:00+00:00",
        "operation": "apply",
        "workspace": "/bench",
        "git": {},
        "desired_digest": None,
        "state": {"lineage": "bench", "serial": 1},
        "origin": {},
        "changes": all_changes,
        "datasets": datasets,
        "exposure": [],
        "facts": facts,
        "drift": [],
        "policy": {"decision": "allow", "findings": []},
        "summary": {"create": 0, "update": len(all_changes), "delete": 0, "no_op": 0},
        "digest": "sha256:" + "0" * 64,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=10000, help="changes in the plan (4 per dataset)")
    parser.add_argument("--violations", type=float, default=0.0, help="fraction of datasets that break a rule")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (the median is reported)")
    parser.add_argument("--seed", type=int, default=1854)
    args = parser.parse_args(argv)
    plan = synthetic_plan(args.changes, args.violations, args.seed)
    policies = load_policies(DEFAULT_POLICY_DIR, [])
    settings = {"today": "2026-01-01"}
    timings, result = [], None
    for _ in range(max(1, args.repeat)):
        start = time.perf_counter()
        result = evaluate(plan, policies, settings)
        timings.append(time.perf_counter() - start)
    assert result is not None
    denied = sum(1 for finding in result.findings if finding.severity == "deny")
    print(
        f"policy evaluate: {len(plan['changes'])} changes, {len(plan['datasets'])} datasets, "
        f"{len(policies)} policy files: median {statistics.median(timings):.3f}s "
        f"(min {min(timings):.3f}s, max {max(timings):.3f}s, {len(timings)} runs); "
        f"decision {result.decision}, {denied} deny findings"
    )


if __name__ == "__main__":
    main()
