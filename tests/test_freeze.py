"""Freeze and resume through the real console script: red state kept in the state store, seen by every clone
that shares it (a shared state folder, and the postgres store), refusing apply, hotfix and rollback with
reason, who and since when, while plan and recover still work; both ledgered and shown in history and lock
status."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pgstate import DSN_ENV, clone, data_repository, drop
from servers import unique_tag

from benchmarks.generate import promote

FROZE = {"KFMOPS_OPERATOR": "alice@ops.example"}
RESUMED = {"KFMOPS_OPERATOR": "bob@ops.example"}


def succeeded(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 0, (code, out, err)
    assert "Traceback" not in out + err
    return out


def shared_folder_clones(make_workspace: Callable[..., Path], tmp_path: Path) -> tuple[Path, Path]:
    """Two checkouts of one workspace whose `state:` names one folder (and so one local backend), with the
    ledger beside it (its head is anchored in the state folder, so sharing one means sharing both)."""
    a = make_workspace(n=3)
    shared = tmp_path / "shared-state"
    config = a / "kfmops.yaml"
    text = config.read_text().replace("state: state\n", f"state: {shared}\n")
    config.write_text(text + f"ledger:\n  path: {shared}/ledger.jsonl\n")
    b = tmp_path / "clone-b"
    shutil.copytree(a, b)
    return a, b


def assert_frozen_for(cli: Callable, other: Path, ledger_owner: Path) -> None:
    """`other` (not the clone that froze) is refused by every gated command and can still plan and recover."""
    promote(other, 1.0, 7)
    code, out, err = cli(other, "apply", "--auto-approve")
    assert code == 3, (code, out, err)
    for said in ("freeze gate", "alice@ops.example", "INC-7: corrupt tiles", "since 20", "kfmops resume"):
        assert said in err, err
    code, _, err = cli(other, "rollback", "--last", "--auto-approve")
    assert code == 3 and "freeze gate" in err, err
    code, _, err = cli(other, "hotfix", "dataset.ds-00000", "--set", "version=v1", "--reason", "urgent")
    assert code == 3 and "freeze gate" in err, err
    code, _, err = cli(other, "plan", "--detailed-exitcode")
    assert code == 2, err
    assert "nothing to recover" in succeeded(cli(other, "recover"))

    status = json.loads(succeeded(cli(other, "lock", "status", "--json")))
    assert status["freeze"]["who"] == "alice@ops.example" and status["freeze"]["reason"] == "INC-7: corrupt tiles"
    assert "Frozen until 'kfmops resume': by alice@ops.example" in succeeded(cli(other, "lock", "status"))
    rows = json.loads(succeeded(cli(other, "history", "--json")))
    assert [r["operation"] for r in rows][-1] == "freeze"

    succeeded(cli(other, "resume", "--reason", "INC-7 resolved", env=RESUMED))
    assert "freeze" not in json.loads(succeeded(cli(other, "lock", "status", "--json")))
    assert "Apply complete!" in succeeded(cli(other, "apply", "--auto-approve"))
    rows = json.loads(succeeded(cli(ledger_owner, "history", "--json")))
    assert [r["operation"] for r in rows] == ["apply", "freeze", "resume", "apply"]
    # each clone ledgers what it did (a folder store's ledger is in the clone; the postgres store's is shared)
    entries = {
        entry["apply_id"]: entry
        for workspace in (ledger_owner, other)
        for line in succeeded(cli(workspace, "ledger", "show", "--json")).splitlines()
        if (entry := json.loads(line))["op_type"] in {"freeze", "resume"}
    }
    freezes = [(e["op_type"], e["operator"], e["reason"]) for e in sorted(entries.values(), key=lambda e: e["time"])]
    assert freezes == [
        ("freeze", "alice@ops.example", "INC-7: corrupt tiles"),
        ("resume", "bob@ops.example", "INC-7 resolved"),
    ]
    succeeded(cli(ledger_owner, "ledger", "verify"))
    succeeded(cli(other, "ledger", "verify"))


def test_a_freeze_in_one_clone_sharing_a_state_folder_stops_the_other(make_workspace, tmp_path, cli):
    a, b = shared_folder_clones(make_workspace, tmp_path)
    succeeded(cli(a, "apply", "--auto-approve"))
    succeeded(cli(a, "freeze", "--reason", "INC-7: corrupt tiles", env=FROZE))
    assert_frozen_for(cli, b, a)


@pytest.fixture
def key(postgres_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv(DSN_ENV, postgres_dsn)
    name = unique_tag("freeze")
    yield name
    drop(postgres_dsn, name)


def test_a_freeze_in_one_clone_on_the_postgres_store_stops_the_other(key, tmp_path, cli):
    a, _live = data_repository(tmp_path, key)
    b = clone(a, tmp_path / "b")
    succeeded(cli(a, "apply", "--auto-approve"))
    succeeded(cli(a, "freeze", "--reason", "INC-7: corrupt tiles", env=FROZE))
    assert_frozen_for(cli, b, a)


def test_a_freeze_until_a_time_lifts_itself_and_bad_input_is_one_line(make_workspace, cli):
    workspace = make_workspace(n=2)
    code, _, err = cli(workspace, "freeze", "--reason", "x", "--until", "next tuesday")
    assert code == 1 and "--until" in err and "ISO 8601" in err, err
    code, _, err = cli(workspace, "freeze", "--reason", " ")
    assert code == 1 and "needs --reason" in err, err
    code, _, err = cli(workspace, "resume", "--reason", "nothing frozen")
    assert code == 1 and "not frozen" in err, err
    code, _, err = cli(workspace, "freeze", "--reason", "x", "--until", "2000-01-01T00:00")
    assert code == 1 and "already past" in err, err

    out = json.loads(succeeded(cli(workspace, "freeze", "--reason", "deploy window", "--until", "20s", "--json")))
    assert out["frozen"] is True and out["until"] > out["since"]
    assert cli(workspace, "apply", "--auto-approve")[0] == 3
    ends = datetime.fromisoformat(out["until"])
    time.sleep(max(0.0, (ends - datetime.now(UTC)).total_seconds()) + 0.5)
    assert "Apply complete!" in succeeded(cli(workspace, "apply", "--auto-approve"))
