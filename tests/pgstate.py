"""Helpers of the postgres store's tests: workspaces whose state lives in the test server under a key of their own,
clones of one data repository that share the live backends, and the store's tables read with psycopg directly.

A "clone" is what a CI runner checks out: kfmops.yaml, desired/ and data/, nothing of another clone's state. The
live references (the embedded local backend) are shared by pointing every clone's local backend at one folder,
as every runner reaches the same real servers.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.generate import generate

DSN_ENV = "KFMOPS_STATE_DSN"
TABLES = (
    "kfmops_workspaces",
    "kfmops_resources",
    "kfmops_state_entries",
    "kfmops_history",
    "kfmops_wal_logs",
    "kfmops_wal_records",
    "kfmops_ledger",
    "kfmops_controls",
    "kfmops_control_events",
)


def use_postgres(
    workspace: Path, key: str, live: Path | None = None, *, name: str = "kfmops.yaml", **apply: Any
) -> None:
    """Keep a generated workspace's state in the postgres store under `key` (or write that configuration to the
    file `name` beside kfmops.yaml); with `live`, its local backend's references in that folder (shared by clones);
    `apply` settings (fsync, batch_size) go under `apply:`."""
    config = workspace / name
    text = (workspace / "kfmops.yaml").read_text()
    assert "state: state\n" in text
    text = text.replace("state: state\n", f"state:\n  backend: postgres\n  dsn_env: {DSN_ENV}\n  workspace: {key}\n")
    if live is not None:
        text = text.replace("    seed: data\n", f"    seed: data\n    path: {live}\n")
    if apply:
        settings = {k: str(v).lower() if isinstance(v, bool) else v for k, v in apply.items()}
        text += "apply:\n" + "".join(f"  {k}: {v}\n" for k, v in settings.items())
    config.write_text(text)


def data_repository(folder: Path, key: str, n: int = 3, seed: int = 1854, **apply: Any) -> tuple[Path, Path]:
    """(the first clone of a generated data repository on the postgres store, the live folder it shares)."""
    origin = folder / "origin"
    generate(origin, n, 3, seed)
    live = folder / "live" / "state" / "local"  # so that `live_snapshot(folder / "live")` reads it
    use_postgres(origin, key, live, **apply)
    return origin, folder / "live"


def clone(origin: Path, to: Path) -> Path:
    """Another checkout of the data repository: kfmops.yaml, desired/ and data/, nothing else."""
    to.mkdir(parents=True)
    shutil.copy(origin / "kfmops.yaml", to / "kfmops.yaml")
    for folder in ("desired", "data"):
        shutil.copytree(origin / folder, to / folder)
    return to


def rekey(workspace: Path, old: str, new: str) -> None:
    config = workspace / "kfmops.yaml"
    config.write_text(config.read_text().replace(f"  workspace: {old}\n", f"  workspace: {new}\n"))


def connect(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True)


def drop(dsn: str, *keys: str) -> None:
    """Remove everything the store keeps for `keys` (a test's cleanup)."""
    with connect(dsn) as conn:
        if not conn.execute("SELECT to_regclass('kfmops_workspaces')").fetchone()[0]:
            return
        for key in keys:
            for table in TABLES:
                conn.execute(f"DELETE FROM {table} WHERE workspace = %s", (key,))
            conn.execute("DELETE FROM kfmops_locks WHERE name = %s", (key,))


def copy_rows(dsn: str, old: str, new: str) -> None:
    """Copy every row of workspace `old` to workspace `new` (a copy of a crashed workspace's store)."""
    with connect(dsn) as conn, conn.transaction():
        for table in TABLES:
            columns = [
                row[0]
                for row in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                    "AND column_name NOT IN ('workspace', 'position') ORDER BY ordinal_position",
                    (table,),
                )
            ]
            names = ", ".join(columns)
            order = "position" if table in ("kfmops_state_entries", "kfmops_history", "kfmops_control_events") else "1"
            conn.execute(
                f"INSERT INTO {table} (workspace, {names}) SELECT %s, {names} FROM {table} WHERE workspace = %s "
                f"ORDER BY {order}",
                (new, old),
            )
        conn.execute(
            "INSERT INTO kfmops_locks (name, token) SELECT %s, token FROM kfmops_locks WHERE name = %s", (new, old)
        )


def open_wals(dsn: str, key: str) -> dict[str, list[dict[str, Any]]]:
    """{apply_id: records} of the WALs not archived yet, read from the tables."""
    with connect(dsn) as conn:
        rows = conn.execute(
            "SELECT r.apply_id, r.record FROM kfmops_wal_records r JOIN kfmops_wal_logs l "
            "ON l.workspace = r.workspace AND l.apply_id = r.apply_id "
            "WHERE r.workspace = %s AND NOT l.archived ORDER BY r.apply_id, r.seq",
            (key,),
        ).fetchall()
    found: dict[str, list[dict[str, Any]]] = {}
    for apply_id, record in rows:
        found.setdefault(apply_id, []).append(record)
    return found


def archived_wal(dsn: str, key: str, apply_id: str) -> list[dict[str, Any]]:
    with connect(dsn) as conn:
        rows = conn.execute(
            "SELECT r.record FROM kfmops_wal_records r JOIN kfmops_wal_logs l "
            "ON l.workspace = r.workspace AND l.apply_id = r.apply_id "
            "WHERE r.workspace = %s AND r.apply_id = %s AND l.archived ORDER BY r.seq",
            (key, apply_id),
        ).fetchall()
    return [row[0] for row in rows]
