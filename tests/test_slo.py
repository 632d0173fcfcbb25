"""SLOs and error budgets through the real console script: `kfmops slo` measures the history kept in the state
store (text, JSON, Markdown, OTel gauges); an exhausted budget refuses apply (exit 3, the SLO gate) but not
rollback or recover; --override-slo --reason goes on and is ledgered; clones sharing a postgres store share the
budget."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pgstate import DSN_ENV, clone, data_repository, drop
from servers import unique_tag

from benchmarks.generate import promote

SLO = """slo:
  apply_success: {objective: 0.9, window: 30d}
  rollback_p95_ms: 600000
  broken_links: 0
"""
FAIL_A_STAC_WRITE = {"KFMOPS_FAULT": "*/stac/*@write:1:EIO"}


def succeeded(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 0, (code, out, err)
    assert "Traceback" not in out + err
    return out


def measured(cli: Callable, workspace: Path) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in json.loads(succeeded(cli(workspace, "slo", "--format", "json")))}


def fail_an_apply(cli: Callable, workspace: Path, seed: int) -> None:
    promote(workspace, 1.0, seed)
    code, out, err = cli(workspace, "apply", "--auto-approve", env=FAIL_A_STAC_WRITE)
    assert code == 1 and "failed and was undone" in err, (code, out, err)


def test_an_exhausted_budget_refuses_apply_but_not_rollback_or_recover(make_workspace, cli):
    workspace = make_workspace(n=3)
    (workspace / "kfmops.yaml").write_text((workspace / "kfmops.yaml").read_text() + SLO)
    assert "No service level objectives" not in succeeded(cli(workspace, "slo"))
    succeeded(cli(workspace, "apply", "--auto-approve"))
    healthy = measured(cli, workspace)
    assert healthy["apply_success"]["measured"] == 1.0 and healthy["apply_success"]["remaining_budget"] == 1.0
    assert healthy["broken_links"]["measured"] == 0 and not any(r["exhausted"] for r in healthy.values())

    fail_an_apply(cli, workspace, 3)
    spent = measured(cli, workspace)["apply_success"]
    assert (spent["measured"], spent["events"], spent["exhausted"]) == (0.5, 2, True)
    assert spent["burn_rate"] == pytest.approx(5.0) and spent["remaining_budget"] == pytest.approx(-4.0)
    markdown = succeeded(cli(workspace, "slo", "--format", "markdown"))
    assert "| apply_success | 0.9 | 0.5 ratio | 30d | 2 | -400% | 5.00 | exhausted: apply refused |" in markdown
    assert "apply_success" in succeeded(cli(workspace, "slo"))
    gauges = [
        json.loads(line)
        for line in (workspace / "state" / "telemetry" / "metrics.jsonl").read_text().splitlines()
        if '"kfm.ops_slo_burn_rate"' in line
    ]
    assert gauges, "the burn rate is exported as an OTel gauge"

    code, out, err = cli(workspace, "apply", "--auto-approve")
    assert code == 3, (code, out, err)
    assert "SLO gate" in err and "apply_success: measured 0.5" in err and "--override-slo" in err
    code, _, err = cli(workspace, "apply", "--auto-approve", "--override-slo")
    assert code == 1 and "needs --reason" in err, err

    succeeded(cli(workspace, "rollback", "--last", "--auto-approve"))
    rows = json.loads(succeeded(cli(workspace, "history", "--json")))
    assert [(r["operation"], r["outcome"]) for r in rows][-1] == ("rollback", "committed")
    assert "nothing to recover" in succeeded(cli(workspace, "recover"))

    succeeded(cli(workspace, "apply", "--auto-approve", "--override-slo", "--reason", "INC-9: fix forward"))
    entries = [json.loads(line) for line in succeeded(cli(workspace, "ledger", "show", "--json")).splitlines()]
    last = entries[-1]
    assert (last["op_type"], last["outcome"], last["reason"]) == ("apply", "committed", "INC-9: fix forward")
    assert last["overrides"][0]["gate"] == "slo" and last["overrides"][0]["reason"] == "INC-9: fix forward"
    assert "apply_success: measured 0.5" in last["overrides"][0]["detail"][0]
    assert not any("overrides" in e for e in entries[:-1])


@pytest.fixture
def key(postgres_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv(DSN_ENV, postgres_dsn)
    name = unique_tag("slo")
    yield name
    drop(postgres_dsn, name)


def test_clones_sharing_a_postgres_store_share_the_error_budget(key, tmp_path, cli):
    a, _live = data_repository(tmp_path, key)
    (a / "kfmops.yaml").write_text((a / "kfmops.yaml").read_text() + SLO)
    b = clone(a, tmp_path / "b")
    succeeded(cli(a, "apply", "--auto-approve"))
    fail_an_apply(cli, a, 5)
    assert measured(cli, b)["apply_success"]["exhausted"] is True
    promote(b, 1.0, 6)
    code, _, err = cli(b, "apply", "--auto-approve")
    assert code == 3 and "SLO gate" in err, err
