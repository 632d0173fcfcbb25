"""Repair and apply --refresh-only through the real console script: `repair` plans the moves that put drifted
references back to their last applied values (all, or --target), with the plan/approval/apply flow and a plan
file that apply checks against the state; `apply --refresh-only` accepts drift into state instead."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import execute_sql, plan_changes


def succeeded(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 0, (code, out, err)
    assert "Traceback" not in out + err
    return out


def meddle(workspace: Path, dataset: str, value: str) -> None:
    """Someone moves a cache pointer by hand, outside kfmops."""
    execute_sql(workspace, "UPDATE kv SET value = ? WHERE key = ?", (value, f"kfm:dataset:{dataset}:current"))


def test_repair_restores_drifted_references_and_refresh_only_accepts_them(make_workspace, cli, live_snapshot):
    workspace = make_workspace(n=3)
    succeeded(cli(workspace, "apply", "--auto-approve"))
    applied = live_snapshot(workspace)
    meddle(workspace, "ds-000000", "v-hand-0")
    meddle(workspace, "ds-000001", "v-hand-1")
    assert cli(workspace, "drift")[0] == 2

    plan = workspace / "repair.json"
    out = succeeded(cli(workspace, "repair", "--target", "dataset.ds-000001", "--out", str(plan)))
    assert "dataset.ds-000001.cache" in out and "dataset.ds-000000" not in out
    saved = json.loads(plan.read_text())
    assert saved["operation"] == "repair"
    assert [(c["address"], c["before"]) for c in plan_changes(saved)] == [("dataset.ds-000001.cache", "v-hand-1")]
    assert "Repair complete" in succeeded(cli(workspace, "apply", str(plan)))
    kv = dict(live_snapshot(workspace)["kv"])
    assert kv["kfm:dataset:ds-000001:current"] == dict(applied["kv"])["kfm:dataset:ds-000001:current"]
    assert kv["kfm:dataset:ds-000000:current"] == "v-hand-0", "outside --target: left alone"

    code, _, err = cli(workspace, "repair", "--target", "dataset.nope")
    assert code == 1 and "unknown address 'dataset.nope'" in err, err
    code, _, err = cli(workspace, "repair", "--no-input")
    assert code == 1 and "--auto-approve" in err, err
    succeeded(cli(workspace, "repair", "--auto-approve"))
    assert live_snapshot(workspace) == applied
    assert cli(workspace, "drift")[0] == 0
    assert "Nothing to repair" in cli(workspace, "repair", "--auto-approve")[2]
    rows = json.loads(succeeded(cli(workspace, "history", "--json")))
    assert [r["operation"] for r in rows] == ["apply", "repair", "repair"]
    entries = [json.loads(line) for line in succeeded(cli(workspace, "ledger", "show", "--json")).splitlines()]
    assert [e["op_type"] for e in entries] == ["apply", "repair", "repair"]

    meddle(workspace, "ds-000002", "v-hand-2")
    code, _, err = cli(workspace, "apply", str(plan))
    assert code == 5, err  # a repair plan is used once
    succeeded(cli(workspace, "apply", "--refresh-only", "--auto-approve"))
    assert cli(workspace, "drift")[0] == 0, "the hand-made value is accepted into state"
    assert (
        json.loads(succeeded(cli(workspace, "state", "show", "dataset.ds-000002.cache", "--json")))["value"]
        == "v-hand-2"
    )
    assert dict(live_snapshot(workspace)["kv"])["kfm:dataset:ds-000002:current"] == "v-hand-2", "nothing written"
    assert cli(workspace, "plan", "--detailed-exitcode")[0] == 2, "git still wants its own value"
    code, _, err = cli(workspace, "apply", str(plan), "--refresh-only")
    assert code == 1 and "give no PLAN_FILE" in err, err
