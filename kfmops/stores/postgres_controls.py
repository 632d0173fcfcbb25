"""The postgres store's operational switches: the freeze in force (`kfmops_controls`, one row per workspace) and
the log of freezes and resumes (`kfmops_control_events`).

Written outside the fencing guard: freezing a workspace must work while an apply holds its lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from psycopg.types.json import Json

from kfmops.stores.base import ControlStore, Freeze
from kfmops.stores.postgres_db import Database


class PostgresControls(ControlStore):
    def __init__(self, db: Database):
        self.db = db

    def freeze(self) -> Freeze | None:
        key = self.db.key
        sql = "SELECT frozen FROM kfmops_controls WHERE workspace = %s AND frozen IS NOT NULL"
        found = self.db.rows("reading the freeze", sql, key) if key else []
        return Freeze.from_dict(found[0][0]) if found else None

    def set_freeze(self, freeze: Freeze | None, event: Mapping[str, Any]) -> None:
        with self.db.writing("setting the freeze", fenced=False) as cursor:
            key = self.db.claim(cursor, str(uuid.uuid4()))  # a workspace never applied gets its row (generation 0)
            body = Json(freeze.to_dict()) if freeze else None
            cursor.execute(
                "INSERT INTO kfmops_controls (workspace, frozen) VALUES (%s, %s) ON CONFLICT (workspace) "
                "DO UPDATE SET frozen = EXCLUDED.frozen, updated = now()",
                (key, body),
            )
            cursor.execute(
                "INSERT INTO kfmops_control_events (workspace, event) VALUES (%s, %s)", (key, Json(dict(event)))
            )

    def events(self) -> list[dict[str, Any]]:
        key = self.db.key
        sql = "SELECT event FROM kfmops_control_events WHERE workspace = %s ORDER BY position"
        return [row[0] for row in self.db.rows("reading the freeze log", sql, key)] if key else []
