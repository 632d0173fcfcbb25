"""The embedded `local` backend: all four reference kinds with no server.

Graph relationships, search aliases and cache keys live in one SQLite file (one transaction per
write batch); STAC links live in a real catalog folder. Immutable targets (version documents, nodes,
indices) are seeded once from the workspace's data folder: its STAC catalog is copied, and every
collection or item carrying `kfm:dataset` and `version` registers its dataset node, version node and
index by the workspace's conventions; an optional `targets.yaml` there adds other nodes and indices.
No idempotency keys are recorded: the local backend lives inside the workspace, where only kfmops
writes, so comparing live values with the before and after values tells what a write did.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import yaml

from kfmops.errors import BackendError
from kfmops.io import crash
from kfmops.providers.base import Provider, Write, WriteKey, chunks
from kfmops.providers.stac import StacCatalog
from kfmops.providers.stac_index import StacIndex
from kfmops.references import Reference, ReferenceKind
from kfmops.workspace import BackendConfig, Conventions, Workspace, fill

SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (label TEXT, key TEXT, id TEXT, PRIMARY KEY (label, key, id));
CREATE TABLE IF NOT EXISTS indices (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS relationships (
  from_label TEXT, from_key TEXT, from_id TEXT, type TEXT, to_label TEXT, to_key TEXT, to_id TEXT,
  PRIMARY KEY (from_label, from_key, from_id, type, to_label));
CREATE TABLE IF NOT EXISTS aliases (alias TEXT, index_name TEXT, is_write_index INTEGER,
  PRIMARY KEY (alias, index_name));
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT);
"""
BATCH = 400


def _seeded(database: Path) -> bool:
    """Whether `database` holds its seed: it exists and has its tables, which the seed creates in the
    transaction that commits its rows."""
    if not database.is_file():
        return False
    with closing(sqlite3.connect(database, isolation_level=None)) as db:
        return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'nodes'").fetchone() is not None


