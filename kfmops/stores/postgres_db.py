"""The postgres store's connection: one session per command, opened on first use from a libpq connection string
in the environment variable that `state.dsn_env` names; errors that name the store (never its password); the
schema version row and its forward migrations; and the guard every write passes (the fencing token).

Tables are created on first write. A read-only command on a database without them reads an empty store and
creates nothing. Every table is keyed by workspace, and every lock is per workspace, so several workspaces
share one database without waiting for each other.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from psycopg import conninfo

from kfmops import __version__
from kfmops.errors import Diagnostic, InputError, KfmopsError, LockHeld

SCHEMA_VERSION = 2
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE kfmops_workspaces (workspace text PRIMARY KEY, lineage text NOT NULL, serial bigint NOT NULL,"
        " generation bigint NOT NULL, auto_key boolean NOT NULL, updated timestamptz NOT NULL DEFAULT now())",
        "CREATE TABLE kfmops_resources (workspace text NOT NULL, address text NOT NULL, kind text NOT NULL,"
        " backend text NOT NULL, locator json NOT NULL, dataset text, value json, apply_id text, version text,"
        " PRIMARY KEY (workspace, address))",
        "CREATE TABLE kfmops_state_entries (workspace text NOT NULL, section text NOT NULL, key text NOT NULL,"
        " body json, position bigint GENERATED ALWAYS AS IDENTITY, PRIMARY KEY (workspace, section, key))",
        "CREATE TABLE kfmops_history (workspace text NOT NULL, apply_id text NOT NULL, entry json NOT NULL,"
        " body json NOT NULL, position bigint GENERATED ALWAYS AS IDENTITY, PRIMARY KEY (workspace, apply_id))",
        "CREATE TABLE kfmops_wal_logs (workspace text NOT NULL, apply_id text NOT NULL,"
        " archived boolean NOT NULL DEFAULT false, opened timestamptz NOT NULL DEFAULT now(),"
        " PRIMARY KEY (workspace, apply_id))",
        "CREATE TABLE kfmops_wal_records (workspace text NOT NULL, apply_id text NOT NULL, seq integer NOT NULL,"
        " record json NOT NULL, PRIMARY KEY (workspace, apply_id, seq))",
        "CREATE TABLE kfmops_ledger (workspace text NOT NULL, seq bigint NOT NULL, entry json NOT NULL,"
        " PRIMARY KEY (workspace, seq))",
        "CREATE TABLE kfmops_locks (name text PRIMARY KEY, token bigint NOT NULL, info json, backend_pid integer,"
        " since timestamptz)",
    ),
    2: (
        "CREATE TABLE kfmops_controls (workspace text PRIMARY KEY, frozen json,"
        " updated timestamptz NOT NULL DEFAULT now())",
        "CREATE TABLE kfmops_control_events (workspace text NOT NULL, event json NOT NULL,"
        " position bigint GENERATED ALWAYS AS IDENTITY, PRIMARY KEY (workspace, position))",
    ),
}
AUTO = "(lineage)"  # the lock name of a workspace keyed by its lineage (no state.workspace)
# Unless the connection string says otherwise: fail fast, name the client, notice a dead peer within ~1 minute.
DEFAULTS = {
    "connect_timeout": "10",
    "application_name": "kfmops",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}
# The server side of the same: a holder whose machine vanished loses its advisory lock in about a minute.
SERVER_KEEPALIVES = "SET tcp_keepalives_idle = 30; SET tcp_keepalives_interval = 10; SET tcp_keepalives_count = 3"


class StoreError(KfmopsError):
    """The state store could not be reached, or refused an operation; the message names the store."""


def advisory_key(name: str) -> int:
    """A 63-bit advisory lock key for `name` (distinct names collide with negligible probability)."""
    return int.from_bytes(hashlib.sha256(f"kfmops:{name}".encode()).digest()[:8], "big") >> 1


class Database:
    """The postgres store of one workspace, as one command uses it: its connection, key and fencing token."""

    def __init__(self, settings: Mapping[str, Any], *, read_only: bool = False, config: str = "kfmops.yaml"):
        self.dsn_env = str(settings["dsn_env"])
        self.configured: str | None = settings.get("workspace")
        self.read_only = read_only
        self.config = config
        self.lock_name = self.configured or AUTO
        self.lock_key = advisory_key(self.lock_name)
        self.fence: int | None = None  # the fencing token of the lock this command holds
        self.label = f"postgres state store (${self.dsn_env})"
        self._key = self.configured
        self._conn: psycopg.Connection[Any] | None = None
        self._tables = False
        self._password: str | None = None

    # connecting ---------------------------------------------------------------------------------------------

    def _parameters(self) -> dict[str, str]:
        raw = os.environ.get(self.dsn_env)
        if not raw:
            raise InputError(
                [
                    Diagnostic(
                        f"postgres state store: environment variable {self.dsn_env} (state.dsn_env) is not set",
                        "set it to a libpq connection string, e.g. postgresql://kfmops@db.example.org:5432/kfmops",
                        file=self.config,
                    )
                ]
            )
        try:
            parameters = {key: str(value) for key, value in conninfo.conninfo_to_dict(raw).items()}
        except psycopg.Error as exc:
            reason = re.sub(r'"[^"]*"', '"…"', str(exc).strip().splitlines()[0])  # never echo the string itself
            raise InputError(
                [
                    Diagnostic(
                        f"postgres state store: {self.dsn_env} is not a valid libpq connection string ({reason})",
                        "use key=value pairs or a postgresql:// URI",
                        file=self.config,
                    )
                ]
            ) from None
        self._password = parameters.get("password")
        where = f"{parameters.get('user', '')}@{parameters.get('host', '')}:{parameters.get('port', '5432')}"
        name = self.configured or "keyed by its lineage"
        self.label = f"postgres state store {where}/{parameters.get('dbname', '')} (workspace {name})"
        return {**DEFAULTS, **parameters}

    @property
    def conn(self) -> psycopg.Connection[Any]:
        """The session of this command, connected (and the schema checked) on first use."""
        if self._conn is None:
            parameters = self._parameters()
            try:
                conn = psycopg.connect(conninfo.make_conninfo("", **parameters), autocommit=True)
            except psycopg.Error as exc:
                raise StoreError(f"{self.label}: cannot connect: {self.reason(exc)}") from None
            try:
                with self.errors("checking the schema version"):
                    conn.execute(SERVER_KEEPALIVES)
                    self._tables = self._migrate(conn, create=not self.read_only)
            except BaseException:
                with suppress(psycopg.Error):
                    conn.close()
                raise
            self._conn = conn
        return self._conn

    @property
    def tables(self) -> bool:
        """Whether the store's tables exist (a read-only command on a new database finds none)."""
        return self.conn is not None and self._tables

    def ensure_tables(self) -> None:
        """Create the tables (or migrate them forward) if this command found none."""
        if not self.tables:
            with self.errors("creating the tables"):
                self._tables = self._migrate(self.conn, create=True)

    def _migrate(self, conn: psycopg.Connection[Any], *, create: bool) -> bool:
        """Bring the schema to SCHEMA_VERSION (forward only); False when absent and `create` is off."""
        present = conn.execute("SELECT to_regclass('kfmops_schema') IS NOT NULL").fetchone()
        version = 0
        if present and present[0]:
            row = conn.execute("SELECT version FROM kfmops_schema").fetchone()
            version = row[0] if row else 0
        self._refuse_newer(version)
        if version == SCHEMA_VERSION or not (create or version):
            return version == SCHEMA_VERSION
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key("schema"),))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS kfmops_schema "
                "(one boolean PRIMARY KEY DEFAULT true CHECK (one), version integer NOT NULL)"
            )
            row = conn.execute("SELECT version FROM kfmops_schema").fetchone()
            version = row[0] if row else 0
            self._refuse_newer(version)
            for number in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[number]:
                    conn.execute(statement.encode())
            conn.execute(
                "INSERT INTO kfmops_schema (one, version) VALUES (true, %s) "
                "ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version",
                (SCHEMA_VERSION,),
            )
        return True

    def _refuse_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.label}: the database holds kfmops state schema version {version}, newer than this kfmops "
                f"{__version__} understands ({SCHEMA_VERSION}); upgrade kfmops"
            )

    def close(self) -> None:
        if self._conn is not None:
            with suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    # errors -------------------------------------------------------------------------------------------------

    def reason(self, error: BaseException) -> str:
        """A server or libpq error as one line, without the password."""
        text = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
        text = re.sub(r"\s+", " ", text.removeprefix("connection failed: "))
        if self._password:
            text = text.replace(self._password, "***")
        return text or type(error).__name__

    @contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Turn a database error into one StoreError line naming the store and what it was doing."""
        try:
            yield
        except psycopg.Error as exc:
            raise StoreError(f"{self.label}: {doing} failed: {self.reason(exc)}") from None

    # reading and writing ------------------------------------------------------------------------------------

    @property
    def key(self) -> str | None:
        """This workspace's key in the database; None while the store holds nothing for it."""
        if not self.tables:
            return None
        if self._key is None:
            found = self.rows(
                "finding the workspace", "SELECT workspace FROM kfmops_workspaces WHERE auto_key ORDER BY 1 LIMIT 3"
            )
            if len(found) > 1:
                raise InputError(
                    [
                        Diagnostic(
                            f"{self.label} holds several workspaces keyed by their lineage "
                            f"({', '.join(str(row[0]) for row in found)})",
                            "set state.workspace in kfmops.yaml to the key of this workspace",
                            file=self.config,
                        )
                    ]
                )
            self._key = str(found[0][0]) if found else None
        return self._key

    def rows(self, doing: str, sql: str, *parameters: Any) -> list[tuple[Any, ...]]:
        with self.errors(doing):
            return self.conn.execute(sql.encode(), parameters).fetchall()

    @contextmanager
    def reading(self, doing: str) -> Iterator[psycopg.Cursor[Any]]:
        """A consistent read of several statements (one snapshot)."""
        conn = self.conn
        with self.errors(doing), conn.transaction(), conn.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield cursor

    @contextmanager
    def writing(self, doing: str, *, fenced: bool = True) -> Iterator[psycopg.Cursor[Any]]:
        """One database transaction that commits on success; it first passes the fencing guard (unless
        `fenced` is off: the freeze is set while an apply may hold the lock)."""
        self.ensure_tables()
        conn = self.conn
        with self.errors(doing), conn.transaction(), conn.cursor() as cursor:
            if fenced:
                self._guard(cursor, doing)
            yield cursor

    def _guard(self, cursor: psycopg.Cursor[Any], doing: str) -> None:
        """Holding the lock: its row must still carry our fencing token (locked until commit, so no new holder
        can take over meanwhile). Not holding it: nobody else may (a transaction-level advisory lock)."""
        if self.fence is None:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", (self.lock_key,))
            row = cursor.fetchone()
            if not (row and row[0]):
                raise LockHeld(f"{self.label}: {doing} needs the workspace lock, which another process holds")
            return
        cursor.execute("SELECT token FROM kfmops_locks WHERE name = %s FOR SHARE", (self.lock_name,))
        row = cursor.fetchone()
        if row is None or row[0] != self.fence:
            raise LockHeld(
                f"{self.label}: this process lost the workspace lock (fencing token {self.fence}, the lock's is now "
                f"{row[0] if row else 'none'}); {doing} was refused"
            )

    def claim(self, cursor: psycopg.Cursor[Any], lineage: str) -> str:
        """This workspace's key, creating its row (generation 0: no state saved yet) if there is none."""
        key = self.key or lineage
        cursor.execute(
            "INSERT INTO kfmops_workspaces (workspace, lineage, serial, generation, auto_key) "
            "VALUES (%s, %s, 0, 0, %s) ON CONFLICT (workspace) DO NOTHING",
            (key, lineage, self.configured is None),
        )
        self._key = key
        return key
