"""The crash matrix of the folder store (tests/test_recover.py), against the postgres store.

The same scenarios, crash points and checks: an apply is killed with SIGKILL right after each WAL record and
each batch write; `kfmops recover` must restore every pre-apply value, `kfmops recover --forward` (on a copy of
the crashed workspace and of its rows in the database) must complete the apply, and state and history must
agree with the backend. Only where the records are read differs: tables instead of files.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import test_recover
from pgstate import DSN_ENV, archived_wal, copy_rows, drop, open_wals, rekey, use_postgres
from servers import unique_tag
from test_recover import (
    COMMIT_POINT,
    CRASH_POINTS,
    MIXED_POINTS,
    Scenario,
    committed,
    create_update_delete,
    disagreements,
    json_of,
    listing,
    promote_everything,
    succeeded,
    together,
    values_of,
)

from benchmarks.generate import generate
from kfmops.stores.postgres import PostgresHistory, PostgresState
from kfmops.stores.postgres_db import Database

pytestmark = pytest.mark.slow


class Keys:
    """Workspace keys made by this module's tests, removed at its end."""

    def __init__(self, dsn: str):
        self.dsn = dsn
        self.made: list[str] = []

    def copy(self, workspace: Path, to: Path, key: str) -> tuple[Path, str]:
        """A copy of `workspace` (folder and rows) under a new key."""
        new = unique_tag("crash")
        self.made.append(new)
        shutil.copytree(workspace, to)
        copy_rows(self.dsn, key, new)
        rekey(to, key, new)
        return to, new


@pytest.fixture(scope="module")
def keys(postgres_dsn: str) -> Iterator[Keys]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(DSN_ENV, postgres_dsn)
        made = Keys(postgres_dsn)
        yield made
        drop(postgres_dsn, *made.made)


def on_postgres(build: Callable[[Path, Callable], dict[str, int]], key: str) -> Callable[[Path, Callable], Any]:
    """A scenario builder of test_recover, unchanged, with the workspace it generates on the postgres store."""

    def generate_on_postgres(out: Path, *args: Any) -> None:
        generate(out, *args)
        use_postgres(out, key)

    def built(workspace: Path, cli: Callable) -> dict[str, int]:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(test_recover, "generate", generate_on_postgres)
            return build(workspace, cli)

    return built


