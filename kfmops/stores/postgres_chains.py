"""The postgres store's hash chains: the WAL of each transaction and the governance ledger, one row per record.

Each WAL record is its own database transaction, committed (durable) before the step it announces; the
records, their hash chain and the crash hooks are those of the folder store's WAL (`stores.wal`), so recovery
reads both alike. Ledger appends of a workspace are serialized by an advisory lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg.types.json import Json

from kfmops.errors import Diagnostic, InputError, KfmopsError, RecoveryRequired
from kfmops.io import chain, crash
from kfmops.stores.base import LedgerChain, WalEntry, WalStore
from kfmops.stores.postgres_db import Database, StoreError, advisory_key
from kfmops.stores.wal import WalLog, WalRecord, WalStep


class PostgresWalLog(WalLog):
    """Appends the records of one WAL, each committed (durable) before `append` returns."""

    def __init__(self, db: Database, apply_id: str, records: list[WalRecord]):
        self.db = db
        self.apply_id = apply_id
        self.seq = records[-1].seq if records else 0
        self.prev_hash = records[-1].fields["hash"] if records else chain.GENESIS
        self.count = 0

    def append(self, step: WalStep, **fields: Any) -> WalRecord:
        seq = self.seq + 1
        record = chain.link({"seq": seq, "type": str(step), "apply_id": self.apply_id, **fields}, self.prev_hash)
        try:
            with self.db.writing(f"writing {step} (record {seq}) to the WAL of {self.apply_id}") as cursor:
                key = self.db.key or self.db.claim(cursor, fields["state"]["lineage"])  # BEGIN names the lineage
                cursor.execute(
                    "INSERT INTO kfmops_wal_logs (workspace, apply_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                    (key, self.apply_id),
                )
                cursor.execute(
                    "INSERT INTO kfmops_wal_records (workspace, apply_id, seq, record) VALUES (%s, %s, %s, %s)",
                    (key, self.apply_id, seq, Json(record)),
                )
        except StoreError as lost:
            if self.seq == 0:
                raise
            raise RecoveryRequired(
                f"{lost}. The WAL of {self.apply_id} ends at record {self.seq}: once the state store is back, "
                "run 'kfmops recover'"
            ) from None
        self.seq, self.prev_hash = seq, record["hash"]
        self.count += 1
        crash.reached(f"wal:{seq}")
        return WalRecord(seq, step, record)

    def close(self) -> None:
        """Nothing to close: every record is committed."""


class PostgresWal(WalStore):
    def __init__(self, db: Database):
        self.db = db

    def begin(self, apply_id: str) -> WalLog:
        return PostgresWalLog(self.db, apply_id, [])

    def resume(self, entry: WalEntry) -> WalLog:
        return PostgresWalLog(self.db, entry.apply_id, entry.records)

    def _where(self, apply_id: str) -> str:
        return f"{self.db.label}, WAL of {apply_id}"

    def _logs(self, archived: bool, apply_id: str | None = None) -> dict[str, list[WalRecord]]:
        key = self.db.key
        if key is None:
            return {}
        rows = self.db.rows(
            "reading the WAL",
            "SELECT r.apply_id, r.record FROM kfmops_wal_records r JOIN kfmops_wal_logs l "
            "ON l.workspace = r.workspace AND l.apply_id = r.apply_id "
            "WHERE r.workspace = %s AND l.archived = %s AND (%s::text IS NULL OR r.apply_id = %s) "
            "ORDER BY r.apply_id, r.seq",
            key,
            archived,
            apply_id,
            apply_id,
        )
        logs: dict[str, list[dict[str, Any]]] = {}
        for name, record in rows:
            logs.setdefault(name, []).append(record)
        return {name: self._verified(name, records) for name, records in sorted(logs.items())}

    def _verified(self, apply_id: str, raw: list[dict[str, Any]]) -> list[WalRecord]:
        """The records in order; a gap, an unknown step or a broken hash chain is an error naming the record."""
        records: list[WalRecord] = []
        for number, record in enumerate(raw, start=1):
            prev = records[-1].fields["hash"] if records else chain.GENESIS
            if record.get("seq") != number or record.get("type") not in set(WalStep) or chain.problems(record, prev):
                raise InputError(
                    [
                        Diagnostic(
                            "WAL record breaks the hash chain (edited, removed or reordered records)",
                            "the log cannot be trusted; inspect it before recovering",
                            file=self._where(apply_id),
                            line=number,
                        )
                    ]
                )
            records.append(WalRecord(number, WalStep(record["type"]), record))
        return records

    def open_entries(self) -> list[WalEntry]:
        return [WalEntry(name, self._where(name), records) for name, records in self._logs(False).items()]

    def archive(self, apply_id: str) -> None:
        with self.db.writing(f"archiving the WAL of {apply_id}") as cursor:
            cursor.execute(
                "UPDATE kfmops_wal_logs SET archived = true WHERE workspace = %s AND apply_id = %s",
                (self.db.key, apply_id),
            )

    def discard(self, apply_id: str) -> None:
        with self.db.writing(f"discarding the WAL of {apply_id}") as cursor:
            for table in ("kfmops_wal_records", "kfmops_wal_logs"):
                cursor.execute(f"DELETE FROM {table} WHERE workspace = %s AND apply_id = %s", (self.db.key, apply_id))

    def archived(self, apply_id: str) -> list[WalRecord]:
        return self._logs(True, apply_id).get(apply_id, [])


class PostgresLedger(LedgerChain):
    """The ledger's hash chain, one row per entry; appends of a workspace are serialized by an advisory lock."""

    def __init__(self, db: Database, key: bytes | None = None):
        self.db = db
        self.key = key  # KFMOPS_LEDGER_KEY: a keyed (HMAC) chain that cannot be re-hashed without it

    def location(self) -> str:
        return f"{self.db.label}, ledger"

    def append(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        fields = dict(entry)
        with self.db.writing("appending to the ledger") as cursor:
            key = self.db.key
            if key is None:
                raise KfmopsError(f"{self.location()}: the workspace has no state yet; nothing to record")
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key(f"ledger:{key}"),))
            cursor.execute("SELECT entry FROM kfmops_ledger WHERE workspace = %s ORDER BY seq DESC LIMIT 1", (key,))
            last = cursor.fetchone()
            head: dict[str, Any] = last[0] if last else {"seq": 0, "hash": chain.GENESIS}
            stored = chain.link({"seq": head["seq"] + 1, "time": fields.pop("time"), **fields}, head["hash"], self.key)
            cursor.execute(
                "INSERT INTO kfmops_ledger (workspace, seq, entry) VALUES (%s, %s, %s)",
                (key, stored["seq"], Json(stored)),
            )
        return stored

    def entries(self) -> list[dict[str, Any]]:
        key = self.db.key
        sql = "SELECT entry FROM kfmops_ledger WHERE workspace = %s ORDER BY seq"
        return [row[0] for row in self.db.rows("reading the ledger", sql, key)] if key else []

    def verify(self, *, head: Mapping[str, Any] | None = None) -> list[str]:
        """Each entry must match its hash, follow the previous entry's seq and hash; `head` must still be there."""
        problems: list[str] = []
        previous: dict[str, Any] = {"seq": 0, "hash": chain.GENESIS}
        hashes = {}
        for entry in self.entries():
            found = chain.problems(entry, previous["hash"], self.key)
            if entry.get("seq") != previous["seq"] + 1:
                found.append(f"its seq follows {previous['seq']}: entries were removed, inserted or reordered")
            if found:
                problems.append(f"seq {entry.get('seq')}: " + "; ".join(found))
            hashes[entry.get("seq")] = entry.get("hash")
            previous = {"seq": entry.get("seq") if isinstance(entry.get("seq"), int) else previous["seq"] + 1,
                        "hash": entry.get("hash")}  # fmt: skip
        if head is not None and hashes.get(head.get("seq")) != head.get("hash"):
            problems.append(
                f"the ledger ends at seq {previous['seq']} but the recorded head is seq {head.get('seq')} with hash "
                f"{head.get('hash')}: entries were removed from the end or rewritten"
            )
        return problems
