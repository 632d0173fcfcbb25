"""`kfmops rollback` through the real console script: it restores exactly what an apply replaced (every
STAC file parsed-JSON equal, the same rows), can itself be rolled back, and refuses when a reference moved.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from conftest import execute_sql

from benchmarks.generate import promote

SEED = 1854


def succeeded(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 0, (code, out, err)
    assert "Traceback" not in out + err
    return out


def history(cli: Callable, workspace: Path) -> list[dict[str, Any]]:
    return json.loads(succeeded(cli(workspace, "history", "--json")))


def managed(cli: Callable, workspace: Path) -> dict[str, Any]:
    listing = json.loads(succeeded(cli(workspace, "state", "list", "--json")))
    return {r["address"]: r["value"] for r in listing["resources"]}


def test_rollback_last_restores_exactly_and_rolling_back_the_rollback_reapplies(make_workspace, cli, live_snapshot):
    workspace = make_workspace(n=6)
    succeeded(cli(workspace, "apply", "--auto-approve"))
    applied, applied_state = live_snapshot(workspace), managed(cli, workspace)
    promote(workspace, 0.5, SEED)  # some datasets, not side by side in the catalog
    succeeded(cli(workspace, "apply", "--auto-approve"))
    promoted, promoted_state = live_snapshot(workspace), managed(cli, workspace)
    moved = {a for a in applied_state if applied_state[a] != promoted_state[a]}
    assert 0 < len(moved) < len(applied_state)
    assert {a.rsplit(".", 1)[1] for a in moved} == {"stac", "graph", "search", "cache"}
    promotion = history(cli, workspace)[-1]["apply_id"]

    out = succeeded(cli(workspace, "rollback", "--last", "--auto-approve", "--auto-approve"))
    assert f"Rollback complete! 0 created, {len(moved)} updated, 0 deleted" in out
    assert live_snapshot(workspace) == applied, "every STAC file parsed-JSON equal, the same rows"
    assert managed(cli, workspace) == applied_state
    rollback = history(cli, workspace)[-1]
    assert (rollback["operation"], rollback["rolls_back"], rollback["outcome"]) == ("rollback", promotion, "committed")

    succeeded(cli(workspace, "rollback", "--last", "--auto-approve", "--auto-approve"))
    assert live_snapshot(workspace) == promoted
    assert managed(cli, workspace) == promoted_state
    assert history(cli, workspace)[-1]["rolls_back"] == rollback["apply_id"]


def test_rollback_of_an_apply_that_created_and_deleted_references_restores_them(make_workspace, cli, live_snapshot):
    workspace = make_workspace(n=3)
    first = workspace / "first.json"
    succeeded(cli(workspace, "plan", "--exclude", "dataset.ds-000002", "--out", str(first)))
    succeeded(cli(workspace, "apply", str(first)))
    before = live_snapshot(workspace)
    (file,) = (workspace / "desired").glob("*.yaml")
    documents = list(yaml.safe_load_all(file.read_text()))
    file.write_text(yaml.safe_dump_all([d for d in documents if d["metadata"]["name"] != "ds-000000"]))
    # ds-000000 is no longer desired (delete) and ds-000002 is applied for the first time (create)
    out = succeeded(cli(workspace, "apply", "--auto-approve"))
    assert "Apply complete! 4 created, 0 updated, 4 deleted" in out

    succeeded(cli(workspace, "rollback", "--last", "--auto-approve", "--auto-approve"))
    assert live_snapshot(workspace) == before


def test_rollback_after_a_hand_edit_refuses_with_the_conflict_and_changes_nothing(make_workspace, cli, live_snapshot):
    workspace = make_workspace(n=4)
    succeeded(cli(workspace, "apply", "--auto-approve"))
    promote(workspace, 1.0, SEED)
    succeeded(cli(workspace, "apply", "--auto-approve"))
    promotion = history(cli, workspace)[-1]["apply_id"]
    key = "kfm:dataset:ds-000001:current"
    now = dict(live_snapshot(workspace)["kv"])[key]
    execute_sql(workspace, "UPDATE kv SET value = 'v-by-hand' WHERE key = ?", (key,))
    edited = live_snapshot(workspace)

    code, out, err = cli(workspace, "rollback", "--last", "--auto-approve", "--auto-approve")
    assert code == 5, (code, out, err)
    assert f"cannot roll back {promotion}: references changed since it was applied" in err
    assert f"dataset.ds-000001.cache: plan expected '{now}', live is 'v-by-hand'" in err
    assert "Traceback" not in out + err
    assert live_snapshot(workspace) == edited, "nothing was changed, not even the references that did not move"
    assert history(cli, workspace)[-1]["apply_id"] == promotion