def records_of(dsn: str, key: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(`state list --json`, `history --json`) of a workspace, read through the library those commands use."""
    database = Database({"dsn_env": DSN_ENV, "workspace": key})
    try:
        return listing(PostgresState(database).load()), PostgresHistory(database).entries()
    finally:
        database.close()


def prepare(build: Callable, cli: Callable, live_snapshot: Callable, folder: Path, keys: Keys) -> tuple[Scenario, str]:
    key = unique_tag("crash")
    keys.made.append(key)
    workspace = folder / "workspace"
    summary = on_postgres(build, key)(workspace, cli)
    plan = json_of(cli, workspace, "plan", "--format", "json", "--out", str(workspace / "plan.json"))
    assert plan["summary"] == summary
    uninterrupted, done = keys.copy(workspace, folder / "uninterrupted", key)
    succeeded(cli(uninterrupted, "apply", str(uninterrupted / "plan.json")))
    (state_before, history_before), (state_after, history_after) = records_of(keys.dsn, key), records_of(keys.dsn, done)
    records = archived_wal(keys.dsn, done, history_after[-1]["apply_id"])
    assert [r["type"] for r in records] == ["BEGIN", *["INTENT", "DONE"] * 4, "COMMIT"], "crash points assume this"
    scenario = Scenario(
        workspace,
        live_snapshot(workspace),
        live_snapshot(uninterrupted),
        values_of(state_before),
        values_of(state_after),
        committed(history_before),
    )
    return scenario, key


@pytest.fixture(scope="module")
def promotion(module_cli, live_snapshot, tmp_path_factory, keys) -> tuple[Scenario, str]:
    return prepare(promote_everything, module_cli, live_snapshot, tmp_path_factory.mktemp("promotion"), keys)


@pytest.fixture(scope="module")
def mixed(module_cli, live_snapshot, tmp_path_factory, keys) -> tuple[Scenario, str]:
    return prepare(create_update_delete, module_cli, live_snapshot, tmp_path_factory.mktemp("mixed"), keys)


def assert_records_agree(
    dsn: str, key: str, live: dict[str, Any], values: dict[str, Any], apply_id: str, outcome: str
) -> None:
    """state and history say what the backend holds, and the crashed apply is settled once."""
    state, entries = records_of(dsn, key)
    assert values_of(state) == values
    assert disagreements(state, live) == []
    assert [e["apply_id"] for e in entries].count(apply_id) == 1
    assert (entries[-1]["apply_id"], entries[-1]["outcome"]) == (apply_id, outcome)
    assert entries[-1]["serial"] == state["serial"]
    assert open_wals(dsn, key) == {}, "no unfinished WAL is left"
    assert archived_wal(dsn, key, apply_id)[-1]["type"] == ("COMMIT" if outcome == "committed" else "ABORTED")


@pytest.mark.parametrize("crash_at", CRASH_POINTS)
def test_recover_after_sigkill_during_a_promotion_restores_or_completes_it(
    promotion, crash_at, module_cli, live_snapshot, tmp_path, keys
):
    crash_and_recover(*promotion, crash_at, module_cli, live_snapshot, tmp_path, keys)


@pytest.mark.parametrize("crash_at", MIXED_POINTS)
def test_recover_after_sigkill_during_creates_updates_and_deletes_restores_or_completes_them(
    mixed, crash_at, module_cli, live_snapshot, tmp_path, keys
):
    crash_and_recover(*mixed, crash_at, module_cli, live_snapshot, tmp_path, keys)


def crash_and_recover(
    scenario: Scenario, key: str, crash_at: str, cli: Callable, live_snapshot: Callable, tmp_path: Path, keys: Keys
) -> None:
    """Kill the scenario's apply at `crash_at`; recover one copy backward and another forward."""
    crashed, crashed_key = keys.copy(scenario.workspace, tmp_path / "crashed", key)
    code, out, err = cli(crashed, "apply", str(crashed / "plan.json"), env={"KFMOPS_CRASH_AT": crash_at})
    assert code == -signal.SIGKILL, (code, out, err)

    (records,) = open_wals(keys.dsn, crashed_key).values()
    if crash_at.startswith("wal:"):
        assert records[-1]["seq"] == int(crash_at.removeprefix("wal:"))
    else:
        assert (records[-1]["type"], records[-1]["batch"]) == ("INTENT", int(crash_at.removeprefix("write:")))
    apply_id = records[0]["apply_id"]
    finished = crash_at == COMMIT_POINT
    forward, forward_key = keys.copy(crashed, tmp_path / "forward", crashed_key)

    def refuse_then_recover() -> str:
        if not finished:
            at_crash = live_snapshot(crashed)
            mutating = (
                ("apply", str(crashed / "plan.json"))
                if CRASH_POINTS.index(crash_at) % 2
                else ("rollback", "--last", "--auto-approve")
            )
            code, out, err = cli(crashed, *mutating)
            assert code == 6, (mutating, code, out, err)
            assert "kfmops recover" in err
            assert live_snapshot(crashed) == at_crash, f"a refused {mutating[0]} changed something"
        return succeeded(cli(crashed, "recover"))

    back, on = together(refuse_then_recover, lambda: succeeded(cli(forward, "recover", "--forward")))
    if finished:
        assert "nothing to recover" in back
        assert live_snapshot(crashed) == scenario.after
        assert_records_agree(keys.dsn, crashed_key, scenario.after, scenario.managed_after, apply_id, "committed")
    else:
        assert f"every reference of {apply_id} is back at its value before the apply" in back
        assert live_snapshot(crashed) == scenario.before
        assert_records_agree(keys.dsn, crashed_key, scenario.before, scenario.managed_before, apply_id, "aborted")
        assert committed(records_of(keys.dsn, crashed_key)[1]) == scenario.committed_before
        assert f"{apply_id} was completed as planned" in on
    assert live_snapshot(forward) == scenario.after
    assert_records_agree(keys.dsn, forward_key, scenario.after, scenario.managed_after, apply_id, "committed")
