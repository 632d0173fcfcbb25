"""Operator experience through the real console script: rollback is a reviewed plan (prompt, --dry-run,
--out then apply, a manifest for auditors), approval read from a piped stdin, and the --json event stream."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from conftest import KFMOPS

from benchmarks.generate import promote
from kfmops.schemas import validator


def succeeded(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 0, (code, out, err)
    assert "Traceback" not in out + err
    return out


def piped(workspace: Path, answer: str, *args: str) -> tuple[int, str, str]:
    """The console script with `answer` piped to its stdin (not a terminal)."""
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    done = subprocess.run(
        [str(KFMOPS), "-C", str(workspace), *args], input=answer, capture_output=True, text=True, env=env, timeout=120
    )
    return done.returncode, done.stdout, done.stderr


def promoted(make_workspace: Any, cli: Any) -> Path:
    workspace = make_workspace(n=3)
    succeeded(cli(workspace, "apply", "--auto-approve"))
    promote(workspace, 1.0, 1854)
    succeeded(cli(workspace, "apply", "--auto-approve"))
    return workspace


def test_rollback_shows_the_plan_and_refuses_without_approval(make_workspace, cli, live_snapshot):
    workspace = promoted(make_workspace, cli)
    before = live_snapshot(workspace)
    code, out, err = cli(workspace, "rollback", "--last")  # stdin closed, not a terminal
    assert code == 1, (out, err)
    assert "Rollback of apply-" in out and "to update" in out, "the inverse plan is shown first"
    assert "pass --auto-approve" in err
    assert live_snapshot(workspace) == before

    code, out, err = piped(workspace, "no\n", "rollback", "--last")
    assert code == 1 and "Rollback cancelled" in err
    assert live_snapshot(workspace) == before
    code, out, err = piped(workspace, "yes\n", "rollback", "--last", "--no-input")
    assert code == 1 and "Input is disabled" in err
    code, out, err = piped(workspace, "yes\n", "rollback", "--last")
    assert code == 0, err
    assert "Rollback complete!" in out


def test_a_dry_run_prints_an_audit_report_and_changes_nothing(make_workspace, cli, live_snapshot):
    workspace = promoted(make_workspace, cli)
    before = live_snapshot(workspace)
    out = succeeded(cli(workspace, "rollback", "--last", "--dry-run"))
    assert "Audit report (dry run: nothing was changed)" in out
    assert "would move:  12 references of 3 datasets" in out
    assert re.search(r"dataset ds-000000: version v\d -> v\d", out), out
    assert live_snapshot(workspace) == before
    entries = json.loads(succeeded(cli(workspace, "history", "--json")))
    assert [e["operation"] for e in entries] == ["apply", "apply"]


def test_a_saved_rollback_plan_applies_like_an_approved_rollback(make_workspace, cli, live_snapshot, tmp_path):
    workspace = promoted(make_workspace, cli)
    twin = tmp_path / "twin"
    subprocess.run(["cp", "-a", str(workspace), str(twin)], check=True)
    plan = tmp_path / "rollback.json"
    succeeded(cli(workspace, "rollback", "--last", "--out", str(plan)))
    assert json.loads(plan.read_text())["operation"] == "rollback"
    succeeded(cli(workspace, "apply", str(plan)))
    succeeded(cli(twin, "rollback", "--last", "--auto-approve"))
    assert live_snapshot(workspace) == live_snapshot(twin)
    (entry,) = [e for e in json.loads(succeeded(cli(workspace, "history", "--json"))) if e["operation"] == "rollback"]
    assert entry["rolls_back"]

    body = json.loads(plan.read_text())  # a forged rollback plan file (digest recomputed) is refused
    body["changes"][0]["after"] = "v-forged"
    import hashlib

    unsigned = {k: v for k, v in body.items() if k != "digest"}
    canonical = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    body["digest"] = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    plan.write_text(json.dumps(body))
    code, _, err = cli(twin, "apply", str(plan))
    assert code == 5, err


def test_each_rollback_writes_a_manifest_for_auditors(make_workspace, cli):
    workspace = promoted(make_workspace, cli)
    promotion = json.loads(succeeded(cli(workspace, "history", "--json")))[-1]["apply_id"]
    succeeded(cli(workspace, "rollback", "--last", "--auto-approve"))
    (path,) = (workspace / "docs" / "reports" / "audit" / "rollbacks").glob("*.json")
    manifest = json.loads(path.read_text())
    assert list(validator("rollback-manifest").iter_errors(manifest)) == []
    assert manifest["undoes"] == promotion
    assert len(manifest["changes"]) == 12 and manifest["ledger"]["seq"] == 3


def test_the_json_stream_validates_against_its_schema(make_workspace, cli):
    workspace = make_workspace(n=2)
    out = succeeded(cli(workspace, "apply", "--auto-approve", "--json"))
    events = [json.loads(line) for line in out.splitlines()]
    schema = validator("event")
    assert all(list(schema.iter_errors(event)) == [] for event in events), events
    kinds = [event["type"] for event in events]
    assert kinds.count("planned_change") == 8
    assert kinds[-1] == "apply_complete" and events[-1]["outcome"] == "committed"
    assert {"batch_start", "batch_finish"} <= set(kinds)
    promote(workspace, 1.0, 1854)
    succeeded(cli(workspace, "apply", "--auto-approve"))
    out = succeeded(cli(workspace, "rollback", "--last", "--auto-approve", "--json"))
    assert json.loads(out.splitlines()[-1])["operation"] == "rollback"


def test_apply_reads_yes_from_a_piped_stdin(make_workspace):
    workspace = make_workspace(n=1)
    code, out, err = piped(workspace, "yes\n", "apply")
    assert code == 0, err
    assert "Apply complete!" in out


def test_a_big_plan_is_one_summary_comment_with_the_full_plan_as_artifact(make_workspace, cli, tmp_path):
    workspace = make_workspace(n=250)
    comment = tmp_path / "comment"
    out = succeeded(cli(workspace, "plan", "--format", "markdown", "--split", str(comment), "--out", "p.json"))
    parts = sorted(comment.glob("comment-*.md"))
    assert len(parts) == 1, "one comment, not one per 65 KB"
    text = parts[0].read_text()
    assert "#### Changes per dataset" in text and "<details>" not in text
    assert "The full plan is attached as the artifact `p.json`" in text
    assert out.count("\n| `ds-") == 250
    full = succeeded(cli(workspace, "show", str(workspace / "p.json"), "--format", "markdown", "--detail", "full"))
    assert full.count("<details>") >= 1000
