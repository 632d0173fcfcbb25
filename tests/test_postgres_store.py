"""The postgres store through the real console script, against a real PostgreSQL (KFMOPS_TEST_POSTGRES_DSN).

Separate clones of one data repository share one state; an apply of K changes rewrites K reference rows;
workspaces in one database do not block each other; a holder that lost its lock writes nothing; connection
problems are one line naming the store, never its password; state migrates between stores byte for byte.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import plan_changes
from pgstate import DSN_ENV, clone, connect, data_repository, drop, open_wals, use_postgres
from psycopg.conninfo import make_conninfo
from servers import unique_tag

from benchmarks.generate import promote
from kfmops.errors import LockHeld
from kfmops.stores.lock import LockInfo
from kfmops.stores.postgres import PostgresState
from kfmops.stores.postgres_db import Database
from kfmops.stores.postgres_lock import PostgresLock
from kfmops.stores.state import State

SEED = 1854
CI = {"KFMOPS_OPERATOR": "ops@kfm.example", "KFMOPS_CI_RUN_URL": "https://ci.kfm.example/runs/9"}
CI |= {"GITHUB_SERVER_URL": "", "GITHUB_REPOSITORY": "", "GITHUB_RUN_ID": ""}


def succeeded(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 0, (code, out, err)
    assert "Traceback" not in out + err
    return out


def json_of(cli: Callable, workspace: Path, *args: str) -> Any:
    return json.loads(succeeded(cli(workspace, *args)))


@pytest.fixture
def dsn(postgres_dsn: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test server's DSN, also in the environment variable the workspaces' `state.dsn_env` names."""
    monkeypatch.setenv(DSN_ENV, postgres_dsn)
    return postgres_dsn


@pytest.fixture
def key(dsn: str) -> Iterator[str]:
    """A workspace key no other test uses; its rows are removed afterwards."""
    name = unique_tag("ws")
    yield name
    drop(dsn, name)


def plan(cli: Callable, workspace: Path, out: Path) -> dict[str, Any]:
    succeeded(cli(workspace, "plan", "--out", str(out)))
    return json.loads(out.read_text())


def test_a_plan_made_in_one_clone_applies_in_another_which_sees_its_history_and_rolls_it_back(
    key, tmp_path, cli, live_snapshot
):
    a, live = data_repository(tmp_path, key)
    b = clone(a, tmp_path / "b")
    first = plan(cli, a, tmp_path / "first.json")
    assert "Apply complete!" in succeeded(cli(b, "apply", str(tmp_path / "first.json")))
    assert not list(a.rglob("state.json")) + list(b.rglob("state.json")), "no state file in either clone"
    applied = live_snapshot(live)

    for workspace in (a, b):
        promote(workspace, 1.0, SEED)  # the same pull request, checked out twice
    second = plan(cli, a, tmp_path / "second.json")
    made_in_b = plan(cli, b, tmp_path / "stale.json")
    assert second["state"] == made_in_b["state"] == {"lineage": first["state"]["lineage"], "serial": 1}
    succeeded(cli(a, "apply", str(tmp_path / "second.json")))
    code, out, err = cli(b, "apply", str(tmp_path / "stale.json"))
    assert code == 5, (code, out, err)
    assert "Make a new plan" in err

    history = json_of(cli, b, "history", "--json")
    assert [e["plan_id"] for e in history] == [first["plan_id"], second["plan_id"]]
    assert json_of(cli, b, "state", "list", "--json") == json_of(cli, a, "state", "list", "--json")
    assert "Rollback complete!" in succeeded(cli(b, "rollback", "--last", "--auto-approve"))
    assert live_snapshot(live) == applied
    entries = json_of(cli, a, "history", "--json")
    assert [(e["operation"], e["serial"]) for e in entries] == [("apply", 1), ("apply", 2), ("rollback", 3)]
    assert json_of(cli, a, "state", "list", "--json")["serial"] == 3
    assert "Ledger intact: 3 entries" in succeeded(cli(b, "ledger", "verify"))


def xmins(dsn: str, table: str, key: str, name: str) -> dict[str, str]:
    """{row name: xmin}: a row rewritten by a later transaction has another xmin."""
    with connect(dsn) as conn:
        rows = conn.execute(f"SELECT {name}, xmin::text FROM {table} WHERE workspace = %s", (key,)).fetchall()
    return dict(rows)


