"""Stale plans and compare-and-swap through the real console script: a plan whose references another apply
moved is refused (exit 5), a plan for other references still applies, and a reference that moves while an
apply runs stops it at that batch, undoing the batches before.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import execute_sql, plan_changes

from benchmarks.generate import promote

SEED = 1854
KINDS = ("stac", "graph", "search", "cache")


def succeeded(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 0, (code, out, err)
    assert "Traceback" not in out + err
    return out


def plan_for(cli: Callable, workspace: Path, name: str, *datasets: str) -> Path:
    path = workspace / f"{name}.json"
    targets = [arg for d in datasets for arg in ("--target", f"dataset.{d}")]
    succeeded(cli(workspace, "plan", "--out", str(path), *targets))
    return path


def values(cli: Callable, workspace: Path) -> dict[str, Any]:
    listing = json.loads(succeeded(cli(workspace, "state", "list", "--json")))
    return {r["address"]: r["value"] for r in listing["resources"]}


def test_a_plan_made_before_another_apply_moved_its_references_is_refused_but_one_for_others_applies(
    make_workspace, cli, live_snapshot
):
    workspace = make_workspace(n=4)
    succeeded(cli(workspace, "apply", "--auto-approve"))
    initial = values(cli, workspace)
    promote(workspace, 1.0, SEED)
    # three plans made at the same state serial
    first = plan_for(cli, workspace, "first", "ds-000000", "ds-000001")
    overlapping = plan_for(cli, workspace, "overlapping", "ds-000001")
    elsewhere = plan_for(cli, workspace, "elsewhere", "ds-000003")
    succeeded(cli(workspace, "apply", str(first)))
    after_first = live_snapshot(workspace)

    code, out, err = cli(workspace, "apply", str(overlapping))
    assert code == 5, (code, out, err)
    assert "applies since (now serial 2) changed 4 of its references: dataset.ds-000001.cache" in err
    assert "Make a new plan" in err
    assert live_snapshot(workspace) == after_first

    assert "Apply complete! 0 created, 4 updated, 0 deleted" in succeeded(cli(workspace, "apply", str(elsewhere)))
    planned = {c["address"]: c["after"] for p in (first, elsewhere) for c in plan_changes(json.loads(p.read_text()))}
    assert values(cli, workspace) == initial | planned, "ds-000002 was in no plan and kept its values"


def test_a_reference_moved_while_the_apply_runs_stops_it_at_that_batch_and_undoes_the_batches_before(
    make_workspace, cli, live_snapshot
):
    workspace = make_workspace(n=4)
    succeeded(cli(workspace, "apply", "--auto-approve"))
    promote(workspace, 1.0, SEED)
    plan = workspace / "plan.json"
    succeeded(cli(workspace, "plan", "--out", str(plan)))
    before = live_snapshot(workspace)
    key = "kfm:dataset:ds-000003:current"
    expected = dict(before["kv"])[key]
    # someone else moves a cache pointer at the moment the graph batch (the second) is written: after the
    # up-front check of every precondition, before the cache batch (the last) checks its own
    execute_sql(
        workspace,
        "CREATE TRIGGER meddle AFTER INSERT ON relationships "
        f"BEGIN UPDATE kv SET value = 'v-meddled' WHERE key = '{key}'; END",
    )

    code, out, err = cli(workspace, "apply", str(plan))
    assert code == 5, (code, out, err)
    assert "apply failed and was undone: live values moved since the plan was made" in err
    assert f"dataset.ds-000003.cache: plan expected '{expected}', live is 'v-meddled'" in err
    after = live_snapshot(workspace)
    assert after["kv"] == (before["kv"] - {(key, expected)}) | {(key, "v-meddled")}, "only the meddler's change"
    assert {k: v for k, v in after.items() if k != "kv"} == {k: v for k, v in before.items() if k != "kv"}

    entries = json.loads(succeeded(cli(workspace, "history", "--json")))
    assert entries[-1]["outcome"] == "aborted"
    archived = workspace / "state" / "wal" / "archive" / f"{entries[-1]['apply_id']}.jsonl"
    types = [json.loads(line)["type"] for line in archived.read_text().splitlines()]
    assert types.count("INTENT") == 3, "the cache batch never announced a write"
    assert types[-1] == "ABORTED"
