"""The workspace file lock through the real console script: one applier at a time, a holder named, a dead
holder's record reported stale and cleared only by its exact id, and the lock freed on every way out.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import Background, execute_sql, plan_changes

from benchmarks.generate import promote
from kfmops.stores.folder_lock import FolderLock

SEED = 1854
CI = {
    "KFMOPS_OPERATOR": "ops@kfm.example",
    "KFMOPS_CI_RUN_URL": "https://ci.kfm.example/runs/7",
    "GITHUB_SERVER_URL": "",  # so that a GitHub Actions run of this suite does not name itself instead
    "GITHUB_REPOSITORY": "",
    "GITHUB_RUN_ID": "",
}


def succeeded(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 0, (code, out, err)
    assert "Traceback" not in out + err
    return out


def wait_for(condition: Callable[[], bool], process: Background) -> bool:
    """Poll `condition` while `process` runs; False if it ended first."""
    while process.running():
        if condition():
            return True
        time.sleep(0.001)
    return condition()


def lock_status(cli: Callable, workspace: Path) -> dict[str, Any]:
    return json.loads(succeeded(cli(workspace, "lock", "status", "--json")))


FREE = {"held": False, "stale": False, "note": "", "info": None}


def plans(cli: Callable, workspace: Path, *names: str) -> list[Path]:
    """Plan files made now, one per name (the same changes, made at the same state serial)."""
    paths = [workspace / f"{name}.json" for name in names]
    for path in paths:
        succeeded(cli(workspace, "plan", "--out", str(path)))
    return paths


@pytest.fixture
def promoted(make_workspace, cli, live_snapshot) -> tuple[Path, dict[str, Any]]:
    """A workspace of 12 datasets, applied, then every pointer moved in desired state (48 updates to apply)."""
    workspace = make_workspace(n=12)
    succeeded(cli(workspace, "apply", "--auto-approve"))
    promote(workspace, 1.0, SEED)
    return workspace, live_snapshot(workspace)


def committed(cli: Callable, workspace: Path) -> list[str]:
    entries = json.loads(succeeded(cli(workspace, "history", "--json")))
    return [e["plan_id"] for e in entries if e["outcome"] == "committed"]


def test_lock_status_names_a_running_apply_and_a_killed_holder_is_stale_until_cleared_by_id(
    promoted, cli, cli_process, live_snapshot
):
    workspace, before = promoted
    (plan,) = plans(cli, workspace, "promote")
    plan_id = json.loads(plan.read_text())["plan_id"]
    holder = cli_process(workspace, "apply", str(plan), env=CI)
    assert wait_for((workspace / "state" / "lock.json").exists, holder), holder.finish()
    holder.signal(signal.SIGSTOP)  # a holder that is alive and stays inside its lock

    status = lock_status(cli, workspace)
    info = status["info"]
    assert (status["held"], status["stale"]) == (True, False)
    assert {k: info[k] for k in ("operation", "who", "pid", "expires", "plan_id", "ci_run_url")} == {
        "operation": "apply",
        "who": "ops@kfm.example",
        "pid": holder.pid,
        "expires": None,  # a file lock has no lease: the kernel frees it when the holder dies
        "plan_id": plan_id,
        "ci_run_url": "https://ci.kfm.example/runs/7",
    }
    assert str(uuid.UUID(info["id"])) == info["id"]
    assert datetime.fromisoformat(info["created"]).tzinfo is not None

    code, out, err = cli(workspace, "apply", str(plan))
    assert code == 4, (code, out, err)
    assert f"lock {info['id']} held by ops@kfm.example (pid {holder.pid}) for apply" in err
    assert "https://ci.kfm.example/runs/7" in err
    code, out, err = cli(workspace, "lock", "force-unlock", info["id"])
    assert code == 4, (code, out, err)
    assert "still holds its file lock" in err

    holder.signal(signal.SIGKILL)
    assert holder.finish()[0] == -signal.SIGKILL
    status = lock_status(cli, workspace)
    assert (status["held"], status["stale"], status["info"]["id"]) == (False, True, info["id"])
    assert f"left by pid {holder.pid}" in status["note"]
    assert "no longer running" in status["note"]

    for wrong in (str(uuid.uuid4()), info["id"][:8]):
        code, out, err = cli(workspace, "lock", "force-unlock", wrong)
        assert code == 1, (code, out, err)
        assert f"no lock with id '{wrong}' (current: {info['id']})" in err
    assert lock_status(cli, workspace)["stale"] is True
    assert f"Removed lock {info['id']}" in succeeded(cli(workspace, "lock", "force-unlock", info["id"]))
    assert lock_status(cli, workspace) == FREE

    if list((workspace / "state" / "wal").glob("*.jsonl")):  # it died after BEGIN: undo what it did
        succeeded(cli(workspace, "recover"))
    assert live_snapshot(workspace) == before


def test_an_apply_while_another_process_holds_the_lock_exits_4_naming_it_and_changes_nothing(
    promoted, cli, live_snapshot
):
    workspace, before = promoted
    (plan,) = plans(cli, workspace, "promote")
    with FolderLock(workspace / "state").held("apply", "plan-of-the-test", 0) as info:
        for command in (("apply", str(plan)), ("rollback", "--last", "--auto-approve", "--auto-approve"), ("recover",)):
            code, out, err = cli(workspace, *command)
            assert code == 4, (command, code, out, err)
            assert f"lock {info.id} held by {info.who} (pid {os.getpid()}) for apply" in err
    assert live_snapshot(workspace) == before
    assert lock_status(cli, workspace) == FREE
    assert "Apply complete!" in succeeded(cli(workspace, "apply", str(plan)))


def test_with_lock_timeout_a_waiting_apply_applies_once_the_holder_lets_go(promoted, cli, cli_process, live_snapshot):
    workspace, before = promoted
    (plan,) = plans(cli, workspace, "promote")
    with FolderLock(workspace / "state").held("apply", "plan-of-the-test", 0):
        waiting = cli_process(workspace, "apply", str(plan), "--lock-timeout", "60")
        time.sleep(1.5)
        assert waiting.running(), f"it should wait for the lock, not give up: {waiting.finish()}"
        assert live_snapshot(workspace) == before
    assert "Apply complete!" in succeeded(waiting.finish())
    assert live_snapshot(workspace) != before


def test_two_applies_waiting_for_the_lock_with_the_same_changes_one_applies_and_one_is_stale(
    promoted, cli, cli_process
):
    workspace, _ = promoted
    first, second = plans(cli, workspace, "first", "second")
    with FolderLock(workspace / "state").held("apply", "plan-of-the-test", 0):
        waiting = [cli_process(workspace, "apply", str(plan), "--lock-timeout", "60") for plan in (first, second)]
        time.sleep(1.5)
        assert all(process.running() for process in waiting)
    results = sorted(process.finish() for process in waiting)
    assert [code for code, _, _ in results] == [0, 5], results
    assert "Make a new plan" in results[1][2]
    ids = {json.loads(p.read_text())["plan_id"] for p in (first, second)}
    assert len(set(committed(cli, workspace)) & ids) == 1


def test_two_applies_racing_for_the_lock_exactly_one_applies(promoted, cli, cli_process):
    workspace, _ = promoted
    first, second = plans(cli, workspace, "first", "second")
    racing = [cli_process(workspace, "apply", str(plan)) for plan in (first, second)]
    results = sorted(process.finish() for process in racing)
    codes = [code for code, _, _ in results]
    assert codes in ([0, 4], [0, 5]), results  # refused while the other holds the lock, or stale once it is done
    assert ("workspace is locked: lock" if codes[1] == 4 else "Make a new plan") in results[1][2]
    assert "another process" not in results[1][2], "the holder is named even when it took the lock an instant ago"
    ids = {json.loads(p.read_text())["plan_id"] for p in (first, second)}
    assert len(set(committed(cli, workspace)) & ids) == 1
    assert lock_status(cli, workspace) == FREE


# The lock on every way out of a failed apply ---------------------------------------------------------


def refuse_writes(workspace: Path, key: str, value: str | None = None) -> None:
    """A SQLite trigger in the local backend that makes writing `key` (= `value`) fail, as a full disk would."""
    when = f"NEW.key = '{key}'" + (f" AND NEW.value = '{value}'" if value else "")
    execute_sql(
        workspace,
        f"CREATE TRIGGER refuse BEFORE INSERT ON kv WHEN {when} BEGIN SELECT RAISE(ABORT, 'injected fault'); END",
    )


def test_a_failed_apply_is_undone_and_frees_the_lock(promoted, cli, live_snapshot):
    workspace, before = promoted
    (plan,) = plans(cli, workspace, "promote")
    target = next(c for c in plan_changes(json.loads(plan.read_text())) if c["kind"] == "cache")
    refuse_writes(workspace, target["locator"]["key"], target["after"])  # the last batch fails

    code, out, err = cli(workspace, "apply", str(plan))
    assert code == 1, (code, out, err)
    assert "apply failed and was undone" in err
    assert "injected fault" in err
    assert live_snapshot(workspace) == before
    assert lock_status(cli, workspace) == FREE
    assert not list((workspace / "state" / "wal").glob("*.jsonl"))
    assert json.loads(succeeded(cli(workspace, "history", "--json")))[-1]["outcome"] == "aborted"

    execute_sql(workspace, "DROP TRIGGER refuse")
    assert "Apply complete!" in succeeded(cli(workspace, "apply", str(plan))), "an aborted plan can be applied"


def test_an_apply_whose_undo_fails_too_frees_the_lock_and_leaves_the_rest_to_recover(promoted, cli, live_snapshot):
    workspace, before = promoted
    (plan,) = plans(cli, workspace, "promote")
    target = next(c for c in plan_changes(json.loads(plan.read_text())) if c["kind"] == "cache")
    refuse_writes(workspace, target["locator"]["key"])  # neither the new value nor the old one

    code, out, err = cli(workspace, "apply", str(plan))
    assert code == 6, (code, out, err)
    assert "undoing it failed too" in err
    assert "kfmops recover" in err
    assert lock_status(cli, workspace) == FREE
    assert len(list((workspace / "state" / "wal").glob("*.jsonl"))) == 1

    execute_sql(workspace, "DROP TRIGGER refuse")
    succeeded(cli(workspace, "recover"))
    assert live_snapshot(workspace) == before


def test_ctrl_c_during_an_apply_undoes_it_and_frees_the_lock(make_workspace, cli, cli_process, live_snapshot):
    workspace = make_workspace(n=40)
    config = workspace / "kfmops.yaml"
    config.write_text(config.read_text() + "apply:\n  batch_size: 10\n")  # 16 batches of 10
    (plan,) = plans(cli, workspace, "first")
    before = live_snapshot(workspace)
    wal_dir = workspace / "state" / "wal"

    def first_batch_done() -> bool:
        return any(b'"type":"DONE"' in path.read_bytes() for path in wal_dir.glob("*.jsonl"))

    applying = cli_process(workspace, "apply", str(plan))
    assert wait_for(first_batch_done, applying), applying.finish()
    applying.signal(signal.SIGINT)
    code, out, err = applying.finish()
    assert code == 1, (code, out, err)
    assert "apply failed and was undone: KeyboardInterrupt" in err
    assert "Traceback" not in out + err

    assert live_snapshot(workspace) == before
    assert lock_status(cli, workspace) == FREE
    assert not list(wal_dir.glob("*.jsonl"))
    assert json.loads(succeeded(cli(workspace, "history", "--json")))[-1]["outcome"] == "aborted"