def test_an_apply_of_k_changes_rewrites_k_reference_rows_and_no_others(dsn, key, tmp_path, cli):
    workspace, _ = data_repository(tmp_path, key, n=40)
    succeeded(cli(workspace, "apply", "--auto-approve"))
    resources = xmins(dsn, "kfmops_resources", key, "address")
    entries = xmins(dsn, "kfmops_state_entries", key, "section || ':' || key")
    assert len(resources) == 160

    assert promote(workspace, 0.05, SEED) >= 1
    promotion = plan(cli, workspace, tmp_path / "promotion.json")
    succeeded(cli(workspace, "apply", str(tmp_path / "promotion.json")))
    moved = {c["address"] for c in plan_changes(promotion) if c["action"] != "no-op"}
    assert 4 <= len(moved) < 40
    now = xmins(dsn, "kfmops_resources", key, "address")
    assert {address for address, xmin in now.items() if resources[address] != xmin} == moved
    datasets = {f"dataset:{c['address'].split('.')[1]}" for c in plan_changes(promotion) if c["action"] != "no-op"}
    now = xmins(dsn, "kfmops_state_entries", key, "section || ':' || key")
    rewritten = {name for name, xmin in now.items() if entries.get(name) != xmin}
    assert rewritten - datasets == {f"plan:{promotion['plan_id']}"}


def test_workspaces_sharing_a_database_do_not_block_each_other(dsn, tmp_path, cli):
    keys = [unique_tag("ws"), unique_tag("ws")]
    try:
        held, free = (data_repository(tmp_path / k, k)[0] for k in keys)
        database = Database({"dsn_env": DSN_ENV, "workspace": keys[0]})
        with PostgresLock(database).held("apply", "plan-of-the-test", 0) as info:
            assert "Apply complete!" in succeeded(cli(free, "apply", "--auto-approve"))
            code, out, err = cli(held, "apply", "--auto-approve")
            assert code == 4, (code, out, err)
            assert f"lock {info.id} held by {info.who} (pid {os.getpid()}) for apply" in err
            status = json_of(cli, held, "lock", "status", "--json")
            assert (status["held"], status["info"]["plan_id"], status["info"]["fencing_token"]) == (
                True,
                "plan-of-the-test",
                info.fencing_token,
            )
            assert json_of(cli, free, "lock", "status", "--json")["held"] is False
        database.close()
        assert "Apply complete!" in succeeded(cli(held, "apply", "--auto-approve"))
    finally:
        drop(dsn, *keys)


def test_a_holder_that_lost_its_connection_can_never_write_after_another_took_over(dsn, key):
    settings = {"dsn_env": DSN_ENV, "workspace": key}
    first, second = Database(settings), Database(settings)
    lost = PostgresLock(first).acquire(LockInfo.new("apply", None), 0)
    PostgresState(first).save(State.new("lineage-of-the-test"))  # a write under the lock: allowed
    with connect(dsn) as admin:  # its connection dies (a network partition, a restarted proxy, ...)
        admin.execute("SELECT pg_terminate_backend(%s)", (first.conn.info.backend_pid,))
    taken = PostgresLock(second).acquire(LockInfo.new("apply", None), 10)
    assert taken.fencing_token == (lost.fencing_token or 0) + 1
    first.close()  # it reconnects and goes on as if it still held the lock
    store = PostgresState(first)
    with pytest.raises(LockHeld, match=r"lost the workspace lock \(fencing token"):
        store.save(State.new("lineage-of-the-test"))
    with pytest.raises(LockHeld):
        PostgresLock(first).check()
    assert PostgresState(second).load() == State.new("lineage-of-the-test")
    second.close()
    first.close()


