"""The postgres store: state, history, WAL and ledger chain of each workspace in PostgreSQL tables (the WAL and
the ledger in `postgres_chains`, the connection, schema and fencing guard in `postgres_db`, the lock in
`postgres_lock`).

One row per managed reference (and per applied plan, hotfix mark and dataset record): the store keeps what it
last read, so saving the state after an apply of K changes writes O(K) rows, under a compare-and-swap on the
workspace row's generation. Every write is one database transaction that first passes the fencing guard
(`Database.writing`): a WAL record, a state save or a history record is true exactly when it commits.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Json

from kfmops.errors import KfmopsError, StalePlan
from kfmops.plans import codec
from kfmops.plans.transaction import Transaction
from kfmops.references import Reference, ReferenceKind
from kfmops.stores.base import HistoryStore, StateStore, Stores
from kfmops.stores.postgres_chains import PostgresLedger, PostgresWal
from kfmops.stores.postgres_controls import PostgresControls
from kfmops.stores.postgres_db import Database
from kfmops.stores.state import ManagedReference, State

RESOURCE_COLUMNS = "address, kind, backend, locator, dataset, value, apply_id, version"
UPSERT_RESOURCE = (
    f"INSERT INTO kfmops_resources (workspace, {RESOURCE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (workspace, address) DO UPDATE SET kind = EXCLUDED.kind, backend = EXCLUDED.backend, "
    "locator = EXCLUDED.locator, dataset = EXCLUDED.dataset, value = EXCLUDED.value, "
    "apply_id = EXCLUDED.apply_id, version = EXCLUDED.version"
)
UPSERT_ENTRY = (
    "INSERT INTO kfmops_state_entries (workspace, section, key, body) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (workspace, section, key) DO UPDATE SET body = EXCLUDED.body"
)
Row = tuple[Reference, Any, str | None, str | None]
KINDS = {str(kind): kind for kind in ReferenceKind}


def _parsed(texts: Iterable[str]) -> list[Any]:
    """JSON texts parsed in one go (one parser call for all of them: much faster than one per row)."""
    return list(json.loads("[" + ",".join(texts) + "]"))


def _row(managed: ManagedReference) -> Row:
    return (managed.reference, managed.value, managed.apply_id, managed.version)


def _resource(key: str, address: str, managed: ManagedReference) -> tuple[Any, ...]:
    reference = managed.reference
    return (key, address, str(reference.kind), reference.backend, Json(reference.locator), reference.dataset,
            Json(managed.value), managed.apply_id, managed.version)  # fmt: skip


@dataclass(frozen=True)
class _Seen:
    """The state as this store last read or wrote it, at `generation` of the workspace row."""

    generation: int
    state: State
    rows: dict[str, Row]

    @classmethod
    def of(cls, generation: int, state: State) -> _Seen:
        kept = State(state.lineage, state.serial, dict(state.resources), list(state.applied_plans),
                     dict(state.hotfixes), dict(state.datasets))  # fmt: skip
        return cls(generation, kept, {address: _row(m) for address, m in state.resources.items()})

    def copy(self) -> State:
        s = self.state
        return State(s.lineage, s.serial, dict(s.resources), list(s.applied_plans), dict(s.hotfixes), dict(s.datasets))


class PostgresState(StateStore):
    def __init__(self, db: Database):
        self.db = db
        self._seen: _Seen | None = None

    def location(self) -> str:
        return self.db.label

    def load(self) -> State | None:
        key = self.db.key
        if key is None:
            return None
        with self.db.reading("reading the state") as cursor:
            cursor.execute("SELECT lineage, serial, generation FROM kfmops_workspaces WHERE workspace = %s", (key,))
            head = cursor.fetchone()
            if head is None or head[2] == 0:
                self._seen = None
                return None
            if self._seen is not None and self._seen.generation == head[2]:
                return self._seen.copy()  # unchanged since this command last read or wrote it
            cursor.execute(
                "SELECT address, kind, backend, dataset, apply_id, version, locator::text, "
                "coalesce(value::text, 'null') FROM kfmops_resources WHERE workspace = %s",
                (key,),
            )
            rows = sorted(cursor.fetchall())
            values = _parsed(text for row in rows for text in row[6:])
            resources = {
                address: ManagedReference(
                    Reference(address, KINDS[kind], backend, values[2 * i], dataset),
                    values[2 * i + 1],
                    apply_id,
                    version,
                )
                for i, (address, kind, backend, dataset, apply_id, version, *_) in enumerate(rows)
            }
            cursor.execute(
                "SELECT section, key, coalesce(body::text, 'null') FROM kfmops_state_entries WHERE workspace = %s "
                "ORDER BY position",
                (key,),
            )
            entries = cursor.fetchall()
            sections: dict[str, dict[str, Any]] = {"plan": {}, "hotfix": {}, "dataset": {}}
            for (section, name, _), body in zip(entries, _parsed(row[2] for row in entries), strict=True):
                sections[section][name] = body
        state = State(head[0], head[1], resources, list(sections["plan"]), sections["hotfix"], sections["dataset"])
        self._seen = _Seen.of(head[2], state)
        return self._seen.copy()

    def save(self, state: State) -> None:
        seen = self._seen
        with self.db.writing("saving the state") as cursor:
            key = self.db.claim(cursor, state.lineage)
            cursor.execute(
                "UPDATE kfmops_workspaces SET lineage = %s, serial = %s, generation = generation + 1, updated = now() "
                "WHERE workspace = %s AND generation = %s RETURNING generation",
                (state.lineage, state.serial, key, seen.generation if seen else 0),
            )
            row = cursor.fetchone()
            if row is None:
                raise StalePlan(
                    f"{self.db.label}: the state changed since this command read it (another runner saved it); "
                    "nothing was saved"
                )
            if seen is None or seen.state.lineage != state.lineage:
                _replace_all(cursor, key, state)
            else:
                _write_difference(cursor, key, seen, state)
        self._seen = _Seen.of(row[0], state)


def _replace_all(cursor: psycopg.Cursor[Any], key: str, state: State) -> None:
    cursor.execute("DELETE FROM kfmops_resources WHERE workspace = %s", (key,))
    cursor.execute("DELETE FROM kfmops_state_entries WHERE workspace = %s", (key,))
    with cursor.copy(f"COPY kfmops_resources (workspace, {RESOURCE_COLUMNS}) FROM STDIN") as copy:
        for address, managed in state.resources.items():
            copy.write_row(_resource(key, address, managed))
    with cursor.copy("COPY kfmops_state_entries (workspace, section, key, body) FROM STDIN") as copy:
        for section, name, body in _entries(state):
            copy.write_row((key, section, name, Json(body)))


def _entries(state: State) -> list[tuple[str, str, Any]]:
    return [
        *(("plan", plan_id, None) for plan_id in state.applied_plans),
        *(("hotfix", address, mark) for address, mark in state.hotfixes.items()),
        *(("dataset", name, record) for name, record in state.datasets.items()),
    ]


def _write_difference(cursor: psycopg.Cursor[Any], key: str, seen: _Seen, state: State) -> None:
    """Only what changed since `seen`: O(K) rows for an apply of K changes."""
    gone = [address for address in seen.rows if address not in state.resources]
    changed = [
        _resource(key, address, managed)
        for address, managed in state.resources.items()
        if seen.rows.get(address) != _row(managed)
    ]
    before = seen.state
    if state.applied_plans[: len(before.applied_plans)] != before.applied_plans:
        cursor.execute("DELETE FROM kfmops_state_entries WHERE workspace = %s AND section = 'plan'", (key,))
        before = State(before.lineage, hotfixes=before.hotfixes, datasets=before.datasets)
    upserts: list[tuple[Any, ...]] = [
        (key, "plan", plan_id, None) for plan_id in state.applied_plans[len(before.applied_plans) :]
    ]
    deletes = []
    for section, old, new in (
        ("hotfix", before.hotfixes, state.hotfixes),
        ("dataset", before.datasets, state.datasets),
    ):
        deletes += [(key, section, name) for name in old if name not in new]
        upserts += [(key, section, name, Json(body)) for name, body in new.items() if old.get(name, ...) != body]
    if gone:
        cursor.execute("DELETE FROM kfmops_resources WHERE workspace = %s AND address = ANY(%s)", (key, gone))
    if changed:
        cursor.executemany(UPSERT_RESOURCE, changed)
    if deletes:
        cursor.executemany(
            "DELETE FROM kfmops_state_entries WHERE workspace = %s AND section = %s AND key = %s", deletes
        )
    if upserts:
        cursor.executemany(UPSERT_ENTRY, upserts)


class PostgresHistory(HistoryStore):
    def __init__(self, db: Database):
        self.db = db

    def append(self, transaction: Transaction) -> None:
        with self.db.writing(f"recording {transaction.id} in history") as cursor:
            cursor.execute(
                "INSERT INTO kfmops_history (workspace, apply_id, entry, body) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (
                    self.db.claim(cursor, transaction.state.lineage),
                    transaction.id,
                    Json(codec.history_entry(transaction)),
                    Json(codec.transaction_to_dict(transaction)),
                ),
            )

    def entries(self) -> list[dict[str, Any]]:
        key = self.db.key
        sql = "SELECT entry FROM kfmops_history WHERE workspace = %s ORDER BY position"
        return [row[0] for row in self.db.rows("reading history", sql, key)] if key else []

    def load(self, apply_id: str) -> Transaction:
        key = self.db.key
        sql = "SELECT body FROM kfmops_history WHERE workspace = %s AND apply_id = %s"
        found = self.db.rows("reading history", sql, key, apply_id) if key else []
        if not found:
            raise KfmopsError(f"no apply with id {apply_id!r}; see 'kfmops history'")
        return codec.transaction_from_dict(found[0][0], f"{self.db.label}, history of {apply_id}")


def postgres_stores(db: Database, ledger_key: str | None = None) -> Stores:
    """The persisters of one workspace on the postgres store behind `db`."""
    ledger = PostgresLedger(db, ledger_key.encode() if ledger_key else None)
    return Stores(
        state=PostgresState(db),
        history=PostgresHistory(db),
        wal=PostgresWal(db),
        ledger=ledger,
        controls=PostgresControls(db),
    )
