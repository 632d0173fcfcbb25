"""The postgres store's lock: a session-level advisory lock per workspace, held by the applying command's
connection (the server frees it when that connection ends, a killed holder's included), plus a row in
`kfmops_locks` with the holder's LockInfo for `lock status`, and a fencing token in that row, one more at every
acquisition, that every write of the store checks (`Database.writing`): a holder that lost its connection can
never write after another took over.
"""

from __future__ import annotations

import time
from contextlib import suppress
from dataclasses import asdict, replace

import psycopg
from psycopg.types.json import Json

from kfmops.errors import LockHeld
from kfmops.stores.lock import Locker, LockInfo, LockStatus
from kfmops.stores.postgres_db import Database

# The lock row, and the server session that holds the advisory lock now (NULL when free).
STATUS = """
SELECT l.info, l.backend_pid, (
  SELECT a.pid FROM pg_locks a
  WHERE a.locktype = 'advisory' AND a.granted AND a.objsubid = 1
    AND a.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND a.classid::bigint = %(high)s AND a.objid::bigint = %(low)s)
FROM (SELECT %(name)s::text AS name) n LEFT JOIN kfmops_locks l ON l.name = n.name
"""


class PostgresLock(Locker):
    def __init__(self, db: Database):
        self.db = db
        self.stale_note = ""

    def try_acquire(self, info: LockInfo) -> LockInfo | None:
        db = self.db
        db.ensure_tables()
        with db.errors("taking the workspace lock"):
            conn = db.conn
            taken = conn.execute("SELECT pg_try_advisory_lock(%s)", (db.lock_key,)).fetchone()
            if not (taken and taken[0]):
                return None
            try:
                with conn.transaction():
                    row = conn.execute(
                        "SELECT token, info FROM kfmops_locks WHERE name = %s FOR UPDATE", (db.lock_name,)
                    ).fetchone()
                    held = replace(info, fencing_token=(row[0] if row else 0) + 1)
                    conn.execute(
                        "INSERT INTO kfmops_locks (name, token, info, backend_pid, since) "
                        "VALUES (%s, %s, %s, pg_backend_pid(), now()) ON CONFLICT (name) DO UPDATE SET "
                        "token = EXCLUDED.token, info = EXCLUDED.info, backend_pid = EXCLUDED.backend_pid, "
                        "since = EXCLUDED.since",
                        (db.lock_name, held.fencing_token, Json(asdict(held))),
                    )
            except BaseException:
                with suppress(psycopg.Error):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (db.lock_key,))
                raise
        left = row[1] if row else None
        self.stale_note = f"cleared stale lock {left['id']} left by pid {left['pid']} on {left['host']}" if left else ""
        db.fence = held.fencing_token
        return held

    def release(self, info: LockInfo) -> None:
        db = self.db
        db.fence = None
        with suppress(psycopg.Error):  # a lost connection: the server has freed its advisory lock already
            conn = db.conn
            with conn.transaction():
                conn.execute(
                    "UPDATE kfmops_locks SET info = NULL, backend_pid = NULL WHERE name = %s AND token = %s",
                    (db.lock_name, info.fencing_token),
                )
            conn.execute("SELECT pg_advisory_unlock(%s)", (db.lock_key,))

    def status(self) -> LockStatus:
        db = self.db
        if not db.tables:
            return LockStatus(False, None)
        key = db.lock_key
        deadline = time.monotonic() + 1.0
        while True:
            with db.errors("reading the workspace lock"):
                found = db.conn.execute(STATUS, {"name": db.lock_name, "high": key >> 32, "low": key & 0xFFFFFFFF})
                raw, recorded, holder = found.fetchone() or (None, None, None)
            info = LockInfo(**raw) if raw else None
            if holder is None:
                if info is None:
                    return LockStatus(False, None)
                note = f"left by pid {info.pid} on {info.host}, whose connection to the state store is gone"
                return LockStatus(False, info, stale=True, note=note)
            # One that took the lock an instant ago gets a moment to write its record.
            if holder == recorded or time.monotonic() > deadline:
                return LockStatus(True, info if holder == recorded else None, note=f"server session {holder}")
            time.sleep(0.01)

    def force_unlock(self, lock_id: str) -> LockInfo:
        info = self.unlockable(
            lock_id, "its connection to the state store still holds the advisory lock; stop that process first"
        )
        with self.db.errors("removing the lock record"):
            self.db.conn.execute(
                "UPDATE kfmops_locks SET info = NULL, backend_pid = NULL WHERE name = %s AND info->>'id' = %s",
                (self.db.lock_name, lock_id),
            )
        return info

    def newest_fence(self) -> int:
        db = self.db
        if not db.tables:
            return 0
        rows = db.rows("reading the fencing token", "SELECT token FROM kfmops_locks WHERE name = %s", db.lock_name)
        return int(rows[0][0]) if rows else 0

    def check(self) -> None:
        """Raise LockHeld if another holder took the lock over (its token is newer than ours)."""
        if self.db.fence is not None and self.newest_fence() != self.db.fence:
            raise LockHeld(f"{self.db.label}: this process lost the workspace lock (fencing token {self.db.fence})")