def test_lock_status_names_a_running_apply_and_a_killed_holder_leaves_a_stale_record(
    dsn, key, tmp_path, cli, cli_process, live_snapshot
):
    workspace, live = data_repository(tmp_path, key, n=40, batch_size=10)
    succeeded(cli(workspace, "apply", "--auto-approve"))
    promote(workspace, 1.0, SEED)
    promotion = plan(cli, workspace, tmp_path / "promotion.json")
    before = live_snapshot(live)
    other = clone(workspace, tmp_path / "other")

    holder = cli_process(workspace, "apply", str(tmp_path / "promotion.json"), env=CI)
    with connect(dsn) as conn:
        while (
            holder.running()
            and not conn.execute("SELECT 1 FROM kfmops_locks WHERE name = %s AND info IS NOT NULL", (key,)).fetchall()
        ):
            time.sleep(0.001)
    holder.signal(signal.SIGSTOP)
    assert holder.running(), holder.finish()
    status = json_of(cli, other, "lock", "status", "--json")
    info = status["info"]
    assert (status["held"], status["stale"]) == (True, False)
    assert {k: info[k] for k in ("operation", "who", "pid", "expires", "plan_id", "ci_run_url")} == {
        "operation": "apply",
        "who": "ops@kfm.example",
        "pid": holder.pid,
        "expires": None,
        "plan_id": promotion["plan_id"],
        "ci_run_url": "https://ci.kfm.example/runs/9",
    }
    assert isinstance(info["fencing_token"], int) and info["fencing_token"] >= 2
    code, out, err = cli(other, "apply", str(tmp_path / "promotion.json"))
    assert code == 4, (code, out, err)
    assert f"lock {info['id']} held by ops@kfm.example (pid {holder.pid}) for apply" in err
    code, out, err = cli(other, "lock", "force-unlock", info["id"])
    assert code == 4, (code, out, err)
    assert "still holds the advisory lock" in err

    holder.signal(signal.SIGKILL)
    assert holder.finish()[0] == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while (status := json_of(cli, other, "lock", "status", "--json"))["held"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (status["held"], status["stale"], status["info"]["id"]) == (False, True, info["id"])
    assert "connection to the state store is gone" in status["note"]
    code, out, err = cli(other, "lock", "force-unlock", "not-" + info["id"])
    assert code == 1 and f"(current: {info['id']})" in err, (code, out, err)
    assert f"Removed lock {info['id']}" in succeeded(cli(other, "lock", "force-unlock", info["id"]))
    assert json_of(cli, other, "lock", "status", "--json")["info"] is None
    if open_wals(dsn, key):
        succeeded(cli(other, "recover"))
    assert live_snapshot(live) == before


# The database itself: tables on first use, schema versions, connection problems ---------------------------


@pytest.fixture
def fresh_database(postgres_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A new, empty database on the test server, named in the environment variable; dropped afterwards."""
    name = f"kfmops_test_{uuid.uuid4().hex[:10]}"
    try:
        with connect(postgres_dsn) as conn:
            conn.execute(f"CREATE DATABASE {name}")
    except psycopg.errors.InsufficientPrivilege:
        pytest.skip("the test server's role may not CREATE DATABASE (scripts/servers/postgres.sh's may)")
    dsn = make_conninfo(postgres_dsn, dbname=name)
    monkeypatch.setenv(DSN_ENV, dsn)
    yield dsn
    with connect(postgres_dsn) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def kfmops_tables(dsn: str) -> list[str]:
    with connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'kfmops%' ORDER BY 1")]


def test_tables_are_created_by_the_first_write_and_a_newer_schema_is_refused(fresh_database, make_workspace, cli):
    workspace = make_workspace(n=2)
    use_postgres(workspace, "kansas-prod")
    for command in (("plan", "--out", str(workspace / "p.json")), ("history",), ("lock", "status"), ("drift",)):
        succeeded(cli(workspace, *command))
    assert kfmops_tables(fresh_database) == [], "reading creates nothing"

    succeeded(cli(workspace, "apply", str(workspace / "p.json")))
    assert "kfmops_schema" in kfmops_tables(fresh_database)
    with connect(fresh_database) as conn:
        assert conn.execute("SELECT version FROM kfmops_schema").fetchall() == [(2,)]
        assert conn.execute("SELECT workspace, serial FROM kfmops_workspaces").fetchall() == [("kansas-prod", 1)]
        conn.execute("UPDATE kfmops_schema SET version = 7")
    for command in (("history",), ("apply", "--auto-approve")):
        code, out, err = cli(workspace, *command, env={"COLUMNS": "1000"})
        assert code == 1, (code, out, err)
        assert err.count("\n") == 1 and err.startswith("Error: postgres state store ")
        assert "state schema version 7, newer than this kfmops" in err
        assert "upgrade kfmops" in err


@pytest.mark.parametrize("case", ["missing", "malformed", "wrong password", "unreachable", "unknown host"])
def test_a_connection_problem_is_one_line_naming_the_store_and_never_its_password(
    case, postgres_dsn, make_workspace, cli, monkeypatch
):
    secret = f"pw-{uuid.uuid4().hex}"
    dsn = {
        "missing": None,
        "malformed": f"host=127.0.0.1 user=kfmops password {secret}",
        "wrong password": make_conninfo(postgres_dsn, password=secret),
        "unreachable": make_conninfo(postgres_dsn, password=secret, host="127.0.0.1", port="1"),
        "unknown host": make_conninfo(postgres_dsn, password=secret, host="kfmops-nowhere.invalid"),
    }[case]
    expected = {
        "missing": f"environment variable {DSN_ENV} (state.dsn_env) is not set",
        "malformed": f"{DSN_ENV} is not a valid libpq connection string",
        "wrong password": "cannot connect: ",
        "unreachable": "port 1 failed: Connection refused",
        "unknown host": "kfmops-nowhere.invalid",
    }[case]
    monkeypatch.delenv(DSN_ENV, raising=False)
    workspace = make_workspace(n=1)
    use_postgres(workspace, "kansas-prod")
    for command in (("plan",), ("apply", "--auto-approve"), ("history",), ("lock", "status")):
        code, out, err = cli(workspace, *command, env={"COLUMNS": "1000", **({DSN_ENV: dsn} if dsn else {})})
        assert code == 1, (command, code, out, err)
        assert err.count("\n") == 1 and err.startswith("Error: "), err
        assert "postgres state store" in err and expected in err, err
        assert secret not in out + err
        assert "Traceback" not in out + err and "internal error" not in err
    if case == "wrong password":
        assert "password authentication failed" in err


# Moving between stores -------------------------------------------------------------------------------


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_state_migrates_from_folder_to_postgres_and_back_byte_for_byte(key, make_workspace, cli):
    workspace = make_workspace(n=4)
    succeeded(cli(workspace, "apply", "--auto-approve"))
    promote(workspace, 0.5, SEED)
    succeeded(cli(workspace, "apply", "--auto-approve"))
    succeeded(cli(workspace, "rollback", "--last", "--auto-approve"))
    succeeded(cli(workspace, "hotfix", "dataset.ds-000001", "--set", "version=v1", "--reason", "test, INC-1"))
    folder_config = (workspace / "kfmops.yaml").read_text()
    on_postgres = workspace / "kfmops.postgres.yaml"
    use_postgres(workspace, key, name=on_postgres.name)
    back = workspace / "kfmops.back.yaml"
    back.write_text(folder_config.replace("state: state\n", "state: back\n") + "ledger:\n  path: back/ledger.jsonl\n")

    out = succeeded(cli(workspace, "state", "migrate", "--to-config", str(on_postgres)))
    assert "4 history records, 4 WALs, 4 ledger entries" in out
    assert "16 managed references" in out
    shutil.copy(on_postgres, workspace / "kfmops.yaml")  # the workspace now uses the postgres store
    assert succeeded(cli(workspace, "state", "pull")).encode() == (workspace / "state" / "state.json").read_bytes()
    assert "Ledger intact: 4 entries" in succeeded(cli(workspace, "ledger", "verify"))
    succeeded(cli(workspace, "state", "migrate", "--to-config", str(back)))

    original, copied = files(workspace / "state"), files(workspace / "back")
    for name in ("state.json", "history.jsonl"):
        assert copied[name] == original[name], name
    for name in [n for n in original if n.startswith(("applies/", "wal/archive/"))]:
        assert copied[name] == original[name], name
    ledger = workspace / "docs" / "reports" / "audit" / "data_provenance_ledger.jsonl"
    assert copied["ledger.jsonl"] == ledger.read_bytes()

    stranger = make_workspace(n=1, seed=7)
    succeeded(cli(stranger, "apply", "--auto-approve"))
    other = workspace / "kfmops.other.yaml"
    other.write_text(folder_config.replace("state: state\n", f"state: {stranger / 'state'}\n"))
    code, out, err = cli(workspace, "state", "migrate", "--to-config", str(other))
    assert code == 1, (code, out, err)
    assert "already holds the state of another workspace" in err
