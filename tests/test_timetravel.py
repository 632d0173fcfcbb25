"""Time travel through the real CLI: `rollback --to` / `--to-time`, `state show --at` and `diff`, read from history.

Five applies move overlapping datasets; what the local backend holds after each is read directly (sqlite3 and
the STAC files, no kfmops code). Rolling back to the second apply must give back, reference by reference, what
was live right after it; rolling back that rollback gives back the latest; a reference changed outside kfmops in
between stops the rollback, named, unless --force-live.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from conftest import Cli, execute_sql

KINDS = ("stac", "graph", "search", "cache")
PROMOTIONS = [("ds-000000", "v3"), ("ds-000001", "v1"), ("ds-000000", "v1"), ("ds-000002", "v3"), ("ds-000001", "v3")]


def promote(workspace: Path, dataset: str, version: str) -> None:
    for file in sorted((workspace / "desired").glob("*.yaml")):
        documents = list(yaml.safe_load_all(file.read_text()))
        for document in documents:
            if document["metadata"]["name"] == dataset:
                document["spec"]["version"] = version
                file.write_text(yaml.safe_dump_all(documents, sort_keys=False))
                return
    raise AssertionError(f"no document for {dataset}")


def last_apply(cli: Cli, workspace: Path) -> dict[str, Any]:
    code, out, err = cli(workspace, "history", "--json")
    assert code == 0, err
    return json.loads(out)[-1]


def applied(cli: Cli, workspace: Path, *args: str) -> str:
    code, _, err = cli(workspace, *args, "--auto-approve")
    assert code == 0, err
    return str(last_apply(cli, workspace)["apply_id"])


def test_rollback_to_a_point_and_back(
    make_workspace: Callable[..., Path], cli: Cli, live_snapshot: Callable[[Path], dict[str, Any]]
) -> None:
    workspace = make_workspace(n=3, versions=3)
    ids = [applied(cli, workspace, "apply")]
    after = {ids[0]: live_snapshot(workspace)}
    for dataset, version in PROMOTIONS:
        promote(workspace, dataset, version)
        ids.append(applied(cli, workspace, "apply"))
        after[ids[-1]] = live_snapshot(workspace)
    target, latest = ids[1], ids[-1]
    assert after[target] != after[latest]

    code, out, err = cli(workspace, "state", "show", "--at", target, "--json")
    assert code == 0, err
    then = {r["address"]: r for r in json.loads(out)["resources"]}
    assert then["dataset.ds-000000.cache"]["value"] == "v3" and then["dataset.ds-000002.cache"]["value"] == "v2"
    code, out, err = cli(workspace, "state", "show", "dataset.ds-000001.search", "--at", ids[2], "--json")
    assert code == 0, err
    assert json.loads(out)["value"] == {"indices": ["kfm-ds-000001-v1"], "write_index": None}

    code, out, err = cli(workspace, "diff", target, latest, "--json")
    assert code == 0, err
    moved = {m["address"]: m for m in json.loads(out)["moved"]}
    # ds-000001 moved (v3 -> v1) and came back (v1 -> v3): nothing moved between the two points
    assert set(moved) == {f"dataset.{d}.{k}" for d in ("ds-000000", "ds-000002") for k in KINDS}
    assert (moved["dataset.ds-000000.cache"]["before"], moved["dataset.ds-000000.cache"]["after"]) == ("v3", "v1")
    assert moved["dataset.ds-000002.graph"]["after_version"] == "v3"
    code, out, err = cli(workspace, "diff", ids[3], ids[4])
    assert code == 0, err
    assert "~ dataset.ds-000002.cache  version v2 -> v3" in out and "ds-000000" not in out  # ds-000002 only

    code, out, err = cli(workspace, "rollback", "--to", target, "--dry-run")
    assert code == 0, err
    assert f"Rollback to the point right after {target}, undoing 4 committed apply(s)" in out
    assert live_snapshot(workspace) == after[latest]  # a dry run changes nothing

    rolled = applied(cli, workspace, "rollback", "--to", target, "--reason", "INC-9: back to the second apply")
    assert live_snapshot(workspace) == after[target]
    assert last_apply(cli, workspace)["reason"] == "INC-9: back to the second apply"
    code, out, err = cli(workspace, "diff", target, rolled, "--json")
    assert code == 0 and json.loads(out)["moved"] == []
    code, out, err = cli(workspace, "plan", "--detailed-exitcode")
    assert code == 2  # git still says what the latest apply did

    code, out, err = cli(workspace, "ledger", "verify")
    assert code == 0, out
    applied(cli, workspace, "rollback", "--last")  # the rollback of that rollback
    assert live_snapshot(workspace) == after[latest]

    # changed outside kfmops in between: refused by name, unless --force-live
    execute_sql(workspace, "UPDATE kv SET value = 'v2' WHERE key = 'kfm:dataset:ds-000002:current'")
    outside = live_snapshot(workspace)
    code, _, err = cli(workspace, "rollback", "--to", target, "--auto-approve")
    assert code == 5
    assert "dataset.ds-000002.cache: kfmops last left 'v3', live is 'v2'" in err and "--force-live" in err
    assert live_snapshot(workspace) == outside
    applied(cli, workspace, "rollback", "--to", target, "--force-live")
    assert live_snapshot(workspace) == after[target]


def test_rollback_to_a_time_and_its_bad_input(make_workspace: Callable[..., Path], cli: Cli) -> None:
    workspace = make_workspace(n=2, versions=2)
    first = applied(cli, workspace, "apply")
    finished = last_apply(cli, workspace)["finished"]
    code, _, err = cli(workspace, "rollback", "--to", first, "--auto-approve")
    assert code == 1 and "nothing to roll back: no committed apply after" in err
    promote(workspace, "ds-000001", "v2")
    applied(cli, workspace, "apply")
    code, out, err = cli(workspace, "rollback", "--to-time", finished, "--dry-run")
    assert code == 0, err
    assert f"right after {first}, undoing 1 committed apply(s)" in out
    code, out, err = cli(workspace, "rollback", "--to-time", "2000-01-01T00:00:00Z", "--dry-run")
    assert code == 0, err
    assert "the point before the first apply, undoing 2 committed apply(s)" in out
    assert "- dataset.ds-000000.cache" in out  # before the first apply nothing was there
    for args, message in (
        (("--to", "apply-nope"), "no apply with id 'apply-nope'"),
        (("--to-time", "yesterday"), "'yesterday' is not an ISO 8601 time"),
        (("--to", first, "--last"), "--to and --to-time go without APPLY_ID, --last and --out"),
        (("--last", "--force-live"), "--force-live goes with --to or --to-time"),
    ):
        code, _, err = cli(workspace, "rollback", *args, "--dry-run")
        assert code == 1 and message in err, err
    code, _, err = cli(workspace, "state", "show", "--at", "apply-nope")
    assert code == 1 and "no apply with id 'apply-nope'" in err