class LocalProvider(Provider):
    kinds = frozenset(ReferenceKind)

    def __init__(self, config: BackendConfig, workspace: Workspace, *, read_only: bool = False):
        super().__init__(config.name)
        settings = config.settings
        self.path = workspace.root / settings["path"] if "path" in settings else workspace.state_dir / "local"
        durable = workspace.section("apply").get("fsync", True)
        seed = workspace.root / settings["seed"] if "seed" in settings else None
        database = self.path / "references.sqlite"
        seeded = _seeded(database)
        if read_only and not seeded:
            # Never written yet: its live state is its seed. Read that in place; create nothing.
            self.catalog = StacCatalog(seed / "catalog" if seed else self.path / "stac", config.name)
            self.db = sqlite3.connect(":memory:", isolation_level=None)
            self._seed(seed, workspace.conventions, copy_catalog=False)
            return
        index = StacIndex.open_saved(workspace, config.name, (self.path / "stac").resolve()) if read_only else None
        self.catalog = StacCatalog(self.path / "stac", config.name, durable=durable, index=index)
        self.path.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(database, isolation_level=None)
        self.db.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
        self.db.execute("PRAGMA journal_mode=WAL")
        if not seeded:
            self._seed(seed, workspace.conventions)

    def _seed(self, seed: Path | None, conventions: Conventions, *, copy_catalog: bool = True) -> None:
        nodes: set[tuple[str, str, str]] = set()
        indices: set[str] = set()
        if seed is not None and (seed / "catalog").is_dir():
            if copy_catalog:
                shutil.copytree(seed / "catalog", self.catalog.root, dirs_exist_ok=True)
            for file in sorted(self.catalog.root.rglob("*.json")):
                data = json.loads(file.read_text(encoding="utf-8"))
                fields = data.get("properties", data) if data.get("type") == "Feature" else data
                dataset, version = fields.get("kfm:dataset"), fields.get("version")
                if dataset and version:
                    key = conventions.graph_key
                    nodes.add((conventions.graph_dataset_label, key, fill(conventions.graph_dataset_id, dataset)))
                    nodes.add(
                        (conventions.graph_version_label, key, fill(conventions.graph_version_id, dataset, version))
                    )
                    indices.add(fill(conventions.search_index, dataset, version))
        if seed is not None and (seed / "targets.yaml").is_file():
            extra = yaml.load((seed / "targets.yaml").read_text(encoding="utf-8"), Loader=yaml.CSafeLoader) or {}
            nodes.update((n["label"], n.get("key", "id"), n["id"]) for n in extra.get("nodes", []))
            indices.update(extra.get("indices", []))
        # One transaction, tables and rows: a seed killed half way leaves no table, and is done again (_seeded).
        # (In autocommit mode each row was a transaction of its own, fsynced: 14 s at 10,000 datasets.)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for statement in SCHEMA.split(";")[:-1]:
                self.db.execute(statement)
            crash.reached("seed")
            self.db.executemany("INSERT OR IGNORE INTO nodes VALUES (?, ?, ?)", sorted(nodes))
            self.db.executemany("INSERT OR IGNORE INTO indices VALUES (?)", [(i,) for i in sorted(indices)])

    # reads ---------------------------------------------------------------------------------------

    def read(self, references: Sequence[Reference]) -> dict[str, Any]:
        by_kind: dict[ReferenceKind, list[Reference]] = {}
        for reference in references:
            by_kind.setdefault(reference.kind, []).append(reference)
        values: dict[str, Any] = {}
        for kind, group in by_kind.items():
            self.round_trips += 1
            values.update(self._readers[kind](self, group))
        return values

    def _read_stac(self, references: list[Reference]) -> dict[str, Any]:
        return self.catalog.read(references)

    def _read_graph(self, references: list[Reference]) -> dict[str, Any]:
        found: dict[tuple[str, ...], str] = {}
        for batch in chunks(references, BATCH):
            keys = [_graph_key(r) for r in batch]
            rows = self.db.execute(
                "SELECT from_label, from_key, from_id, type, to_label, to_id FROM relationships "
                f"WHERE (from_label, from_key, from_id, type, to_label) IN (VALUES {_marks(5, len(keys))})",
                [part for key in keys for part in key],
            )
            found.update({tuple(row[:5]): row[5] for row in rows})
        return {r.address: found.get(_graph_key(r)) for r in references}

    def _read_search(self, references: list[Reference]) -> dict[str, Any]:
        aliases: dict[str, dict[str, Any]] = {}
        for batch in chunks(references, BATCH):
            names = [r.locator["alias"] for r in batch]
            rows = self.db.execute(
                f"SELECT alias, index_name, is_write_index FROM aliases WHERE alias IN ({_marks(1, len(names))})", names
            )
            for alias, index, is_write in rows:
                entry = aliases.setdefault(alias, {"indices": [], "write_index": None})
                entry["indices"].append(index)
                if is_write:
                    entry["write_index"] = index
        return {r.address: r.normalize(aliases.get(r.locator["alias"])) for r in references}

    def _read_cache(self, references: list[Reference]) -> dict[str, Any]:
        found: dict[str, str] = {}
        for batch in chunks(references, BATCH):
            keys = [r.locator["key"] for r in batch]
            found.update(self.db.execute(f"SELECT key, value FROM kv WHERE key IN ({_marks(1, len(keys))})", keys))
        return {r.address: found.get(r.locator["key"]) for r in references}

    _readers = {
        ReferenceKind.STAC: _read_stac,
        ReferenceKind.GRAPH: _read_graph,
        ReferenceKind.SEARCH: _read_search,
        ReferenceKind.CACHE: _read_cache,
    }

    # writes --------------------------------------------------------------------------------------

    def write(self, items: Sequence[Write], *, key: WriteKey | None = None) -> None:
        stac = [item for item in items if item[0].kind is ReferenceKind.STAC]
        rows = [item for item in items if item[0].kind is not ReferenceKind.STAC]
        if stac:
            self.round_trips += 1
            self.catalog.write(stac)
        if rows:
            self.round_trips += 1
            try:
                with self.db:
                    self.db.execute("BEGIN IMMEDIATE")
                    for reference, value in rows:
                        self._writers[reference.kind](self, reference, value)
            except sqlite3.Error as exc:
                raise BackendError(self.name, f"SQLite write failed: {exc}", retryable="locked" in str(exc)) from exc

    def _write_graph(self, reference: Reference, value: Any) -> None:
        key = _graph_key(reference)
        self.db.execute(
            "DELETE FROM relationships WHERE from_label=? AND from_key=? AND from_id=? AND type=? AND to_label=?", key
        )
        if value is not None:
            to_key = reference.locator["to"]["key"]
            inserted = self.db.execute(
                "INSERT INTO relationships SELECT ?, ?, ?, ?, ?, ?, ? "
                "WHERE EXISTS (SELECT 1 FROM nodes WHERE label=? AND key=? AND id=?) "
                "AND EXISTS (SELECT 1 FROM nodes WHERE label=? AND key=? AND id=?)",
                (*key, to_key, value, key[0], key[1], key[2], key[4], to_key, value),
            ).rowcount
            if inserted != 1:
                raise BackendError(
                    self.name,
                    f"{reference.address}: a node of (:{key[0]} {{{key[1]}: {key[2]!r}}})"
                    f"-[:{key[3]}]->(:{key[4]} {{{to_key}: {value!r}}}) does not exist; "
                    "nothing in this batch was changed",
                )

    def _write_search(self, reference: Reference, value: Any) -> None:
        alias = reference.locator["alias"]
        self.db.execute("DELETE FROM aliases WHERE alias=?", (alias,))
        for index in (value or {}).get("indices", []):
            inserted = self.db.execute(
                "INSERT INTO aliases SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM indices WHERE name=?)",
                (alias, index, int(index == value["write_index"]), index),
            ).rowcount
            if inserted != 1:
                raise BackendError(
                    self.name, f"{reference.address}: index {index!r} does not exist; nothing in this batch was changed"
                )

    def _write_cache(self, reference: Reference, value: Any) -> None:
        if value is None:
            self.db.execute("DELETE FROM kv WHERE key=?", (reference.locator["key"],))
        else:
            self.db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (reference.locator["key"], value))
        for pattern in reference.locator.get("invalidate", []):
            self.db.execute("DELETE FROM kv WHERE key GLOB ?", (pattern,))

    _writers = {
        ReferenceKind.GRAPH: _write_graph,
        ReferenceKind.SEARCH: _write_search,
        ReferenceKind.CACHE: _write_cache,
    }

    # discovery -----------------------------------------------------------------------------------

    def pointers(self, kind: str, shape: Mapping[str, str]) -> dict[str, Any]:
        self.round_trips += 1
        if kind == ReferenceKind.GRAPH:
            rows = self.db.execute(
                "SELECT from_id, to_id FROM relationships WHERE from_label=? AND from_key=? AND type=? AND to_label=? "
                "AND substr(from_id, 1, ?) = ?",
                (
                    shape["from_label"],
                    shape["key"],
                    shape["type"],
                    shape["to_label"],
                    len(shape["prefix"]),
                    shape["prefix"],
                ),
            )
            return dict(rows)
        if kind == ReferenceKind.SEARCH:
            aliases: dict[str, dict[str, Any]] = {}
            rows = self.db.execute(
                "SELECT alias, index_name, is_write_index FROM aliases WHERE substr(alias, 1, ?) = ?",
                (len(shape["prefix"]), shape["prefix"]),
            )
            for alias, index, is_write in rows:
                entry = aliases.setdefault(alias, {"indices": [], "write_index": None})
                entry["indices"].append(index)
                if is_write:
                    entry["write_index"] = index
            return {alias: {**value, "indices": sorted(value["indices"])} for alias, value in aliases.items()}
        if kind == ReferenceKind.CACHE:
            return dict(self.db.execute("SELECT key, value FROM kv WHERE key GLOB ?", (shape["pattern"],)))
        return super().pointers(kind, shape)

    # targets -------------------------------------------------------------------------------------

    def broken_links(self, references: Sequence[Reference]) -> int:
        return self.catalog.broken_links([r for r in references if r.kind is ReferenceKind.STAC])

    def version_facts(self, paths: Sequence[str]) -> dict[str, dict[str, Any]]:
        return self.catalog.version_facts(paths)

    def data_file(self, path: str) -> Path:
        return self.catalog.data_file(path)

    def missing_targets(self, items: Sequence[Write]) -> list[tuple[str, str]]:
        missing = self.catalog.missing_targets([i for i in items if i[0].kind is ReferenceKind.STAC])
        for reference, value in items:
            if reference.kind is ReferenceKind.GRAPH:
                locator = reference.locator
                ends = [(locator["from"]["label"], locator["from"]["key"], locator["from"]["id"])]
                if value is not None:
                    ends.append((locator["to"]["label"], locator["to"]["key"], value))
                for label, key, node_id in ends:
                    if not self.db.execute(
                        "SELECT 1 FROM nodes WHERE label=? AND key=? AND id=?", (label, key, node_id)
                    ).fetchone():
                        missing.append((reference.address, f"node (:{label} {{{key}: {node_id!r}}}) does not exist"))
            elif reference.kind is ReferenceKind.SEARCH and value is not None:
                for index in value["indices"]:
                    if not self.db.execute("SELECT 1 FROM indices WHERE name=?", (index,)).fetchone():
                        missing.append((reference.address, f"index {index!r} does not exist"))
        return missing

    def close(self) -> None:
        self.db.close()
        self.catalog.index.save()


def _graph_key(reference: Reference) -> tuple[str, str, str, str, str]:
    locator = reference.locator
    source = locator["from"]
    return (source["label"], source["key"], source["id"], locator["type"], locator["to"]["label"])


def _marks(width: int, rows: int) -> str:
    row = "(" + ", ".join("?" * width) + ")" if width > 1 else "?"
    return ", ".join([row] * rows)
